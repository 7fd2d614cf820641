package kvevents

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/halyard-dev/halyard/internal/fuzzseed"
	"github.com/halyard-dev/halyard/internal/simclock"
)

// deadline bounds every wait in these tests; generous for a loaded machine.
const deadline = 20 * time.Second

// recorder is a Consumer that turns every call into a line on a channel.
type recorder struct{ ch chan string }

func newRecorder() *recorder { return &recorder{ch: make(chan string, 10000)} }

func (r *recorder) BlockStored(ep string, ev *BlockStored) {
	r.ch <- fmt.Sprintf("%s stored %v tokens=%v", ep, hashList(ev.BlockHashes), ev.TokenIDs)
}
func (r *recorder) BlockRemoved(ep string, ev *BlockRemoved) {
	r.ch <- fmt.Sprintf("%s removed %v", ep, hashList(ev.BlockHashes))
}
func (r *recorder) AllCleared(ep string)                { r.ch <- ep + " cleared" }
func (r *recorder) Unreliable(ep string, reason string) { r.ch <- ep + " unreliable " + reason }

var _ Consumer = (*recorder)(nil)

func hashList(hs []BlockHash) string {
	s := make([]string, len(hs))
	for i, h := range hs {
		s[i] = h.String()
	}
	return strings.Join(s, ",")
}

// expect reads len(want) lines and compares them.
func (r *recorder) expect(t *testing.T, want ...string) {
	t.Helper()
	var got []string
	timeout := time.After(deadline)
	for len(got) < len(want) {
		select {
		case l := <-r.ch:
			got = append(got, l)
		case <-timeout:
			t.Fatalf("timed out; got so far:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("consumer calls (-want +got):\n%s", diff)
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

type rig struct {
	t   *testing.T
	pub *Publisher
	sub *Subscriber
	rec *recorder
	m   *Metrics
	ctx context.Context
	// done is closed when the subscriber's Run returns.
	done   chan struct{}
	cancel context.CancelFunc
}

func newPublisher(t *testing.T, m *Metrics, pubAddr, replayAddr string) *Publisher {
	t.Helper()
	return newPublisherFormat(t, m, pubAddr, replayAddr, FormatArray)
}

func newPublisherFormat(t *testing.T, m *Metrics, pubAddr, replayAddr string, f Format) *Publisher {
	t.Helper()
	p, err := NewPublisher(PublisherConfig{
		Format:         f,
		Endpoint:       pubAddr,
		ReplayEndpoint: replayAddr,
		Topic:          Topic("pod-0", "llama"),
		Logger:         testLogger(t).With("side", "pub"),
		Metrics:        m,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(time.Second) })
	return p
}

func newRig(t *testing.T, mutate func(*SubscriberConfig)) *rig {
	t.Helper()
	return newRigFormat(t, FormatArray, mutate)
}

func newRigFormat(t *testing.T, f Format, mutate func(*SubscriberConfig)) *rig {
	t.Helper()
	m := discardMetrics()
	p := newPublisherFormat(t, m, "tcp://127.0.0.1:0", "tcp://127.0.0.1:0", f)
	rec := newRecorder()
	cfg := SubscriberConfig{
		Name:           "e0",
		Endpoint:       p.Endpoint(),
		ReplayEndpoint: p.ReplayEndpoint(),
		Topic:          "kv@",
		Consumer:       rec,
		MinBackoff:     10 * time.Millisecond,
		MaxBackoff:     50 * time.Millisecond,
		Logger:         testLogger(t).With("side", "sub"),
		Metrics:        m,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := NewSubscriber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &rig{t: t, pub: p, sub: s, rec: rec, m: m, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if err := s.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(r.stop)
	return r
}

func (r *rig) stop() {
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(deadline):
		r.t.Error("subscriber did not stop after cancel")
	}
}

// waitSubscribed waits until the publisher's PUB socket has registered a
// subscription, so that what is published next is delivered live.
func waitSubscribed(t *testing.T, p *Publisher) {
	t.Helper()
	waitFor(t, "subscription", func() bool { return len(p.pub.(zmq4.Topics).Topics()) > 0 })
}

// waitFor polls cond until it holds, failing the test at the deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(deadline)
	for !cond() {
		select {
		case <-tick.C:
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func stored(hashes []uint64, parent *uint64, tokens ...uint32) *BlockStored {
	return NewBlockStored(hashes, parent, tokens, len(tokens)/len(hashes))
}

func removed(hashes ...uint64) *BlockRemoved { return NewBlockRemoved(hashes) }

func TestPubSubLiveRoundTrip(t *testing.T) {
	for _, f := range []Format{FormatArray, FormatMap} {
		t.Run(f.String(), func(t *testing.T) {
			r := newRigFormat(t, f, nil)
			waitSubscribed(t, r.pub)
			r.pub.Add(stored([]uint64{1, 2}, nil, 10, 11, 12, 13))
			r.pub.Add(stored([]uint64{3}, ptr[uint64](2), 14, 15))
			if !r.pub.Flush() {
				t.Fatal("Flush dropped the batch")
			}
			r.pub.Publish(removed(3))
			r.pub.Publish(&AllBlocksCleared{})
			r.rec.expect(t,
				"e0 stored 1,2 tokens=[10 11 12 13]",
				"e0 stored 3 tokens=[14 15]",
				"e0 removed 3",
				"e0 cleared",
			)
			if got := testutil.ToFloat64(r.m.Gaps.WithLabelValues("e0")); got != 0 {
				t.Errorf("gaps = %v, want 0", got)
			}
			waitFor(t, "status at seq 2", func() bool { return r.sub.Status().LastSeq == 2 })
			st := r.sub.Status()
			if !st.Connected || !st.HaveSeq || st.LastSeq != 2 || st.LastBatch.IsZero() {
				t.Errorf("status = %+v, want connected at seq 2", st)
			}
		})
	}
}

func TestSubscriberReplaysHistoryOnFirstBatch(t *testing.T) {
	m := discardMetrics()
	p := newPublisher(t, m, "tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
	// Published before anyone listens: only replay can deliver these.
	p.Publish(stored([]uint64{1}, nil, 1, 2))
	p.Publish(removed(1))
	waitFor(t, "two batches buffered", func() bool { return len(p.buffered(0)) == 2 })

	rec := newRecorder()
	s, err := NewSubscriber(SubscriberConfig{Name: "e0", Endpoint: p.Endpoint(), ReplayEndpoint: p.ReplayEndpoint(), Consumer: rec, Metrics: m, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitSubscribed(t, p)
	p.Publish(stored([]uint64{7}, nil, 3, 4))
	rec.expect(t, "e0 stored 1 tokens=[1 2]", "e0 removed 1", "e0 stored 7 tokens=[3 4]")
	if got := testutil.ToFloat64(m.Replays.WithLabelValues("e0", "ok")); got != 1 {
		t.Errorf("replays ok = %v, want 1", got)
	}
}

func TestGapIsFilledByReplay(t *testing.T) {
	r := newRig(t, nil)
	drop := func(seq uint64) bool { return seq == 1 }
	r.pub.dropSend.Store(&drop)
	waitSubscribed(t, r.pub)
	r.pub.Publish(stored([]uint64{1}, nil, 1, 2))
	r.pub.Publish(stored([]uint64{2}, ptr[uint64](1), 3, 4)) // lost on the wire, kept for replay
	r.pub.Publish(removed(1))
	r.rec.expect(t, "e0 stored 1 tokens=[1 2]", "e0 stored 2 tokens=[3 4]", "e0 removed 1")
	waitFor(t, "status at seq 2", func() bool { return r.sub.Status().LastSeq == 2 })
	for name, c := range map[string]float64{
		"gaps":        testutil.ToFloat64(r.m.Gaps.WithLabelValues("e0")),
		"replays ok":  testutil.ToFloat64(r.m.Replays.WithLabelValues("e0", "ok")),
		"unreliable":  float64(r.sub.Status().Unreliable),
		"last seq":    testutil.ToFloat64(r.m.LastSeq.WithLabelValues("e0")),
		"batches":     testutil.ToFloat64(r.m.Batches.WithLabelValues("e0")),
		"stored evts": testutil.ToFloat64(r.m.Events.WithLabelValues("e0", TagBlockStored)),
	} {
		want := map[string]float64{"gaps": 1, "replays ok": 1, "unreliable": 0, "last seq": 2, "batches": 3, "stored evts": 2}[name]
		if c != want {
			t.Errorf("%s = %v, want %v", name, c, want)
		}
	}
}

func TestUnrecoverableGapMakesEndpointUnreliable(t *testing.T) {
	r := newRig(t, nil)
	drop := func(seq uint64) bool { return seq == 1 }
	r.pub.dropBuffer.Store(&drop) // lost everywhere: replay cannot fill it
	waitSubscribed(t, r.pub)
	r.pub.Publish(stored([]uint64{1}, nil, 1, 2))
	r.pub.Publish(removed(1))
	r.pub.Publish(stored([]uint64{3}, nil, 5, 6))
	r.rec.expect(t,
		"e0 stored 1 tokens=[1 2]",
		"e0 unreliable gap",
		// Rebuilt from what the publisher still holds, then the live batch.
		"e0 stored 1 tokens=[1 2]",
		"e0 stored 3 tokens=[5 6]",
	)
	if got := testutil.ToFloat64(r.m.Unreliable.WithLabelValues("e0", ReasonGap)); got != 1 {
		t.Errorf("unreliable{gap} = %v, want 1", got)
	}
}

func TestGapWithoutReplayEndpoint(t *testing.T) {
	r := newRig(t, func(c *SubscriberConfig) { c.ReplayEndpoint = "" })
	drop := func(seq uint64) bool { return seq == 1 }
	r.pub.dropSend.Store(&drop)
	waitSubscribed(t, r.pub)
	r.pub.Publish(stored([]uint64{1}, nil, 1, 2))
	r.pub.Publish(removed(1))
	r.pub.Publish(stored([]uint64{3}, nil, 5, 6))
	r.rec.expect(t, "e0 stored 1 tokens=[1 2]", "e0 unreliable gap", "e0 stored 3 tokens=[5 6]")
}

func TestPublisherRestart(t *testing.T) {
	m := discardMetrics()
	p1 := newPublisher(t, m, "tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
	pubAddr, replayAddr := p1.Endpoint(), p1.ReplayEndpoint()
	rec := newRecorder()
	s, err := NewSubscriber(SubscriberConfig{
		Name: "e0", Endpoint: pubAddr, ReplayEndpoint: replayAddr, Consumer: rec, Metrics: m,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	waitSubscribed(t, p1)
	p1.Publish(stored([]uint64{1}, nil, 1, 2))
	p1.Publish(stored([]uint64{2}, ptr[uint64](1), 3, 4))
	rec.expect(t, "e0 stored 1 tokens=[1 2]", "e0 stored 2 tokens=[3 4]")
	if err := p1.Close(time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "disconnect", func() bool { return !s.Status().Connected })

	// The engine comes back on the same ports with a fresh sequence.
	p2 := newPublisher(t, m, pubAddr, replayAddr)
	waitSubscribed(t, p2)
	p2.Publish(stored([]uint64{9}, nil, 7, 8))
	rec.expect(t, "e0 cleared", "e0 stored 9 tokens=[7 8]")
	if got := testutil.ToFloat64(m.Restarts.WithLabelValues("e0")); got != 1 {
		t.Errorf("restarts = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.Reconnects.WithLabelValues("e0")); got < 1 {
		t.Errorf("reconnects = %v, want at least 1", got)
	}
}

func TestReconnectAfterMissedBatchesStartsOver(t *testing.T) {
	// A subscriber that reconnects to find the sequence moved on cannot tell
	// a gap from a restart: it declares the endpoint unreliable and rebuilds.
	r := newRig(t, nil)
	waitSubscribed(t, r.pub)
	r.pub.Publish(stored([]uint64{1}, nil, 1, 2))
	r.rec.expect(t, "e0 stored 1 tokens=[1 2]")
	// Stop Run, then play the reconnection through handle directly: a fresh
	// session whose first batch skips seq 1..2.
	r.cancel()
	<-r.done
	r.pub.Publish(removed(1))
	r.pub.Publish(stored([]uint64{5}, nil, 9, 9))
	waitFor(t, "batches buffered", func() bool { return len(r.pub.buffered(0)) == 3 })
	r.sub.fresh = true
	payload, err := EncodeBatch(nil, &Batch{Events: []Event{removed(5)}}, FormatArray)
	if err != nil {
		t.Fatal(err)
	}
	seq := make([]byte, 8)
	binary.BigEndian.PutUint64(seq, 3)
	r.sub.handle(context.Background(), [][]byte{[]byte("kv@"), seq, payload})
	r.rec.expect(t,
		"e0 unreliable reconnect",
		"e0 stored 1 tokens=[1 2]",
		"e0 removed 1",
		"e0 stored 5 tokens=[9 9]",
		"e0 removed 5",
	)
}

func TestMalformedFrames(t *testing.T) {
	m := discardMetrics()
	raw := zmq4.NewPub(context.Background())
	defer raw.Close()
	if err := raw.Listen("tcp://127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	s, err := NewSubscriber(SubscriberConfig{Name: "e0", Endpoint: "tcp://" + raw.Addr().String(), Consumer: rec, Metrics: m, Logger: testLogger(t), SkipInitialReplay: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "subscription", func() bool { return len(raw.(zmq4.Topics).Topics()) > 0 })

	be := func(n uint64) []byte { b := make([]byte, 8); binary.BigEndian.PutUint64(b, n); return b }
	good, err := EncodeBatch(nil, &Batch{Events: []Event{removed(4)}}, FormatArray)
	if err != nil {
		t.Fatal(err)
	}
	msgs := [][][]byte{
		{[]byte("t"), be(0)},                            // two frames
		{[]byte("t"), []byte{1, 2, 3}, good},            // short seq frame
		{[]byte("t"), be(1), []byte{0xc1, 0x00}},        // undecodable payload
		{[]byte("t"), be(2), good},                      // fine
		{[]byte("t"), be(3), append([]byte{}, good...)}, // fine
	}
	for _, fr := range msgs {
		if err := raw.SendMulti(zmq4.NewMsgFrom(fr...)); err != nil {
			t.Fatal(err)
		}
	}
	rec.expect(t,
		"e0 unreliable decode-error",
		"e0 unreliable decode-error",
		"e0 unreliable decode-error",
		"e0 removed 4",
		"e0 removed 4",
	)
	if got := testutil.ToFloat64(m.DecodeErrors.WithLabelValues("e0")); got != 3 {
		t.Errorf("decode errors = %v, want 3", got)
	}
}

func TestPublisherDropsWhenQueueFull(t *testing.T) {
	m := discardMetrics()
	p, err := NewPublisher(PublisherConfig{Endpoint: "tcp://127.0.0.1:0", Topic: "t", QueueSize: 1, Metrics: m, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(time.Second)
	release := make(chan struct{})
	entered := make(chan struct{}, 10)
	block := func(seq uint64) bool {
		entered <- struct{}{}
		<-release
		return false
	}
	p.dropSend.Store(&block)

	var results []bool
	results = append(results, p.Publish(removed(1))) // taken by the sender, which blocks
	select {
	case <-entered:
	case <-time.After(deadline):
		t.Fatal("sender never picked up the first batch")
	}
	results = append(results, p.Publish(removed(2))) // fills the queue
	results = append(results, p.Publish(removed(3))) // dropped, without waiting
	close(release)
	if diff := cmp.Diff([]bool{true, true, false}, results); diff != "" {
		t.Errorf("Publish results (-want +got):\n%s", diff)
	}
	if got := testutil.ToFloat64(m.DroppedBatches.WithLabelValues("t")); got != 1 {
		t.Errorf("dropped = %v, want 1", got)
	}
	// The dropped batch still consumed its sequence number: seq 2 is a gap.
	waitFor(t, "two batches buffered", func() bool { return len(p.buffered(0)) == 2 })
	var seqs []uint64
	for _, s := range p.buffered(0) {
		seqs = append(seqs, s.seq)
	}
	if !slices.Equal(seqs, []uint64{0, 1}) {
		t.Errorf("buffered seqs = %v, want [0 1]", seqs)
	}
}

func TestReplayServesRawDealerWithoutDelimiter(t *testing.T) {
	p := newPublisher(t, discardMetrics(), "tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
	p.Publish(removed(1))
	p.Publish(removed(2))
	waitFor(t, "batches buffered", func() bool { return len(p.buffered(0)) == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	d := zmq4.NewDealer(ctx)
	defer d.Close()
	if err := d.Dial(p.ReplayEndpoint()); err != nil {
		t.Fatal(err)
	}
	start := make([]byte, 8)
	binary.BigEndian.PutUint64(start, 1)
	if err := d.Send(zmq4.NewMsg(start)); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		msg, err := d.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(msg.Frames) != 2 {
			t.Fatalf("reply has %d frames, want 2 (no delimiter echoed)", len(msg.Frames))
		}
		if len(msg.Frames[1]) == 0 {
			if !slices.Equal(msg.Frames[0], endSeq) {
				t.Errorf("end marker seq = %x, want -1", msg.Frames[0])
			}
			break
		}
		b, err := DecodeBatch(msg.Frames[1])
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d:%s", binary.BigEndian.Uint64(msg.Frames[0]), hashList(b.Events[0].(*BlockRemoved).BlockHashes)))
	}
	if diff := cmp.Diff([]string{"1:2"}, got); diff != "" {
		t.Errorf("replayed (-want +got):\n%s", diff)
	}
}

func TestConfigErrors(t *testing.T) {
	rec := newRecorder()
	subTests := []struct {
		name string
		cfg  SubscriberConfig
		want string
	}{
		{"no name", SubscriberConfig{Endpoint: "tcp://x:1", Consumer: rec}, "name"},
		{"no endpoint", SubscriberConfig{Name: "e", Consumer: rec}, "endpoint"},
		{"no consumer", SubscriberConfig{Name: "e", Endpoint: "tcp://x:1"}, "consumer"},
		{"backoff", SubscriberConfig{Name: "e", Endpoint: "tcp://x:1", Consumer: rec, MinBackoff: time.Second, MaxBackoff: time.Millisecond}, "maxBackoff"},
	}
	for _, tt := range subTests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewSubscriber(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewSubscriber error = %v, want one naming %q", err, tt.want)
			}
		})
	}
	pubTests := []struct {
		name string
		cfg  PublisherConfig
		want string
	}{
		{"no endpoint", PublisherConfig{}, "endpoint"},
		{"bad endpoint", PublisherConfig{Endpoint: "bogus://1"}, "endpoint"},
		{"negative buffer", PublisherConfig{Endpoint: "tcp://127.0.0.1:0", BufferSteps: -1}, "bufferSteps"},
		{"format", PublisherConfig{Endpoint: "tcp://127.0.0.1:0", Format: 7}, "format"},
	}
	for _, tt := range pubTests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewPublisher(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewPublisher error = %v, want one naming %q", err, tt.want)
			}
		})
	}
}

// frames builds a live message [topic, seq(+stream), payload].
func frames(t testing.TB, seq uint64, stream []byte, evs ...Event) [][]byte {
	t.Helper()
	payload, err := EncodeBatch(nil, &Batch{Events: evs}, FormatArray)
	if err != nil {
		t.Fatal(err)
	}
	s := binary.BigEndian.AppendUint64(nil, seq)
	return [][]byte{[]byte("kv@"), append(s, stream...), payload}
}

func TestStreamIDChangeIsARestart(t *testing.T) {
	rec := newRecorder()
	s, err := NewSubscriber(SubscriberConfig{Name: "e0", Endpoint: "tcp://127.0.0.1:1", Consumer: rec, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	a := []byte("aaaaaaaaaaaaaaaa")
	b := []byte("bbbbbbbbbbbbbbbb")
	ctx := context.Background()
	s.handle(ctx, frames(t, 0, a, removed(1)))
	s.handle(ctx, frames(t, 1, a, removed(2)))
	// Same next sequence number, but another stream: a new publisher.
	s.handle(ctx, frames(t, 2, b, removed(3)))
	rec.expect(t, "e0 removed 1", "e0 removed 2", "e0 cleared", "e0 removed 3")
}

func FuzzSubscriberHandle(f *testing.F) {
	f.Add([]byte("kv@"), []byte{0, 0, 0, 0, 0, 0, 0, 1}, []byte{0x92, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0x90}, uint8(3))
	for _, v := range fuzzseed.MsgpackValues() {
		f.Add([]byte("kv@\xff@\x00"), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, v, uint8(3))
		f.Add([]byte("kv@"), []byte{0, 1}, v, uint8(3)) // a short sequence number
	}
	f.Fuzz(func(t *testing.T, topic, seq, payload []byte, n uint8) {
		s, err := NewSubscriber(SubscriberConfig{Name: "e0", Endpoint: "tcp://127.0.0.1:1", Consumer: nopConsumer{}, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		fr := [][]byte{topic, seq, payload}[:min(int(n), 3)]
		s.handle(context.Background(), fr)
		s.handle(context.Background(), fr)
	})
}

type nopConsumer struct{}

func (nopConsumer) BlockStored(string, *BlockStored)   {}
func (nopConsumer) BlockRemoved(string, *BlockRemoved) {}
func (nopConsumer) AllCleared(string)                  {}
func (nopConsumer) Unreliable(string, string)          {}

func TestTopic(t *testing.T) {
	if got := Topic("pod-0", "llama-3-8b"); got != "kv@pod-0@llama-3-8b" {
		t.Errorf("Topic = %q", got)
	}
}

func TestReplayTimeoutMakesGapUnreliable(t *testing.T) {
	m := discardMetrics()
	p := newPublisher(t, m, "tcp://127.0.0.1:0", "")
	// A replay socket that takes requests and never answers.
	mute := zmq4.NewRouter(context.Background())
	defer mute.Close()
	if err := mute.Listen("tcp://127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			if _, err := mute.Recv(); err != nil {
				return
			}
		}
	}()
	rec := newRecorder()
	s, err := NewSubscriber(SubscriberConfig{
		Name: "e0", Endpoint: p.Endpoint(), ReplayEndpoint: "tcp://" + mute.Addr().String(),
		Consumer: rec, Metrics: m, Logger: testLogger(t), ReplayTimeout: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitSubscribed(t, p)
	drop := func(seq uint64) bool { return seq == 1 }
	p.dropSend.Store(&drop)
	p.Publish(removed(1))
	p.Publish(removed(2))
	p.Publish(removed(3))
	rec.expect(t, "e0 removed 1", "e0 unreliable gap", "e0 removed 3")
	if got := testutil.ToFloat64(m.Replays.WithLabelValues("e0", "error")); got != 1 {
		t.Errorf("replays{error} = %v, want 1 (no rebuild from a mute replay socket)", got)
	}
}

func TestFlushIntervalOnAVirtualClock(t *testing.T) {
	start := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	v := simclock.NewVirtual(start)
	p, err := NewPublisher(PublisherConfig{Endpoint: "tcp://127.0.0.1:0", Topic: "t", FlushInterval: 50 * time.Millisecond, Clock: v, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(time.Second)
	p.Add(removed(1))
	p.Add(removed(2))
	v.Advance(49 * time.Millisecond)
	p.Add(removed(3))
	v.Advance(time.Millisecond)      // the first tick: one batch of three events
	v.Advance(50 * time.Millisecond) // nothing pending: no batch
	p.Add(removed(4))
	v.Advance(50 * time.Millisecond)
	waitFor(t, "two batches sent", func() bool { return len(p.buffered(0)) == 2 })
	var got []string
	for _, s := range p.buffered(0) {
		b, err := DecodeBatch(s.payload)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("seq %d ts %.3f events %d", s.seq, b.TS, len(b.Events)))
	}
	want := []string{
		fmt.Sprintf("seq 0 ts %.3f events 3", unixSeconds(start.Add(50*time.Millisecond))),
		fmt.Sprintf("seq 1 ts %.3f events 1", unixSeconds(start.Add(150*time.Millisecond))),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("batches (-want +got):\n%s", diff)
	}
}

// resyncRecorder also records Resynced calls.
type resyncRecorder struct{ *recorder }

func (r resyncRecorder) Resynced(ep string, complete bool) {
	r.ch <- fmt.Sprintf("%s resynced complete=%v", ep, complete)
}

var _ Resyncer = resyncRecorder{}

func TestResyncedReportsWhetherTheHistoryWasWhole(t *testing.T) {
	t.Run("first batch, whole history", func(t *testing.T) {
		m := discardMetrics()
		p := newPublisher(t, m, "tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
		p.Publish(stored([]uint64{1}, nil, 1, 2))
		waitFor(t, "a batch buffered", func() bool { return len(p.buffered(0)) == 1 })
		rec := resyncRecorder{newRecorder()}
		s, err := NewSubscriber(SubscriberConfig{Name: "e0", Endpoint: p.Endpoint(), ReplayEndpoint: p.ReplayEndpoint(), Consumer: rec, Metrics: m, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = s.Run(ctx) }()
		defer func() { cancel(); <-done }()
		waitSubscribed(t, p)
		p.Publish(stored([]uint64{7}, nil, 3, 4))
		rec.expect(t, "e0 stored 1 tokens=[1 2]", "e0 resynced complete=true", "e0 stored 7 tokens=[3 4]")
	})
	t.Run("gap replay cannot fill", func(t *testing.T) {
		r := newRig(t, func(c *SubscriberConfig) { c.Consumer = resyncRecorder{c.Consumer.(*recorder)} })
		drop := func(seq uint64) bool { return seq == 1 }
		r.pub.dropBuffer.Store(&drop)
		waitSubscribed(t, r.pub)
		r.pub.Publish(stored([]uint64{1}, nil, 1, 2))
		r.pub.Publish(removed(1))
		r.pub.Publish(stored([]uint64{3}, nil, 5, 6))
		r.rec.expect(t,
			"e0 stored 1 tokens=[1 2]",
			"e0 unreliable gap",
			"e0 stored 1 tokens=[1 2]",
			"e0 resynced complete=false",
			"e0 stored 3 tokens=[5 6]",
		)
	})
}
