// Package virtual is the bench's virtual-time mode: it builds a fleet of
// simulated engines (internal/simulator) on one simclock.Virtual, routes
// every request of a workload through the real Halyard scheduler
// (scheduling.NewProfile over the plugin registry) as the router would, and
// measures what the engines deliver, in a single goroutine, so that policies
// can be compared on hours of traffic and dozens of engines in seconds.
//
// What the router does and this package mirrors: endpoints carry the
// engines' metrics as last scraped (every scrape interval of virtual time)
// plus exact router-local in-flight counts; each request runs one
// scheduling cycle, then PreRequest hooks, and ResponseComplete hooks when
// it ends. What it adds: the oracle policy, a picker with exact knowledge of
// every engine's prefix cache and queue (see oracle.go).
//
// It never opens a socket.
package virtual
