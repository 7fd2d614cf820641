package kvevents

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the Prometheus metrics of publishers and subscribers. One
// Metrics serves every Publisher and Subscriber of a process; the label
// "topic" names a publisher, "endpoint" a subscriber's engine. The names are
// documented in docs/kv-events.md.
type Metrics struct {
	// Publisher side.
	PublishedBatches *prometheus.CounterVec // topic
	PublishedEvents  *prometheus.CounterVec // topic, type
	DroppedBatches   *prometheus.CounterVec // topic
	ReplayRequests   *prometheus.CounterVec // topic
	PublisherSeq     *prometheus.GaugeVec   // topic

	// Subscriber side.
	Batches        *prometheus.CounterVec // endpoint
	Events         *prometheus.CounterVec // endpoint, type
	DecodeErrors   *prometheus.CounterVec // endpoint
	Gaps           *prometheus.CounterVec // endpoint
	Replays        *prometheus.CounterVec // endpoint, result
	Restarts       *prometheus.CounterVec // endpoint
	Unreliable     *prometheus.CounterVec // endpoint, reason
	Reconnects     *prometheus.CounterVec // endpoint
	LastSeq        *prometheus.GaugeVec   // endpoint
	LastEventTime  *prometheus.GaugeVec   // endpoint
	Connected      *prometheus.GaugeVec   // endpoint
	UnanchoredDrop *prometheus.CounterVec // endpoint
}

// NewMetrics creates the metrics and registers them with reg; a nil reg
// leaves them unregistered (tests, or a process that does not export them).
// It fails when reg already holds metrics of these names.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	const ns, sub = "halyard", "kvevents"
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help}, labels)
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help}, labels)
	}
	m := &Metrics{
		PublishedBatches: counter("published_batches_total", "Event batches sent on the PUB socket.", "topic"),
		PublishedEvents:  counter("published_events_total", "Events sent on the PUB socket, by event type.", "topic", "type"),
		DroppedBatches:   counter("publisher_dropped_batches_total", "Event batches dropped because the publisher's queue was full; subscribers see a sequence gap.", "topic"),
		ReplayRequests:   counter("replay_requests_total", "Replay requests served on the ROUTER socket.", "topic"),
		PublisherSeq:     gauge("publisher_seq", "Sequence number of the last batch sent.", "topic"),

		Batches:        counter("batches_total", "Event batches received and applied.", "endpoint"),
		Events:         counter("events_total", "Events received, by event type (unknown types are counted and skipped).", "endpoint", "type"),
		DecodeErrors:   counter("decode_errors_total", "Frames or payloads that could not be decoded.", "endpoint"),
		Gaps:           counter("gaps_total", "Sequence gaps detected on the live stream.", "endpoint"),
		Replays:        counter("replays_total", "Replay requests made, by result (ok, incomplete, error).", "endpoint", "result"),
		Restarts:       counter("publisher_restarts_total", "Publisher restarts detected (sequence number went back or the stream id changed).", "endpoint"),
		Unreliable:     counter("unreliable_total", "Times the endpoint's index was declared unreliable, by reason.", "endpoint", "reason"),
		Reconnects:     counter("reconnects_total", "Reconnections to the publisher after a lost or failed connection.", "endpoint"),
		LastSeq:        gauge("last_seq", "Sequence number of the last batch applied.", "endpoint"),
		LastEventTime:  gauge("last_event_timestamp_seconds", "Unix time at which the last batch was received.", "endpoint"),
		Connected:      gauge("connected", "1 while the subscriber is connected to the publisher.", "endpoint"),
		UnanchoredDrop: counter("unanchored_blocks_total", "Stored blocks dropped by the rehasher because their parent block was unknown.", "endpoint"),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{
			m.PublishedBatches, m.PublishedEvents, m.DroppedBatches, m.ReplayRequests, m.PublisherSeq,
			m.Batches, m.Events, m.DecodeErrors, m.Gaps, m.Replays, m.Restarts, m.Unreliable,
			m.Reconnects, m.LastSeq, m.LastEventTime, m.Connected, m.UnanchoredDrop,
		} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register kv-event metrics: %w", err)
			}
		}
	}
	return m, nil
}

// discardMetrics returns unregistered metrics for a component given none.
func discardMetrics() *Metrics {
	m, _ := NewMetrics(nil)
	return m
}
