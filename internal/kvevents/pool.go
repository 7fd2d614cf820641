package kvevents

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Source names one engine's publisher.
type Source struct {
	// Name identifies the endpoint (the router's endpoint name).
	Name string
	// Endpoint and ReplayEndpoint are the publisher's addresses.
	Endpoint, ReplayEndpoint string
	// Topic is a prefix filter; "" takes every topic.
	Topic string
}

// Pool runs one Subscriber per Source and follows changes of the set, as
// endpoints come and go. All subscribers share the template's Consumer,
// clock, logger, metrics and timings.
type Pool struct {
	template SubscriberConfig
	ctx      context.Context

	mu     sync.Mutex
	subs   map[string]*pooled
	closed bool
}

type pooled struct {
	src    Source
	sub    *Subscriber
	cancel context.CancelFunc
	done   chan struct{}
}

// NewPool returns a Pool whose subscribers live until ctx ends or Close.
// The template's Name, Endpoint, ReplayEndpoint and Topic are ignored.
func NewPool(ctx context.Context, template SubscriberConfig) (*Pool, error) {
	if template.Consumer == nil {
		return nil, errors.New("pool: consumer: required")
	}
	return &Pool{template: template, ctx: ctx, subs: make(map[string]*pooled)}, nil
}

// Set makes the pool follow exactly sources: it starts subscribers for new
// names, restarts those whose addresses changed, and stops those no longer
// listed, telling the Consumer AllCleared for each endpoint it stops
// following (what it knew of it is stale).
func (p *Pool) Set(sources []Source) error {
	want := make(map[string]Source, len(sources))
	for i, s := range sources {
		if _, dup := want[s.Name]; dup {
			return fmt.Errorf("pool: sources[%d].name: %q appears twice", i, s.Name)
		}
		want[s.Name] = s
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return errors.New("pool: closed")
	}
	var stop []*pooled
	for name, e := range p.subs {
		if s, ok := want[name]; !ok || s != e.src {
			stop = append(stop, e)
			delete(p.subs, name)
		}
	}
	p.mu.Unlock()
	// Stop (and clear) the old subscribers before their replacements
	// start, so that an old subscriber's AllCleared never wipes what a new
	// one of the same name has applied.
	p.stop(stop)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return errors.New("pool: closed")
	}
	var err error
	for name, s := range want {
		if _, ok := p.subs[name]; ok {
			continue
		}
		cfg := p.template
		cfg.Name, cfg.Endpoint, cfg.ReplayEndpoint, cfg.Topic = s.Name, s.Endpoint, s.ReplayEndpoint, s.Topic
		sub, e := NewSubscriber(cfg)
		if e != nil {
			err = errors.Join(err, fmt.Errorf("pool: source %q: %w", name, e))
			continue
		}
		ctx, cancel := context.WithCancel(p.ctx)
		entry := &pooled{src: s, sub: sub, cancel: cancel, done: make(chan struct{})}
		p.subs[name] = entry
		go func() {
			defer close(entry.done)
			_ = sub.Run(ctx)
		}()
	}
	p.mu.Unlock()
	return err
}

func (p *Pool) stop(entries []*pooled) {
	for _, e := range entries {
		e.cancel()
	}
	for _, e := range entries {
		<-e.done
		p.template.Consumer.AllCleared(e.src.Name)
	}
}

// Status returns the status of the named endpoint's subscriber.
func (p *Pool) Status(name string) (Status, bool) {
	p.mu.Lock()
	e, ok := p.subs[name]
	p.mu.Unlock()
	if !ok {
		return Status{}, false
	}
	return e.sub.Status(), true
}

// Close stops every subscriber and waits for them.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	var all []*pooled
	for name, e := range p.subs {
		all = append(all, e)
		delete(p.subs, name)
	}
	p.mu.Unlock()
	p.stop(all)
}
