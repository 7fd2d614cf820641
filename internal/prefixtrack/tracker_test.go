package prefixtrack

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/halyard-dev/halyard/internal/kvevents"
	"github.com/halyard-dev/halyard/internal/prefixindex"
	"github.com/halyard-dev/halyard/internal/simulator/vllmapi"
	"github.com/halyard-dev/halyard/internal/tokenizer"
)

const model = "llama-3-8b"

// waitFor polls cond until it holds or the deadline passes; it waits on a
// condition, it does not stand in for one.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startEngine serves a simulated engine with KV events on real sockets.
func startEngine(t *testing.T, blocks int) *vllmapi.Instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	inst, err := vllmapi.Start(ctx, vllmapi.Spec{
		Listen: "127.0.0.1:0", Model: model, Profile: "zero", NumGPUBlocks: blocks,
		KVEvents: "tcp://127.0.0.1:0", Name: "e0",
	}, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = inst.Wait()
	})
	return inst
}

// promptText returns text of n pseudo-tokens, distinct per salt.
func promptText(n int, salt uint32) string {
	ids := make([]uint32, n)
	for i := range ids {
		ids[i] = (uint32(i)*7919 + salt*104729) % 20000
	}
	return tokenizer.Pseudo{}.Decode(ids)
}

func complete(t *testing.T, inst *vllmapi.Instance, prompt string) {
	t.Helper()
	body := fmt.Sprintf(`{"model":%q,"prompt":%q,"max_tokens":1}`, model, prompt)
	resp, err := http.Post(inst.URL+"/v1/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("completion: %d", resp.StatusCode)
	}
}

// rig is a tracker following one engine.
type rig struct {
	t      *testing.T
	inst   *vllmapi.Instance
	tr     *Tracker
	reg    *prometheus.Registry
	prompt []string
}

func newRig(t *testing.T, inst *vllmapi.Instance, src Source, mutate func(*Config)) *rig {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := Config{Registerer: reg, Logger: testLogger(t), ReplayTimeout: 5 * time.Second}
	if mutate != nil {
		mutate(&cfg)
	}
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg.MustRegister(tr)
	if err := tr.Set([]Source{src}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := tr.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); tr.Close() })
	return &rig{t: t, inst: inst, tr: tr, reg: reg}
}

// agree reports whether the precise index holds, for every prompt sent so
// far, exactly the leading blocks the engine holds.
func (r *rig) agree() (bool, string) {
	eng := r.inst.Server.Engine()
	for i, p := range r.prompt {
		ids := tokenizer.Pseudo{}.Encode(p)
		want := eng.CachedBlocks(eng.BlockHashes(ids, "", nil))
		got := make([]int, 1)
		r.tr.Precise().Match(prefixindex.Hasher{}.AppendChain(nil, model, nil, ids), []string{"e0"}, got)
		if got[0] != want {
			return false, fmt.Sprintf("prompt %d: index %d blocks, engine %d", i, got[0], want)
		}
	}
	return true, ""
}

func (r *rig) waitAgree(when string) {
	r.t.Helper()
	var why string
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, w := r.agree()
		if ok {
			return
		}
		why = w
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: the precise index does not follow the engine: %s", when, why)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (r *rig) send(p string) {
	r.t.Helper()
	r.prompt = append(r.prompt, p)
	complete(r.t, r.inst, p)
}

// warmUp sends probe prompts until the tracker has heard from the engine:
// a PUB socket drops what it sends before a subscription reaches it.
func (r *rig) warmUp() {
	r.t.Helper()
	salt := uint32(1000)
	waitFor(r.t, "the first events", func() bool {
		salt++
		complete(r.t, r.inst, promptText(40, salt))
		time.Sleep(5 * time.Millisecond)
		return r.tr.Precise().EndpointBlocks("e0") > 0
	})
}

func (r *rig) mode() Mode {
	r.tr.Evaluate(time.Now())
	return r.tr.Status("e0").Mode
}

func (r *rig) counter(name string, labels ...string) float64 {
	r.t.Helper()
	return sumMetric(r.t, r.reg, name, labels...)
}

// sumMetric sums the counter or gauge values of name's series that have
// the given label pairs.
func sumMetric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// TestTrackerFollowsTheEnginesCache: the precise index mirrors a simulated
// engine's cache over real ZMQ sockets, through stores, evictions in a small
// KV pool, and /reset_prefix_cache.
func TestTrackerFollowsTheEnginesCache(t *testing.T) {
	inst := startEngine(t, 64)
	events, replay := inst.Server.KVEventEndpoints()
	r := newRig(t, inst, Source{Name: "e0", Model: model, Endpoint: events, ReplayEndpoint: replay}, nil)
	waitFor(t, "precise mode", func() bool { return r.mode() == ModePrecise })
	r.warmUp()

	// 64 blocks of 16 tokens; each prompt takes 20 (19 full + the partial
	// one), so the fourth evicts the first's blocks.
	for i := range 6 {
		r.send(promptText(310, uint32(i)))
		r.waitAgree(fmt.Sprintf("after prompt %d", i))
	}
	eng := inst.Server.Engine()
	first := tokenizer.Pseudo{}.Encode(r.prompt[0])
	if n := eng.CachedBlocks(eng.BlockHashes(first, "", nil)); n != 0 {
		t.Fatalf("the small pool still holds %d blocks of the first prompt: no eviction tested", n)
	}
	if r.counter("halyard_kvevents_events_total", "type", kvevents.TagBlockRemoved) == 0 {
		t.Error("no BlockRemoved events counted")
	}
	// Repeating a prompt the engine still holds changes nothing.
	r.send(r.prompt[5])
	r.waitAgree("after a repeat")

	status := postReset(t, inst)
	if status != http.StatusOK {
		t.Fatalf("reset: %d", status)
	}
	waitFor(t, "an empty index after the reset", func() bool { return r.tr.Precise().EndpointBlocks("e0") == 0 })
	r.waitAgree("after the reset")
	r.send(r.prompt[2])
	r.waitAgree("after the reset and a new prompt")
	if m := r.mode(); m != ModePrecise {
		t.Errorf("mode %s, want precise", m)
	}
	if n := r.counter(MetricFallbacks); n != 0 {
		t.Errorf("%v fallbacks on a clean stream", n)
	}
}

func postReset(t *testing.T, inst *vllmapi.Instance) int {
	t.Helper()
	resp, err := http.Post(inst.URL+"/reset_prefix_cache", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// relay republishes an engine's KV events on a socket of its own and drops
// the batches drop says to, as a lossy network would.
type relay struct {
	endpoint string
	drop     atomic.Pointer[func(seq uint64) bool]
	dropped  atomic.Int64
	ready    chan struct{}
}

func startRelay(t *testing.T, from string) *relay {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pub := zmq4.NewPub(ctx)
	if err := pub.Listen("tcp://127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	sub := zmq4.NewSub(ctx)
	if err := sub.Dial(from); err != nil {
		t.Fatal(err)
	}
	if err := sub.SetOption(zmq4.OptionSubscribe, ""); err != nil {
		t.Fatal(err)
	}
	r := &relay{endpoint: "tcp://" + pub.Addr().String(), ready: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			msg, err := sub.Recv()
			if err != nil {
				return
			}
			if len(msg.Frames) == 3 && len(msg.Frames[1]) == 8 {
				seq := uint64(0)
				for _, b := range msg.Frames[1] {
					seq = seq<<8 | uint64(b)
				}
				if f := r.drop.Load(); f != nil && (*f)(seq) {
					r.dropped.Add(1)
					continue
				}
			}
			_ = pub.Send(msg)
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = sub.Close()
		_ = pub.Close()
		<-done
	})
	return r
}

// TestTrackerResyncsAGapThroughReplay: a batch lost between the engine and
// the router is detected by its sequence number and fetched from the
// engine's replay socket; the index stays exact and precise.
func TestTrackerResyncsAGapThroughReplay(t *testing.T) {
	inst := startEngine(t, 256)
	events, replay := inst.Server.KVEventEndpoints()
	rl := startRelay(t, events)
	r := newRig(t, inst, Source{Name: "e0", Model: model, Endpoint: rl.endpoint, ReplayEndpoint: replay}, nil)
	waitFor(t, "precise mode", func() bool { return r.mode() == ModePrecise })
	r.warmUp()
	r.send(promptText(100, 1))
	r.waitAgree("before the loss")

	// Lose the next batch on the wire; the engine keeps it for replay.
	var lost atomic.Bool
	drop := func(uint64) bool { return lost.CompareAndSwap(false, true) }
	rl.drop.Store(&drop)
	r.send(promptText(200, 2))
	waitFor(t, "a batch dropped", func() bool { return rl.dropped.Load() == 1 })
	// The gap shows when the next batch arrives.
	r.send(promptText(150, 3))
	r.waitAgree("after the gap")
	if g := r.counter("halyard_kvevents_gaps_total"); g != 1 {
		t.Errorf("gaps = %v, want 1", g)
	}
	if ok := r.counter("halyard_kvevents_replays_total", "result", "ok"); ok < 1 {
		t.Errorf("replays ok = %v, want ≥ 1", ok)
	}
	if m := r.mode(); m != ModePrecise {
		t.Errorf("mode %s after a repaired gap, want precise", m)
	}
}

// TestTrackerFallsBackWhenEventsAreLostAndRecovers: without a replay
// socket a lost batch cannot be repaired: the endpoint falls back to the
// approximate index (the View answers from it, the metric and the
// explanation say so) until the engine's cache is cleared, after which the
// precise picture is exact again.
func TestTrackerFallsBackWhenEventsAreLostAndRecovers(t *testing.T) {
	inst := startEngine(t, 256)
	events, _ := inst.Server.KVEventEndpoints()
	rl := startRelay(t, events)
	r := newRig(t, inst, Source{Name: "e0", Model: model, Endpoint: rl.endpoint}, nil)
	approx, err := prefixindex.NewApproximate(prefixindex.ApproximateConfig{})
	if err != nil {
		t.Fatal(err)
	}
	view := r.tr.View(approx)
	waitFor(t, "precise mode", func() bool { return r.mode() == ModePrecise })
	r.warmUp()
	r.send(promptText(100, 1))
	r.waitAgree("before the loss")

	var lost atomic.Bool
	drop := func(uint64) bool { return lost.CompareAndSwap(false, true) }
	rl.drop.Store(&drop)
	r.send(promptText(200, 2))
	waitFor(t, "a batch dropped", func() bool { return rl.dropped.Load() == 1 })
	r.send(promptText(150, 3))
	waitFor(t, "approximate mode", func() bool { return r.mode() == ModeApproximate })
	if st := r.tr.Status("e0"); st.Reason != ReasonEventsLost {
		t.Errorf("status %+v, want reason %s", st, ReasonEventsLost)
	}
	if got := r.counter(MetricFallbacks, "reason", ReasonEventsLost); got != 1 {
		t.Errorf("fallbacks{events-lost} = %v, want 1", got)
	}
	if !strings.Contains(r.tr.Explain([]string{"e0"}), "e0 approximate (events-lost") {
		t.Errorf("explanation %q", r.tr.Explain([]string{"e0"}))
	}
	// The view now answers from the approximate index, which knows what
	// was routed there.
	chain := prefixindex.Hasher{}.AppendChain(nil, model, nil, tokenizer.Pseudo{}.Encode(promptText(64, 9)))
	view.Add("e0", 0, chain)
	got := make([]int, 1)
	view.Match(chain, []string{"e0"}, got)
	if got[0] != len(chain) {
		t.Errorf("view matched %d blocks in approximate mode, want the approximate index's %d", got[0], len(chain))
	}

	// The engine clears its cache: the precise picture is exact again.
	if status := postReset(t, inst); status != http.StatusOK {
		t.Fatalf("reset: %d", status)
	}
	waitFor(t, "precise mode after the reset", func() bool { return r.mode() == ModePrecise })
	r.prompt = nil
	r.send(promptText(120, 4))
	r.waitAgree("after recovery")
	view.Match(chain, []string{"e0"}, got)
	if got[0] != 0 {
		t.Errorf("view matched %d blocks of a prompt the engine never saw, want 0 in precise mode", got[0])
	}
}

// TestTrackerModes drives the mode decisions with explicit times: an
// endpoint without events, a publisher not yet reachable, silence while
// the engine caches new prompts, and recovery after a loss.
func TestTrackerModes(t *testing.T) {
	pub, err := kvevents.NewPublisher(kvevents.PublisherConfig{Endpoint: "tcp://127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close(time.Second) })
	reg := prometheus.NewRegistry()
	tr, err := New(Config{Registerer: reg, Logger: testLogger(t), SilenceTimeout: 10 * time.Second, RecoverAfter: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Set([]Source{
		{Name: "plain", Model: model},
		{Name: "e0", Model: model, Endpoint: pub.Endpoint()},
		{Name: "nowhere", Model: model, Endpoint: "tcp://127.0.0.1:1"},
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := tr.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); tr.Close() })
	modes := func(at time.Time) map[string]string {
		tr.Evaluate(at)
		out := map[string]string{}
		for _, n := range []string{"plain", "e0", "nowhere"} {
			st := tr.Status(n)
			out[n] = string(st.Mode) + "/" + st.Reason
		}
		return out
	}
	waitFor(t, "e0 connected", func() bool { return modes(time.Now())["e0"] == "precise/" })
	// The PUB socket drops what it sends before the subscription reaches
	// it: publish root blocks until one arrives.
	next := uint64(0)
	heard := func(what string) {
		t.Helper()
		n := tr.Precise().EndpointBlocks("e0")
		waitFor(t, what, func() bool {
			next++
			tokens := make([]uint32, 16)
			tokens[0] = uint32(next)
			pub.Publish(kvevents.NewBlockStored([]uint64{next}, nil, tokens, 16))
			time.Sleep(5 * time.Millisecond)
			return tr.Precise().EndpointBlocks("e0") > n
		})
	}
	heard("e0 heard")

	want := map[string]string{"plain": "approximate/no-events", "e0": "precise/", "nowhere": "approximate/disconnected"}
	if diff := cmp.Diff(want, modes(time.Now())); diff != "" {
		t.Fatalf("modes (-want +got):\n%s", diff)
	}

	// The engine caches 1,000 new tokens between two scrapes and sends
	// nothing: precise for the silence timeout, then approximate.
	s1 := time.Now()
	tr.ObserveEngine("e0", 0, 0, s1)
	tr.ObserveEngine("e0", 1000, 0, s1.Add(100*time.Millisecond))
	if got := modes(s1.Add(5 * time.Second))["e0"]; got != "precise/" {
		t.Errorf("5s into the silence: %s, want precise", got)
	}
	if got := modes(s1.Add(11 * time.Second))["e0"]; got != "approximate/silent" {
		t.Errorf("11s into the silence: %s, want approximate/silent", got)
	}
	if !strings.Contains(tr.Explain([]string{"e0"}), "no events for 11s") {
		t.Errorf("explanation %q", tr.Explain([]string{"e0"}))
	}
	// A hit-only burst (no new tokens) is no activity.
	tr.ObserveEngine("e0", 1500, 500, s1.Add(12*time.Second))
	// Events arrive: precise again.
	heard("e0 heard again")
	if got := modes(s1.Add(13 * time.Second))["e0"]; got != "precise/" {
		t.Errorf("after events resumed: %s, want precise", got)
	}
	// Blocks of another size make the index unusable.
	pub.Publish(kvevents.NewBlockStored([]uint64{3}, nil, make([]uint32, 32), 32))
	waitFor(t, "block-size fallback", func() bool { return modes(time.Now())["e0"] == "approximate/block-size" })

	reg.MustRegister(tr)
	for reason, want := range map[string]float64{ReasonSilent: 1, ReasonBlockSize: 1, ReasonEventsLost: 0} {
		if got := sumMetric(t, reg, MetricFallbacks, "endpoint", "e0", "reason", reason); got != want {
			t.Errorf("fallbacks{e0,%s} = %v, want %v", reason, got, want)
		}
	}
	if got := sumMetric(t, reg, MetricMode, "endpoint", "nowhere", "mode", "approximate"); got != 1 {
		t.Errorf("mode{nowhere,approximate} = %v, want 1", got)
	}
}

// TestTrackerFollowsEndpointChanges: endpoints removed, re-pointed at
// another publisher and added while subscriptions run; each Set returns
// promptly and the index forgets what it knew of a removed endpoint.
func TestTrackerFollowsEndpointChanges(t *testing.T) {
	newPub := func() *kvevents.Publisher {
		p, err := kvevents.NewPublisher(kvevents.PublisherConfig{Endpoint: "tcp://127.0.0.1:0", ReplayEndpoint: "tcp://127.0.0.1:0", Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close(time.Second) })
		return p
	}
	a, b := newPub(), newPub()
	tr, err := New(Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := tr.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	set := func(srcs ...Source) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- tr.Set(srcs) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Set did not return")
		}
	}
	heard := func(p *kvevents.Publisher, salt uint32) {
		t.Helper()
		waitFor(t, "events", func() bool {
			tokens := make([]uint32, 16)
			tokens[0] = salt
			p.Publish(kvevents.NewBlockStored([]uint64{uint64(salt)}, nil, tokens, 16))
			time.Sleep(5 * time.Millisecond)
			return tr.Precise().EndpointBlocks("e0") > 0
		})
	}
	set(Source{Name: "e0", Model: model, Endpoint: a.Endpoint(), ReplayEndpoint: a.ReplayEndpoint()})
	heard(a, 1)
	set() // removed
	if n := tr.Precise().EndpointBlocks("e0"); n != 0 {
		t.Errorf("%d blocks kept for a removed endpoint", n)
	}
	if st := tr.Status("e0"); st.Reason != ReasonNoEvents {
		t.Errorf("removed endpoint's status %+v", st)
	}
	set(Source{Name: "e0", Model: model, Endpoint: a.Endpoint(), ReplayEndpoint: a.ReplayEndpoint()})
	heard(a, 2)
	// Re-pointed at b: a's blocks go, b's arrive.
	set(Source{Name: "e0", Model: model, Endpoint: b.Endpoint(), ReplayEndpoint: b.ReplayEndpoint()})
	if n := tr.Precise().EndpointBlocks("e0"); n != 0 {
		t.Errorf("%d blocks of the old publisher kept", n)
	}
	heard(b, 3)
	set(Source{Name: "e0", Model: model, Endpoint: b.Endpoint(), ReplayEndpoint: b.ReplayEndpoint()}) // unchanged
	if n := tr.Precise().EndpointBlocks("e0"); n == 0 {
		t.Error("an unchanged Set dropped the endpoint's blocks")
	}
}
