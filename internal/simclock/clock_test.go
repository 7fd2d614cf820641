package simclock

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestVirtualRunsEventsInTimeOrder(t *testing.T) {
	start := time.Unix(1000, 0)
	v := NewVirtual(start)
	var got []string
	record := func(name string) func() {
		return func() { got = append(got, name+"@"+v.Now().Sub(start).String()) }
	}
	v.AfterFunc(30*time.Millisecond, record("c"))
	v.AfterFunc(10*time.Millisecond, record("a"))
	v.AfterFunc(10*time.Millisecond, record("b")) // same instant: scheduling order
	v.AfterFunc(0, func() {
		got = append(got, "zero@"+v.Now().Sub(start).String())
		v.AfterFunc(5*time.Millisecond, record("nested"))
	})
	if n := v.Run(); n != 5 {
		t.Fatalf("Run ran %d events, want 5", n)
	}
	want := []string{"zero@0s", "nested@5ms", "a@10ms", "b@10ms", "c@30ms"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("event order (-want +got):\n%s", diff)
	}
}

func TestVirtualStopAndRunUntil(t *testing.T) {
	start := time.Unix(0, 0)
	v := NewVirtual(start)
	ran := 0
	v.AfterFunc(time.Second, func() { ran++ })
	tm := v.AfterFunc(2*time.Second, func() { ran += 100 })
	v.AfterFunc(3*time.Second, func() { ran += 10 })
	if !tm.Stop() {
		t.Fatal("Stop of a pending event reported false")
	}
	if tm.Stop() {
		t.Fatal("second Stop reported true")
	}
	if n := v.RunUntil(start.Add(2500 * time.Millisecond)); n != 1 {
		t.Fatalf("RunUntil ran %d events, want 1", n)
	}
	if got, want := v.Now(), start.Add(2500*time.Millisecond); !got.Equal(want) {
		t.Fatalf("Now after RunUntil = %v, want %v", got, want)
	}
	if v.Len() != 1 {
		t.Fatalf("Len = %d, want 1", v.Len())
	}
	v.Run()
	if ran != 11 {
		t.Fatalf("ran = %d, want 11 (stopped event must not run)", ran)
	}
}

func BenchmarkVirtualAfterFuncStep(b *testing.B) {
	v := NewVirtual(time.Unix(0, 0))
	f := func() {}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		v.AfterFunc(time.Duration(i%97)*time.Microsecond, f)
		if i%4 == 3 {
			for v.Step() {
			}
		}
	}
}
