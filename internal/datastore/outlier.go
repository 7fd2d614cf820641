package datastore

import "time"

// OutlierPolicy sets passive outlier ejection: an endpoint whose engine
// answers Consecutive5xx server errors in a row (while its /health may
// still say 200) leaves rotation for EjectionTime. Consecutive5xx 0 turns
// ejection off.
type OutlierPolicy struct {
	Consecutive5xx int
	EjectionTime   time.Duration
}

// ObserveStatus records the status of an engine's answer at now. It reports
// whether the answer ejected the endpoint.
func (e *Endpoint) ObserveStatus(p OutlierPolicy, status int, now time.Time) bool {
	if p.Consecutive5xx <= 0 {
		return false
	}
	if status < 500 {
		if e.consecutive5xx.Load() != 0 {
			e.consecutive5xx.Store(0)
		}
		return false
	}
	n := e.consecutive5xx.Add(1)
	if n < int64(p.Consecutive5xx) || !e.consecutive5xx.CompareAndSwap(n, 0) {
		return false
	}
	e.ejections.Add(1)
	e.ejectedUntil.Store(now.Add(p.EjectionTime).UnixNano())
	return true
}

// ObserveGatewayFailure records, at now, an attempt that got no usable answer (a
// gateway failure, as Envoy's consecutive_gateway_failure: a connection
// refused or reset, headers then a close, a timeout, a short body). It
// counts as a 5xx does and reports whether it ejected the endpoint.
func (e *Endpoint) ObserveGatewayFailure(p OutlierPolicy, now time.Time) bool {
	return e.ObserveStatus(p, 599, now)
}

// Ejected reports whether the endpoint is ejected at now.
func (e *Endpoint) Ejected(now time.Time) bool {
	u := e.ejectedUntil.Load()
	return u != 0 && now.UnixNano() < u
}

// Ejections returns how many times the endpoint was ejected.
func (e *Endpoint) Ejections() int64 { return e.ejections.Load() }
