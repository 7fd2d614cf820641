package simulator

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/halyard-dev/halyard/internal/simclock"
	"github.com/halyard-dev/halyard/internal/simulator/kvcache"
)

// mooncakeRecord is one line of the Mooncake conversation trace.
type mooncakeRecord struct {
	Timestamp    int64   `json:"timestamp"`
	InputLength  int     `json:"input_length"`
	OutputLength int     `json:"output_length"`
	HashIDs      []int64 `json:"hash_ids"`
}

const traceBlock = 512

func readMooncake(tb testing.TB, path string) []mooncakeRecord {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatalf("open trace: %v", err)
	}
	defer f.Close()
	var recs []mooncakeRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for line := 1; sc.Scan(); line++ {
		var r mooncakeRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			tb.Fatalf("%s:%d: %v", path, line, err)
		}
		recs = append(recs, r)
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return recs
}

// mooncakePrompt maps each hash id to a fixed seeded run of 512 token ids
// and cuts the last block to the input length (traces/PROVENANCE.md).
func mooncakePrompt(r mooncakeRecord, dst []uint32) []uint32 {
	dst = dst[:0]
	for _, h := range r.HashIDs {
		state := uint64(h)*0x9e3779b97f4a7c15 + 12345
		for range traceBlock {
			if len(dst) == r.InputLength {
				return dst
			}
			dst = append(dst, uint32(splitmix(&state)%128256))
		}
	}
	for len(dst) < r.InputLength { // more input than hash blocks: pad
		dst = append(dst, uint32(len(dst)%128256))
	}
	return dst
}

type replayStats struct {
	submitted, finished, refused int
	ttftSum, e2eSum              time.Duration
	outstanding                  []int
	prefixHits, prefixQueries    uint64
	simulated                    time.Duration
}

// replayMooncake runs records on n engines of the h100 profile on one
// virtual clock, each request to the engine that pickEngine chooses, and
// returns the totals.
func replayMooncake(tb testing.TB, recs []mooncakeRecord, n int) replayStats {
	tb.Helper()
	start := time.Unix(0, 0)
	clock := simclock.NewVirtual(start)
	p, err := LoadProfile("h100-llama3-8b")
	if err != nil {
		tb.Fatal(err)
	}
	engines := make([]*Engine, n)
	for i := range engines {
		if engines[i], err = NewEngine(p.Config("llama-3-8b"), clock); err != nil {
			tb.Fatal(err)
		}
	}
	st := replayStats{outstanding: make([]int, n)}
	buf := make([]uint32, 0, 1<<17)
	var hashes []kvcache.BlockHash
	for i, r := range recs {
		clock.AfterFunc(time.Duration(r.Timestamp)*time.Millisecond, func() {
			buf = mooncakePrompt(r, buf)
			hashes = engines[0].BlockHashes(buf, "", hashes[:0])
			e := pickEngine(engines, hashes, st.outstanding)
			err := engines[e].Submit(Request{
				ID: fmt.Sprint(i), Prompt: buf, MaxTokens: max(r.OutputLength, 1),
				Sink: SinkFuncs{OnDone: func(res Result) {
					st.outstanding[e]--
					st.finished++
					st.ttftSum += res.TTFT()
					st.e2eSum += res.E2E()
				}},
			})
			if err != nil {
				st.refused++
				return
			}
			st.outstanding[e]++
			st.submitted++
		})
	}
	clock.Run()
	st.simulated = clock.Now().Sub(start)
	for _, e := range engines {
		s := e.Snapshot()
		st.prefixHits += s.PrefixHits
		st.prefixQueries += s.PrefixQueries
	}
	return st
}

// pickEngine is a simple cache-aware policy: the engine holding the longest
// prefix of the prompt, unless it has four more outstanding requests than
// the least loaded engine, which then wins (ties to the lowest index).
func pickEngine(engines []*Engine, hashes []kvcache.BlockHash, outstanding []int) int {
	least, best, bestHit := 0, -1, 0
	for j, e := range engines {
		if outstanding[j] < outstanding[least] {
			least = j
		}
		if hit := e.CachedBlocks(hashes); hit > bestHit {
			best, bestHit = j, hit
		}
	}
	if best < 0 || outstanding[best] > outstanding[least]+4 {
		return least
	}
	return best
}

const mooncakePath = "../../traces/conversation_trace.jsonl"

// TestMooncakeReplayVirtual replays the first 600 requests (about three
// minutes) on 16 engines in virtual time: every request finishes, none is
// refused, the trace's prefix reuse shows up as cache hits, and it takes
// no wall-clock sleeping.
func TestMooncakeReplayVirtual(t *testing.T) {
	if testing.Short() {
		t.Skip("replays three minutes of the Mooncake trace")
	}
	recs := readMooncake(t, mooncakePath)
	if len(recs) != 12031 {
		t.Fatalf("trace has %d records, want 12031", len(recs))
	}
	recs = recs[:600]
	wall := time.Now()
	st := replayMooncake(t, recs, 16)
	elapsed := time.Since(wall)
	if st.refused != 0 || st.finished != len(recs) {
		t.Fatalf("refused %d, finished %d of %d", st.refused, st.finished, len(recs))
	}
	hitRate := float64(st.prefixHits) / float64(st.prefixQueries)
	if hitRate < 0.05 {
		t.Errorf("prefix hit rate %.3f; the trace shares prefixes", hitRate)
	}
	if st.simulated < time.Duration(recs[len(recs)-1].Timestamp)*time.Millisecond {
		t.Errorf("simulated %v, less than the trace's span", st.simulated)
	}
	if elapsed > st.simulated {
		t.Errorf("virtual replay took %v of wall time for %v simulated", elapsed, st.simulated)
	}
	t.Logf("%d requests, %v simulated in %v wall; hit rate %.3f; mean TTFT %v, mean E2E %v",
		st.finished, st.simulated, elapsed, hitRate, st.ttftSum/time.Duration(st.finished), st.e2eSum/time.Duration(st.finished))
}

// BenchmarkMooncakeReplay16Engines replays the whole Mooncake conversation
// trace (12,031 requests over 59 minutes) on 16 h100 engines in virtual
// time and reports simulated engine-seconds per wall-clock second.
func BenchmarkMooncakeReplay16Engines(b *testing.B) {
	recs := readMooncake(b, mooncakePath)
	b.ReportAllocs()
	var simulated time.Duration
	var st replayStats
	cpu0 := cpuTime()
	for b.Loop() {
		st = replayMooncake(b, recs, 16)
		simulated += st.simulated
	}
	cpu := cpuTime() - cpu0
	// Wall time is what a shared machine gives; CPU time (user+system of
	// the process) is what the replay costs.
	b.ReportMetric(16*simulated.Seconds()/b.Elapsed().Seconds(), "engine-s/wall-s")
	b.ReportMetric(16*simulated.Seconds()/cpu.Seconds(), "engine-s/cpu-s")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
	b.ReportMetric(simulated.Seconds()/float64(b.N), "simulated-s/op")
	b.ReportMetric(float64(st.prefixHits)/float64(st.prefixQueries), "hit-rate")
}

// cpuTime is the process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkEngineStep measures one engine step of a steady decode batch of
// 64 sequences with 2,000-token contexts on a virtual clock.
func BenchmarkEngineStep(b *testing.B) {
	clock := simclock.NewVirtual(time.Unix(0, 0))
	p, _ := LoadProfile("h100-llama3-8b")
	e, err := NewEngine(p.Config("m"), clock)
	if err != nil {
		b.Fatal(err)
	}
	sink := SinkFuncs{}
	next := 0
	submit := func() {
		next++
		pr := make([]uint32, 2000)
		for i := range pr {
			pr[i] = uint32(next*7919 + i)
		}
		if err := e.Submit(Request{ID: fmt.Sprint(next), Prompt: pr, MaxTokens: 1000, Sink: sink}); err != nil {
			b.Fatal(err)
		}
	}
	// Keep 64 sequences running: replace each one that finishes.
	sink.OnDone = func(Result) { submit() }
	for range 64 {
		submit()
	}
	for range 200 { // past the prefills
		clock.Step()
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		clock.Step()
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}
