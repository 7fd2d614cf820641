package console

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"time"
)

// eventStream serves the feed as Server-Sent Events: the remembered events
// first, then new ones as they come, each as "event: decision" or
// "event: outcome" with the JSON in data; a comment line every keepAlive.
type eventStream struct {
	feed      *Feed
	keepAlive time.Duration
	log       *slog.Logger
}

func (s *eventStream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	recent, events, cancel := s.feed.Subscribe()
	defer cancel()
	w.WriteHeader(http.StatusOK)
	for _, ev := range recent {
		if writeEvent(w, ev) != nil {
			return
		}
	}
	if _, err := w.Write([]byte(": ready\n\n")); err != nil || rc.Flush() != nil {
		return
	}
	tick := time.NewTicker(s.keepAlive)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case ev := <-events:
			if err := writeEvent(w, ev); err != nil {
				return
			}
			// Write what else is waiting before flushing.
			for more := true; more; {
				select {
				case ev := <-events:
					if err := writeEvent(w, ev); err != nil {
						return
					}
				default:
					more = false
				}
			}
		case <-tick.C:
			if _, err := w.Write([]byte(": keep-alive\n\n")); err != nil {
				return
			}
		}
		if err := rc.Flush(); err != nil {
			s.log.Debug("console event stream ended", "error", err)
			return
		}
	}
}

func writeEvent(w http.ResponseWriter, ev Event) error {
	name, v := "decision", any(ev.Decision)
	if ev.Outcome != nil {
		name, v = "outcome", ev.Outcome
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	buf := make([]byte, 0, len(b)+32)
	buf = append(buf, "event: "...)
	buf = append(buf, name...)
	buf = append(buf, "\ndata: "...)
	buf = append(buf, b...)
	buf = append(buf, "\n\n"...)
	_, err = w.Write(buf)
	return err
}
