package kvevents

import (
	"context"
	"testing"
	"time"
)

func TestPoolFollowsTheSetOfSources(t *testing.T) {
	m := discardMetrics()
	p0 := newPublisher(t, m, "tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
	p1 := newPublisher(t, m, "tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
	rec := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool, err := NewPool(ctx, SubscriberConfig{Consumer: rec, Metrics: m, Logger: testLogger(t), MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	src0 := Source{Name: "e0", Endpoint: p0.Endpoint(), ReplayEndpoint: p0.ReplayEndpoint()}
	src1 := Source{Name: "e1", Endpoint: p1.Endpoint(), ReplayEndpoint: p1.ReplayEndpoint()}
	if err := pool.Set([]Source{src0, src1}); err != nil {
		t.Fatal(err)
	}
	waitSubscribed(t, p0)
	p0.Publish(removed(1))
	rec.expect(t, "e0 removed 1")
	waitSubscribed(t, p1)
	p1.Publish(removed(2))
	rec.expect(t, "e1 removed 2")
	waitFor(t, "e1 status at seq 0", func() bool { st, ok := pool.Status("e1"); return ok && st.HaveSeq && st.LastSeq == 0 })

	// e1 goes away: its subscriber stops and the consumer forgets it.
	if err := pool.Set([]Source{src0}); err != nil {
		t.Fatal(err)
	}
	rec.expect(t, "e1 cleared")
	if _, ok := pool.Status("e1"); ok {
		t.Error("e1 still has a subscriber")
	}
	if err := pool.Set([]Source{src0, src0}); err == nil {
		t.Error("duplicate source accepted")
	}
	pool.Close()
	rec.expect(t, "e0 cleared")
	if err := pool.Set([]Source{src0}); err == nil {
		t.Error("Set after Close succeeded")
	}
}
