package simulator

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/simclock"
	"github.com/halyard-dev/halyard/internal/simulator/kvcache"
)

var t0 = time.Unix(1_700_000_000, 0)

// rec records one request's output.
type rec struct {
	tokens []uint32
	times  []time.Duration // since t0
	result *Result
}

func (r *rec) Token(id uint32, index int, at time.Time) {
	if index != len(r.tokens) {
		panic(fmt.Sprintf("token index %d, want %d", index, len(r.tokens)))
	}
	r.tokens = append(r.tokens, id)
	r.times = append(r.times, at.Sub(t0))
}

func (r *rec) Done(res Result) {
	if r.result != nil {
		panic("Done called twice")
	}
	r.result = &res
}

// testConfig: 10ms base, 0.1ms per prefill token, 1ms per decode sequence.
func testConfig() Config {
	return Config{
		Model:    "m",
		StepTime: StepTime{BaseMs: 10, PrefillTokenMs: 0.1, DecodeSeqMs: 1},
		Capacity: Capacity{NumGPUBlocks: 1000, BlockSize: 16, MaxNumSeqs: 8, MaxNumBatchedTokens: 512, MaxModelLen: 4096, MaxLoras: 1},
	}
}

func newTestEngine(t *testing.T, cfg Config) (*Engine, *simclock.Virtual) {
	t.Helper()
	clock := simclock.NewVirtual(t0)
	e, err := NewEngine(cfg, clock)
	if err != nil {
		t.Fatal(err)
	}
	return e, clock
}

func prompt(n int, salt uint32) []uint32 {
	p := make([]uint32, n)
	for i := range p {
		p[i] = uint32(i)*31 + salt
	}
	return p
}

func submit(t *testing.T, e *Engine, id string, p []uint32, maxTokens int) *rec {
	t.Helper()
	r := &rec{}
	if err := e.Submit(Request{ID: id, Prompt: p, MaxTokens: maxTokens, Sink: r}); err != nil {
		t.Fatalf("Submit %s: %v", id, err)
	}
	return r
}

func ms(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }

func TestStepTimeDuration(t *testing.T) {
	h100 := StepTime{BaseMs: 5.8, PrefillTokenMs: 0.018, DecodeSeqMs: 0.006, ContextTokenMs: 4e-5}
	tests := []struct {
		name                      string
		st                        StepTime
		prefill, decode, contextN int
		want                      time.Duration
	}{
		{"zero profile", StepTime{}, 8192, 1024, 1 << 20, 0},
		{"base only", h100, 0, 0, 0, ms(5.8)},
		{"full prefill chunk", h100, 8192, 0, 8192, ms(5.8 + 0.018*8192 + 4e-5*8192)},
		{"decode batch", h100, 0, 100, 100 * 2000, ms(5.8 + 0.006*100 + 4e-5*200000)},
		{"mixed", StepTime{BaseMs: 1, PrefillTokenMs: 2, DecodeSeqMs: 3, ContextTokenMs: 4}, 10, 20, 30, ms(1 + 20 + 60 + 120)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.st.Duration(tt.prefill, tt.decode, tt.contextN)
			if d := got - tt.want; d < -time.Microsecond || d > time.Microsecond {
				t.Errorf("Duration = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSingleRequestTokenTimes(t *testing.T) {
	e, clock := newTestEngine(t, testConfig())
	r := submit(t, e, "a", prompt(100, 1), 4)
	clock.Run()
	// Step 1 prefills 100 tokens: 10 + 0.1*100 = 20ms, first token.
	// Steps 2..4 decode one sequence: 10 + 1 = 11ms each.
	want := []time.Duration{ms(20), ms(31), ms(42), ms(53)}
	if diff := cmp.Diff(want, r.times); diff != "" {
		t.Errorf("token times (-want +got):\n%s", diff)
	}
	if r.result == nil || r.result.Reason != FinishLength || r.result.OutputTokens != 4 {
		t.Fatalf("result = %+v, want 4 tokens, finish length", r.result)
	}
	if got := r.result.TTFT(); got != ms(20) {
		t.Errorf("TTFT = %v, want 20ms", got)
	}
	s := e.Snapshot()
	if s.Running != 0 || s.Waiting != 0 || s.KVUsage != 0 {
		t.Errorf("idle snapshot running=%d waiting=%d kv=%v, want zeros", s.Running, s.Waiting, s.KVUsage)
	}
	if s.PromptTokens != 100 || s.GenerationTokens != 4 || s.FinishedLength != 1 || s.Steps != 4 {
		t.Errorf("counters prompt=%d gen=%d finished=%d steps=%d, want 100 4 1 4", s.PromptTokens, s.GenerationTokens, s.FinishedLength, s.Steps)
	}
}

func TestChunkedPrefill(t *testing.T) {
	cfg := testConfig()
	cfg.Capacity.MaxNumBatchedTokens = 64
	e, clock := newTestEngine(t, cfg)
	r := submit(t, e, "a", prompt(200, 1), 1)
	clock.Run()
	// 200 prompt tokens in chunks of 64, 64, 64, 8.
	want := ms(4*10 + 0.1*200)
	if r.result.FirstToken.Sub(t0) != want {
		t.Errorf("first token at %v, want %v (four chunks)", r.result.FirstToken.Sub(t0), want)
	}
	if s := e.Snapshot(); s.Steps != 4 {
		t.Errorf("steps = %d, want 4", s.Steps)
	}
}

func TestChunkedPrefillSharesBudgetWithDecode(t *testing.T) {
	cfg := testConfig()
	cfg.Capacity.MaxNumBatchedTokens = 64
	e, clock := newTestEngine(t, cfg)
	a := submit(t, e, "a", prompt(10, 1), 20)
	clock.Step() // a prefilled, first token
	b := submit(t, e, "b", prompt(126, 2), 1)
	clock.Run()
	// Each step: a decodes 1 token, b gets the other 63 of the budget:
	// b needs two steps (63 + 63).
	if got := b.result.FirstToken.Sub(a.result.FirstToken); got <= 0 {
		t.Fatalf("b's first token %v not after a's", got)
	}
	steps := 0
	for _, tm := range a.times {
		if tm > a.times[0] && tm <= b.result.FirstToken.Sub(t0) {
			steps++
		}
	}
	if steps != 2 {
		t.Errorf("b prefilled over %d steps, want 2 (63 tokens each beside a's decode)", steps)
	}
}

func TestAdmissionLimitMaxNumSeqs(t *testing.T) {
	cfg := testConfig()
	cfg.Capacity.MaxNumSeqs = 2
	e, clock := newTestEngine(t, cfg)
	recs := []*rec{submit(t, e, "a", prompt(16, 1), 3), submit(t, e, "b", prompt(16, 2), 3), submit(t, e, "c", prompt(16, 3), 3)}
	clock.Step() // kick: plans the first batch
	if s := e.Snapshot(); s.Running != 2 || s.Waiting != 1 {
		t.Fatalf("running=%d waiting=%d, want 2 and 1", s.Running, s.Waiting)
	}
	clock.Run()
	if !recs[2].result.Scheduled.Equal(recs[0].result.Finished) {
		t.Errorf("c admitted at %v, want when a finished (%v)", recs[2].result.Scheduled.Sub(t0), recs[0].result.Finished.Sub(t0))
	}
	for i, r := range recs {
		if r.result.Reason != FinishLength || len(r.tokens) != 3 {
			t.Errorf("request %d: %v with %d tokens", i, r.result.Reason, len(r.tokens))
		}
	}
}

func TestAdmissionLimitTokenBudget(t *testing.T) {
	cfg := testConfig()
	cfg.Capacity.MaxNumBatchedTokens = 100
	e, clock := newTestEngine(t, cfg)
	submit(t, e, "a", prompt(60, 1), 2)
	submit(t, e, "b", prompt(60, 2), 2)
	clock.Step()
	// a takes 60 of 100 tokens; b is admitted with a 40-token chunk.
	e.mu.Lock()
	var sched []int
	for _, s := range e.batch {
		sched = append(sched, s.sched)
	}
	e.mu.Unlock()
	if diff := cmp.Diff([]int{60, 40}, sched); diff != "" {
		t.Errorf("scheduled tokens (-want +got):\n%s", diff)
	}
	clock.Run()
}

func TestPrefixCacheHit(t *testing.T) {
	e, clock := newTestEngine(t, testConfig())
	p := prompt(400, 7)
	first := submit(t, e, "a", p, 2)
	clock.Run()
	second := submit(t, e, "b", p, 2)
	clock.Run()
	// 400 tokens = 25 blocks; the hit leaves the last token to compute, so
	// 24 blocks (384 tokens) hit.
	if got := second.result.CachedTokens; got != 384 {
		t.Errorf("cached tokens = %d, want 384", got)
	}
	if first.result.CachedTokens != 0 {
		t.Errorf("first request cached %d tokens, want 0", first.result.CachedTokens)
	}
	s := e.Snapshot()
	if s.PrefixQueries != 800 || s.PrefixHits != 384 {
		t.Errorf("prefix queries=%d hits=%d, want 800 and 384", s.PrefixQueries, s.PrefixHits)
	}
	if a, b := first.result.TTFT(), second.result.TTFT(); b*2 > a {
		t.Errorf("TTFT with hit %v not under half of %v", b, a)
	}
	if diff := cmp.Diff(first.tokens, second.tokens); diff != "" {
		t.Errorf("same prompt, different output (-a +b):\n%s", diff)
	}
}

func TestPrefixCacheSeparatesLoRA(t *testing.T) {
	cfg := testConfig()
	cfg.LoRAs = []string{"x"}
	e, clock := newTestEngine(t, cfg)
	p := prompt(64, 3)
	submit(t, e, "a", p, 1)
	clock.Run()
	r := &rec{}
	if err := e.Submit(Request{ID: "b", Prompt: p, MaxTokens: 1, LoRA: "x", Sink: r}); err != nil {
		t.Fatal(err)
	}
	clock.Run()
	if r.result.CachedTokens != 0 {
		t.Errorf("adapter request reused %d base-model tokens", r.result.CachedTokens)
	}
}

func TestPreemptionWhenBlocksRunOut(t *testing.T) {
	cfg := testConfig()
	cfg.Capacity.NumGPUBlocks = 8
	cfg.Capacity.BlockSize = 4
	e, clock := newTestEngine(t, cfg)
	// Each request grows to 8+12 = 20 tokens = 5 blocks; two need 10 > 8.
	a := submit(t, e, "a", prompt(8, 1), 12)
	b := submit(t, e, "b", prompt(8, 2), 12)
	clock.Run()
	for name, r := range map[string]*rec{"a": a, "b": b} {
		if r.result == nil || r.result.Reason != FinishLength || len(r.tokens) != 12 {
			t.Fatalf("%s: result %+v with %d tokens, want 12 and finish length", name, r.result, len(r.tokens))
		}
	}
	if b.result.Preemptions == 0 || a.result.Preemptions != 0 {
		t.Errorf("preemptions a=%d b=%d, want the newer request b preempted", a.result.Preemptions, b.result.Preemptions)
	}
	s := e.Snapshot()
	if s.Preemptions == 0 {
		t.Error("snapshot counts no preemption")
	}
	if s.FreeBlocks != 8 {
		t.Errorf("free blocks after all finished = %d, want 8", s.FreeBlocks)
	}
	// The preempted request's output is what it would have been alone.
	e2, clock2 := newTestEngine(t, cfg)
	alone := submit(t, e2, "b", prompt(8, 2), 12)
	clock2.Run()
	if diff := cmp.Diff(alone.tokens, b.tokens); diff != "" {
		t.Errorf("preemption changed the output (-alone +preempted):\n%s", diff)
	}
}

func TestQueueingWhenBlocksRunOut(t *testing.T) {
	cfg := testConfig()
	cfg.Capacity.NumGPUBlocks = 4
	cfg.Capacity.BlockSize = 4
	e, clock := newTestEngine(t, cfg)
	a := submit(t, e, "a", prompt(12, 1), 4) // 3 blocks, then a 4th
	b := submit(t, e, "b", prompt(8, 2), 1)  // 2 blocks: must wait
	clock.Step()
	if s := e.Snapshot(); s.Running != 1 || s.Waiting != 1 {
		t.Fatalf("running=%d waiting=%d, want b queued for blocks", s.Running, s.Waiting)
	}
	clock.Run()
	if b.result.Reason != FinishLength || b.result.Scheduled.Before(a.result.Finished) {
		t.Errorf("b admitted at %v before a finished at %v", b.result.Scheduled.Sub(t0), a.result.Finished.Sub(t0))
	}
}

func TestAbortFreesBlocks(t *testing.T) {
	e, clock := newTestEngine(t, testConfig())
	r := submit(t, e, "a", prompt(100, 1), 50)
	clock.Step()
	clock.Step() // first token
	if e.Snapshot().KVUsage == 0 {
		t.Fatal("no KV in use while running")
	}
	if !e.Abort("a") {
		t.Fatal("Abort of a live request reported false")
	}
	if e.Abort("a") {
		t.Fatal("second Abort reported true")
	}
	clock.Run()
	if r.result == nil || r.result.Reason != FinishAbort {
		t.Fatalf("result = %+v, want abort", r.result)
	}
	s := e.Snapshot()
	if s.KVUsage != 0 || s.Running != 0 || s.FinishedAbort != 1 {
		t.Errorf("after abort kv=%v running=%d aborted=%d", s.KVUsage, s.Running, s.FinishedAbort)
	}
	if len(r.tokens) >= 50 {
		t.Errorf("aborted request got all %d tokens", len(r.tokens))
	}
}

func TestAbortWhileWaiting(t *testing.T) {
	cfg := testConfig()
	cfg.Capacity.MaxNumSeqs = 1
	e, clock := newTestEngine(t, cfg)
	submit(t, e, "a", prompt(10, 1), 3)
	b := submit(t, e, "b", prompt(10, 2), 3)
	clock.Step()
	e.Abort("b")
	clock.Run()
	if b.result.Reason != FinishAbort || len(b.tokens) != 0 || !b.result.Scheduled.IsZero() {
		t.Errorf("waiting abort: %+v tokens=%d", b.result, len(b.tokens))
	}
	if s := e.Snapshot(); s.Waiting != 0 {
		t.Errorf("waiting = %d after abort", s.Waiting)
	}
}

func TestDeterministicOutput(t *testing.T) {
	run := func(seed, reqSeed uint64) []uint32 {
		cfg := testConfig()
		cfg.Seed = seed
		e, clock := newTestEngine(t, cfg)
		r := &rec{}
		if err := e.Submit(Request{ID: "a", Prompt: prompt(20, 1), MaxTokens: 8, Seed: reqSeed, Sink: r}); err != nil {
			t.Fatal(err)
		}
		clock.Run()
		return r.tokens
	}
	if diff := cmp.Diff(run(1, 0), run(1, 0)); diff != "" {
		t.Errorf("same seed, different output:\n%s", diff)
	}
	if cmp.Equal(run(1, 0), run(2, 0)) {
		t.Error("different engine seeds gave equal output")
	}
	if cmp.Equal(run(1, 5), run(1, 6)) {
		t.Error("different request seeds gave equal output")
	}
}

func TestEOSProbability(t *testing.T) {
	cfg := testConfig()
	cfg.EOSProbability = 0.5
	e, clock := newTestEngine(t, cfg)
	stops := 0
	var recs []*rec
	for i := range 20 {
		r := &rec{}
		recs = append(recs, r)
		if err := e.Submit(Request{ID: fmt.Sprint(i), Prompt: prompt(8, uint32(i)), MaxTokens: 50, MinTokens: 2, Sink: r}); err != nil {
			t.Fatal(err)
		}
	}
	ign := &rec{}
	if err := e.Submit(Request{ID: "ignore", Prompt: prompt(8, 99), MaxTokens: 50, IgnoreEOS: true, Sink: ign}); err != nil {
		t.Fatal(err)
	}
	clock.Run()
	for _, r := range recs {
		if r.result.Reason == FinishStop {
			stops++
		}
		if len(r.tokens) < 2 {
			t.Errorf("request stopped after %d tokens, min is 2", len(r.tokens))
		}
	}
	if stops < 15 {
		t.Errorf("%d of 20 requests stopped early with p=0.5, want nearly all", stops)
	}
	if ign.result.Reason != FinishLength || len(ign.tokens) != 50 {
		t.Errorf("ignore_eos request: %v after %d tokens", ign.result.Reason, len(ign.tokens))
	}
}

func TestLoRAMaxLoras(t *testing.T) {
	cfg := testConfig()
	cfg.LoRAs = []string{"x", "y"}
	e, clock := newTestEngine(t, cfg)
	sub := func(id, lora string) *rec {
		r := &rec{}
		if err := e.Submit(Request{ID: id, Prompt: prompt(8, 1), MaxTokens: 3, LoRA: lora, Sink: r}); err != nil {
			t.Fatal(err)
		}
		return r
	}
	x := sub("x1", "x")
	y := sub("y1", "y")
	base := sub("base", "")
	x2 := sub("x2", "x")
	clock.Step()
	s := e.Snapshot()
	if diff := cmp.Diff([]string{"x"}, s.RunningLoRAs); diff != "" {
		t.Errorf("running adapters (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"y"}, s.WaitingLoRAs); diff != "" {
		t.Errorf("waiting adapters (-want +got):\n%s", diff)
	}
	if s.Running != 3 {
		t.Errorf("running = %d, want 3 (x1, base, x2 skip past y1)", s.Running)
	}
	clock.Run()
	if !y.result.Scheduled.Equal(x.result.Finished) || x2.result.Reason != FinishLength || base.result.Reason != FinishLength {
		t.Errorf("y admitted at %v, want when x finished (%v)", y.result.Scheduled.Sub(t0), x.result.Finished.Sub(t0))
	}
	if err := e.Submit(Request{ID: "z", Prompt: prompt(4, 1), MaxTokens: 1, LoRA: "z", Sink: &rec{}}); !errors.Is(err, ErrUnknownAdapter) {
		t.Errorf("unknown adapter error = %v", err)
	}
	if err := e.LoadAdapter("z"); err != nil {
		t.Fatal(err)
	}
	if err := e.LoadAdapter("z"); !errors.Is(err, ErrAdapterLoaded) {
		t.Errorf("double load error = %v", err)
	}
	if err := e.UnloadAdapter("z"); err != nil {
		t.Fatal(err)
	}
	if err := e.UnloadAdapter("z"); !errors.Is(err, ErrUnknownAdapter) {
		t.Errorf("double unload error = %v", err)
	}
}

func TestSubmitValidation(t *testing.T) {
	e, _ := newTestEngine(t, testConfig())
	sink := &rec{}
	tests := []struct {
		name string
		req  Request
		want error
	}{
		{"no sink", Request{ID: "a", Prompt: []uint32{1}, MaxTokens: 1}, ErrInvalidRequest},
		{"no id", Request{Prompt: []uint32{1}, MaxTokens: 1, Sink: sink}, ErrInvalidRequest},
		{"empty prompt", Request{ID: "a", MaxTokens: 1, Sink: sink}, ErrInvalidRequest},
		{"zero max tokens", Request{ID: "a", Prompt: []uint32{1}, Sink: sink}, ErrInvalidRequest},
		{"negative max tokens", Request{ID: "a", Prompt: []uint32{1}, MaxTokens: -3, Sink: sink}, ErrInvalidRequest},
		{"min over max", Request{ID: "a", Prompt: []uint32{1}, MaxTokens: 1, MinTokens: 2, Sink: sink}, ErrInvalidRequest},
		{"over context", Request{ID: "a", Prompt: prompt(4000, 1), MaxTokens: 100, Sink: sink}, ErrContextLength},
		{"unknown adapter", Request{ID: "a", Prompt: []uint32{1}, MaxTokens: 1, LoRA: "nope", Sink: sink}, ErrUnknownAdapter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := e.Submit(tt.req); !errors.Is(err, tt.want) {
				t.Errorf("Submit error = %v, want %v", err, tt.want)
			}
		})
	}
	if err := e.Submit(Request{ID: "dup", Prompt: []uint32{1}, MaxTokens: 1, Sink: sink}); err != nil {
		t.Fatal(err)
	}
	if err := e.Submit(Request{ID: "dup", Prompt: []uint32{1}, MaxTokens: 1, Sink: sink}); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("duplicate id error = %v", err)
	}
}

func TestKeepBlocksAndRelease(t *testing.T) {
	e, clock := newTestEngine(t, testConfig())
	r := &rec{}
	if err := e.Submit(Request{ID: "p", Prompt: prompt(64, 1), MaxTokens: 1, KeepBlocks: true, Sink: r}); err != nil {
		t.Fatal(err)
	}
	clock.Run()
	if r.result.Held == nil || len(r.result.Held.Blocks) != 4 || r.result.Held.Tokens != 64 {
		t.Fatalf("held = %+v, want 4 blocks of 64 tokens", r.result.Held)
	}
	if s := e.Snapshot(); s.HeldBlocks != 4 || s.KVUsage == 0 {
		t.Errorf("snapshot held=%d kv=%v, want 4 held blocks in use", s.HeldBlocks, s.KVUsage)
	}
	if !e.Release("p") || e.Release("p") {
		t.Error("Release reported wrongly")
	}
	if s := e.Snapshot(); s.HeldBlocks != 0 || s.KVUsage != 0 {
		t.Errorf("after release held=%d kv=%v", s.HeldBlocks, s.KVUsage)
	}
}

func TestRemoteKVChargesTransferTime(t *testing.T) {
	e, clock := newTestEngine(t, testConfig())
	r := &rec{}
	err := e.Submit(Request{ID: "d", Prompt: prompt(200, 1), MaxTokens: 2, Sink: r,
		Remote: &RemoteKV{Tokens: 200, PerToken: 100 * time.Microsecond}})
	if err != nil {
		t.Fatal(err)
	}
	clock.Step() // admitted: waiting for the transfer
	if s := e.Snapshot(); s.Running != 0 || s.Waiting != 1 || s.KVUsage == 0 {
		t.Errorf("during transfer running=%d waiting=%d kv=%v, want 0, 1 and blocks held", s.Running, s.Waiting, s.KVUsage)
	}
	clock.Run()
	// 199 tokens arrive in 19.9ms, then one decode-like step computes the
	// last prompt token (10ms + 0.1ms) and a decode step (11ms).
	if got, want := r.result.FirstToken.Sub(t0), ms(19.9+10.1); got != want {
		t.Errorf("first token at %v, want %v", got, want)
	}
	if len(r.tokens) != 2 {
		t.Errorf("%d tokens, want 2", len(r.tokens))
	}
	if s := e.Snapshot(); s.PromptTokens != 200 || s.KVUsage != 0 {
		t.Errorf("prompt tokens %d kv %v", s.PromptTokens, s.KVUsage)
	}
}

type kvRecorder struct {
	stored, removed, cleared, steps int
}

func (k *kvRecorder) BlockStored(kvcache.StoredBlock) { k.stored++ }
func (k *kvRecorder) BlockRemoved(kvcache.BlockHash)  { k.removed++ }
func (k *kvRecorder) AllBlocksCleared()               { k.cleared++ }
func (k *kvRecorder) EndStep(time.Time)               { k.steps++ }

func TestKVEventHooks(t *testing.T) {
	cfg := testConfig()
	cfg.Capacity.NumGPUBlocks = 6
	cfg.Capacity.BlockSize = 4
	k := &kvRecorder{}
	cfg.KVEvents = k
	e, clock := newTestEngine(t, cfg)
	submit(t, e, "a", prompt(16, 1), 1) // 4 full blocks stored
	clock.Run()
	if k.stored != 4 || k.removed != 0 {
		t.Fatalf("stored=%d removed=%d, want 4 and 0", k.stored, k.removed)
	}
	submit(t, e, "b", prompt(16, 2), 1) // needs 4 blocks: evicts 2 of a's
	clock.Run()
	if k.stored != 8 || k.removed != 2 {
		t.Errorf("stored=%d removed=%d, want 8 and 2", k.stored, k.removed)
	}
	e.ResetPrefixCache()
	if k.cleared != 1 {
		t.Errorf("cleared = %d", k.cleared)
	}
	if k.steps == 0 {
		t.Error("EndStep never called")
	}
}

func TestCloseAbortsEverything(t *testing.T) {
	e, clock := newTestEngine(t, testConfig())
	a := submit(t, e, "a", prompt(10, 1), 100)
	clock.Step()
	e.Close()
	clock.Run()
	if a.result == nil || a.result.Reason != FinishAbort {
		t.Fatalf("result after Close = %+v", a.result)
	}
	if err := e.Submit(Request{ID: "b", Prompt: []uint32{1}, MaxTokens: 1, Sink: &rec{}}); !errors.Is(err, ErrClosed) {
		t.Errorf("Submit after Close error = %v", err)
	}
}

func TestCachedPrefixTokens(t *testing.T) {
	e, clock := newTestEngine(t, testConfig())
	p := prompt(100, 4)
	if got := e.CachedPrefixTokens(p, ""); got != 0 {
		t.Errorf("cold cache: %d", got)
	}
	submit(t, e, "a", p, 1)
	clock.Run()
	if got := e.CachedPrefixTokens(p, ""); got != 96 {
		t.Errorf("warm cache: %d, want 96 (6 full blocks)", got)
	}
}

func TestAbortDuringRemoteTransfer(t *testing.T) {
	e, clock := newTestEngine(t, testConfig())
	r := &rec{}
	if err := e.Submit(Request{ID: "d", Prompt: prompt(64, 1), MaxTokens: 2, Sink: r,
		Remote: &RemoteKV{Tokens: 64, PerToken: time.Millisecond}}); err != nil {
		t.Fatal(err)
	}
	clock.Step()
	e.Abort("d")
	clock.Run()
	if r.result == nil || r.result.Reason != FinishAbort || len(r.tokens) != 0 {
		t.Fatalf("result %+v after %d tokens, want an abort before any token", r.result, len(r.tokens))
	}
	if s := e.Snapshot(); s.Running != 0 || s.Waiting != 0 || s.KVUsage != 0 {
		t.Errorf("after abort running=%d waiting=%d kv=%v", s.Running, s.Waiting, s.KVUsage)
	}
	if got := clock.Now().Sub(t0); got >= 63*time.Millisecond {
		t.Errorf("the stopped transfer still ran: clock at %v", got)
	}
}

func TestPreemptedTransferRecomputesLocally(t *testing.T) {
	cfg := testConfig()
	cfg.Capacity.NumGPUBlocks = 6
	cfg.Capacity.BlockSize = 4
	e, clock := newTestEngine(t, cfg)
	// a runs and grows; d arrives with remote KV for 8 tokens (2 blocks,
	// a long transfer), then a needs d's blocks and preempts it.
	a := submit(t, e, "a", prompt(8, 1), 14) // grows to 22 tokens = 6 blocks
	clock.Step()
	d := &rec{}
	if err := e.Submit(Request{ID: "d", Prompt: prompt(8, 2), MaxTokens: 2, Sink: d,
		Remote: &RemoteKV{Tokens: 8, PerToken: time.Second}}); err != nil {
		t.Fatal(err)
	}
	clock.Run()
	if a.result.Reason != FinishLength || d.result == nil || d.result.Reason != FinishLength || len(d.tokens) != 2 {
		t.Fatalf("a %+v, d %+v", a.result, d.result)
	}
	if d.result.Preemptions == 0 {
		t.Error("d was not preempted")
	}
	// Recomputed locally: far sooner than the 7s transfer.
	if got := d.result.Finished.Sub(t0); got > 2*time.Second {
		t.Errorf("d finished at %v: it waited for the lost transfer", got)
	}
}

// TestStopAfter: a request's StopAfter ends it with FinishStop after the
// token it accepts, not before MinTokens, and before the length limit.
func TestStopAfter(t *testing.T) {
	tests := []struct {
		name           string
		stopAt, minTok int
		maxTok, want   int
		reason         FinishReason
	}{
		{"stops at index 2", 2, 0, 8, 3, FinishStop},
		{"min tokens first", 1, 4, 8, 4, FinishStop},
		{"stop on the last token wins over length", 3, 0, 4, 4, FinishStop},
		{"never", 100, 0, 5, 5, FinishLength},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, clock := newTestEngine(t, testConfig())
			r := &rec{}
			var asked []int
			err := e.Submit(Request{ID: "a", Prompt: prompt(20, 1), MaxTokens: tt.maxTok, MinTokens: tt.minTok, Sink: r,
				StopAfter: func(_ uint32, index int) bool {
					asked = append(asked, index)
					return index >= tt.stopAt
				}})
			if err != nil {
				t.Fatal(err)
			}
			clock.Run()
			if r.result == nil || r.result.Reason != tt.reason || r.result.OutputTokens != tt.want || len(r.tokens) != tt.want {
				t.Fatalf("result %+v with %d tokens, want %d tokens, %s", r.result, len(r.tokens), tt.want, tt.reason)
			}
			if len(asked) > 0 && asked[0] < tt.minTok-1 {
				t.Errorf("asked about token %d before min tokens %d", asked[0], tt.minTok)
			}
			if s := e.Snapshot(); (tt.reason == FinishStop) != (s.FinishedStop == 1) {
				t.Errorf("finished stop counter %d", s.FinishedStop)
			}
		})
	}
}
