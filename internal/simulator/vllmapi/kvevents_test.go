package vllmapi

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"

	"github.com/halyard-dev/halyard/internal/kvevents"
	"github.com/halyard-dev/halyard/internal/simclock"
	"github.com/halyard-dev/halyard/internal/simulator"
	"github.com/halyard-dev/halyard/internal/simulator/kvcache"
	"github.com/halyard-dev/halyard/internal/tokenizer"
)

func TestDefaultReplayEndpoint(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"tcp://*:5557", "tcp://*:5558", ""},
		{"tcp://127.0.0.1:0", "tcp://127.0.0.1:0", ""},
		{"tcp://[::1]:7000", "tcp://[::1]:7001", ""},
		{"tcp://host:65535", "", "port must be 0 to 65534"},
		{"udp://host:1", "", "must be tcp://HOST:PORT"},
		{"tcp://host", "", "missing port"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := DefaultReplayEndpoint(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error = %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("= %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// describe renders events compactly: "S[h1 h2]<-p tokens=32", "R[h1]", "C".
func describe(evs []kvevents.Event) []string {
	var out []string
	for _, ev := range evs {
		switch e := ev.(type) {
		case *kvevents.BlockStored:
			parent := "root"
			if e.ParentBlockHash != nil {
				parent = e.ParentBlockHash.String()
			}
			lora := ""
			if e.LoRAName != nil {
				lora = " lora=" + *e.LoRAName
			}
			out = append(out, fmt.Sprintf("S%v<-%s tokens=%d bs=%d%s", hashes(e.BlockHashes), parent, len(e.TokenIDs), e.BlockSize, lora))
		case *kvevents.BlockRemoved:
			out = append(out, fmt.Sprintf("R%v", hashes(e.BlockHashes)))
		case *kvevents.AllBlocksCleared:
			out = append(out, "C")
		}
	}
	return out
}

func hashes(hs []kvevents.BlockHash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.String()
	}
	return out
}

func TestEventHooksGroupAStepsChangesLikeVLLM(t *testing.T) {
	var got [][]string
	h := NewEventHooks(4, func(evs []kvevents.Event) { got = append(got, describe(evs)) })
	root := kvcache.RootHash("")
	b1 := kvcache.HashBlock(root, []uint32{1, 2, 3, 4})
	b2 := kvcache.HashBlock(b1, []uint32{5, 6, 7, 8})
	b3 := kvcache.HashBlock(b2, []uint32{9, 9, 9, 9})
	other := kvcache.HashBlock(kvcache.RootHash("sql"), []uint32{1, 1, 1, 1})
	s := func(v kvcache.BlockHash) string { return kvevents.IntHash(uint64(v)).String() }

	// Step 1: one request's two blocks, an adapter's block, an eviction,
	// then the first request's third block.
	h.BlockStored(kvcache.StoredBlock{Hash: b1, Parent: root, Tokens: []uint32{1, 2, 3, 4}})
	h.BlockStored(kvcache.StoredBlock{Hash: b2, Parent: b1, HasParent: true, Tokens: []uint32{5, 6, 7, 8}})
	h.BlockStored(kvcache.StoredBlock{Hash: other, Parent: kvcache.RootHash("sql"), Tokens: []uint32{1, 1, 1, 1}, Extra: "sql"})
	h.BlockRemoved(77)
	h.BlockRemoved(78)
	h.BlockStored(kvcache.StoredBlock{Hash: b3, Parent: b2, HasParent: true, Tokens: []uint32{9, 9, 9, 9}})
	h.EndStep(time.Time{})
	// An empty step emits nothing; a reset between steps at once.
	h.EndStep(time.Time{})
	h.AllBlocksCleared()

	want := [][]string{
		{
			fmt.Sprintf("S[%s %s]<-root tokens=8 bs=4", s(b1), s(b2)),
			fmt.Sprintf("S[%s]<-root tokens=4 bs=4 lora=sql", s(other)),
			"R[77 78]",
			fmt.Sprintf("S[%s]<-%s tokens=4 bs=4", s(b3), s(b2)),
		},
		{"C"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("emitted (-want +got):\n%s", diff)
	}
}

// recorder is a kvevents.Consumer that keeps every event.
type recorder struct {
	mu     sync.Mutex
	events []string
	tokens [][]uint32
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.events = append(r.events, s)
	r.mu.Unlock()
}

func (r *recorder) BlockStored(_ string, ev *kvevents.BlockStored) {
	r.mu.Lock()
	r.tokens = append(r.tokens, ev.TokenIDs)
	r.mu.Unlock()
	r.add(fmt.Sprintf("stored %d", len(ev.BlockHashes)))
}
func (r *recorder) BlockRemoved(_ string, ev *kvevents.BlockRemoved) {
	r.add(fmt.Sprintf("removed %d", len(ev.BlockHashes)))
}
func (r *recorder) AllCleared(string)           { r.add("cleared") }
func (r *recorder) Unreliable(_, reason string) { r.add("unreliable " + reason) }

func (r *recorder) count(prefix string) (n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if strings.HasPrefix(e, prefix) {
			n += 1
		}
	}
	return n
}

// TestServerPublishesKVEvents serves an engine with --kv-events over real
// ZMQ sockets: a subscriber sees the blocks of a completion stored (with
// the prompt's token ids), evictions in a small pool, and
// /reset_prefix_cache as AllBlocksCleared; the publisher's metrics are on
// /metrics.
func TestServerPublishesKVEvents(t *testing.T) {
	inst := startSim(t, Spec{Profile: "zero", NumGPUBlocks: 40, KVEvents: "tcp://127.0.0.1:0", Name: "sim-a"})
	events, replay := inst.Server.KVEventEndpoints()
	if !strings.HasPrefix(events, "tcp://127.0.0.1:") || !strings.HasPrefix(replay, "tcp://127.0.0.1:") || events == replay {
		t.Fatalf("endpoints %q, %q", events, replay)
	}
	rec := &recorder{}
	sub, err := kvevents.NewSubscriber(kvevents.SubscriberConfig{
		Name: "sim-a", Endpoint: events, ReplayEndpoint: replay, Topic: "kv@sim-a@llama-3-8b", Consumer: rec,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = sub.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, 10*time.Second, "subscriber connected", func() bool { return sub.Status().Connected })

	c := client(inst)
	complete := func(prompt string) {
		t.Helper()
		_, err := c.Completions.New(context.Background(), openai.CompletionNewParams{
			Model: "llama-3-8b", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompt)}, MaxTokens: openai.Int(1),
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// 320 tokens: 20 blocks. The subscriber may have missed the first
	// batches while it connected: it replays them.
	first := promptText(320, 1)
	complete(first)
	eventually(t, 10*time.Second, "20 blocks stored", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		n := 0
		for _, ids := range rec.tokens {
			n += len(ids)
		}
		return n >= 320
	})
	rec.mu.Lock()
	var got []uint32
	for _, ids := range rec.tokens {
		got = append(got, ids...)
	}
	rec.mu.Unlock()
	if diff := cmp.Diff(tokenizer.Pseudo{}.Encode(first), got[:320]); diff != "" {
		t.Errorf("stored token ids are not the prompt's (-want +got):\n%s", diff)
	}

	// A second 20-block prompt in a 40-block pool, a third evicts.
	complete(promptText(320, 2))
	complete(promptText(320, 3))
	eventually(t, 10*time.Second, "evictions published", func() bool { return rec.count("removed") > 0 })

	status, _ := postJSON(t, inst.URL+"/reset_prefix_cache", "")
	if status != http.StatusOK {
		t.Fatalf("reset: %d", status)
	}
	eventually(t, 10*time.Second, "AllBlocksCleared", func() bool { return rec.count("cleared") == 1 })
	if n := rec.count("unreliable"); n != 0 {
		t.Errorf("%d unreliable events on a clean stream", n)
	}

	resp, err := http.Get(inst.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{`halyard_kvevents_published_batches_total{topic="kv@sim-a@llama-3-8b"}`, "vllm:prefix_cache_queries_total"} {
		if !strings.Contains(string(body), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

// TestEngineEventsRebuildItsCache: the events an engine's hooks emit,
// rehashed, describe exactly the blocks the engine holds, through
// admissions, evictions and a reset (virtual time, no sockets).
func TestEngineEventsRebuildItsCache(t *testing.T) {
	clock := simclock.NewVirtual(time.Unix(0, 0))
	prof, err := simulator.LoadProfile("zero")
	if err != nil {
		t.Fatal(err)
	}
	cfg := prof.Config("m")
	cfg.Capacity.NumGPUBlocks = 64
	mirror := map[uint64]bool{}
	cfg.KVEvents = NewEventHooks(cfg.Capacity.BlockSize, func(evs []kvevents.Event) {
		for _, ev := range evs {
			switch e := ev.(type) {
			case *kvevents.BlockStored:
				for _, h := range e.BlockHashes {
					mirror[h.Uint64()] = true
				}
			case *kvevents.BlockRemoved:
				for _, h := range e.BlockHashes {
					delete(mirror, h.Uint64())
				}
			case *kvevents.AllBlocksCleared:
				clear(mirror)
			}
		}
	})
	eng, err := simulator.NewEngine(cfg, clock)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	prompts := make([][]uint32, 6)
	for i := range prompts {
		prompts[i] = tokenizer.Pseudo{}.Encode(promptText(200+40*i, uint32(i%3)))
	}
	check := func(when string) {
		t.Helper()
		for i, p := range prompts {
			hs := eng.BlockHashes(p, "", nil)
			for k, h := range hs {
				if engine, ev := eng.CachedBlocks(hs[k:k+1]) == 1, mirror[uint64(h)]; engine != ev {
					t.Fatalf("%s: prompt %d block %d: engine holds %v, events say %v", when, i, k, engine, ev)
				}
			}
		}
	}
	for round := range 3 {
		for i, p := range prompts {
			err := eng.Submit(simulator.Request{ID: fmt.Sprintf("r%d-%d", round, i), Prompt: p, MaxTokens: 20, Sink: simulator.SinkFuncs{}})
			if err != nil {
				t.Fatal(err)
			}
			clock.Run()
			check(fmt.Sprintf("round %d after prompt %d", round, i))
		}
	}
	eng.ResetPrefixCache()
	check("after reset")
	if len(mirror) != 0 {
		t.Errorf("%d blocks left after a reset", len(mirror))
	}
}

// TestSpecTokenizer: --tokenizer with a rank file makes the engine count
// and cache cl100k tokens, as the router does when configured with it.
func TestSpecTokenizer(t *testing.T) {
	inst := startSim(t, Spec{Profile: "zero", Tokenizer: "../../tokenizer/testdata/cl100k_base.tiktoken"})
	status, body := postJSON(t, inst.URL+"/tokenize", map[string]any{"model": "llama-3-8b", "prompt": "hello world"})
	if status != http.StatusOK || !strings.Contains(string(body), `"tokens":[15339,1917]`) {
		t.Errorf("/tokenize = %d %s, want cl100k's [15339,1917]", status, body)
	}
	// Ids up to cl100k's vocabulary are accepted as prompts.
	status, body = postJSON(t, inst.URL+"/v1/completions", map[string]any{"model": "llama-3-8b", "prompt": []int{100000, 15339}, "max_tokens": 1})
	if status != http.StatusOK {
		t.Errorf("token-id prompt: %d %s", status, body)
	}
	if _, err := (Spec{Model: "m", Profile: "zero", Tokenizer: "/no/such.tiktoken"}).Build(simclock.Real{}, nil); err == nil || !strings.Contains(err.Error(), "tokenizer") {
		t.Errorf("missing tokenizer file: error = %v", err)
	}
}

// TestSpecModelDir: --model-dir with --gpu-memory-gib sizes the KV cache
// from the directory's config.json.
func TestSpecModelDir(t *testing.T) {
	dir := t.TempDir()
	cfg := `{"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"hidden_size":256,"torch_dtype":"bfloat16"}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// 2 layers × 2 KV heads × 64 × 2 bytes × (K,V) = 1 KiB per token,
	// 16 KiB per block; 1 GiB × 0.5 / 16 KiB = 32768 blocks.
	inst := startSim(t, Spec{Profile: "zero", ModelDir: dir, GPUMemoryGiB: 1, GPUMemoryUtilization: 0.5, BlockSize: 16})
	resp, err := http.Get(inst.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if !strings.Contains(string(body), `num_gpu_blocks="32768"`) {
		t.Errorf("metrics do not show num_gpu_blocks=32768:\n%s", grepLines(string(body), "num_gpu_blocks"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
