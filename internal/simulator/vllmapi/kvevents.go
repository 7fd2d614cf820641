package vllmapi

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/halyard-dev/halyard/internal/kvevents"
	"github.com/halyard-dev/halyard/internal/simclock"
	"github.com/halyard-dev/halyard/internal/simulator"
	"github.com/halyard-dev/halyard/internal/simulator/kvcache"
)

// EventHooks turns the block pool's hooks (kvcache.Hooks) into vLLM's
// KV-cache events, one list per engine step, as vLLM's scheduler collects
// them: consecutive blocks stored in one chain (one request's new blocks)
// form one BlockStored with the parent of the first, consecutive evictions
// one BlockRemoved, and a cleared cache an AllBlocksCleared. Medium is GPU;
// an adapter's blocks carry its name as lora_name.
//
// The engine calls the hooks with its lock held; EventHooks only appends to
// its own buffer and hands each step's list to emit at EndStep, and the
// AllBlocksCleared of /reset_prefix_cache (which happens between steps) at
// once. emit must not block: a kvevents.Publisher's Publish queues the batch
// and returns.
type EventHooks struct {
	blockSize int
	emit      func([]kvevents.Event)

	events  []kvevents.Event
	stored  *kvevents.BlockStored // the open BlockStored, extended while blocks chain on
	last    kvcache.BlockHash     // the last block of stored
	removed *kvevents.BlockRemoved
}

// NewEventHooks returns hooks for a pool of blockSize-token blocks that
// hand each step's events to emit.
func NewEventHooks(blockSize int, emit func([]kvevents.Event)) *EventHooks {
	return &EventHooks{blockSize: blockSize, emit: emit}
}

// BlockStored implements kvcache.Hooks.
func (h *EventHooks) BlockStored(b kvcache.StoredBlock) {
	if h.stored != nil && b.HasParent && b.Parent == h.last && loraName(h.stored) == b.Extra {
		h.stored.BlockHashes = append(h.stored.BlockHashes, kvevents.IntHash(uint64(b.Hash)))
		h.stored.TokenIDs = append(h.stored.TokenIDs, b.Tokens...)
		h.last = b.Hash
		return
	}
	h.closeOpen()
	var parent *uint64
	if b.HasParent {
		p := uint64(b.Parent)
		parent = &p
	}
	ev := kvevents.NewBlockStored([]uint64{uint64(b.Hash)}, parent, append([]uint32(nil), b.Tokens...), h.blockSize)
	if b.Extra != "" {
		name := b.Extra
		ev.LoRAName = &name
	}
	h.stored, h.last = ev, b.Hash
}

func loraName(ev *kvevents.BlockStored) string {
	if ev.LoRAName == nil {
		return ""
	}
	return *ev.LoRAName
}

// BlockRemoved implements kvcache.Hooks.
func (h *EventHooks) BlockRemoved(hash kvcache.BlockHash) {
	if h.removed == nil {
		h.closeOpen()
		h.removed = kvevents.NewBlockRemoved(nil)
	}
	h.removed.BlockHashes = append(h.removed.BlockHashes, kvevents.IntHash(uint64(hash)))
}

// AllBlocksCleared implements kvcache.Hooks: the events so far and the
// clear are emitted at once.
func (h *EventHooks) AllBlocksCleared() {
	h.closeOpen()
	h.events = append(h.events, &kvevents.AllBlocksCleared{})
	h.flush()
}

// EndStep implements simulator.StepObserver: the step's events are emitted
// as one list.
func (h *EventHooks) EndStep(time.Time) {
	h.closeOpen()
	h.flush()
}

func (h *EventHooks) closeOpen() {
	if h.stored != nil {
		h.events = append(h.events, h.stored)
		h.stored = nil
	}
	if h.removed != nil {
		h.events = append(h.events, h.removed)
		h.removed = nil
	}
}

func (h *EventHooks) flush() {
	if len(h.events) == 0 {
		return
	}
	evs := h.events
	h.events = nil
	h.emit(evs)
}

var (
	_ kvcache.Hooks          = (*EventHooks)(nil)
	_ simulator.StepObserver = (*EventHooks)(nil)
)

// DefaultReplayEndpoint returns the replay address `halyard sim` uses when
// none is given: the event endpoint's port plus one ("tcp://*:5557" →
// "tcp://*:5558"), or port 0 (a free port) when the event port is 0.
func DefaultReplayEndpoint(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "tcp" || u.Host == "" {
		return "", fmt.Errorf("kv-events endpoint %q: must be tcp://HOST:PORT", endpoint)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return "", fmt.Errorf("kv-events endpoint %q: %w", endpoint, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65534 {
		return "", fmt.Errorf("kv-events endpoint %q: port must be 0 to 65534", endpoint)
	}
	if n > 0 {
		n++
	}
	return "tcp://" + net.JoinHostPort(host, strconv.Itoa(n)), nil
}

// ReplayOff as Spec.KVEventsReplay turns the replay socket off.
const ReplayOff = "off"

// kvPublisher is an engine's KV-event publisher and its metrics.
type kvPublisher struct {
	pub     *kvevents.Publisher
	metrics *prometheus.Registry
}

// kvPublisher starts the spec's publisher, or returns nil without
// KVEvents.
func (sp Spec) kvPublisher(cfg simulator.Config, clock simclock.Clock, log *slog.Logger) (*kvPublisher, error) {
	if sp.KVEvents == "" {
		return nil, nil
	}
	replay := sp.KVEventsReplay
	switch replay {
	case "":
		var err error
		if replay, err = DefaultReplayEndpoint(sp.KVEvents); err != nil {
			return nil, err
		}
	case ReplayOff:
		replay = ""
	}
	var format kvevents.Format
	switch sp.KVEventsFormat {
	case "", "array":
		format = kvevents.FormatArray
	case "map":
		format = kvevents.FormatMap
	default:
		return nil, fmt.Errorf("kv-events format: must be array or map, got %q", sp.KVEventsFormat)
	}
	name := sp.Name
	if name == "" {
		var err error
		if name, err = os.Hostname(); err != nil || name == "" {
			name = "sim"
		}
	}
	reg := prometheus.NewRegistry()
	m, err := kvevents.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	pub, err := kvevents.NewPublisher(kvevents.PublisherConfig{
		Endpoint:       sp.KVEvents,
		ReplayEndpoint: replay,
		Topic:          kvevents.Topic(name, cfg.Model),
		Format:         format,
		Clock:          clock,
		Logger:         log,
		Metrics:        m,
	})
	if err != nil {
		return nil, fmt.Errorf("kv-events: %w", err)
	}
	return &kvPublisher{pub: pub, metrics: reg}, nil
}

// close flushes and closes the publisher; nil-safe.
func (k *kvPublisher) close() {
	if k == nil {
		return
	}
	_ = k.pub.Close(time.Second)
}

// KVEventEndpoints returns the bound addresses of the engine's KV-event
// publisher and replay socket (with the real ports), or "" without events.
func (s *Server) KVEventEndpoints() (events, replay string) {
	if s.kv == nil {
		return "", ""
	}
	return s.kv.pub.Endpoint(), s.kv.pub.ReplayEndpoint()
}
