package stats

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// Record is the measurement of one request.
type Record struct {
	// ID is the workload's request id.
	ID string
	// Endpoint names the engine that served the request, when known.
	Endpoint string
	// Start is when the request was sent, as an offset from the run's start.
	Start time.Duration
	// TTFT is the time from sending to the first output token; zero when no
	// token arrived.
	TTFT time.Duration
	// E2E is the time from sending to the end of the response.
	E2E time.Duration
	// ITL holds the gaps between consecutive output chunks.
	ITL []time.Duration
	// PromptTokens, OutputTokens and CachedTokens come from the usage report
	// when the target sent one (OutputTokens falls back to the number of
	// content chunks).
	PromptTokens int
	OutputTokens int
	CachedTokens int
	// Err is empty on success, else a short description of the failure.
	Err string
	// Tenant is the caller the request was sent as (runs with tenants).
	Tenant string
	// Refused marks a request the router's admission refused (429 or
	// 503 before any engine); E2E is then the time to the refusal.
	Refused bool
}

// OK reports whether the request completed.
func (r *Record) OK() bool { return r.Err == "" }

// TPOT returns (E2E − TTFT)/(OutputTokens − 1) and whether it is defined
// (more than one output token).
func (r *Record) TPOT() (time.Duration, bool) {
	if r.OutputTokens < 2 {
		return 0, false
	}
	return (r.E2E - r.TTFT) / time.Duration(r.OutputTokens-1), true
}

// SLO holds service-level objectives; a zero field sets no limit.
type SLO struct {
	TTFT time.Duration
	TPOT time.Duration
	E2E  time.Duration
}

// IsZero reports whether no objective is set.
func (s SLO) IsZero() bool { return s == SLO{} }

// Met reports whether a completed request meets every objective. A request
// without a defined TPOT meets any TPOT objective.
func (s SLO) Met(r *Record) bool {
	if !r.OK() {
		return false
	}
	if s.TTFT > 0 && r.TTFT > s.TTFT {
		return false
	}
	if s.E2E > 0 && r.E2E > s.E2E {
		return false
	}
	if s.TPOT > 0 {
		if tpot, ok := r.TPOT(); ok && tpot > s.TPOT {
			return false
		}
	}
	return true
}

// String renders the objectives in the form ParseSLO reads.
func (s SLO) String() string {
	var parts []string
	if s.TTFT > 0 {
		parts = append(parts, "ttft="+s.TTFT.String())
	}
	if s.TPOT > 0 {
		parts = append(parts, "tpot="+s.TPOT.String())
	}
	if s.E2E > 0 {
		parts = append(parts, "e2el="+s.E2E.String())
	}
	return strings.Join(parts, ",")
}

// ParseSLO reads objectives written as "ttft=500ms,tpot=50ms,e2el=10s". A
// bare number is milliseconds, as in vLLM's --goodput flag.
func ParseSLO(s string) (SLO, error) {
	var out SLO
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return SLO{}, fmt.Errorf("slo %q: want key=duration", part)
		}
		d, err := parseDuration(v)
		if err != nil {
			return SLO{}, fmt.Errorf("slo %s: %w", k, err)
		}
		switch strings.ToLower(k) {
		case "ttft":
			out.TTFT = d
		case "tpot":
			out.TPOT = d
		case "e2e", "e2el":
			out.E2E = d
		default:
			return SLO{}, fmt.Errorf("slo %q: unknown objective (want ttft, tpot or e2el)", k)
		}
	}
	return out, nil
}

func parseDuration(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	var ms float64
	if _, err := fmt.Sscanf(v, "%g", &ms); err == nil && strings.Trim(v, "0123456789.eE+-") == "" {
		if ms <= 0 || math.IsInf(ms, 0) || math.IsNaN(ms) {
			return 0, fmt.Errorf("%q: must be positive", v)
		}
		return time.Duration(ms * float64(time.Millisecond)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", v, err)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q: must be positive", v)
	}
	return d, nil
}

// Dist summarises a distribution, in milliseconds.
type Dist struct {
	Mean   float64
	Std    float64
	Median float64
	P90    float64
	P99    float64
}

// Percentile returns the p-th percentile (0..100) of sorted values,
// interpolating linearly between the closest ranks; 0 for no values.
func Percentile(sorted []float64, p float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	if p >= 100 {
		return sorted[n-1]
	}
	rank := p / 100 * float64(n-1)
	lo := int(math.Floor(rank))
	hi := lo + 1
	if hi >= n {
		return sorted[n-1]
	}
	frac := rank - float64(lo)
	return sorted[lo] + frac*(sorted[hi]-sorted[lo])
}

// Distribution summarises values (any order; the slice is sorted in place).
func Distribution(values []float64) Dist {
	if len(values) == 0 {
		return Dist{}
	}
	sort.Float64s(values)
	var sum float64
	for _, v := range values {
		sum += v
	}
	mean := sum / float64(len(values))
	var sq float64
	for _, v := range values {
		sq += (v - mean) * (v - mean)
	}
	return Dist{
		Mean:   mean,
		Std:    math.Sqrt(sq / float64(len(values))),
		Median: Percentile(values, 50),
		P90:    Percentile(values, 90),
		P99:    Percentile(values, 99),
	}
}

// Summary is what one run measured.
type Summary struct {
	// Duration is the run's length: from the first request sent to the last
	// response ended.
	Duration time.Duration
	// Completed and Failed count requests.
	Completed int
	Failed    int
	// Good counts the completed requests that met the SLO (zero when no
	// SLO was given).
	Good int
	// GoodShare is Good over the requests sent (completed and failed, so
	// a refusal counts against it): the share within the SLO that says
	// whether a policy meets it. A share of completed requests would let
	// a policy that refuses pass any SLO. Nil when no SLO was given.
	GoodShare *float64
	// TotalInput and TotalOutput count the completed requests' tokens.
	TotalInput  int
	TotalOutput int
	// CachedTokens sums the prompt tokens the targets reported as cached.
	CachedTokens int
	// RequestThroughput is completed requests per second; RequestGoodput
	// those meeting the SLO per second (zero when no SLO was given).
	RequestThroughput    float64
	RequestGoodput       float64
	OutputThroughput     float64
	TotalTokenThroughput float64
	// MaxConcurrent is the largest number of requests in flight at once.
	MaxConcurrent int
	// TTFT, TPOT, ITL and E2E are in milliseconds.
	TTFT Dist
	TPOT Dist
	ITL  Dist
	E2E  Dist
	// Errors counts failures by message.
	Errors map[string]int
	// PerEndpoint counts completed requests by the endpoint that served
	// them, when known.
	PerEndpoint map[string]int
	// CoalescedITL is the fraction of inter-token gaps shorter than
	// CoalescedGap: chunks that reached the client together (a saturated
	// CPU or a proxy buffering), whose real spacing the client could not
	// see. A high fraction makes ITL percentiles understate the engine's.
	CoalescedITL float64
}

// CoalescedGap is the gap under which two chunks count as having arrived
// together: far below any engine's real inter-token latency.
const CoalescedGap = 100 * time.Microsecond

// Summarize computes a Summary from records over a run of the given duration.
func Summarize(records []Record, duration time.Duration, slo SLO) Summary {
	s := Summary{Duration: duration}
	var ttft, tpot, itl, e2e []float64
	coalesced := 0
	type edge struct {
		at    time.Duration
		delta int
	}
	edges := make([]edge, 0, 2*len(records))
	for i := range records {
		r := &records[i]
		edges = append(edges, edge{r.Start, +1}, edge{r.Start + r.E2E, -1})
		if !r.OK() {
			s.Failed++
			if s.Errors == nil {
				s.Errors = map[string]int{}
			}
			s.Errors[r.Err]++
			continue
		}
		s.Completed++
		s.TotalInput += r.PromptTokens
		s.TotalOutput += r.OutputTokens
		s.CachedTokens += r.CachedTokens
		if r.Endpoint != "" {
			if s.PerEndpoint == nil {
				s.PerEndpoint = map[string]int{}
			}
			s.PerEndpoint[r.Endpoint]++
		}
		ttft = append(ttft, ms(r.TTFT))
		e2e = append(e2e, ms(r.E2E))
		if d, ok := r.TPOT(); ok {
			tpot = append(tpot, ms(d))
		}
		for _, d := range r.ITL {
			itl = append(itl, ms(d))
			if d < CoalescedGap {
				coalesced++
			}
		}
		if !slo.IsZero() && slo.Met(r) {
			s.Good++
		}
	}
	slices.SortFunc(edges, func(a, b edge) int {
		if c := cmp.Compare(a.at, b.at); c != 0 {
			return c
		}
		return cmp.Compare(a.delta, b.delta) // ends before starts at the same instant
	})
	cur := 0
	for _, e := range edges {
		cur += e.delta
		s.MaxConcurrent = max(s.MaxConcurrent, cur)
	}
	if sent := s.Completed + s.Failed; sent > 0 && !slo.IsZero() {
		share := float64(s.Good) / float64(sent)
		s.GoodShare = &share
	}
	if sec := duration.Seconds(); sec > 0 {
		s.RequestThroughput = float64(s.Completed) / sec
		s.RequestGoodput = float64(s.Good) / sec
		s.OutputThroughput = float64(s.TotalOutput) / sec
		s.TotalTokenThroughput = float64(s.TotalInput+s.TotalOutput) / sec
	}
	s.TTFT = Distribution(ttft)
	s.TPOT = Distribution(tpot)
	s.ITL = Distribution(itl)
	s.E2E = Distribution(e2e)
	if len(itl) > 0 {
		s.CoalescedITL = float64(coalesced) / float64(len(itl))
	}
	return s
}

// Imbalance returns max/mean of the counts (1 is perfect balance), or 0 when
// there are none.
func Imbalance(counts []float64) float64 {
	if len(counts) == 0 {
		return 0
	}
	var sum, hi float64
	for _, c := range counts {
		sum += c
		hi = max(hi, c)
	}
	if sum == 0 {
		return 0
	}
	return hi / (sum / float64(len(counts)))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
