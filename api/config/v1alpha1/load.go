package v1alpha1

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Defaults of the router block.
const (
	DefaultListen         = "127.0.0.1:8080"
	DefaultScrapeInterval = 100 * time.Millisecond
	DefaultMaxBodyBytes   = 16 << 20
	DefaultMaxAttempts    = 3
	DefaultSessionHeader  = "x-session-id"
	DefaultConnectTimeout = 2 * time.Second
	DefaultResponseHeader = 30 * time.Second
	DefaultFirstByte      = 300 * time.Second
	DefaultStreamIdle     = 60 * time.Second
	DefaultRequestBody    = 60 * time.Second
	// AdminListenOff turns the admin listener off.
	AdminListenOff            = "off"
	DefaultMaxConnections     = 10000
	DefaultMaxIdleConnections = 1000
	DefaultClientIdleTimeout  = 30 * time.Second
	DefaultMinBodyRate        = 1024
	DefaultWriteStall         = 30 * time.Second
	DefaultOutputTokens       = 256
	DefaultHealthPath         = "/health"
	// HealthPathNone turns health probing off.
	HealthPathNone          = "none"
	DefaultScrapeTimeout    = time.Second
	DefaultFailureThreshold = 3
	DefaultSuccessThreshold = 2
	// DefaultOutlierConsecutive5xx and DefaultOutlierEjectionTime are
	// Envoy's outlier-detection defaults.
	DefaultOutlierConsecutive5xx = 5
	DefaultOutlierEjectionTime   = 30 * time.Second
	DefaultProfile               = "default"
	DefaultEngineProfile         = "h100-llama3-8b"
)

// Endpoint roles accepted in endpoints[].role and engines[].role.
const (
	RoleBoth    = "both"
	RolePrefill = "prefill"
	RoleDecode  = "decode"
)

// FieldError is a configuration error at a field path such as
// "routes[1].targets[0].weight".
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// Errors is a list of field errors; Load returns every problem it finds, not
// only the first.
type Errors []*FieldError

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// Load reads the file at path and returns the decoded, defaulted and
// validated configuration.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes a YAML (or JSON) document strictly: unknown fields,
// duplicate keys and wrong types are errors naming the field path. It then
// applies defaults and validates.
func Parse(data []byte) (*Config, error) {
	c, err := Decode(data)
	if err != nil {
		return nil, err
	}
	c.Default()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Decode decodes strictly without defaulting or validating.
func Decode(data []byte) (*Config, error) {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("parse yaml: %w", err)
	}
	var generic any
	if err := json.Unmarshal(j, &generic); err != nil {
		return nil, fmt.Errorf("parse yaml: %w", err)
	}
	if generic == nil {
		return nil, errors.New("empty document")
	}
	if _, ok := generic.(map[string]any); !ok {
		return nil, errors.New("document must be a mapping")
	}
	var shape Errors
	checkShape(generic, reflect.TypeFor[Config](), "", &shape)
	if len(shape) > 0 {
		return nil, shape
	}
	c := &Config{}
	if err := yaml.UnmarshalStrict(data, c); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, &FieldError{Path: te.Field, Msg: fmt.Sprintf("cannot use %s as %s", te.Value, te.Type)}
		}
		return nil, fmt.Errorf("decode: %w", err)
	}
	return c, nil
}

// checkShape walks a generic JSON value against the Go type t and reports,
// with its path, every object key that t has no field for and every value of
// the wrong JSON type, so that no decoding error lacks a field path.
func checkShape(v any, t reflect.Type, path string, errs *Errors) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if v == nil || t == reflect.TypeFor[json.RawMessage]() {
		return
	}
	bad := func(want string) {
		*errs = append(*errs, &FieldError{Path: path, Msg: fmt.Sprintf("must be %s, got %s", want, jsonKind(v))})
	}
	if t == reflect.TypeFor[Duration]() {
		s, ok := v.(string)
		if !ok {
			bad("a duration string like \"100ms\"")
			return
		}
		if _, err := time.ParseDuration(s); err != nil {
			*errs = append(*errs, &FieldError{Path: path, Msg: err.Error()})
		}
		return
	}
	switch t.Kind() {
	case reflect.String:
		if _, ok := v.(string); !ok {
			bad("a string")
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			bad("a boolean")
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		f, ok := v.(float64)
		if !ok || f != math.Trunc(f) {
			bad("an integer")
			return
		}
		if reflect.Zero(t).OverflowInt(int64(f)) || f > math.MaxInt64 || f < math.MinInt64 {
			*errs = append(*errs, &FieldError{Path: path, Msg: fmt.Sprintf("%v is out of range", f)})
		}
	case reflect.Float32, reflect.Float64:
		if _, ok := v.(float64); !ok {
			bad("a number")
		}
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			bad("a mapping")
			return
		}
		fields := map[string]reflect.Type{}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			fields[name] = f.Type
		}
		for _, k := range sortedKeys(m) {
			ft, ok := fields[k]
			if !ok {
				*errs = append(*errs, &FieldError{Path: join(path, k), Msg: "unknown field"})
				continue
			}
			checkShape(m[k], ft, join(path, k), errs)
		}
	case reflect.Slice:
		s, ok := v.([]any)
		if !ok {
			bad("a list")
			return
		}
		for i, e := range s {
			checkShape(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs)
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			bad("a mapping")
			return
		}
		for _, k := range sortedKeys(m) {
			checkShape(m[k], t.Elem(), join(path, k), errs)
		}
	}
}

func jsonKind(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprintf("%T", v)
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// Default fills unset fields with their defaults. It is idempotent.
func (c *Config) Default() {
	r := &c.Router
	if r.Listen == "" {
		r.Listen = DefaultListen
	}
	setDur(&r.ScrapeInterval, DefaultScrapeInterval)
	if r.MaxBodyBytes == 0 {
		r.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if r.MaxAttempts == 0 {
		r.MaxAttempts = DefaultMaxAttempts
	}
	if r.SessionHeader == "" {
		r.SessionHeader = DefaultSessionHeader
	}
	setDur(&r.Timeouts.Connect, DefaultConnectTimeout)
	setDur(&r.Timeouts.ResponseHeader, DefaultResponseHeader)
	setDur(&r.Timeouts.FirstByte, DefaultFirstByte)
	setDur(&r.Timeouts.StreamIdle, DefaultStreamIdle)
	setDur(&r.Timeouts.RequestBody, DefaultRequestBody)
	setDur(&r.Timeouts.Scrape, DefaultScrapeTimeout)
	if r.Limits.MaxConnections == 0 {
		r.Limits.MaxConnections = DefaultMaxConnections
	}
	if r.Limits.MaxIdleConnections == 0 {
		r.Limits.MaxIdleConnections = DefaultMaxIdleConnections
	}
	setDur(&r.Limits.IdleTimeout, DefaultClientIdleTimeout)
	if r.Limits.MinBodyRate == 0 {
		r.Limits.MinBodyRate = DefaultMinBodyRate
	}
	setDur(&r.Limits.WriteStall, DefaultWriteStall)
	if r.DefaultOutputTokens == 0 {
		r.DefaultOutputTokens = DefaultOutputTokens
	}
	if r.Health.Path == "" {
		r.Health.Path = DefaultHealthPath
	}
	if r.Health.FailureThreshold == 0 {
		r.Health.FailureThreshold = DefaultFailureThreshold
	}
	if r.Health.SuccessThreshold == 0 {
		r.Health.SuccessThreshold = DefaultSuccessThreshold
	}
	if r.Health.Outlier.Consecutive5xx == 0 {
		r.Health.Outlier.Consecutive5xx = DefaultOutlierConsecutive5xx
	}
	if r.Health.Outlier.EjectionTime.Duration == 0 {
		r.Health.Outlier.EjectionTime.Duration = DefaultOutlierEjectionTime
	}
	for i := range c.Endpoints {
		e := &c.Endpoints[i]
		if e.Name == "" {
			if u, err := url.Parse(e.URL); err == nil && u.Host != "" {
				e.Name = u.Host
			}
		}
		if e.Pool == "" {
			e.Pool = e.Model
		}
		if e.Role == "" {
			e.Role = RoleBoth
		}
	}
	for i := range c.Routes {
		rt := &c.Routes[i]
		if rt.Profile == "" {
			rt.Profile = DefaultProfile
		}
		defaultTargets(rt.Targets)
		defaultTargets(rt.Fallback)
		for j := range rt.Rules {
			defaultTargets(rt.Rules[j].Targets)
			for k := range rt.Rules[j].Headers {
				if rt.Rules[j].Headers[k].Type == "" {
					rt.Rules[j].Headers[k].Type = MatchExact
				}
			}
		}
	}
	for i := range c.Pools {
		c.Pools[i].defaultPD()
	}
	for i := range c.Engines {
		e := &c.Engines[i]
		if e.Pool == "" {
			e.Pool = e.Model
		}
		if e.Replicas == 0 {
			e.Replicas = 1
		}
		if e.Profile == "" {
			e.Profile = DefaultEngineProfile
		}
		if e.Role == "" {
			e.Role = RoleBoth
		}
	}
	c.defaultPrefix()
	c.defaultAdmission()
}

func setDur(d *Duration, def time.Duration) {
	if d.Duration == 0 {
		d.Duration = def
	}
}

func defaultTargets(ts []TargetSpec) {
	for i := range ts {
		if ts[i].Weight == nil {
			w := int32(1)
			ts[i].Weight = &w
		}
	}
}

// Validate checks a defaulted configuration and returns every problem as
// Errors.
func (c *Config) Validate() error {
	var errs Errors
	add := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if c.APIVersion != APIVersion {
		add("apiVersion", "must be %q, got %q", APIVersion, c.APIVersion)
	}
	if c.Kind != Kind {
		add("kind", "must be %q, got %q", Kind, c.Kind)
	}
	if t := c.Tracing; t != nil {
		if p := t.Protocol; p != "" && p != "grpc" && p != "http/protobuf" {
			add("tracing.protocol", `must be "grpc" or "http/protobuf", got %q`, p)
		}
		if sr := t.SampleRatio; sr != nil && (*sr < 0 || *sr > 1) {
			add("tracing.sampleRatio", "must be between 0 and 1, got %g", *sr)
		}
	}
	r := &c.Router
	if _, _, err := net.SplitHostPort(r.Listen); err != nil {
		add("router.listen", "must be host:port: %v", err)
	}
	if a := r.AdminListen; a != "" && a != AdminListenOff {
		if _, _, err := net.SplitHostPort(a); err != nil {
			add("router.adminListen", "must be host:port or %q: %v", AdminListenOff, err)
		}
	}
	if r.Limits.MaxConnections < 0 {
		add("router.limits.maxConnections", "must be positive, got %d", r.Limits.MaxConnections)
	}
	if r.Limits.MaxIdleConnections < 0 {
		add("router.limits.maxIdleConnections", "must be positive, got %d", r.Limits.MaxIdleConnections)
	}
	if r.Limits.BufferBytes < 0 {
		add("router.limits.bufferBytes", "must be positive, got %d", r.Limits.BufferBytes)
	}
	if r.Limits.MinBodyRate < -1 {
		add("router.limits.minBodyRate", "must be positive, or -1 for off, got %d", r.Limits.MinBodyRate)
	}
	positive := func(path string, d Duration) {
		if d.Duration <= 0 {
			add(path, "must be positive, got %s", d.Duration)
		}
	}
	positive("router.scrapeInterval", r.ScrapeInterval)
	positive("router.timeouts.connect", r.Timeouts.Connect)
	positive("router.timeouts.responseHeader", r.Timeouts.ResponseHeader)
	positive("router.timeouts.firstByte", r.Timeouts.FirstByte)
	positive("router.timeouts.streamIdle", r.Timeouts.StreamIdle)
	positive("router.timeouts.requestBody", r.Timeouts.RequestBody)
	positive("router.timeouts.scrape", r.Timeouts.Scrape)
	positive("router.limits.idleTimeout", r.Limits.IdleTimeout)
	positive("router.limits.writeStall", r.Limits.WriteStall)
	if r.MaxBodyBytes < 0 {
		add("router.maxBodyBytes", "must be positive, got %d", r.MaxBodyBytes)
	}
	if r.MaxAttempts < 0 || r.MaxAttempts > 10 {
		add("router.maxAttempts", "must be between 1 and 10, got %d", r.MaxAttempts)
	}
	if r.Health.FailureThreshold < 0 {
		add("router.health.failureThreshold", "must be positive, got %d", r.Health.FailureThreshold)
	}
	if r.Health.SuccessThreshold < 0 {
		add("router.health.successThreshold", "must be positive, got %d", r.Health.SuccessThreshold)
	}
	if r.Health.Outlier.Consecutive5xx < -1 {
		add("router.health.outlier.consecutive5xx", "must be positive, or -1 for off, got %d", r.Health.Outlier.Consecutive5xx)
	}
	if r.Health.Outlier.EjectionTime.Duration < 0 {
		add("router.health.outlier.ejectionTime", "must not be negative, got %s", r.Health.Outlier.EjectionTime.Duration)
	}
	if p := r.Health.Path; p != HealthPathNone && !strings.HasPrefix(p, "/") {
		add("router.health.path", "must start with / (or be %q), got %q", HealthPathNone, p)
	}
	if r.DefaultOutputTokens < 0 {
		add("router.defaultOutputTokens", "must be positive, got %d", r.DefaultOutputTokens)
	}
	for _, name := range sortedKeys(r.Profiles) {
		p := r.Profiles[name]
		base := "router.profiles." + name
		for i, f := range p.Filters {
			checkPlugin(fmt.Sprintf("%s.filters[%d]", base, i), f, add)
		}
		for i, s := range p.Scorers {
			checkPlugin(fmt.Sprintf("%s.scorers[%d]", base, i), s, add)
			if s.Weight != nil && *s.Weight < 0 {
				add(fmt.Sprintf("%s.scorers[%d].weight", base, i), "must not be negative, got %v", *s.Weight)
			}
		}
		if p.Picker != nil {
			checkPlugin(base+".picker", *p.Picker, add)
		}
	}

	pools := map[string]bool{}
	names := map[string]int{}
	for i, e := range c.Endpoints {
		path := fmt.Sprintf("endpoints[%d]", i)
		u, err := url.Parse(e.URL)
		switch {
		case e.URL == "":
			add(path+".url", "required")
		case err != nil:
			add(path+".url", "%v", err)
		case u.Scheme != "http" && u.Scheme != "https":
			add(path+".url", "scheme must be http or https, got %q", u.Scheme)
		case u.Host == "":
			add(path+".url", "must have a host")
		}
		if e.Model == "" {
			add(path+".model", "required")
		}
		if e.Name != "" {
			if j, dup := names[e.Name]; dup {
				add(path+".name", "%q is also the name of endpoints[%d]", e.Name, j)
			}
			names[e.Name] = i
		}
		checkRole(path+".role", e.Role, add)
		pools[e.Pool] = true
	}
	for i, e := range c.Engines {
		path := fmt.Sprintf("engines[%d]", i)
		if e.Model == "" {
			add(path+".model", "required")
		}
		if e.Replicas < 0 || e.Replicas > 64 {
			add(path+".replicas", "must be between 1 and 64, got %d", e.Replicas)
		}
		if e.BasePort < 0 || e.BasePort > 65535 {
			add(path+".basePort", "must be a port number, got %d", e.BasePort)
		}
		checkRole(path+".role", e.Role, add)
		pools[e.Pool] = true
	}

	c.validatePools(pools, add)

	models := map[string]int{}
	for i, rt := range c.Routes {
		path := fmt.Sprintf("routes[%d]", i)
		if rt.Model == "" {
			add(path+".model", "required")
		} else if j, dup := models[rt.Model]; dup {
			add(path+".model", "%q is also the model of routes[%d]", rt.Model, j)
		}
		models[rt.Model] = i
		if len(rt.Targets) == 0 {
			add(path+".targets", "at least one target is required")
		}
		checkTargets(path+".targets", rt.Targets, pools, add)
		checkTargets(path+".fallback", rt.Fallback, pools, add)
		for j, rule := range rt.Rules {
			rp := fmt.Sprintf("%s.rules[%d]", path, j)
			if len(rule.Headers) == 0 {
				add(rp+".headers", "at least one header match is required")
			}
			for k, h := range rule.Headers {
				hp := fmt.Sprintf("%s.headers[%d]", rp, k)
				if h.Name == "" {
					add(hp+".name", "required")
				}
				switch h.Type {
				case MatchExact:
				case MatchRegularExpression:
					if _, err := regexp.Compile(h.Value); err != nil {
						add(hp+".value", "invalid regular expression: %v", err)
					}
				default:
					add(hp+".type", "must be %s or %s, got %q", MatchExact, MatchRegularExpression, h.Type)
				}
			}
			if len(rule.Targets) == 0 {
				add(rp+".targets", "at least one target is required")
			}
			checkTargets(rp+".targets", rule.Targets, pools, add)
		}
	}
	c.validatePrefix(add)
	c.validateAdmission(add)
	if len(errs) > 0 {
		return errs
	}
	return nil
}

func checkPlugin(path string, p PluginSpec, add func(string, string, ...any)) {
	if p.Type == "" {
		add(path+".type", "required")
	}
}

func checkRole(path, role string, add func(string, string, ...any)) {
	switch role {
	case RoleBoth, RolePrefill, RoleDecode:
	default:
		add(path, "must be both, prefill or decode, got %q", role)
	}
}

func checkTargets(path string, ts []TargetSpec, pools map[string]bool, add func(string, string, ...any)) {
	var sum int64
	for i, t := range ts {
		tp := fmt.Sprintf("%s[%d]", path, i)
		if t.Pool == "" {
			add(tp+".pool", "required")
		} else if !pools[t.Pool] && !DiscoveredPool(t.Pool) {
			add(tp+".pool", "no endpoint or engine has pool %q", t.Pool)
		}
		if t.Weight != nil {
			if *t.Weight < 0 {
				add(tp+".weight", "must not be negative, got %d", *t.Weight)
			} else {
				sum += int64(*t.Weight)
			}
		}
	}
	if len(ts) > 0 && sum == 0 {
		add(path, "weights must not all be zero")
	}
}

// DiscoveredPool reports whether a pool name has the form
// "<namespace>/<name>": the pool of a ModelServing's pods, found by
// `halyard router --kubernetes` at run time, so that no endpoint or engine
// of the file need have it.
func DiscoveredPool(p string) bool {
	ns, name, ok := strings.Cut(p, "/")
	return ok && ns != "" && name != "" && !strings.Contains(name, "/")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
