package kvevents

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zeromq/zmq4"

	"github.com/halyard-dev/halyard/internal/simclock"
)

// Publisher defaults, as vLLM's ZmqEventPublisher has them where it has them.
const (
	DefaultBufferSteps = 10_000
	DefaultQueueSize   = 1024
)

// Topic returns the conventional topic of an engine's events,
// "kv@<pod>@<model>" (DESIGN.md §5), which PublisherConfig.Topic should
// default to.
func Topic(pod, model string) string { return "kv@" + pod + "@" + model }

// endSeq is the sequence number that ends a replay: -1 as 8 bytes
// big-endian, with an empty payload (vLLM's END_SEQ).
var endSeq = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// PublisherConfig configures a Publisher. The zero value of each field has
// the documented default.
type PublisherConfig struct {
	// Endpoint is the PUB socket's bind address, "tcp://HOST:PORT"; HOST "*"
	// binds every interface and PORT 0 picks a free port (see Endpoint()).
	// Unlike vLLM, which connects instead of binding when the host is not a
	// wildcard, the publisher always binds.
	Endpoint string
	// ReplayEndpoint is the ROUTER socket's bind address; empty disables
	// replay.
	ReplayEndpoint string
	// Topic is the first frame of every message; use Topic(pod, model)
	// for the conventional "kv@<pod>@<model>". Empty is vLLM's default.
	Topic string
	// BufferSteps is how many recent batches are kept for replay; default
	// DefaultBufferSteps.
	BufferSteps int
	// QueueSize bounds the batches waiting to be sent; when it is full,
	// Flush drops the batch (counted) rather than wait. Default
	// DefaultQueueSize.
	QueueSize int
	// FlushInterval, when positive, flushes pending events on this period
	// in addition to explicit Flush calls.
	FlushInterval time.Duration
	// DataParallelRank is written into every batch.
	DataParallelRank int
	// Format is the event encoding; default FormatArray.
	Format Format
	// Clock stamps batches and drives FlushInterval; default simclock.Real.
	Clock simclock.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Metrics defaults to unregistered metrics.
	Metrics *Metrics
}

// Publisher publishes KV-cache events in vLLM's wire format: a PUB socket
// sending [topic, seq, payload] and, optionally, a ROUTER socket replaying
// recent batches. Adding events and flushing never wait on the network: an
// engine step calls Add for each change of its block pool and Flush at the
// end of the step; a background goroutine encodes and sends.
//
// Sequence numbers start at 0 and are given at Flush, so a batch dropped
// because the queue is full leaves a gap that subscribers detect.
type Publisher struct {
	cfg    PublisherConfig
	log    *slog.Logger
	m      *Metrics
	pub    zmq4.Socket
	replay zmq4.Socket
	cancel context.CancelFunc

	mu      sync.Mutex
	pending []Event
	nextSeq uint64
	closed  bool
	timer   simclock.Timer

	queue chan queued
	done  chan struct{} // closed when the sender has drained the queue
	wg    sync.WaitGroup

	ringMu sync.Mutex
	ring   []sent // circular, capacity BufferSteps
	head   int    // index of the oldest entry
	count  int

	// hooks for tests: drop a batch on the PUB socket only (replayable), or
	// everywhere (a gap replay cannot fill).
	dropSend   atomic.Pointer[func(seq uint64) bool]
	dropBuffer atomic.Pointer[func(seq uint64) bool]
}

type queued struct {
	seq   uint64
	batch Batch
}

type sent struct {
	seq     uint64
	payload []byte
}

// NewPublisher binds the sockets and starts publishing.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("publisher: endpoint: required")
	}
	if cfg.BufferSteps == 0 {
		cfg.BufferSteps = DefaultBufferSteps
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.BufferSteps < 0 {
		return nil, fmt.Errorf("publisher: bufferSteps: must be positive, got %d", cfg.BufferSteps)
	}
	if cfg.QueueSize < 0 {
		return nil, fmt.Errorf("publisher: queueSize: must be positive, got %d", cfg.QueueSize)
	}
	if cfg.Format != FormatArray && cfg.Format != FormatMap {
		return nil, fmt.Errorf("publisher: format: unknown %v", cfg.Format)
	}
	if cfg.Clock == nil {
		cfg.Clock = simclock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = discardMetrics()
	}
	log := cfg.Logger.With("component", "kvevents-publisher", "topic", cfg.Topic)
	ctx, cancel := context.WithCancel(context.Background())
	p := &Publisher{
		cfg:    cfg,
		log:    log,
		m:      cfg.Metrics,
		cancel: cancel,
		queue:  make(chan queued, cfg.QueueSize),
		done:   make(chan struct{}),
		ring:   make([]sent, cfg.BufferSteps),
	}
	zlog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	p.pub = zmq4.NewPub(ctx, zmq4.WithLogger(zlog))
	if err := p.pub.Listen(bindAddr(cfg.Endpoint)); err != nil {
		cancel()
		return nil, fmt.Errorf("publisher: endpoint: %w", err)
	}
	if cfg.ReplayEndpoint != "" {
		p.replay = zmq4.NewRouter(ctx, zmq4.WithLogger(zlog))
		if err := p.replay.Listen(bindAddr(cfg.ReplayEndpoint)); err != nil {
			cancel()
			_ = p.pub.Close()
			return nil, fmt.Errorf("publisher: replayEndpoint: %w", err)
		}
		p.wg.Add(1)
		go p.serveReplay()
	}
	p.wg.Add(1)
	go p.send()
	if cfg.FlushInterval > 0 {
		p.mu.Lock()
		p.timer = cfg.Clock.AfterFunc(cfg.FlushInterval, p.tick)
		p.mu.Unlock()
	}
	log.Info("kv-event publisher started", "endpoint", p.Endpoint(), "replay", p.ReplayEndpoint(), "format", cfg.Format.String())
	return p, nil
}

// bindAddr turns vLLM's wildcard host "*" into one net.Listen accepts.
func bindAddr(ep string) string {
	if rest, ok := strings.CutPrefix(ep, "tcp://*:"); ok {
		return "tcp://0.0.0.0:" + rest
	}
	return ep
}

func sockEndpoint(s zmq4.Socket) string {
	if s == nil || s.Addr() == nil {
		return ""
	}
	return "tcp://" + s.Addr().String()
}

// Endpoint returns the PUB socket's bound address, with the real port.
func (p *Publisher) Endpoint() string { return sockEndpoint(p.pub) }

// ReplayEndpoint returns the ROUTER socket's bound address, or "".
func (p *Publisher) ReplayEndpoint() string { return sockEndpoint(p.replay) }

// Add appends an event to the batch of the current step.
func (p *Publisher) Add(ev Event) {
	p.mu.Lock()
	if !p.closed {
		p.pending = append(p.pending, ev)
	}
	p.mu.Unlock()
}

// Flush ends the current batch: it stamps the pending events with the time
// and the next sequence number and queues them for sending. It returns
// false when the batch was dropped because the queue is full (or the
// publisher closed); an empty batch is not sent and returns true.
func (p *Publisher) Flush() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	if len(p.pending) == 0 {
		return true
	}
	evs := p.pending
	p.pending = nil
	return p.enqueueLocked(evs)
}

// Publish sends events as one batch of their own, after any pending ones.
func (p *Publisher) Publish(events ...Event) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	ok := true
	if len(p.pending) > 0 {
		ok = p.enqueueLocked(p.pending)
		p.pending = nil
	}
	return p.enqueueLocked(events) && ok
}

func (p *Publisher) enqueueLocked(evs []Event) bool {
	seq := p.nextSeq
	p.nextSeq++
	rank := p.cfg.DataParallelRank
	b := Batch{TS: unixSeconds(p.cfg.Clock.Now()), Events: evs, DataParallelRank: &rank}
	select {
	case p.queue <- queued{seq: seq, batch: b}:
		return true
	default:
		p.m.DroppedBatches.WithLabelValues(p.cfg.Topic).Inc()
		p.log.Warn("kv-event queue full, batch dropped", "seq", seq, "events", len(evs))
		return false
	}
}

func unixSeconds(t time.Time) float64 {
	return float64(t.UnixNano()) / 1e9
}

func (p *Publisher) tick() {
	p.Flush()
	p.mu.Lock()
	if !p.closed {
		p.timer = p.cfg.Clock.AfterFunc(p.cfg.FlushInterval, p.tick)
	}
	p.mu.Unlock()
}

// send encodes and sends queued batches until the queue is closed.
func (p *Publisher) send() {
	defer p.wg.Done()
	defer close(p.done)
	topic := []byte(p.cfg.Topic)
	for q := range p.queue {
		payload, err := EncodeBatch(nil, &q.batch, p.cfg.Format)
		if err != nil {
			p.log.Error("cannot encode kv-event batch; dropped", "seq", q.seq, "err", err)
			p.m.DroppedBatches.WithLabelValues(p.cfg.Topic).Inc()
			continue
		}
		if f := p.dropBuffer.Load(); f != nil && (*f)(q.seq) {
			continue
		}
		seq := make([]byte, 8)
		binary.BigEndian.PutUint64(seq, q.seq)
		if f := p.dropSend.Load(); f == nil || !(*f)(q.seq) {
			if err := p.pub.SendMulti(zmq4.NewMsgFrom(topic, seq, payload)); err != nil {
				p.log.Warn("kv-event send failed", "seq", q.seq, "err", err)
			}
		}
		p.remember(q.seq, payload)
		p.m.PublishedBatches.WithLabelValues(p.cfg.Topic).Inc()
		p.m.PublisherSeq.WithLabelValues(p.cfg.Topic).Set(float64(q.seq))
		for _, ev := range q.batch.Events {
			p.m.PublishedEvents.WithLabelValues(p.cfg.Topic, ev.Tag()).Inc()
		}
	}
}

func (p *Publisher) remember(seq uint64, payload []byte) {
	p.ringMu.Lock()
	defer p.ringMu.Unlock()
	n := len(p.ring)
	if p.count < n {
		p.ring[(p.head+p.count)%n] = sent{seq, payload}
		p.count++
		return
	}
	p.ring[p.head] = sent{seq, payload}
	p.head = (p.head + 1) % n
}

// buffered returns the remembered batches with seq >= from, oldest first.
func (p *Publisher) buffered(from uint64) []sent {
	p.ringMu.Lock()
	defer p.ringMu.Unlock()
	var out []sent
	for i := 0; i < p.count; i++ {
		s := p.ring[(p.head+i)%len(p.ring)]
		if s.seq >= from {
			out = append(out, s)
		}
	}
	return out
}

// serveReplay answers replay requests: a client sends the start sequence
// number (8 bytes big-endian, after an empty delimiter frame as a REQ socket
// sends it) and receives [seq, payload] for every remembered batch from it
// on, then [-1, ""].
func (p *Publisher) serveReplay() {
	defer p.wg.Done()
	for {
		msg, err := p.replay.Recv()
		if err != nil {
			return // closed
		}
		frames := msg.Frames
		if len(frames) < 2 {
			continue
		}
		id, rest := frames[0], frames[1:]
		var prefix [][]byte
		if len(rest) == 2 && len(rest[0]) == 0 {
			prefix = [][]byte{id, {}}
			rest = rest[1:]
		} else {
			prefix = [][]byte{id}
		}
		if len(rest) != 1 || len(rest[0]) != 8 {
			p.log.Warn("invalid replay request", "frames", len(frames))
			continue
		}
		from := binary.BigEndian.Uint64(rest[0])
		p.m.ReplayRequests.WithLabelValues(p.cfg.Topic).Inc()
		reply := func(seq, payload []byte) error {
			frames := append(append([][]byte{}, prefix...), seq, payload)
			return p.replay.SendMulti(zmq4.NewMsgFrom(frames...))
		}
		for _, s := range p.buffered(from) {
			seq := make([]byte, 8)
			binary.BigEndian.PutUint64(seq, s.seq)
			if err := reply(seq, s.payload); err != nil {
				p.log.Warn("replay send failed", "err", err)
				break
			}
		}
		if err := reply(endSeq, nil); err != nil {
			p.log.Warn("replay send failed", "err", err)
		}
	}
}

// Close flushes pending events, waits up to timeout for queued batches to
// be sent, and closes the sockets.
func (p *Publisher) Close(timeout time.Duration) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	if len(p.pending) > 0 {
		p.enqueueLocked(p.pending)
		p.pending = nil
	}
	p.closed = true
	if p.timer != nil {
		p.timer.Stop()
	}
	close(p.queue)
	p.mu.Unlock()

	select {
	case <-p.done:
	case <-time.After(timeout):
		p.log.Warn("kv-event publisher closed with batches unsent", "queued", len(p.queue))
	}
	p.cancel()
	err := p.pub.Close()
	if p.replay != nil {
		err = errors.Join(err, p.replay.Close())
	}
	p.wg.Wait()
	return err
}
