package decision

import "sync/atomic"

// Load is a router's own count of the work it has sent to one endpoint:
// the requests in flight and their prompt plus max output tokens
// (Accountable, read as framework.Endpoint.InFlight), and those without a
// first token back yet with their uncached prompt tokens (Prefilling). The
// router's endpoints (internal/datastore) and the virtual fleet's
// (internal/bench/virtual) embed it, so both count alike. It is safe for
// concurrent use; the zero value counts nothing.
type Load struct {
	reqs, toks               atomic.Int64
	prefillReqs, prefillToks atomic.Int64
}

// Begin counts a request of tokens tokens as sent.
func (l *Load) Begin(tokens int64) {
	l.reqs.Add(1)
	l.toks.Add(tokens)
}

// End counts a request begun with Begin(tokens) as finished.
func (l *Load) End(tokens int64) {
	l.reqs.Add(-1)
	l.toks.Add(-tokens)
}

// InFlight returns the unfinished requests and their tokens.
func (l *Load) InFlight() (requests, tokens int64) { return l.reqs.Load(), l.toks.Load() }

// PrefillBegin counts a request of tokens uncached prompt tokens as sent
// and waiting for its first token.
func (l *Load) PrefillBegin(tokens int64) {
	l.prefillReqs.Add(1)
	l.prefillToks.Add(tokens)
}

// PrefillEnd counts a request begun with PrefillBegin(tokens) as past its
// first token.
func (l *Load) PrefillEnd(tokens int64) {
	l.prefillReqs.Add(-1)
	l.prefillToks.Add(-tokens)
}

// Prefilling returns the requests whose first token has not come back, and
// their uncached prompt tokens.
func (l *Load) Prefilling() (requests, tokens int64) {
	return l.prefillReqs.Load(), l.prefillToks.Load()
}

var (
	_ Accountable = (*Load)(nil)
	_ Prefilling  = (*Load)(nil)
)
