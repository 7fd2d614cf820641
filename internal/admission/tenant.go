package admission

import (
	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
)

// Priority is a class of the fair queue: higher is served first and shed
// last.
type Priority int

// Priority classes.
const (
	Sheddable     Priority = 0
	Standard      Priority = 1
	Critical      Priority = 2
	numPriorities          = 3
)

func (p Priority) String() string {
	switch p {
	case Critical:
		return config.PriorityCritical
	case Sheddable:
		return config.PrioritySheddable
	}
	return config.PriorityStandard
}

// ParsePriority reads a class name; ok is false for an unknown one.
func ParsePriority(s string) (Priority, bool) {
	r := config.PriorityRank(s)
	if r < 0 {
		return Standard, false
	}
	return Priority(r), true
}

// Limits are budgets; zero means unlimited.
type Limits struct {
	RequestsPerMinute int64
	TokensPerMinute   int64
	Concurrency       int64
}

func (l Limits) any() bool {
	return l.RequestsPerMinute > 0 || l.TokensPerMinute > 0 || l.Concurrency > 0
}

func limitsOf(s *config.LimitsSpec) Limits {
	if s == nil {
		return Limits{}
	}
	return Limits{RequestsPerMinute: s.RequestsPerMinute, TokensPerMinute: s.TokensPerMinute, Concurrency: s.Concurrency}
}

// Tenant is one caller as admission knows it.
type Tenant struct {
	Name        string
	Weight      float64
	Priority    Priority
	MaxPriority Priority
	CanExplain  bool
	// models is the allow-list; nil means every model.
	models map[string]bool
	limits Limits
	// modelLimits are budgets per public model.
	modelLimits map[string]Limits
}

// Allows reports whether the tenant may call model.
func (t *Tenant) Allows(model string) bool { return t.models == nil || t.models[model] }

// Limits returns the tenant's budgets over all models.
func (t *Tenant) Limits() Limits { return t.limits }

// ModelLimits returns the tenant's budgets for model.
func (t *Tenant) ModelLimits(model string) Limits { return t.modelLimits[model] }

// priorityFor is the class of a request that asked for asked ("" for the
// tenant's own): a request may lower its class, and raise it up to the
// tenant's maxPriority.
func (t *Tenant) priorityFor(asked string) Priority {
	if asked == "" {
		return t.Priority
	}
	p, ok := ParsePriority(asked)
	if !ok || p > t.MaxPriority {
		return t.Priority
	}
	return p
}

// newTenant compiles a tenant of the configuration.
func newTenant(s config.TenantSpec) *Tenant {
	t := &Tenant{Name: s.Name, Weight: s.Weight, CanExplain: s.CanExplain, limits: limitsOf(s.Limits)}
	if t.Weight <= 0 {
		t.Weight = config.DefaultTenantWeight
	}
	t.Priority, _ = ParsePriority(s.Priority)
	t.MaxPriority, _ = ParsePriority(s.MaxPriority)
	t.MaxPriority = max(t.MaxPriority, t.Priority)
	if s.Models != nil {
		t.models = make(map[string]bool, len(s.Models))
		for _, m := range s.Models {
			t.models[m] = true
		}
	}
	if len(s.ModelLimits) > 0 {
		t.modelLimits = make(map[string]Limits, len(s.ModelLimits))
		for m, l := range s.ModelLimits {
			t.modelLimits[m] = limitsOf(&l)
		}
	}
	return t
}

// anonymous is the tenant of callers without credentials when they are
// allowed: the configured tenant "anonymous" if there is one.
func anonymous(tenants map[string]*Tenant) *Tenant {
	if t, ok := tenants[config.AnonymousTenant]; ok {
		return t
	}
	return &Tenant{Name: config.AnonymousTenant, Weight: 1, Priority: Standard, MaxPriority: Standard}
}
