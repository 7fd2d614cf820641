package admission

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/simclock"
)

// fixedGate is a Gate with settable room.
type fixedGate struct{ slots, endpoints int }

func (g *fixedGate) Capacity(string) (int, int) { return g.slots, g.endpoints }

func newTestAdmission(t *testing.T, doc string, gate Gate, clock simclock.Clock) *Admission {
	t.Helper()
	cfg, err := config.Parse([]byte("apiVersion: config.halyard.dev/v1alpha1\nkind: Config\n" + doc))
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{Config: cfg, Gate: gate, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

const queueDoc = `
router:
  admission:
    queue: {maxPerModel: 4, maxWait: 10s, noEndpointWait: 2s}
tenants:
  - {name: heavy}
  - {name: light}
  - {name: vip, priority: critical}
  - {name: cheap, priority: sheddable}
`

// outcome records how a submitted request ended.
type outcome struct {
	name   string
	ticket *Ticket
	rej    *Rejection
}

func submit(a *Admission, got *[]outcome, name, tenant string, tokens int) {
	tn, _ := a.Tenant(tenant)
	a.Submit(Request{Tenant: tn, Model: "m", PromptTokens: tokens, OutputTokens: 0}, func(t *Ticket, r *Rejection) {
		*got = append(*got, outcome{name: name, ticket: t, rej: r})
	})
}

func names(os []outcome) []string {
	var out []string
	for _, o := range os {
		s := o.name
		if o.rej != nil {
			s += ":" + string(o.rej.Reason)
		}
		out = append(out, s)
	}
	return out
}

func TestQueueServesTheTenantWithTheLowestCounterFirst(t *testing.T) {
	clock := simclock.NewVirtual(time.Unix(0, 0))
	gate := &fixedGate{slots: 1, endpoints: 1}
	a := newTestAdmission(t, queueDoc, gate, clock)
	var got []outcome
	submit(a, &got, "h0", "heavy", 100) // admitted at once
	submit(a, &got, "h1", "heavy", 100)
	submit(a, &got, "h2", "heavy", 100)
	submit(a, &got, "l0", "light", 100)
	if diff := cmp.Diff([]string{"h0"}, names(got)); diff != "" {
		t.Fatalf("admitted at once (-want +got):\n%s", diff)
	}
	// Each completion frees the one slot. Light is lifted to heavy's
	// counter (100, h0's service) when it arrives: no credit for idling.
	// The tie goes to the tenant with fewer waiting (light).
	for i := 0; i < 3; i++ {
		got[len(got)-1].ticket.Done(Usage{PromptTokens: 100, Known: true})
	}
	if diff := cmp.Diff([]string{"h0", "l0", "h1", "h2"}, names(got)); diff != "" {
		t.Fatalf("service order (-want +got):\n%s", diff)
	}
	if got[1].ticket.position != 3 || !got[1].ticket.queued {
		t.Errorf("light's queue position = %d, queued %v; want 3, true", got[1].ticket.position, got[1].ticket.queued)
	}
}

func TestQueueWeightsShareService(t *testing.T) {
	clock := simclock.NewVirtual(time.Unix(0, 0))
	gate := &fixedGate{slots: 1, endpoints: 1}
	a := newTestAdmission(t, `
router:
  admission:
    queue: {maxPerModel: 100}
tenants:
  - {name: a, weight: 3}
  - {name: b, weight: 1}
`, gate, clock)
	var got []outcome
	submit(a, &got, "first", "b", 10)
	for i := 0; i < 20; i++ {
		submit(a, &got, "a", "a", 10)
		submit(a, &got, "b", "b", 10)
	}
	for i := 0; i < 16; i++ {
		got[len(got)-1].ticket.Done(Usage{PromptTokens: 10, Known: true})
	}
	served := map[string]int{}
	for _, o := range got[1:] {
		served[o.name]++
	}
	// Weight 3 against 1: a gets three of every four slots, within one.
	if served["a"] < 11 || served["a"] > 13 || served["a"]+served["b"] != 16 {
		t.Errorf("served %v; want a:12 b:4 within one", served)
	}
}

func TestQueuePrioritiesAndShedding(t *testing.T) {
	clock := simclock.NewVirtual(time.Unix(0, 0))
	gate := &fixedGate{slots: 1, endpoints: 1}
	a := newTestAdmission(t, queueDoc, gate, clock)
	var got []outcome
	submit(a, &got, "run", "heavy", 1)
	submit(a, &got, "c1", "cheap", 1)
	submit(a, &got, "h1", "heavy", 1)
	submit(a, &got, "c2", "cheap", 1)
	submit(a, &got, "h2", "heavy", 1)
	// The queue holds 4: a fifth (critical) sheds the newest sheddable.
	submit(a, &got, "v1", "vip", 1)
	if diff := cmp.Diff([]string{"run", "c2:shed"}, names(got)); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	if !strings.Contains(got[1].rej.Explain, "shed=queue_full") {
		t.Errorf("explanation %q does not say why", got[1].rej.Explain)
	}
	for i := 0; i < 4; i++ {
		var last *Ticket
		for _, o := range got {
			if o.ticket != nil {
				last = o.ticket
			}
		}
		last.Done(Usage{})
	}
	if diff := cmp.Diff([]string{"run", "c2:shed", "v1", "h1", "h2", "c1"}, names(got)); diff != "" {
		t.Fatalf("critical first, sheddable last (-want +got):\n%s", diff)
	}
}

func TestQueueWaitIsBounded(t *testing.T) {
	clock := simclock.NewVirtual(time.Unix(0, 0))
	gate := &fixedGate{slots: 0, endpoints: 1}
	a := newTestAdmission(t, queueDoc, gate, clock)
	var got []outcome
	submit(a, &got, "w", "heavy", 1)
	clock.Advance(9 * time.Second)
	if len(got) != 0 {
		t.Fatalf("shed before maxWait: %v", names(got))
	}
	clock.Advance(time.Second)
	if diff := cmp.Diff([]string{"w:shed"}, names(got)); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	if s := got[0].rej.Status(); s != 429 {
		t.Errorf("status %d, want 429", s)
	}
	if a.Queue().Len("m") != 0 {
		t.Errorf("queue length %d after the shed", a.Queue().Len("m"))
	}
}

func TestQueueNoEndpointWaitsThen503(t *testing.T) {
	clock := simclock.NewVirtual(time.Unix(0, 0))
	gate := &fixedGate{slots: -1, endpoints: 0}
	a := newTestAdmission(t, queueDoc, gate, clock)
	var got []outcome
	submit(a, &got, "a", "heavy", 1)
	submit(a, &got, "b", "heavy", 1)
	clock.Advance(time.Second)
	// An endpoint appears: the first re-check admits both.
	gate.endpoints = 1
	a.Queue().Dispatch()
	if diff := cmp.Diff([]string{"a", "b"}, names(got)); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	gate.endpoints = 0
	submit(a, &got, "c", "heavy", 1)
	clock.Advance(2 * time.Second)
	if diff := cmp.Diff([]string{"a", "b", "c:no_endpoint"}, names(got)); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	if s := got[2].rej.Status(); s != 503 {
		t.Errorf("status %d, want 503", s)
	}
}

func TestPriorityHeaderIsBoundedByTheTenant(t *testing.T) {
	tn := newTenant(config.TenantSpec{Name: "x", Priority: "standard", MaxPriority: "standard"})
	for asked, want := range map[string]Priority{"": Standard, "sheddable": Sheddable, "critical": Standard, "bogus": Standard} {
		if got := tn.priorityFor(asked); got != want {
			t.Errorf("priorityFor(%q) = %v, want %v", asked, got, want)
		}
	}
}

// TestReserveAdmitsAnUnderShareTenantAtOnce: a heavy tenant fills the
// model's slots but the reserve; a light tenant (under its share) is
// admitted on arrival into the reserve while heavy's next request waits.
func TestReserveAdmitsAnUnderShareTenantAtOnce(t *testing.T) {
	clock := simclock.NewVirtual(time.Unix(0, 0))
	gate := &fixedGate{slots: 20, endpoints: 1}
	a := newTestAdmission(t, `
router:
  admission:
    queue: {maxPerModel: 100, reserve: 0.1}
tenants:
  - {name: heavy}
  - {name: light}
`, gate, clock)
	var got []outcome
	for range 20 {
		submit(a, &got, "h", "heavy", 10) // heavy alone: its share is every slot
	}
	if len(got) != 20 {
		t.Fatalf("heavy alone got %d of 20 slots", len(got))
	}
	got[0].ticket.Done(Usage{})
	got[1].ticket.Done(Usage{})
	got = got[2:]
	submit(a, &got, "l", "light", 10) // light arrives: the slots are its too
	submit(a, &got, "h", "heavy", 10)
	submit(a, &got, "l", "light", 10)
	if diff := cmp.Diff([]string{"h", "l", "l"}, names(got[17:])); diff != "" {
		t.Fatalf("after 18 heavy in flight (-want +got):\n%s", diff)
	}
	if n := a.Queue().Len("m"); n != 1 {
		t.Errorf("%d waiting, want heavy's one", n)
	}
	// 20 in flight. Heavy (over its share of 10) is admitted only below
	// 20-3 slots (10% of 20 is 2, but the reserve holds at least 3 slots):
	// not at 19, 18 nor 17, at 16.
	for i := range 3 {
		got[i].ticket.Done(Usage{})
		if n := a.Queue().Len("m"); n != 1 {
			t.Errorf("heavy admitted into the reserve at %d in flight", 19-i)
		}
	}
	got[3].ticket.Done(Usage{})
	if n := a.Queue().Len("m"); n != 0 {
		t.Errorf("heavy not admitted below the reserve: %d waiting", n)
	}
}

// TestRefusedOnArrivalWhenTheWaitWouldBeTooLong: once the model's
// completion rate is known, a request whose expected wait exceeds maxWait
// (with its margin) gets its 429 at once, not after waiting maxWait.
func TestRefusedOnArrivalWhenTheWaitWouldBeTooLong(t *testing.T) {
	clock := simclock.NewVirtual(time.Unix(0, 0))
	gate := &fixedGate{slots: 10, endpoints: 1}
	a := newTestAdmission(t, `
router:
  admission:
    queue: {maxPerModel: 1000, maxWait: 2s}
tenants:
  - {name: heavy}
`, gate, clock)
	var got []outcome
	for range 10 {
		submit(a, &got, "h", "heavy", 10)
	}
	// Ten completions a second for 10 seconds: the rate is known.
	for i := 0; i < 100; i++ {
		clock.Advance(100 * time.Millisecond)
		got[len(got)-10].ticket.Done(Usage{})
		submit(a, &got, "h", "heavy", 10)
	}
	// 2s × 0.3 margin × 10/s: about 6 may wait; the rest are refused now.
	before := len(got)
	for range 20 {
		submit(a, &got, "w", "heavy", 10)
	}
	var refused []string
	for _, o := range got[before:] {
		if o.rej != nil {
			if !strings.Contains(o.rej.Explain, "shed=expected_wait") || o.rej.Status() != 429 {
				t.Errorf("refusal %q (status %d), want 429 shed=expected_wait", o.rej.Explain, o.rej.Status())
			}
			refused = append(refused, o.name)
		}
	}
	if w := a.Queue().Len("m"); len(refused) < 12 || w > 8 || w+len(refused) != 20 {
		t.Errorf("%d refused on arrival, %d waiting; want about 14 and 6", len(refused), w)
	}
}

// TestWaitingRoomShowsDemand: requests for a model with no endpoint wait
// (bounded by noEndpointWait), the hook hears of each, and Demand counts
// them until an endpoint appears.
func TestWaitingRoomShowsDemand(t *testing.T) {
	clock := simclock.NewVirtual(time.Unix(0, 0))
	gate := &fixedGate{slots: -1, endpoints: 0}
	a := newTestAdmission(t, queueDoc, gate, clock)
	var heard []string
	a.Queue().OnWaitingRoom = func(model string) { heard = append(heard, model) }
	var got []outcome
	submit(a, &got, "a", "heavy", 1)
	submit(a, &got, "b", "light", 1)
	if diff := cmp.Diff(map[string]int{"m": 2}, a.Queue().Demand()); diff != "" {
		t.Errorf("demand (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"m", "m"}, heard); diff != "" {
		t.Errorf("hook (-want +got):\n%s", diff)
	}
	gate.endpoints = 1
	a.Queue().Dispatch()
	if len(got) != 2 || len(a.Queue().Demand()) != 0 {
		t.Errorf("after an endpoint appeared: %v admitted, demand %v", names(got), a.Queue().Demand())
	}
}

// TestRateEstimateRestartsAfterIdle: a model idle for a while then busy
// again does not refuse its first queued requests on a rate decayed to
// nothing while it was idle.
func TestRateEstimateRestartsAfterIdle(t *testing.T) {
	clock := simclock.NewVirtual(time.Unix(0, 0))
	gate := &fixedGate{slots: 2, endpoints: 1}
	a := newTestAdmission(t, `
router:
  admission:
    queue: {maxPerModel: 100, maxWait: 2s}
tenants:
  - {name: heavy}
`, gate, clock)
	var got []outcome
	for range 40 { // a busy minute: the rate is known
		submit(a, &got, "h", "heavy", 10)
		submit(a, &got, "h", "heavy", 10)
		clock.Advance(time.Second)
		for _, o := range got[len(got)-2:] {
			if o.ticket != nil {
				o.ticket.Done(Usage{})
			}
		}
	}
	clock.Advance(10 * time.Minute) // idle
	got = got[:0]
	for range 3 {
		submit(a, &got, "h", "heavy", 10)
	}
	if diff := cmp.Diff([]string{"h", "h"}, names(got)); diff != "" || a.Queue().Len("m") != 1 {
		t.Errorf("after idle (-want +got):\n%s\nwaiting %d, want 1 (queued, not refused)", diff, a.Queue().Len("m"))
	}
}

// reserveDoc is two tenants of equal weight and a reserve of 10 %.
const reserveDoc = `
router:
  admission:
    queue: {maxPerModel: 100, maxWait: 60s, reserve: 0.1}
tenants:
  - {name: heavy}
  - {name: light}
`

// queueOn is an admission stage of doc on a virtual clock at 0, gated by
// a fixedGate of slots (one endpoint).
func queueOn(t *testing.T, doc string, slots int) (*Admission, *fixedGate, *simclock.Virtual) {
	t.Helper()
	clock := simclock.NewVirtual(time.Unix(0, 0))
	gate := &fixedGate{slots: slots, endpoints: 1}
	return newTestAdmission(t, doc, gate, clock), gate, clock
}

// TestReserveHeldWhileTheLightTenantIsBetweenRequests: a tenant admitted
// within shareTau still counts in the shares, so a heavy tenant alone for
// a moment stays out of the reserve; once the light tenant has been gone
// shareTau, the heavy one's share is every slot.
func TestReserveHeldWhileTheLightTenantIsBetweenRequests(t *testing.T) {
	a, _, clock := queueOn(t, reserveDoc, 20)
	var got []outcome
	submit(a, &got, "l", "light", 10)
	got[0].ticket.Done(Usage{})
	clock.Advance(time.Second)
	for range 20 {
		submit(a, &got, "h", "heavy", 10)
	}
	if n := a.Queue().InFlight("m"); n != 17 {
		t.Fatalf("heavy holds %d slots a second after light's request, want 17 (20 less the reserve of 3)", n)
	}
	clock.Advance(shareTau)
	a.Queue().Dispatch()
	if n := a.Queue().InFlight("m"); n != 20 {
		t.Errorf("heavy holds %d slots after light was gone %s, want all 20", n, shareTau)
	}
}

// TestUnderShareOfServiceTakesTheReserve: a light tenant whose long
// requests hold half the slots, but whose recent service is a sliver of
// the heavy tenant's, is still under its share and may take the reserve.
func TestUnderShareOfServiceTakesTheReserve(t *testing.T) {
	a, _, _ := queueOn(t, reserveDoc, 20)
	var got []outcome
	for range 7 {
		submit(a, &got, "h", "heavy", 1000)
	}
	for range 11 {
		submit(a, &got, "l", "light", 10)
	}
	// Light holds 10, its share of the slots, and one more: 18 in flight,
	// past the 17 an over-share tenant may fill.
	if n, w := a.Queue().InFlight("m"), a.Queue().Len("m"); n != 18 || w != 0 {
		t.Errorf("%d in flight, %d waiting; want light's 11th admitted into the reserve (18, 0)", n, w)
	}
}

// TestFirstTokenReleasesTheQueue: a prefill that ends gives its endpoint
// room again (queue.prefillTokens), and the ticket's FirstToken re-checks
// the queue at once rather than at the next completion or tick.
func TestFirstTokenReleasesTheQueue(t *testing.T) {
	a, gate, _ := queueOn(t, queueDoc, 1)
	var got []outcome
	submit(a, &got, "h0", "heavy", 100)
	submit(a, &got, "h1", "heavy", 100)
	if diff := cmp.Diff([]string{"h0"}, names(got)); diff != "" {
		t.Fatalf("admitted (-want +got):\n%s", diff)
	}
	gate.slots = 2 // h0's prefill ended: its endpoint has room again
	got[0].ticket.FirstToken()
	if diff := cmp.Diff([]string{"h0", "h1"}, names(got)); diff != "" {
		t.Errorf("after h0's first token (-want +got):\n%s", diff)
	}
}

// TestQueueMetricsPerTenant: queue length and wait are per model, tenant
// and priority, as are the shed counts.
func TestQueueMetricsPerTenant(t *testing.T) {
	a, _, clock := queueOn(t, queueDoc, 1)
	var got []outcome
	submit(a, &got, "h0", "heavy", 100)
	submit(a, &got, "h1", "heavy", 100)
	submit(a, &got, "h2", "heavy", 100)
	submit(a, &got, "l0", "light", 100)
	m := a.metrics
	for _, c := range []struct {
		tenant string
		want   float64
	}{{"heavy", 2}, {"light", 1}} {
		if n := testutil.ToFloat64(m.QueueLength.WithLabelValues("m", c.tenant, "standard")); n != c.want {
			t.Errorf("queue length of %s = %v, want %v", c.tenant, n, c.want)
		}
	}
	clock.Advance(250 * time.Millisecond)
	got[0].ticket.Done(Usage{}) // light's l0 goes next (lowest counter), having waited 250ms
	if n := testutil.ToFloat64(m.QueueLength.WithLabelValues("m", "light", "standard")); n != 0 {
		t.Errorf("light's queue length after its admission = %v", n)
	}
	if n := testutil.CollectAndCount(m.QueueWait, "halyard_admission_queue_wait_seconds"); n != 1 {
		t.Errorf("%d wait series, want light's only", n)
	}
	var hist dto.Metric
	if err := m.QueueWait.WithLabelValues("m", "light", "standard").(prometheus.Histogram).Write(&hist); err != nil {
		t.Fatal(err)
	}
	if h := hist.GetHistogram(); h.GetSampleCount() != 1 || h.GetSampleSum() != 0.25 {
		t.Errorf("light's wait: %d samples, sum %vs; want one of 0.25s", h.GetSampleCount(), h.GetSampleSum())
	}
}

// TestNextInLineUnderShareWaits: when the completion rate says even the
// next free slot is likely to come after maxWait, an over-share tenant's
// arrival is refused at once, but an under-share tenant's next-in-line
// request waits for that slot.
func TestNextInLineUnderShareWaits(t *testing.T) {
	a, _, clock := queueOn(t, `
router:
  admission:
    queue: {maxPerModel: 1000, maxWait: 2s}
tenants:
  - {name: heavy}
  - {name: light}
`, 10)
	var got []outcome
	for range 10 {
		submit(a, &got, "h", "heavy", 10)
	}
	// One completion every 2 s: the next one comes after maxWait with
	// probability e^-1.
	for range 20 {
		clock.Advance(2 * time.Second)
		got[len(got)-10].ticket.Done(Usage{})
		submit(a, &got, "h", "heavy", 10)
	}
	before := len(got)
	submit(a, &got, "w", "heavy", 10)
	submit(a, &got, "l", "light", 10)
	if diff := cmp.Diff([]string{"w:shed"}, names(got[before:])); diff != "" {
		t.Errorf("arrivals (-want +got):\n%s", diff)
	}
	if n := a.Queue().Len("m"); n != 1 {
		t.Errorf("%d waiting, want light's request", n)
	}
}
