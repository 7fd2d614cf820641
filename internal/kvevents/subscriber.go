package kvevents

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/go-zeromq/zmq4"

	"github.com/halyard-dev/halyard/internal/simclock"
)

// Consumer receives one endpoint's decoded events, in order, from the
// subscriber's goroutine. It is the router's view of an engine's prefix
// cache: stores and removals keyed by the engine's own block hashes.
type Consumer interface {
	// BlockStored reports blocks the engine cached.
	BlockStored(endpoint string, ev *BlockStored)
	// BlockRemoved reports blocks the engine evicted.
	BlockRemoved(endpoint string, ev *BlockRemoved)
	// AllCleared reports that the engine's cache is empty: it said
	// AllBlocksCleared, or its publisher restarted.
	AllCleared(endpoint string)
	// Unreliable reports that events were lost beyond repair, so what the
	// consumer knows of the endpoint may be wrong: it should forget it and
	// fall back (for instance to approximate prefix matching). Events that
	// follow are again accurate, but the picture they build stays partial
	// until the engine has turned its cache over.
	Unreliable(endpoint string, reason string)
}

// Resyncer is an optional extension of Consumer: Resynced is called after
// the subscriber rebuilt the endpoint's state from the publisher's replay
// buffer (on the first batch, after a publisher restart, after an
// unreliable gap or reconnection), with complete true when the buffer held
// every batch from sequence 0 on, so that the consumer's picture is exact
// again, and false when the history was cut (the picture under-counts).
type Resyncer interface {
	Resynced(endpoint string, complete bool)
}

// Reasons given to Consumer.Unreliable.
const (
	ReasonGap         = "gap"          // a live-stream gap that replay could not fill
	ReasonReconnect   = "reconnect"    // a reconnection whose first sequence number did not follow the last
	ReasonDecodeError = "decode-error" // a frame or payload that could not be decoded
)

// Subscriber defaults.
const (
	DefaultReplayTimeout = 2 * time.Second
	DefaultMinBackoff    = 100 * time.Millisecond
	DefaultMaxBackoff    = 5 * time.Second
)

// SubscriberConfig configures a Subscriber.
type SubscriberConfig struct {
	// Name identifies the endpoint to the Consumer and in metrics.
	Name string
	// Endpoint is the publisher's PUB address, "tcp://HOST:PORT".
	Endpoint string
	// ReplayEndpoint is the publisher's ROUTER address; without it, every
	// gap makes the endpoint unreliable.
	ReplayEndpoint string
	// Topic is a prefix filter on the topic frame; "" takes every topic.
	Topic string
	// Consumer receives the events; required.
	Consumer Consumer
	// SkipInitialReplay turns off replaying the publisher's buffer from
	// sequence 0 when the first batch seen is not the first published.
	SkipInitialReplay bool
	// ReplayTimeout bounds one replay exchange; default DefaultReplayTimeout.
	ReplayTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between reconnections, which
	// doubles after each failed attempt; defaults DefaultMinBackoff and
	// DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Clock times backoff, replay timeouts and the last-batch time; default
	// simclock.Real.
	Clock simclock.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Metrics defaults to unregistered metrics.
	Metrics *Metrics
}

// Status is a snapshot of a subscriber's state.
type Status struct {
	// Connected is true while a connection to the publisher is up.
	Connected bool
	// HaveSeq reports whether a batch has been applied; LastSeq is then the
	// sequence number of the last one.
	HaveSeq bool
	LastSeq uint64
	// LastBatch is when the last batch arrived (zero before any): a consumer
	// can treat a long silence as a reason to fall back.
	LastBatch time.Time
	// Unreliable counts Consumer.Unreliable calls so far.
	Unreliable int
}

// Subscriber follows one publisher: it keeps a SUB connection (reconnecting
// with backoff), checks sequence numbers, fills gaps through the replay
// socket, and hands events to the Consumer.
type Subscriber struct {
	cfg SubscriberConfig
	log *slog.Logger
	m   *Metrics

	// Run goroutine state.
	haveSeq  bool
	lastSeq  uint64
	streamID []byte
	fresh    bool // a new connection whose continuity is not yet known

	mu     sync.Mutex
	status Status
}

// NewSubscriber validates cfg and returns a Subscriber; Run starts it.
func NewSubscriber(cfg SubscriberConfig) (*Subscriber, error) {
	switch {
	case cfg.Name == "":
		return nil, errors.New("subscriber: name: required")
	case cfg.Endpoint == "":
		return nil, errors.New("subscriber: endpoint: required")
	case cfg.Consumer == nil:
		return nil, errors.New("subscriber: consumer: required")
	}
	if cfg.ReplayTimeout == 0 {
		cfg.ReplayTimeout = DefaultReplayTimeout
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.ReplayTimeout < 0 || cfg.MinBackoff < 0 || cfg.MaxBackoff < cfg.MinBackoff {
		return nil, fmt.Errorf("subscriber: replayTimeout, minBackoff, maxBackoff: must be positive with minBackoff <= maxBackoff")
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
	return &Subscriber{
		cfg: cfg,
		log: cfg.Logger.With("component", "kvevents-subscriber", "endpoint", cfg.Name, "address", cfg.Endpoint),
		m:   cfg.Metrics,
	}, nil
}

// Status returns the subscriber's current state.
func (s *Subscriber) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Run follows the publisher until ctx is cancelled, then returns nil.
func (s *Subscriber) Run(ctx context.Context) error {
	backoff := s.cfg.MinBackoff
	for {
		got, err := s.session(ctx)
		s.setConnected(false)
		if ctx.Err() != nil {
			return nil
		}
		if got {
			backoff = s.cfg.MinBackoff
		}
		s.log.Warn("kv-event subscription lost; reconnecting", "err", err, "backoff", backoff)
		s.m.Reconnects.WithLabelValues(s.cfg.Name).Inc()
		if !s.sleep(ctx, backoff) {
			return nil
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
}

// sleep waits d on the injected clock; false when ctx ended first.
func (s *Subscriber) sleep(ctx context.Context, d time.Duration) bool {
	ch := make(chan struct{})
	t := s.cfg.Clock.AfterFunc(d, func() { close(ch) })
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *Subscriber) zlogger() zmq4.Option {
	return zmq4.WithLogger(slog.NewLogLogger(s.log.Handler(), slog.LevelDebug))
}

// session runs one connection; got reports whether any message arrived.
func (s *Subscriber) session(ctx context.Context) (got bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sub := zmq4.NewSub(sctx, zmq4.WithDialerMaxRetries(0), s.zlogger())
	defer sub.Close()
	if err := sub.Dial(s.cfg.Endpoint); err != nil {
		return false, fmt.Errorf("dial: %w", err)
	}
	if err := sub.SetOption(zmq4.OptionSubscribe, s.cfg.Topic); err != nil {
		return false, fmt.Errorf("subscribe: %w", err)
	}
	s.setConnected(true)
	s.fresh = true
	s.log.Info("kv-event subscriber connected")
	for {
		msg, err := sub.Recv()
		if err != nil {
			return got, err
		}
		got = true
		s.handle(ctx, msg.Frames)
	}
}

func (s *Subscriber) setConnected(up bool) {
	s.mu.Lock()
	s.status.Connected = up
	s.mu.Unlock()
	v := 0.0
	if up {
		v = 1
	}
	s.m.Connected.WithLabelValues(s.cfg.Name).Set(v)
}

// parseSeq reads a sequence frame: 8 bytes big-endian, optionally followed
// by a 16-byte publisher stream id (vLLM's snapshot mode).
func parseSeq(f []byte) (seq uint64, stream []byte, ok bool) {
	switch len(f) {
	case 8:
		return binary.BigEndian.Uint64(f), nil, true
	case 24:
		return binary.BigEndian.Uint64(f[:8]), f[8:], true
	}
	return 0, nil, false
}

// handle processes one live message [topic, seq, payload].
func (s *Subscriber) handle(ctx context.Context, frames [][]byte) {
	if len(frames) != 3 {
		s.decodeFailed(fmt.Errorf("message has %d frames, want 3", len(frames)))
		return
	}
	seq, stream, ok := parseSeq(frames[1])
	if !ok {
		s.decodeFailed(fmt.Errorf("sequence frame has %d bytes", len(frames[1])))
		return
	}
	b, err := DecodeBatch(frames[2])
	if err != nil {
		s.decodeFailed(fmt.Errorf("seq %d: %w", seq, err))
		s.advance(seq, stream)
		return
	}
	fresh := s.fresh
	s.fresh = false
	switch {
	case !s.haveSeq:
		// First batch ever: fetch what was published before it.
		s.rebuild(ctx, seq)
	case stream != nil && s.streamID != nil && !bytes.Equal(stream, s.streamID), seq <= s.lastSeq:
		s.log.Warn("kv-event publisher restarted", "last_seq", s.lastSeq, "seq", seq)
		s.m.Restarts.WithLabelValues(s.cfg.Name).Inc()
		s.cfg.Consumer.AllCleared(s.cfg.Name)
		s.rebuild(ctx, seq)
	case seq == s.lastSeq+1:
	case fresh:
		// Reconnected after missing batches: the publisher may have
		// restarted meanwhile, so what replay would return may belong to
		// another stream. Start over.
		s.m.Gaps.WithLabelValues(s.cfg.Name).Inc()
		s.unreliable(ReasonReconnect, fmt.Sprintf("reconnected at seq %d after seq %d", seq, s.lastSeq))
		s.rebuild(ctx, seq)
	default:
		s.m.Gaps.WithLabelValues(s.cfg.Name).Inc()
		from := s.lastSeq + 1
		s.log.Info("kv-event gap; replaying", "from", from, "to", seq)
		batches, complete, answered := s.replay(ctx, from, seq)
		switch {
		case complete:
			for _, rb := range batches {
				s.apply(rb.batch)
			}
		case answered:
			s.unreliable(ReasonGap, fmt.Sprintf("seq %d..%d lost", from, seq-1))
			s.rebuild(ctx, seq)
		default:
			// The replay socket is unreachable: asking it again to
			// rebuild would only wait out another timeout.
			s.unreliable(ReasonGap, fmt.Sprintf("seq %d..%d lost; replay unavailable", from, seq-1))
		}
	}
	s.apply(b)
	s.advance(seq, stream)
}

// rebuild applies every batch the publisher still holds before seq. The
// consumer's state for the endpoint is empty (or just cleared) when it is
// called.
func (s *Subscriber) rebuild(ctx context.Context, seq uint64) {
	if seq == 0 || s.cfg.SkipInitialReplay {
		return
	}
	batches, complete, _ := s.replay(ctx, 0, seq)
	for _, rb := range batches {
		s.apply(rb.batch)
	}
	if !complete {
		s.log.Info("kv-event history incomplete; the index fills as the engine caches", "replayed", len(batches), "before_seq", seq)
	}
	if r, ok := s.cfg.Consumer.(Resyncer); ok {
		r.Resynced(s.cfg.Name, complete)
	}
}

func (s *Subscriber) advance(seq uint64, stream []byte) {
	s.haveSeq, s.lastSeq = true, seq
	if stream != nil {
		s.streamID = bytes.Clone(stream)
	}
	now := s.cfg.Clock.Now()
	s.mu.Lock()
	s.status.HaveSeq, s.status.LastSeq, s.status.LastBatch = true, seq, now
	s.mu.Unlock()
	s.m.LastSeq.WithLabelValues(s.cfg.Name).Set(float64(seq))
	s.m.LastEventTime.WithLabelValues(s.cfg.Name).Set(unixSeconds(now))
}

func (s *Subscriber) decodeFailed(err error) {
	s.m.DecodeErrors.WithLabelValues(s.cfg.Name).Inc()
	s.log.Warn("kv-event message dropped", "err", err)
	s.unreliable(ReasonDecodeError, err.Error())
}

func (s *Subscriber) unreliable(reason, detail string) {
	s.log.Warn("kv-event index unreliable", "reason", reason, "detail", detail)
	s.m.Unreliable.WithLabelValues(s.cfg.Name, reason).Inc()
	s.mu.Lock()
	s.status.Unreliable++
	s.mu.Unlock()
	s.cfg.Consumer.Unreliable(s.cfg.Name, reason)
}

func (s *Subscriber) apply(b *Batch) {
	s.m.Batches.WithLabelValues(s.cfg.Name).Inc()
	for _, ev := range b.Events {
		switch e := ev.(type) {
		case *BlockStored:
			s.m.Events.WithLabelValues(s.cfg.Name, TagBlockStored).Inc()
			s.cfg.Consumer.BlockStored(s.cfg.Name, e)
		case *BlockRemoved:
			s.m.Events.WithLabelValues(s.cfg.Name, TagBlockRemoved).Inc()
			s.cfg.Consumer.BlockRemoved(s.cfg.Name, e)
		case *AllBlocksCleared:
			s.m.Events.WithLabelValues(s.cfg.Name, TagAllBlocksCleared).Inc()
			s.cfg.Consumer.AllCleared(s.cfg.Name)
		default:
			s.m.Events.WithLabelValues(s.cfg.Name, "unknown").Inc()
			s.log.Debug("unknown kv event skipped", "type", ev.Tag())
		}
	}
}

type seqBatch struct {
	seq   uint64
	batch *Batch
}

// replay asks the publisher for the batches from..to-1. complete reports
// that all of them came back and decoded; answered, that the replay socket
// replied at all.
func (s *Subscriber) replay(ctx context.Context, from, to uint64) (out []seqBatch, complete, answered bool) {
	result := "error"
	defer func() { s.m.Replays.WithLabelValues(s.cfg.Name, result).Inc() }()
	if s.cfg.ReplayEndpoint == "" {
		result = "unavailable"
		return nil, false, false
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	timer := s.cfg.Clock.AfterFunc(s.cfg.ReplayTimeout, cancel)
	defer timer.Stop()

	d := zmq4.NewDealer(rctx, zmq4.WithDialerMaxRetries(0), s.zlogger())
	defer d.Close()
	if err := d.Dial(s.cfg.ReplayEndpoint); err != nil {
		s.log.Warn("kv-event replay: dial failed", "err", err)
		return nil, false, false
	}
	start := make([]byte, 8)
	binary.BigEndian.PutUint64(start, from)
	// An empty delimiter first, as a REQ socket sends it: vLLM's publisher
	// expects [identity, "", start].
	if err := d.SendMulti(zmq4.NewMsgFrom([]byte{}, start)); err != nil {
		s.log.Warn("kv-event replay: request failed", "err", err)
		return nil, false, false
	}
	next, holes := from, false
	for next < to {
		msg, err := d.Recv()
		if err != nil {
			s.log.Warn("kv-event replay: receive failed", "err", err, "got", len(out))
			return out, false, answered
		}
		answered = true
		frames := msg.Frames
		if len(frames) == 3 && len(frames[0]) == 0 {
			frames = frames[1:]
		}
		if len(frames) != 2 || len(frames[0]) != 8 {
			s.log.Warn("kv-event replay: malformed reply", "frames", len(msg.Frames))
			return out, false, true
		}
		if bytes.Equal(frames[0], endSeq) || len(frames[1]) == 0 {
			break
		}
		seq := binary.BigEndian.Uint64(frames[0])
		if seq < next {
			continue
		}
		if seq >= to {
			break
		}
		b, err := DecodeBatch(frames[1])
		if err != nil {
			s.m.DecodeErrors.WithLabelValues(s.cfg.Name).Inc()
			s.log.Warn("kv-event replay: undecodable batch", "seq", seq, "err", err)
			holes = true
			next = seq + 1
			continue
		}
		if seq != next {
			holes = true
		}
		out = append(out, seqBatch{seq, b})
		next = seq + 1
	}
	complete = !holes && next == to
	result = "ok"
	if !complete {
		result = "incomplete"
	}
	return out, complete, true
}
