package simulator

import (
	"context"
	"fmt"
	"log/slog"
	"math/bits"
	"sort"
	"sync"
	"time"

	"github.com/halyard-dev/halyard/internal/simclock"
	"github.com/halyard-dev/halyard/internal/simulator/kvcache"
)

type seqState uint8

const (
	stateWaiting seqState = iota
	stateRunning
	stateTransferring // admitted, waiting for remote KV
	stateDone
)

// seq is the engine's state of one request.
type seq struct {
	req       Request
	tokens    []uint32 // prompt then output
	numPrompt int
	numOutput int
	// computed counts the leading tokens whose KV is computed.
	computed int
	// sched is the number of tokens scheduled in the batch in flight.
	sched int
	state seqState
	// blocks hold tokens[0:computed+sched]; hashes are the chain hashes of
	// the full blocks of tokens; stored counts blocks registered in the
	// prefix cache.
	blocks []kvcache.BlockID
	hashes []kvcache.BlockHash
	stored int
	root   kvcache.BlockHash

	admitted     bool
	cachedTokens int
	preemptions  int
	promptDone   bool
	rng          uint64
	transfer     simclock.Timer
	remote       *RemoteKV

	arrival, scheduled, firstToken time.Time
}

// event is a sink call waiting to be delivered outside the lock.
type event struct {
	sink   Sink
	done   bool
	token  uint32
	index  int
	at     time.Time
	result Result
}

// Engine is one simulated inference engine: a continuous-batching scheduler
// in the manner of vLLM's V1 scheduler over a paged KV cache with prefix
// caching, driven by a simclock.Clock. Each step's completion is one
// clock.AfterFunc event; no goroutine sleeps per request.
//
// An Engine is safe for concurrent use. Sinks are called outside its lock.
type Engine struct {
	cfg     Config
	clock   simclock.Clock
	log     *slog.Logger
	stepObs StepObserver

	mu      sync.Mutex
	pool    *kvcache.Pool
	live    map[string]*seq
	waiting deque
	running []*seq
	batch   []*seq
	// busy is true while a step (or a kick) is scheduled on the clock.
	busy bool
	// inStep is true while the scheduled tick completes a planned step
	// ending at stepEnd; deferred is set when planning left requests that
	// arrived after the step's model time.
	inStep  bool
	stepEnd time.Time
	kickAt  time.Time
	// deferredAt is the arrival of the first deferred request.
	deferredAt time.Time
	deferred   bool
	timer      simclock.Timer
	closed     bool
	out        []event
	spare      []event
	loras      map[string]bool
	held       map[string]*HeldBlocks
	// spike faults
	spikeProb float64
	spikeDur  time.Duration
	spikeRNG  uint64

	stats counters
}

type counters struct {
	prefixQueries, prefixHits    uint64
	promptTokens, generationToks uint64
	preemptions                  uint64
	finished                     [3]uint64 // length, stop, abort
	steps                        uint64
	busyTime                     time.Duration
	transferring                 int
	resyncs                      uint64
	// resyncWarned is when a resync was last logged at warning level and
	// resyncsQuiet how many resyncs were logged only at debug since.
	resyncWarned time.Time
	resyncsQuiet uint64
}

// NewEngine returns an engine for cfg on clock. It validates cfg.
func NewEngine(cfg Config, clock simclock.Clock) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("simulator config: %w", err)
	}
	if clock == nil {
		return nil, fmt.Errorf("simulator: nil clock")
	}
	pool, err := kvcache.New(cfg.Capacity.NumGPUBlocks, cfg.Capacity.BlockSize, cfg.KVEvents)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{
		cfg:      cfg,
		clock:    clock,
		log:      log,
		pool:     pool,
		live:     make(map[string]*seq),
		loras:    make(map[string]bool),
		held:     make(map[string]*HeldBlocks),
		spikeRNG: cfg.Seed ^ 0x5bd1e995,
	}
	if so, ok := cfg.KVEvents.(StepObserver); ok {
		e.stepObs = so
	}
	for _, l := range cfg.LoRAs {
		e.loras[l] = true
	}
	return e, nil
}

// Config returns the engine's configuration.
func (e *Engine) Config() Config { return e.cfg }

// Clock returns the engine's clock.
func (e *Engine) Clock() simclock.Clock { return e.clock }

// Submit queues a request. The request's sink then receives its tokens and,
// last, one Done call. An error means the request was refused and the sink
// will not be called.
func (e *Engine) Submit(r Request) error {
	if err := e.check(&r); err != nil {
		return err
	}
	s := &seq{
		req:       r,
		numPrompt: len(r.Prompt),
		state:     stateWaiting,
		root:      kvcache.RootHash(r.LoRA),
		remote:    r.Remote,
	}
	s.tokens = make([]uint32, len(r.Prompt), len(r.Prompt)+r.MaxTokens)
	copy(s.tokens, r.Prompt)
	s.rng = seedFor(e.cfg.Seed, r.Seed, s.root, r.Prompt)

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if r.LoRA != "" && !e.loras[r.LoRA] {
		return fmt.Errorf("%w: %q", ErrUnknownAdapter, r.LoRA)
	}
	if _, dup := e.live[r.ID]; dup {
		return fmt.Errorf("%w: duplicate request id %q", ErrInvalidRequest, r.ID)
	}
	s.arrival = e.clock.Now()
	e.live[r.ID] = s
	e.waiting.pushBack(s)
	e.kickAtLocked(s.arrival)
	return nil
}

func (e *Engine) check(r *Request) error {
	switch {
	case r.Sink == nil:
		return fmt.Errorf("%w: nil sink", ErrInvalidRequest)
	case r.ID == "":
		return fmt.Errorf("%w: empty id", ErrInvalidRequest)
	case len(r.Prompt) == 0:
		return fmt.Errorf("%w: empty prompt", ErrInvalidRequest)
	case r.MaxTokens < 1:
		return fmt.Errorf("%w: max tokens must be at least 1, got %d", ErrInvalidRequest, r.MaxTokens)
	case r.MinTokens < 0 || r.MinTokens > r.MaxTokens:
		return fmt.Errorf("%w: min tokens must be in [0, max tokens], got %d", ErrInvalidRequest, r.MinTokens)
	case r.Remote != nil && (r.Remote.Tokens < 0 || r.Remote.PerToken < 0):
		return fmt.Errorf("%w: negative remote KV tokens or time", ErrInvalidRequest)
	}
	capa := e.cfg.Capacity
	if total := len(r.Prompt) + r.MaxTokens; total > capa.MaxModelLen {
		return fmt.Errorf("%w: this model's maximum context length is %d tokens, but %d were requested (%d in the prompt, %d in the completion)",
			ErrContextLength, capa.MaxModelLen, total, len(r.Prompt), r.MaxTokens)
	}
	if need := blocksFor(len(r.Prompt)+r.MaxTokens, capa.BlockSize); need > capa.NumGPUBlocks {
		return fmt.Errorf("%w: the request needs %d KV blocks but the engine has %d", ErrContextLength, need, capa.NumGPUBlocks)
	}
	return nil
}

// Abort ends a live request: it leaves the queue or the batch, its blocks
// are freed, and its sink gets Done with FinishAbort. It reports whether the
// request was live.
func (e *Engine) Abort(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.live[id]
	if !ok {
		return false
	}
	e.finishLocked(s, FinishAbort, e.clock.Now())
	e.kickLocked()
	return true
}

// Release frees the blocks that request id kept with KeepBlocks. It reports
// whether there were any.
func (e *Engine) Release(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	h, ok := e.held[id]
	if !ok {
		return false
	}
	delete(e.held, id)
	e.pool.Free(h.Blocks)
	e.kickLocked()
	return true
}

// LoadAdapter makes a LoRA adapter servable.
func (e *Engine) LoadAdapter(name string) error {
	if name == "" || name == e.cfg.Model {
		return fmt.Errorf("%w: bad adapter name %q", ErrInvalidRequest, name)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.loras[name] {
		return fmt.Errorf("%w: %q", ErrAdapterLoaded, name)
	}
	e.loras[name] = true
	return nil
}

// UnloadAdapter removes a LoRA adapter. Requests already queued with it run
// to completion.
func (e *Engine) UnloadAdapter(name string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.loras[name] {
		return fmt.Errorf("%w: %q", ErrUnknownAdapter, name)
	}
	delete(e.loras, name)
	return nil
}

// HasAdapter reports whether the adapter is loaded.
func (e *Engine) HasAdapter(name string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.loras[name]
}

// ResetPrefixCache drops every cached block hash (vLLM's
// /reset_prefix_cache). Blocks in use stay allocated.
func (e *Engine) ResetPrefixCache() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pool.Reset()
}

// CachedPrefixTokens returns how many leading tokens of prompt this engine
// holds in its prefix cache right now (in whole blocks), for adapter lora.
// It is exact knowledge, for oracle policies in virtual-time studies.
func (e *Engine) CachedPrefixTokens(prompt []uint32, lora string) int {
	hashes := e.BlockHashes(prompt, lora, nil)
	return e.CachedBlocks(hashes) * e.cfg.Capacity.BlockSize
}

// BlockHashes appends to dst the chain hashes of prompt's full blocks at this
// engine's block size, as the engine keys its prefix cache. Engines with the
// same block size give the same hashes, so a caller can hash a prompt once
// and ask many engines with CachedBlocks.
func (e *Engine) BlockHashes(prompt []uint32, lora string, dst []kvcache.BlockHash) []kvcache.BlockHash {
	return kvcache.AppendChain(dst, kvcache.RootHash(lora), prompt, e.cfg.Capacity.BlockSize)
}

// CachedBlocks returns how many leading hashes (from BlockHashes) are in the
// engine's prefix cache right now.
func (e *Engine) CachedBlocks(hashes []kvcache.BlockHash) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pool.MatchPrefix(hashes)
}

// SetStepSpike injects latency spikes: each step, with probability prob,
// takes extra longer. prob 0 turns spikes off.
func (e *Engine) SetStepSpike(prob float64, extra time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.spikeProb, e.spikeDur = prob, extra
}

// Close aborts every live request and stops the step loop. Later Submits
// fail with ErrClosed.
func (e *Engine) Close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	now := e.clock.Now()
	for _, s := range e.liveSorted() {
		e.finishLocked(s, FinishAbort, now)
	}
	if e.timer != nil && e.timer.Stop() {
		e.busy = false
	}
	e.timer = nil
	out := e.takeEvents()
	e.mu.Unlock()
	deliver(out)
}

// liveSorted returns live requests in arrival order, so that Close is
// deterministic.
func (e *Engine) liveSorted() []*seq {
	all := make([]*seq, 0, len(e.live))
	for _, s := range e.live {
		all = append(all, s)
	}
	sort.Slice(all, func(i, j int) bool {
		if !all[i].arrival.Equal(all[j].arrival) {
			return all[i].arrival.Before(all[j].arrival)
		}
		return all[i].req.ID < all[j].req.ID
	})
	return all
}

// MaxModelLag bounds how far the engine's model time may fall behind the
// real clock before the engine resyncs to it (Snapshot.Resyncs counts it).
// Within the bound, a late timer neither stretches a step nor delays an
// arrival's step, so the real clock computes the same schedule as a
// virtual one; beyond it, the engine could not keep up and takes real time.
const MaxModelLag = 100 * time.Millisecond

// ResyncLogInterval is the least time between two warnings that an engine
// fell behind the real clock; the resyncs in between are logged at debug
// level and counted in the next warning, so that a busy machine does not
// flood the terminal (Snapshot.Resyncs counts every one).
const ResyncLogInterval = time.Minute

// logResync reports a resync of model time to the real clock at real, lag
// behind it. Called with e.mu held.
func (e *Engine) logResync(real time.Time, lag time.Duration) {
	st := &e.stats
	if !st.resyncWarned.IsZero() && real.Sub(st.resyncWarned) < ResyncLogInterval {
		st.resyncsQuiet++
		e.log.Debug("engine fell behind the real clock; resyncing model time",
			"lag", lag.String(), "max_lag", MaxModelLag.String())
		return
	}
	e.log.Warn("engine fell behind the real clock; resyncing model time",
		"lag", lag.String(), "max_lag", MaxModelLag.String(),
		"resyncs_since_last_warning", st.resyncsQuiet+1)
	st.resyncWarned, st.resyncsQuiet = real, 0
}

// kickLocked makes sure a step is scheduled.
func (e *Engine) kickLocked() { e.kickAtLocked(e.clock.Now()) }

// kickAtLocked schedules a step that starts, in model time, at at.
func (e *Engine) kickAtLocked(at time.Time) {
	if e.busy || e.closed {
		return
	}
	e.busy = true
	e.kickAt = at
	e.timer = e.clock.AfterFunc(0, e.tick)
}

// tick completes the batch in flight (if any), plans the next one, delivers
// the sink calls, and schedules its own next run at the end of the new step.
func (e *Engine) tick() {
	e.mu.Lock()
	if e.closed {
		e.busy = false
		e.mu.Unlock()
		return
	}
	// The model's time: a step ends when planned and a kicked step starts
	// when it was kicked, even if the real clock's timer fires late. So
	// late timers do not accumulate, and given the same arrival times the
	// real clock gives the same latencies as a virtual one.
	real := e.clock.Now()
	now := real
	switch {
	case e.inStep:
		now = e.stepEnd
	case !e.kickAt.IsZero():
		now = e.kickAt
	}
	if real.Before(now) {
		now = real
	}
	if real.Sub(now) > MaxModelLag {
		// The real clock ran too far ahead (a long stall, or steps shorter
		// than the work of computing them): give up exactness and resync,
		// so that new arrivals are not held back.
		e.logResync(real, real.Sub(now))
		now = real
		e.stats.resyncs++
	}
	e.inStep, e.kickAt = false, time.Time{}
	if len(e.batch) > 0 {
		e.completeBatch(now)
	}
	d, ok := e.planBatch(now)
	if e.stepObs != nil {
		e.stepObs.EndStep(now)
	}
	if ok {
		e.stats.steps++
		e.stats.busyTime += d
		end := now.Add(d)
		// A zero-length step has no model time to keep: the next tick
		// starts at whatever the clock says then.
		e.inStep, e.stepEnd = d > 0, end
		out := e.takeEvents()
		e.mu.Unlock()
		deliver(out)
		e.mu.Lock()
		e.recycle(out)
		if e.closed {
			e.busy = false
			e.mu.Unlock()
			return
		}
		// Measure the wait from the step's start, so that time spent
		// delivering does not stretch the step on the real clock.
		e.timer = e.clock.AfterFunc(end.Sub(e.clock.Now()), e.tick)
		e.mu.Unlock()
		return
	}
	e.busy = false
	e.timer = nil
	if e.deferred {
		// A request arrived after the model time of this step, while this
		// tick was pending: start a fresh step at its arrival.
		e.kickAtLocked(e.deferredAt)
	}
	out := e.takeEvents()
	e.mu.Unlock()
	deliver(out)
}

// takeEvents hands the queued sink calls to the caller, who delivers them
// outside the lock and gives the slice back with recycle.
func (e *Engine) takeEvents() []event {
	if len(e.out) == 0 {
		return nil
	}
	out := e.out
	e.out, e.spare = e.spare, nil
	return out
}

// recycle keeps a delivered event slice for reuse. Lock held.
func (e *Engine) recycle(out []event) {
	if out == nil || e.spare != nil {
		return
	}
	clear(out)
	e.spare = out[:0]
}

func deliver(out []event) {
	for i := range out {
		ev := &out[i]
		if ev.done {
			ev.sink.Done(ev.result)
		} else {
			ev.sink.Token(ev.token, ev.index, ev.at)
		}
	}
}

// completeBatch applies the step that just ended: scheduled tokens become
// computed, full blocks enter the prefix cache, and sequences that reached
// their end produce one token.
func (e *Engine) completeBatch(now time.Time) {
	bs := e.cfg.Capacity.BlockSize
	finished := false
	for _, s := range e.batch {
		if s.state != stateRunning || s.sched == 0 {
			continue // aborted or preempted during the step
		}
		s.computed += s.sched
		s.sched = 0
		e.storeBlocks(s, bs)
		if s.computed < len(s.tokens) {
			continue // a chunk of a longer prefill
		}
		tok, eos := e.sample(s)
		s.tokens = append(s.tokens, tok)
		s.numOutput++
		e.stats.generationToks++
		if !s.promptDone {
			s.promptDone = true
			s.firstToken = now
			e.stats.promptTokens += uint64(s.numPrompt)
		}
		e.out = append(e.out, event{sink: s.req.Sink, token: tok, index: s.numOutput - 1, at: now})
		switch {
		case s.req.StopAfter != nil && s.numOutput >= s.req.MinTokens && s.req.StopAfter(tok, s.numOutput-1):
			// As vLLM, a stop string wins over the length limit.
			e.finishLocked(s, FinishStop, now)
			finished = true
		case s.numOutput >= s.req.MaxTokens:
			e.finishLocked(s, FinishLength, now)
			finished = true
		case eos:
			e.finishLocked(s, FinishStop, now)
			finished = true
		}
	}
	if finished {
		e.compactRunning()
	}
	e.batch = e.batch[:0]
}

// storeBlocks registers s's newly completed full blocks in the prefix cache.
func (e *Engine) storeBlocks(s *seq, bs int) {
	full := s.computed / bs
	for len(s.hashes) < full {
		i := len(s.hashes)
		parent := s.root
		if i > 0 {
			parent = s.hashes[i-1]
		}
		s.hashes = append(s.hashes, kvcache.HashBlock(parent, s.tokens[i*bs:(i+1)*bs]))
	}
	for s.stored < full && s.stored < len(s.blocks) {
		i := s.stored
		parent := s.root
		if i > 0 {
			parent = s.hashes[i-1]
		}
		e.pool.Store(s.blocks[i], kvcache.StoredBlock{
			Hash: s.hashes[i], Parent: parent, HasParent: i > 0,
			Tokens: s.tokens[i*bs : (i+1)*bs], Extra: s.req.LoRA,
		})
		s.stored++
	}
}

// sample draws the next output token and whether it ends the sequence.
func (e *Engine) sample(s *seq) (uint32, bool) {
	r := splitmix(&s.rng)
	tok := uint32(r % outputVocab)
	eos := false
	if e.cfg.EOSProbability > 0 && !s.req.IgnoreEOS && s.numOutput+1 >= max(s.req.MinTokens, 1) {
		eos = float64(splitmix(&s.rng)>>11)/(1<<53) < e.cfg.EOSProbability
	}
	return tok, eos
}

// outputVocab bounds generated token ids so that their words (tokenizer.Word)
// have at most three letters.
const outputVocab = 18278

// finishLocked ends s, frees or keeps its blocks, and queues its Done call.
func (e *Engine) finishLocked(s *seq, reason FinishReason, now time.Time) {
	prev := s.state
	s.state = stateDone
	delete(e.live, s.req.ID)
	if s.transfer != nil {
		s.transfer.Stop()
		s.transfer = nil
	}
	if prev == stateTransferring {
		e.stats.transferring--
	}
	res := Result{
		ID: s.req.ID, Reason: reason,
		PromptTokens: s.numPrompt, CachedTokens: s.cachedTokens, OutputTokens: s.numOutput,
		Preemptions: s.preemptions,
		Arrival:     s.arrival, Scheduled: s.scheduled, FirstToken: s.firstToken, Finished: now,
	}
	if len(s.blocks) > 0 {
		if s.req.KeepBlocks && reason != FinishAbort {
			h := &HeldBlocks{Blocks: s.blocks, Tokens: min(s.computed, len(s.tokens))}
			e.held[s.req.ID] = h
			res.Held = h
		} else {
			e.pool.Free(s.blocks)
		}
		s.blocks = nil
	}
	if prev == stateRunning || prev == stateTransferring {
		// Removed from running by compactRunning (completeBatch) or here.
		if reason == FinishAbort {
			e.removeRunning(s)
		}
	}
	switch reason {
	case FinishLength:
		e.stats.finished[0]++
	case FinishStop:
		e.stats.finished[1]++
	default:
		e.stats.finished[2]++
	}
	e.out = append(e.out, event{sink: s.req.Sink, done: true, result: res})
}

func (e *Engine) removeRunning(s *seq) {
	for i, r := range e.running {
		if r == s {
			e.running = append(e.running[:i], e.running[i+1:]...)
			return
		}
	}
}

func (e *Engine) compactRunning() {
	n := 0
	for _, s := range e.running {
		if s.state != stateDone {
			e.running[n] = s
			n++
		}
	}
	clear(e.running[n:])
	e.running = e.running[:n]
}

// planBatch builds the next batch, vLLM V1 style: running sequences first
// (preempting the newest when blocks run out), then waiting ones FCFS while
// the token budget, max_num_seqs, max_loras and free blocks allow. It
// returns the step's duration and whether there is a step at all.
func (e *Engine) planBatch(now time.Time) (time.Duration, bool) {
	capa := e.cfg.Capacity
	bs := capa.BlockSize
	budget := capa.MaxNumBatchedTokens
	preempted := false
	prefillTokens, decodeSeqs, context := 0, 0, 0

	add := func(s *seq, n int) {
		s.sched = n
		budget -= n
		e.batch = append(e.batch, s)
		if s.promptDone && n == 1 && s.computed == len(s.tokens)-1 {
			decodeSeqs++
		} else {
			prefillTokens += n
		}
		context += s.computed + n
	}

	for i := 0; i < len(e.running) && budget > 0; i++ {
		s := e.running[i]
		if s.state != stateRunning {
			continue // transferring
		}
		n := min(len(s.tokens)-s.computed, budget)
		for !e.grow(s, s.computed+n, bs) {
			victim := e.newestPreemptible()
			e.preempt(victim)
			preempted = true
			if victim == s {
				s = nil
				break
			}
		}
		if s == nil {
			break
		}
		add(s, n)
	}

	// After a preemption vLLM admits nothing new this step; but an empty
	// batch would leave the engine idle with work queued, so admit then.
	e.deferred = false
	if !preempted || len(e.batch) == 0 {
		var skipped []*seq
		for budget > 0 && len(e.running) < capa.MaxNumSeqs && e.waiting.len() > 0 {
			s := e.waiting.front()
			if s.state == stateDone {
				e.waiting.popFront()
				continue
			}
			if s.arrival.After(now) {
				// Arrived during a late timer's delay (real clock only).
				e.deferred, e.deferredAt = true, s.arrival
				break
			}
			if s.req.LoRA != "" && !e.loraFits(s.req.LoRA) {
				e.waiting.popFront()
				skipped = append(skipped, s)
				continue
			}
			if !e.admit(s, now, budget, bs) {
				break
			}
			e.waiting.popFront()
			e.running = append(e.running, s)
			if s.state == stateRunning {
				add(s, min(len(s.tokens)-s.computed, budget))
			}
		}
		for i := len(skipped) - 1; i >= 0; i-- {
			e.waiting.pushFront(skipped[i])
		}
	}

	if len(e.batch) == 0 {
		return 0, false
	}
	d := e.cfg.StepTime.Duration(prefillTokens, decodeSeqs, context)
	if e.spikeProb > 0 && float64(splitmix(&e.spikeRNG)>>11)/(1<<53) < e.spikeProb {
		d += e.spikeDur
	}
	return d, true
}

// admit tries to give a waiting sequence its blocks: prefix-cache hits are
// reused, the rest of the first chunk (or of the remote prompt) allocated.
// It reports false, changing nothing, when the blocks do not fit.
func (e *Engine) admit(s *seq, now time.Time, budget, bs int) bool {
	// Prefix-cache lookup over the full blocks, leaving at least one token
	// to compute so that the step produces logits (as vLLM does).
	for len(s.hashes) < len(s.tokens)/bs {
		i := len(s.hashes)
		parent := s.root
		if i > 0 {
			parent = s.hashes[i-1]
		}
		s.hashes = append(s.hashes, kvcache.HashBlock(parent, s.tokens[i*bs:(i+1)*bs]))
	}
	maxHit := (len(s.tokens) - 1) / bs
	hit := e.pool.MatchPrefix(s.hashes[:maxHit])
	computed := hit * bs
	var upto int
	if s.remote != nil {
		upto = len(s.tokens)
	} else {
		upto = computed + min(len(s.tokens)-computed, budget)
	}
	need := blocksFor(upto, bs) - hit
	reclaim := 0 // cached hits that sit in the free queue
	for _, h := range s.hashes[:hit] {
		id, _ := e.pool.Lookup(h)
		if e.pool.RefCount(id) == 0 {
			reclaim++
		}
	}
	if need+reclaim > e.pool.NumFree() {
		return false
	}
	s.blocks = s.blocks[:0]
	for _, h := range s.hashes[:hit] {
		id, _ := e.pool.Lookup(h)
		e.pool.Touch(id)
		s.blocks = append(s.blocks, id)
	}
	s.blocks, _ = e.pool.Allocate(need, s.blocks)
	s.stored = hit
	s.computed = computed
	e.stats.prefixQueries += uint64(len(s.tokens))
	e.stats.prefixHits += uint64(computed)
	if !s.admitted {
		s.admitted = true
		s.scheduled = now
		s.cachedTokens = computed
	}
	if s.remote == nil {
		s.state = stateRunning
		return true
	}
	// Remote KV: wait for the transfer of the tokens not cached here.
	remote := min(s.remote.Tokens, len(s.tokens)-1)
	missing := max(remote-computed, 0)
	s.state = stateTransferring
	e.stats.transferring++
	s.transfer = e.clock.AfterFunc(time.Duration(missing)*s.remote.PerToken, func() { e.transferDone(s, remote) })
	return true
}

// transferDone makes a sequence whose remote KV arrived runnable.
func (e *Engine) transferDone(s *seq, remote int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s.state != stateTransferring {
		return
	}
	s.transfer = nil
	e.stats.transferring--
	s.computed = max(s.computed, remote)
	s.state = stateRunning
	e.kickLocked()
}

func (e *Engine) loraFits(l string) bool {
	distinct := make([]string, 0, e.cfg.Capacity.MaxLoras)
	for _, r := range e.running {
		switch {
		case r.req.LoRA == "":
		case r.req.LoRA == l:
			return true
		case !contains(distinct, r.req.LoRA):
			distinct = append(distinct, r.req.LoRA)
		}
	}
	return len(distinct) < e.cfg.Capacity.MaxLoras
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// grow allocates blocks so that s holds upto tokens. It reports false,
// allocating nothing, when there are not enough free blocks.
func (e *Engine) grow(s *seq, upto, bs int) bool {
	need := blocksFor(upto, bs) - len(s.blocks)
	if need <= 0 {
		return true
	}
	var err error
	s.blocks, err = e.pool.Allocate(need, s.blocks)
	return err == nil
}

// newestPreemptible is the last running sequence.
func (e *Engine) newestPreemptible() *seq { return e.running[len(e.running)-1] }

// preempt sends s back to the front of the waiting queue, freeing its
// blocks (recompute preemption: its full blocks stay in the prefix cache
// until evicted, so resuming may be cheap).
func (e *Engine) preempt(s *seq) {
	e.running = e.running[:len(e.running)-1]
	if s.state == stateTransferring {
		s.transfer.Stop()
		s.transfer = nil
		e.stats.transferring--
		s.remote = nil // the transferred KV is lost: recompute locally
	}
	e.pool.Free(s.blocks)
	s.blocks = s.blocks[:0]
	s.stored = 0
	s.computed = 0
	s.sched = 0
	s.state = stateWaiting
	s.preemptions++
	e.stats.preemptions++
	if e.log.Enabled(context.Background(), slog.LevelDebug) {
		e.log.Debug("request preempted", "request_id", s.req.ID,
			"free_blocks", e.pool.NumFree(), "running", len(e.running))
	}
	e.waiting.pushFront(s)
	// A preempted sequence may already be in the batch being built.
	for i, b := range e.batch {
		if b == s {
			e.batch = append(e.batch[:i], e.batch[i+1:]...)
			break
		}
	}
}

func blocksFor(tokens, bs int) int { return (tokens + bs - 1) / bs }

// seedFor derives a request's generator state.
func seedFor(engineSeed, reqSeed uint64, root kvcache.BlockHash, prompt []uint32) uint64 {
	x := engineSeed*0x9e3779b97f4a7c15 ^ bits.RotateLeft64(reqSeed, 17)
	if reqSeed == 0 {
		x ^= uint64(kvcache.HashBlock(root, prompt))
	}
	return x
}

func splitmix(state *uint64) uint64 {
	*state += 0x9e3779b97f4a7c15
	z := *state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
