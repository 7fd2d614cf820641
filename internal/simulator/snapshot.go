package simulator

import (
	"sort"
	"time"
)

// Snapshot is an engine's observable state at one instant: what vLLM exports
// on /metrics, read directly. Counters only grow.
type Snapshot struct {
	// Time is the engine clock's time of the snapshot.
	Time time.Time
	// Model is the served base model.
	Model string
	// Running counts requests in the batch (vllm:num_requests_running);
	// Waiting counts queued ones and, as vLLM does, admitted ones still
	// waiting for remote KV (vllm:num_requests_waiting).
	Running, Waiting int
	// KVUsage is the fraction of KV blocks held by requests, 0 to 1
	// (vllm:kv_cache_usage_perc).
	KVUsage float64
	// NumBlocks and BlockSize are the KV cache's shape
	// (vllm:cache_config_info num_gpu_blocks, block_size); FreeBlocks
	// counts blocks an allocation may take, CachedBlocks those reusable by
	// prefix hash.
	NumBlocks, BlockSize, FreeBlocks, CachedBlocks int
	// HeldBlocks counts blocks kept by finished KeepBlocks requests.
	HeldBlocks int
	// PrefixQueries and PrefixHits count prompt tokens looked up in the
	// prefix cache at admission and tokens found
	// (vllm:prefix_cache_queries_total, vllm:prefix_cache_hits_total).
	PrefixQueries, PrefixHits uint64
	// PromptTokens and GenerationTokens count prefilled prompt tokens and
	// generated tokens (vllm:prompt_tokens_total,
	// vllm:generation_tokens_total).
	PromptTokens, GenerationTokens uint64
	// Preemptions counts recompute preemptions (vllm:num_preemptions_total).
	Preemptions uint64
	// FinishedLength, FinishedStop and FinishedAbort count finished
	// requests by reason (vllm:request_success_total{finished_reason}).
	FinishedLength, FinishedStop, FinishedAbort uint64
	// Steps counts engine steps; BusyTime sums their durations.
	Steps    uint64
	BusyTime time.Duration
	// Resyncs counts the times the engine's model time fell more than
	// MaxModelLag behind the real clock and was reset to it (always 0 on a
	// virtual clock).
	Resyncs uint64
	// MaxLoras is the limit of distinct adapters in one batch; RunningLoRAs
	// and WaitingLoRAs list the adapters of running and waiting requests,
	// sorted; LoadedLoRAs the loaded adapters, sorted
	// (vllm:lora_requests_info).
	MaxLoras                                int
	RunningLoRAs, WaitingLoRAs, LoadedLoRAs []string
}

// Snapshot returns the engine's current state.
func (e *Engine) Snapshot() Snapshot {
	e.mu.Lock()
	defer e.mu.Unlock()
	held := 0
	for _, h := range e.held {
		held += len(h.Blocks)
	}
	s := Snapshot{
		Time:             e.clock.Now(),
		Model:            e.cfg.Model,
		Running:          len(e.running) - e.stats.transferring,
		Waiting:          len(e.live) - len(e.running) + e.stats.transferring,
		KVUsage:          e.pool.Usage(),
		NumBlocks:        e.pool.NumBlocks(),
		BlockSize:        e.pool.BlockSize(),
		FreeBlocks:       e.pool.NumFree(),
		CachedBlocks:     e.pool.NumCached(),
		HeldBlocks:       held,
		PrefixQueries:    e.stats.prefixQueries,
		PrefixHits:       e.stats.prefixHits,
		PromptTokens:     e.stats.promptTokens,
		GenerationTokens: e.stats.generationToks,
		Preemptions:      e.stats.preemptions,
		FinishedLength:   e.stats.finished[0],
		FinishedStop:     e.stats.finished[1],
		FinishedAbort:    e.stats.finished[2],
		Steps:            e.stats.steps,
		BusyTime:         e.stats.busyTime,
		Resyncs:          e.stats.resyncs,
		MaxLoras:         e.cfg.Capacity.MaxLoras,
	}
	{
		for _, r := range e.running {
			if r.req.LoRA != "" {
				s.RunningLoRAs = appendUnique(s.RunningLoRAs, r.req.LoRA)
			}
		}
		e.waiting.each(func(r *seq) {
			if r.state == stateWaiting && r.req.LoRA != "" {
				s.WaitingLoRAs = appendUnique(s.WaitingLoRAs, r.req.LoRA)
			}
		})
		for l := range e.loras {
			s.LoadedLoRAs = append(s.LoadedLoRAs, l)
		}
		sort.Strings(s.RunningLoRAs)
		sort.Strings(s.WaitingLoRAs)
		sort.Strings(s.LoadedLoRAs)
	}
	return s
}

func appendUnique(list []string, s string) []string {
	if contains(list, s) {
		return list
	}
	return append(list, s)
}
