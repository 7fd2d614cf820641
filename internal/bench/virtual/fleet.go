package virtual

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/admission"
	"github.com/halyard-dev/halyard/internal/bench/stats"
	"github.com/halyard-dev/halyard/internal/bench/workload"
	"github.com/halyard-dev/halyard/internal/decision"
	"github.com/halyard-dev/halyard/internal/prefixtrack"
	"github.com/halyard-dev/halyard/internal/scheduling"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/simclock"
	"github.com/halyard-dev/halyard/internal/simulator"
	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// endpoint is a framework.Endpoint backed by a simulated engine: metrics as
// last scraped, in-flight counts exact.
type endpoint struct {
	md  framework.EndpointMetadata
	idx int
	eng *simulator.Engine
	// metrics is shared by every router's view of the engine: all scrape
	// the same engine. In-flight counts are each router's own.
	metrics *atomic.Pointer[framework.Metrics]
	// Load is this router's count of the requests it sent to the engine,
	// kept as the real router's endpoints keep theirs
	// (decision.Accountable, decision.Prefilling).
	decision.Load

	// Autoscaled fleets (autoscaling.go), on the first router's view:
	// the engine's life and every router's view of it.
	state   engineState
	created time.Time
	removed time.Time
	views   []*endpoint
}

// inFlight is the requests every router has in flight on the engine.
func (e *endpoint) inFlight() int64 {
	var n int64
	for _, v := range e.views {
		r, _ := v.InFlight()
		n += r
	}
	return n
}

func (e *endpoint) Metadata() *framework.EndpointMetadata { return &e.md }
func (e *endpoint) Metrics() *framework.Metrics           { return e.metrics.Load() }

// scrape publishes the engine's state as the router's scraper would.
func (e *endpoint) scrape() {
	s := e.eng.Snapshot()
	e.metrics.Store(&framework.Metrics{
		UpdateTime:         s.Time,
		RunningRequests:    s.Running,
		WaitingRequests:    s.Waiting,
		KVCacheUsage:       s.KVUsage,
		BlockSize:          s.BlockSize,
		NumBlocks:          s.NumBlocks,
		PrefixCacheQueries: float64(s.PrefixQueries),
		PrefixCacheHits:    float64(s.PrefixHits),
		MaxLoRA:            s.MaxLoras,
		RunningAdapters:    s.RunningLoRAs,
		WaitingAdapters:    s.WaitingLoRAs,
	})
}

// router is one router instance's view: its decision (package decision,
// as the router's) with its profile (with its own prefix indexes), and its
// endpoints (with its own in-flight counts).
type router struct {
	director *decision.Director
	profile  *scheduling.Profile
	cands    []framework.Endpoint
	// tracker is the router's precise index under a precise-* policy.
	tracker *prefixtrack.Tracker
	// adm is the router's admission stage (nil: none), gated on the
	// decision's capacity over this router's view.
	adm *admission.Admission
	// queue is the admission queue's config, whose capacity rule the
	// decision follows when adm is set.
	queue *config.QueueConfig
	// shed: admission's unmeetable is shed (the router's
	// router.admission.unmeetable).
	shed bool
}

// fleetRun is one policy at one arrival step on a fresh fleet.
type fleetRun struct {
	ctx      context.Context
	clock    *simclock.Virtual
	start    time.Time
	eps      []*endpoint  // the first router's; scraping and engine statistics
	routers  []*router    // request i goes through routers[i % len]
	pd       *pdFleet     // set for the "pd" policy (one planner, over eps)
	scaler   *fleetScaler // set under an autoscaling scenario
	oracle   *oracleState
	model    string
	chat     bool
	w        workload.Workload
	prev     []int
	deadline time.Duration // 0: none
	// tokenIDs: the scheduler gets the prompt's token ids (precise-*
	// policies), as a router configured with the engines' tokenizer does.
	tokenIDs bool
	// headers are every request's headers, as the router hands them to
	// the scheduler (the scenario's sloHeaders); nil for none. Read only.
	headers map[string]string

	records []stats.Record
	state   []reqState
	waiter  map[int]int // request -> the next turn waiting for it
	left    int         // requests neither finished nor given up
	next    int         // closed loop: next request to send
	closed  bool        // closed loop
	scrapes int
	// onPick, when set, is told each request's endpoint (tests).
	onPick func(i int, endpoint string)
	// tenantOf is each request's tenant (an index of tenants); nil: no
	// tenants. only, when not negative, is the one tenant whose requests
	// are sent (a run alone).
	tenantOf []int
	tenants  []string
	only     int
}

type reqState uint8

const (
	pending reqState = iota
	inFlight
	finished
	skipped
)

// promptIDs returns the token ids the engine sees for r (the completions
// prompt, or the chat rendering of the simulator's HTTP face), and the
// prompt text the router hands the scheduler (for chat, each message as
// "role: content\n", as internal/openai renders it). Like the router, the
// scheduler gets text, not token ids.
func promptIDs(r *workload.Request, chat bool) ([]uint32, []byte) {
	if !chat {
		text := r.Prompt()
		return tokenizer.Pseudo{}.Encode(text), []byte(text)
	}
	roles := make([]string, len(r.Messages))
	contents := make([]string, len(r.Messages))
	n := 0
	for i, m := range r.Messages {
		roles[i], contents[i] = m.Role, m.Content
		n += len(m.Role) + len(m.Content) + 3
	}
	routed := make([]byte, 0, n)
	for _, m := range r.Messages {
		routed = append(routed, m.Role...)
		routed = append(routed, ": "...)
		routed = append(routed, m.Content...)
		routed = append(routed, '\n')
	}
	return tokenizer.Pseudo{}.Encode(renderChat(roles, contents)), routed
}

// schedulingRequest is the scheduling request the router makes of a
// streamed request for model with prompt text (token ids ids) and
// max_tokens maxTokens: the text, or with tokenIDs (a router configured
// with the engines' tokenizer) the token ids.
func schedulingRequest(id, model string, text []byte, ids []uint32, maxTokens int, tokenIDs bool) *framework.Request {
	req := &framework.Request{
		ID:           id,
		Model:        model,
		TargetModel:  model,
		Prompt:       framework.Prompt{Text: text},
		PromptTokens: tokenizer.Pseudo{}.Count(string(text)),
		MaxTokens:    maxTokens,
		Stream:       true,
	}
	if tokenIDs {
		req.Prompt, req.PromptTokens = framework.Prompt{TokenIDs: ids}, len(ids)
	}
	return req
}

// arm schedules request i's arrival at offset at.
func (f *fleetRun) arm(i int, at time.Duration) {
	f.clock.AfterFunc(at, func() { f.arrive(i) })
}

// arrive is request i's arrival: it is sent now, or when its previous turn
// finishes.
func (f *fleetRun) arrive(i int) {
	if p := f.prev[i]; p >= 0 {
		switch f.state[p] {
		case pending, inFlight:
			f.waiter[p] = i
			return
		case skipped:
			f.skip(i)
			return
		}
		if !f.records[p].OK() {
			f.skip(i)
			return
		}
	}
	f.send(i)
}

func (f *fleetRun) skip(i int) {
	if f.state[i] == skipped || f.state[i] == finished {
		return
	}
	f.state[i] = skipped
	f.left--
	f.after(i)
}

// after runs what follows the end of request i: its waiting next turn, and
// the next request of a closed loop.
func (f *fleetRun) after(i int) {
	if nxt, ok := f.waiter[i]; ok {
		delete(f.waiter, i)
		f.arrive(nxt)
	}
	if f.closed && f.next < len(f.state) {
		j := f.next
		f.next++
		f.arrive(j)
	}
}

func (f *fleetRun) elapsed() time.Duration { return f.clock.Now().Sub(f.start) }

func (f *fleetRun) send(i int) {
	if f.deadline > 0 && f.elapsed() > f.deadline {
		f.skip(i)
		return
	}
	if f.only >= 0 && f.tenantOf[i] != f.only {
		f.skip(i)
		return
	}
	rt := f.routers[i%len(f.routers)]
	sentAt := f.clock.Now()
	if s := f.scaler; s != nil {
		if _, waited := s.waitedFrom[i]; !waited {
			s.arrived++
		}
		if len(rt.cands) == 0 { // no engine ready: the waiting room
			if _, ok := s.waitedFrom[i]; !ok {
				s.waitedFrom[i] = sentAt
				s.wait(i)
			}
			return
		}
		if at, ok := s.waitedFrom[i]; ok {
			sentAt = at
			delete(s.waitedFrom, i)
		}
	}
	wr := f.w.Request(i)
	ids, text := promptIDs(wr, f.chat)
	req := schedulingRequest(fmt.Sprintf("%s#%d", wr.ID, i), f.model, text, ids, wr.OutputTokens, f.tokenIDs)
	req.Headers = f.headers
	rec := &f.records[i]
	rec.ID = wr.ID
	rec.Start = sentAt.Sub(f.start)
	rec.PromptTokens = len(ids)
	f.state[i] = inFlight
	if f.tenantOf != nil {
		rec.Tenant = f.tenants[f.tenantOf[i]]
	}
	if rt.adm == nil {
		f.serve(i, rt, req, ids, sentAt, nil)
		return
	}
	// Admission as the router runs it, between routing and scheduling:
	// the tenant's budgets and the model's fair queue, gated on the
	// decision's capacity. The request's TTFT counts its wait. A
	// disaggregated pool's requests pass it too: the router admits before
	// it knows the pool is disaggregated.
	tn, _ := rt.adm.Tenant(rec.Tenant)
	if tn == nil {
		tn, _ = rt.adm.Authenticate("")
	}
	rt.adm.Submit(admission.Request{ID: req.ID, Tenant: tn, Model: f.model, PromptTokens: len(ids), OutputTokens: wr.OutputTokens},
		func(t *admission.Ticket, rej *admission.Rejection) {
			if rej != nil {
				f.refuse(i, sentAt, rej.Status(), string(rej.Reason))
				return
			}
			f.serve(i, rt, req, ids, sentAt, t)
		})
}

// serve schedules request i through rt's decision and sends it to the
// engine; ticket, when not nil, is its admission, settled from the
// engine's usage when it ends.
func (f *fleetRun) serve(i int, rt *router, req *framework.Request, ids []uint32, sentAt time.Time, ticket *admission.Ticket) {
	if f.pd != nil {
		f.servePD(i, rt, req, ids, sentAt, ticket)
		return
	}
	wr := f.w.Request(i)
	rec := &f.records[i]
	f.oracle.prompt = ids
	settle := settler(ticket)
	ep, call, d, err := rt.decide(f.ctx, req, ticket != nil)
	if d.Unmeetable != nil {
		f.shed(i, sentAt, ticket) // as the router's forward does
		return
	}
	if err != nil {
		settle(admission.Usage{Known: true})
		f.fail(i, "schedule: "+err.Error())
		return
	}
	if f.onPick != nil {
		f.onPick(i, ep.md.Name)
	}
	rt.director.Sent(f.ctx, call, &d)
	rec.Endpoint = ep.md.Name
	f.oracle.routed(i, ep, ids, wr.OutputTokens)

	scaler := f.scaler
	if scaler != nil {
		scaler.prefill += int64(len(ids))
	}
	first := func() {
		f.oracle.firstToken(i)
		rt.director.FirstByte(f.ctx, call, &d)
		if ticket != nil {
			ticket.FirstToken()
		}
		if scaler != nil {
			scaler.prefill -= int64(len(ids))
		}
	}
	sink := recordingSink(rec, sentAt, req.ID, first, func(out framework.Outcome) {
		f.oracle.done(i)
		rt.director.Done(f.ctx, call, &d, out)
		settle(admission.Usage{PromptTokens: out.PromptTokens, CompletionTokens: out.CompletionTokens, CachedTokens: out.CachedTokens, Known: true})
		f.state[i] = finished
		if scaler != nil {
			if rec.TTFT == 0 {
				scaler.prefill -= int64(len(ids))
			}
			scaler.tokens += int64(out.CompletionTokens)
			scaler.done = append(scaler.done, i)
			scaler.hit(ep.views[0], req, out)
			scaler.ended(ep.views[0])
		}
		f.left--
		f.after(i)
	})
	err = ep.eng.Submit(simulator.Request{
		ID: req.ID, Prompt: ids, MaxTokens: wr.OutputTokens, IgnoreEOS: true, Sink: sink,
	})
	if err != nil {
		f.oracle.done(i)
		rt.director.Done(f.ctx, call, &d, framework.Outcome{Err: err})
		settle(admission.Usage{Known: true})
		f.fail(i, "engine: "+shortErr(err))
	}
}

// decide is the router's decision for req (package decision, as in the
// router): the endpoint, and the call and decision the accounting hooks
// (Sent, FirstByte, Done) take.
func (rt *router) decide(ctx context.Context, req *framework.Request, admitted bool) (*endpoint, *decision.Call, decision.Decision, error) {
	call := rt.call(req, admitted)
	d, ok := rt.director.Decide(ctx, call, fleetTargets, nil)
	if !ok {
		return nil, nil, d, scheduling.ErrNoEndpoint
	}
	ep, ok := d.Endpoint.(*endpoint)
	if !ok {
		return nil, nil, d, errors.New("picked a foreign endpoint")
	}
	return ep, call, d, nil
}

// call is the decision call the router makes for req (its decisionCall):
// rt's profile and, for a request admission admitted, the queue's
// capacity rule and the unmeetable shed.
func (rt *router) call(req *framework.Request, admitted bool) *decision.Call {
	c := &decision.Call{Req: req, Profile: rt.profile}
	if admitted {
		c.Queue = rt.queue
		c.ShedUnmeetable = rt.shed
	}
	return c
}

// settler returns what settles ticket with the request's usage (nothing
// without admission).
func settler(ticket *admission.Ticket) func(admission.Usage) {
	return func(u admission.Usage) {
		if ticket != nil {
			ticket.Done(u)
		}
	}
}

// fleetTargets is the one target of a virtual route: the fleet (the
// endpoints' pool name does not matter, a router view has one pool).
var fleetTargets = []decision.Target{{Pool: "fleet"}}

// refuse records request i as refused by admission with status, for
// reason, sentAt its arrival.
func (f *fleetRun) refuse(i int, sentAt time.Time, status int, reason string) {
	f.records[i].Refused = true
	f.records[i].E2E = f.clock.Now().Sub(sentAt)
	f.fail(i, fmt.Sprintf("%d %s", status, reason))
}

// shed records admitted request i as handed back to admission because
// scheduling found no endpoint predicted to meet its objectives (the
// router's shedUnmeetable), sentAt its arrival.
func (f *fleetRun) shed(i int, sentAt time.Time, ticket *admission.Ticket) {
	f.refuse(i, sentAt, ticket.Shed(admission.ShedUnmeetable, "").Status(), string(admission.ShedUnmeetable))
}

func (f *fleetRun) fail(i int, msg string) {
	f.records[i].Err = msg
	f.state[i] = finished
	f.left--
	f.after(i)
}

// scrapeLoop refreshes every endpoint's metrics each interval while
// requests remain.
func (f *fleetRun) scrapeLoop(interval time.Duration) {
	for _, e := range f.eps {
		if e.state != engineGone {
			e.scrape()
		}
	}
	f.scrapes++
	for _, rt := range f.routers {
		if rt.adm != nil && rt.adm.Queue() != nil {
			rt.adm.Queue().Dispatch() // the router re-checks its queue each scrape
		}
	}
	if f.scrapes%10 == 0 {
		for _, rt := range f.routers {
			if rt.tracker != nil {
				rt.tracker.Evaluate(f.clock.Now()) // expires pending claims
			}
		}
	}
	if f.left > 0 {
		f.clock.AfterFunc(interval, func() { f.scrapeLoop(interval) })
	}
}

func shortErr(err error) string {
	s := err.Error()
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}

var _ framework.Endpoint = (*endpoint)(nil)

// recordingSink fills rec from an engine's tokens and result, timed from
// sentAt: TTFT, the inter-token gaps, E2E and the token counts; a request
// that was aborted or produced nothing is an error. first runs at the first
// token (nil: nothing), done at the end with the outcome the scheduler is
// told.
func recordingSink(rec *stats.Record, sentAt time.Time, id string, first func(), done func(framework.Outcome)) simulator.SinkFuncs {
	var last time.Time
	return simulator.SinkFuncs{
		OnToken: func(_ uint32, index int, at time.Time) {
			if index == 0 {
				rec.TTFT = at.Sub(sentAt)
				if first != nil {
					first()
				}
			} else {
				rec.ITL = append(rec.ITL, at.Sub(last))
			}
			last = at
		},
		OnDone: func(r simulator.Result) {
			rec.E2E = r.Finished.Sub(sentAt)
			rec.OutputTokens = r.OutputTokens
			rec.CachedTokens = r.CachedTokens
			out := framework.Outcome{PromptTokens: r.PromptTokens, CachedTokens: r.CachedTokens, CompletionTokens: r.OutputTokens}
			if r.Reason == simulator.FinishAbort || r.OutputTokens == 0 {
				rec.Err = "aborted"
				out.Err = fmt.Errorf("request %s aborted", id)
			}
			done(out)
		},
	}
}
