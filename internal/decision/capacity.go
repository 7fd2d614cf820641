package decision

import (
	"context"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// Capacity is how much a model can take now, for the fair queue of
// package admission (its Gate): slots is how many requests this router
// may have in flight to the endpoints that could serve req through
// targets (-1: no bound), endpoints how many such endpoints there are (0:
// none at all, the waiting room of scale-from-zero).
//
// Each endpoint offers what the router's load view and the engine's
// metrics allow: an endpoint is saturated when its engine reports
// q.EngineWaiting waiting requests, or KV use at q.KVUtilization, or when
// the router's own in-flight tokens on it (prompt + max_tokens of each
// request, counted at once, not at the next scrape) reach q.KVUtilization
// of the KV capacity the engine reports (vllm:cache_config_info); a
// saturated endpoint offers only the requests it has. Otherwise it offers
// q.EndpointConcurrency requests, or no bound when that is 0. Both the
// router and the virtual bench call it, so the queue gates on the same
// view in both.
func (d *Director) Capacity(ctx context.Context, req *framework.Request, targets []Target, q config.QueueConfig) (slots, endpoints int) {
	unbounded := false
	seen := make(map[string]bool, len(targets))
	for _, t := range targets {
		if seen[t.Pool] {
			continue
		}
		seen[t.Pool] = true
		for _, ep := range d.ServingEndpoints(ctx, req, t.Pool) {
			endpoints++
			n, ok := endpointSlots(ep, q)
			if !ok {
				unbounded = true
				continue
			}
			slots += n
		}
	}
	if unbounded {
		return -1, endpoints
	}
	return slots, endpoints
}

// endpointSlots is what one endpoint offers; ok is false for no bound.
func endpointSlots(ep framework.Endpoint, q config.QueueConfig) (int, bool) {
	requests, tokens := ep.InFlight()
	m := ep.Metrics()
	saturated := m.KVCacheUsage >= q.KVUtilization ||
		(q.EngineWaiting > 0 && m.WaitingRequests >= q.EngineWaiting) ||
		(m.NumBlocks > 0 && m.BlockSize > 0 && float64(tokens) >= q.KVUtilization*float64(m.NumBlocks*m.BlockSize)) ||
		prefillBusy(ep, q)
	switch {
	case saturated:
		return int(requests), true
	case q.EndpointConcurrency > 0:
		return max(q.EndpointConcurrency, int(requests)), true
	}
	return 0, false
}

// prefillBusy reports whether the router's outstanding prefill on ep (the
// uncached prompt tokens it sent there whose first token has not come
// back) has reached q.PrefillTokens: a request sent now would wait in the
// engine's queue behind them, or share their steps.
func prefillBusy(ep framework.Endpoint, q config.QueueConfig) bool {
	if q.PrefillTokens <= 0 {
		return false
	}
	p, ok := ep.(Prefilling)
	if !ok {
		return false
	}
	_, tokens := p.Prefilling()
	return tokens >= int64(q.PrefillTokens)
}

// hasRoom reports whether ep may take one more request by Capacity's rule.
func hasRoom(ep framework.Endpoint, q config.QueueConfig) bool {
	n, bounded := endpointSlots(ep, q)
	if !bounded {
		return true
	}
	requests, _ := ep.InFlight()
	return int64(n) > requests
}

// withRoom keeps the endpoints of eps that have room (in place), or all of
// them when none has; when explaining, the others are added to excluded.
func withRoom(eps []framework.Endpoint, q config.QueueConfig, explain bool, excluded *[]Exclusion) []framework.Endpoint {
	room := 0
	for _, ep := range eps {
		if hasRoom(ep, q) {
			room++
		}
	}
	if room == 0 || room == len(eps) {
		return eps
	}
	out := eps[:0]
	for _, ep := range eps {
		switch {
		case hasRoom(ep, q):
			out = append(out, ep)
		case explain:
			*excluded = append(*excluded, Exclusion{Name: ep.Metadata().Name, Reason: "no room (admission capacity: saturated or prefilling)"})
		}
	}
	return out
}
