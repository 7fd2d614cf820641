package datastore

import (
	"testing"
	"time"
)

func TestOutlierEjection(t *testing.T) {
	p := OutlierPolicy{Consecutive5xx: 3, EjectionTime: 30 * time.Second}
	e := NewEndpoint(EndpointSpec{Pool: "p"})
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	// Two errors, a success, two errors: never three in a row.
	for _, st := range []int{500, 503, 200, 502, 500} {
		if e.ObserveStatus(p, st, t0) {
			t.Fatalf("ejected after status %d without %d in a row", st, p.Consecutive5xx)
		}
	}
	if !e.ObserveStatus(p, 500, t0) {
		t.Fatal("the third consecutive 5xx did not eject")
	}
	if !e.Ejected(t0.Add(29*time.Second)) || e.Ejected(t0.Add(30*time.Second)) {
		t.Error("ejection does not last exactly EjectionTime")
	}
	if e.Ejections() != 1 {
		t.Errorf("ejections %d, want 1", e.Ejections())
	}
	// 4xx are the client's: they never eject.
	for range 10 {
		if e.ObserveStatus(p, 429, t0) {
			t.Fatal("a 4xx ejected")
		}
	}
	off := NewEndpoint(EndpointSpec{Pool: "p"})
	for range 10 {
		if off.ObserveStatus(OutlierPolicy{}, 500, t0) || off.Ejected(t0) {
			t.Fatal("ejection with Consecutive5xx 0")
		}
	}
}
