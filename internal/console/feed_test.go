package console

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func ids(evs []Event) []string {
	out := []string{}
	for _, ev := range evs {
		if ev.Decision != nil {
			out = append(out, ev.Decision.ID)
		} else {
			out = append(out, "outcome:"+ev.Outcome.ID)
		}
	}
	return out
}

func decision(id string) Event { return Event{Decision: &Decision{ID: id}} }

func TestFeedRemembersOnlyWhileWatchedAndBounded(t *testing.T) {
	f := NewFeed(3)
	f.Publish(decision("unwatched"))
	if f.Watching() || len(f.Recent()) != 0 {
		t.Fatalf("recorded with nobody watching: %v", ids(f.Recent()))
	}
	recent, events, cancel := f.Subscribe()
	if len(recent) != 0 || !f.Watching() {
		t.Fatalf("recent %v, watching %v", ids(recent), f.Watching())
	}
	for i := range 5 {
		f.Publish(decision(fmt.Sprint(i)))
	}
	f.Publish(Event{Outcome: &Outcome{ID: "4", Status: 200}})
	if diff := cmp.Diff([]string{"3", "4", "outcome:4"}, ids(f.Recent())); diff != "" {
		t.Errorf("ring (-want +got):\n%s", diff)
	}
	var got []Event
	for range 6 {
		got = append(got, <-events)
	}
	if diff := cmp.Diff([]string{"0", "1", "2", "3", "4", "outcome:4"}, ids(got)); diff != "" {
		t.Errorf("subscriber (-want +got):\n%s", diff)
	}
	// A second subscriber starts with the ring.
	recent2, _, cancel2 := f.Subscribe()
	if diff := cmp.Diff([]string{"3", "4", "outcome:4"}, ids(recent2)); diff != "" {
		t.Errorf("second subscriber's start (-want +got):\n%s", diff)
	}
	cancel()
	cancel() // idempotent
	cancel2()
	if f.Watching() {
		t.Error("still watching after both cancelled")
	}
}

func TestFeedDropsForASlowSubscriber(t *testing.T) {
	f := NewFeed(4)
	_, events, cancel := f.Subscribe()
	defer cancel()
	for i := range subscriberBuffer + 10 {
		f.Publish(decision(fmt.Sprint(i)))
	}
	if f.Dropped() != 10 || len(events) != subscriberBuffer {
		t.Errorf("dropped %d, queued %d; want 10 and %d", f.Dropped(), len(events), subscriberBuffer)
	}
}
