package admission

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/admission/redistest"
)

// storeCase is one step against a store: reserve tokens (settle < 0) or
// settle the reservation of step settle with used tokens.
type storeStep struct {
	at      time.Duration
	tokens  int64
	settle  int
	used    int64
	wantOK  bool
	wantDim Dimension
	// wantRemaining is the tokens left after a reservation.
	wantRemaining int64
}

var budgetScopes = []Scope{
	{Key: "t:a", Name: "tenant", Limits: Limits{RequestsPerMinute: 3, TokensPerMinute: 600, Concurrency: 2}},
	{Key: "m:a:m", Name: "model m", Limits: Limits{TokensPerMinute: 1000}},
}

var budgetSteps = []storeStep{
	{at: 0, tokens: 300, settle: -1, wantOK: true, wantRemaining: 300},
	{at: 0, tokens: 300, settle: -1, wantOK: true, wantRemaining: 0},
	// Concurrency 2 is taken.
	{at: 0, tokens: 1, settle: -1, wantOK: false, wantDim: DimConcurrency},
	// The first used 100 of its 300: 200 come back.
	{at: 0, settle: 0, used: 100},
	{at: 0, tokens: 300, settle: -1, wantOK: false, wantDim: DimTokens},
	{at: 0, tokens: 200, settle: -1, wantOK: true, wantRemaining: 0},
	{at: 0, settle: 1, used: 300},
	{at: 0, settle: 5, used: 200},
	// Three requests were taken within the minute.
	{at: time.Second, tokens: 1, settle: -1, wantOK: false, wantDim: DimRequests},
	// After 20 s one request and 200 tokens have come back.
	{at: 21 * time.Second, tokens: 150, settle: -1, wantOK: true, wantRemaining: 60},
}

func runBudgetSteps(t *testing.T, s Store) {
	t.Helper()
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	var res []*Reservation
	for i, st := range budgetSteps {
		now := t0.Add(st.at)
		if st.settle >= 0 {
			if err := s.Settle(ctx, now, res[st.settle], st.used); err != nil {
				t.Fatalf("step %d: settle: %v", i, err)
			}
			res = append(res, nil)
			continue
		}
		r := &Reservation{ID: "r" + string(rune('a'+i)), Scopes: budgetScopes, Tokens: st.tokens}
		v, err := s.Reserve(ctx, now, r)
		if err != nil {
			t.Fatalf("step %d: reserve: %v", i, err)
		}
		res = append(res, r)
		if v.OK != st.wantOK || v.Dim != st.wantDim {
			t.Fatalf("step %d: ok=%v dim=%q, want ok=%v dim=%q", i, v.OK, v.Dim, st.wantOK, st.wantDim)
		}
		if !v.OK && v.RetryAfter <= 0 {
			t.Errorf("step %d: refused without Retry-After", i)
		}
		if v.OK && v.Rate.RemainingTokens != st.wantRemaining {
			t.Errorf("step %d: remaining tokens %d, want %d", i, v.Rate.RemainingTokens, st.wantRemaining)
		}
		if v.Rate.LimitTokens != 600 || v.Rate.LimitRequests != 3 {
			t.Errorf("step %d: limits %d/%d, want the tightest 600 tokens, 3 requests", i, v.Rate.LimitTokens, v.Rate.LimitRequests)
		}
	}
}

func TestLocalStoreReservesAndSettles(t *testing.T) {
	runBudgetSteps(t, &LocalStore{})
}

func TestRedisStoreMatchesLocal(t *testing.T) {
	srv := redistest.Start(t)
	s, err := NewRedisStore(srv.URL(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	runBudgetSteps(t, s)
}

func TestLocalFractionScalesLimits(t *testing.T) {
	s := &LocalStore{Fraction: 0.5}
	sc := []Scope{{Key: "t:a", Limits: Limits{RequestsPerMinute: 4}}}
	now := time.Unix(0, 0)
	ok := 0
	for i := 0; i < 4; i++ {
		v, _ := s.Reserve(context.Background(), now, &Reservation{Scopes: sc})
		if v.OK {
			ok++
		}
	}
	if ok != 2 {
		t.Errorf("%d of 4 admitted at half of 4 per minute; want 2", ok)
	}
}

func TestOverBudgetRejectionAndRefundThroughAdmission(t *testing.T) {
	a := newTestAdmission(t, `
tenants:
  - name: a
    limits: {tokensPerMinute: 1000}
`, nil, nil)
	tn, _ := a.Tenant("a")
	req := Request{Tenant: tn, Model: "m", PromptTokens: 100, OutputTokens: 500}
	t1, rej := a.Admit(context.Background(), req)
	if rej != nil {
		t.Fatal(rej.Message)
	}
	if t1.Rate().RemainingTokens != 400 {
		t.Errorf("remaining %d, want 400", t1.Rate().RemainingTokens)
	}
	if _, rej := a.Admit(context.Background(), req); rej == nil || rej.Status() != 429 || rej.RetryAfter <= 0 {
		t.Fatalf("second request: %+v; want 429 with Retry-After", rej)
	}
	// 100 prompt + 50 generated: 450 of 600 come back, 850 are free.
	t1.Done(Usage{PromptTokens: 100, CompletionTokens: 50, Known: true})
	t2, rej := a.Admit(context.Background(), req)
	if rej != nil {
		t.Fatalf("after the refund: %s", rej.Message)
	}
	if got := t2.Rate().RemainingTokens; got < 250 || got > 251 {
		t.Errorf("remaining %d, want 250 (850-600, plus a few ms of refill)", got)
	}
}

func TestStoreDownFallsBackOrRejects(t *testing.T) {
	for _, mode := range []string{"local", "reject"} {
		t.Run(mode, func(t *testing.T) {
			// A port nothing listens on: every round trip fails fast.
			a := newTestAdmission(t, `
router:
  admission:
    store: redis://127.0.0.1:1/0
    storeTimeout: 20ms
    onStoreError: `+mode+`
    localFraction: 0.5
    queue: {disabled: true}
tenants:
  - name: a
    limits: {requestsPerMinute: 4}
`, nil, nil)
			tn, _ := a.Tenant("a")
			admitted, status := 0, 0
			for i := 0; i < 4; i++ {
				tk, rej := a.Admit(context.Background(), Request{Tenant: tn, Model: "m"})
				if rej == nil {
					admitted++
					tk.Done(Usage{})
				} else {
					status = rej.Status()
				}
			}
			switch mode {
			case "local":
				if admitted != 2 || status != 429 {
					t.Errorf("admitted %d (last refusal %d); want 2 (half of 4) then 429", admitted, status)
				}
			case "reject":
				if admitted != 0 || status != 503 {
					t.Errorf("admitted %d (last refusal %d); want 0 and 503", admitted, status)
				}
			}
		})
	}
}

// roundTrips counts the commands a go-redis client sends (a pipeline
// counts once: one round trip).
type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// TestOneRedisRoundTripPerAdmission: with tenant and model budgets of
// every kind shared through a real redis-server, admitting a request is
// one round trip (one EVALSHA) and settling it one more, counted both by
// the client (a go-redis hook) and by the server (INFO commandstats).
func TestOneRedisRoundTripPerAdmission(t *testing.T) {
	srv := redistest.Start(t)
	// Generous timeouts: this test counts round trips; a slow one (a
	// loaded machine, -race) must not turn into the local fallback.
	store, err := NewRedisStore(srv.URL(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(`apiVersion: config.halyard.dev/v1alpha1
kind: Config
router:
  admission: {store: "` + srv.URL() + `", storeTimeout: 10s, queue: {disabled: true}}
tenants:
  - name: team-a
    limits: {requestsPerMinute: 100000, tokensPerMinute: 100000000, concurrency: 100}
    modelLimits: {llama: {requestsPerMinute: 100000, tokensPerMinute: 100000000, concurrency: 100}}
`))
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{Config: cfg, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	tn, _ := a.Tenant("team-a")
	ctx := context.Background()
	admit := func() *Ticket {
		tk, rej := a.Admit(ctx, Request{Tenant: tn, Model: "llama", PromptTokens: 100, OutputTokens: 50})
		if rej != nil {
			t.Fatal(rej.Message)
		}
		return tk
	}
	// The first request opens the connection, which loads the scripts:
	// even the first EVALSHA finds its script (no NOSCRIPT, no EVAL).
	admit().Done(Usage{PromptTokens: 100, CompletionTokens: 10, Known: true})
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer admin.Close()
	hook := &roundTrips{}
	store.Client.AddHook(hook)
	const n = 25
	for i := range n {
		before := hook.n.Load()
		tk := admit()
		if got := hook.n.Load() - before; got != 1 {
			t.Fatalf("request %d: admission took %d round trips, want 1", i, got)
		}
		tk.Done(Usage{PromptTokens: 100, CompletionTokens: 10, Known: true})
		if got := hook.n.Load() - before; got != 2 {
			t.Fatalf("request %d: admission and settlement took %d round trips, want 2", i, got)
		}
	}
	info, err := admin.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]int{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		c, _, _ := strings.Cut(rest, ",")
		calls[strings.TrimPrefix(name, "cmdstat_")], _ = strconv.Atoi(c)
	}
	if calls["evalsha"] != 2*n+2 || calls["eval"] != 0 {
		t.Errorf("server counted %v; want evalsha=%d (one per admission, one per settlement) and no eval", calls, 2*n+2)
	}
}
