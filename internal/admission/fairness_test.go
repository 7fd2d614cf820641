package admission

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/halyard-dev/halyard/internal/simclock"
)

// Fairness in virtual time: a fleet of `slots` concurrent requests, each
// holding its slot for `service`, with a time to first token of `prefill`
// after it starts. Two tenants of equal weight; heavy sends ten times
// light's rate. With admission the fleet's slots are the queue's Gate;
// without, requests wait in one FIFO in front of the engines (what they
// do when the router admits everything and the engines queue).
type fairnessRun struct {
	slots            int
	service, prefill time.Duration
	load             float64 // offered load over capacity
	lightShare       float64 // light's share of the arrivals; 1 alone
	admission        bool
	duration         time.Duration
	slo              time.Duration // TTFT within which a request is goodput
	maxWait          time.Duration // the queue's maxWait
}

type fairnessResult struct {
	lightTTFT      []time.Duration
	lightSent      int
	lightGood      int
	heavySent      int
	heavyServed    int // within the SLO
	heavyAdmitted  int
	rejections     []time.Duration // time from arrival to 429
	maxQueue       int
	lightGoodput   float64
	lightTTFTp90   time.Duration
	timeTo429p99   time.Duration
	heavyGoodShare float64 // of the heavy tenant's admitted requests, the share within the SLO
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(int(float64(len(s))*p), len(s)-1)]
}

func (fr fairnessRun) run(t *testing.T) fairnessResult {
	clock := simclock.NewVirtual(time.Unix(0, 0))
	inUse := 0
	gate := GateFunc(func(string) (int, int) { return fr.slots, 1 })
	a := newTestAdmission(t, `
router:
  admission:
    queue: {maxPerModel: 256, maxWait: `+fr.maxWait.String()+`}
tenants:
  - {name: heavy}
  - {name: light}
`, gate, clock)
	heavy, _ := a.Tenant("heavy")
	light, _ := a.Tenant("light")
	var res fairnessResult
	capacity := float64(fr.slots) / fr.service.Seconds() // requests per second
	rate := fr.load * capacity
	rng := rand.New(rand.NewPCG(1, 2))
	var fifo []func()
	start := func(tn *Tenant, arrived time.Time, done func()) {
		ttft := clock.Now().Sub(arrived) + fr.prefill
		if tn == light {
			res.lightTTFT = append(res.lightTTFT, ttft)
			if ttft <= fr.slo {
				res.lightGood++
			}
		} else {
			res.heavyAdmitted++
			if ttft <= fr.slo {
				res.heavyServed++
			}
		}
		// Output lengths vary: service is uniform in [service/2, 3service/2].
		clock.AfterFunc(time.Duration((0.5+rng.Float64())*float64(fr.service)), done)
	}
	var arrive func()
	arrive = func() {
		if clock.Now().Sub(time.Unix(0, 0)) >= fr.duration {
			return
		}
		tn := heavy
		if rng.Float64() < fr.lightShare {
			tn = light
			res.lightSent++
		} else {
			res.heavySent++
		}
		arrived := clock.Now()
		if fr.admission {
			a.Submit(Request{Tenant: tn, Model: "m", PromptTokens: 500, OutputTokens: 200}, func(tk *Ticket, rej *Rejection) {
				if rej != nil {
					res.rejections = append(res.rejections, clock.Now().Sub(arrived))
					return
				}
				start(tn, arrived, func() { tk.Done(Usage{PromptTokens: 500, CompletionTokens: 200, Known: true}) })
			})
			res.maxQueue = max(res.maxQueue, a.Queue().Len("m"))
		} else {
			begin := func() {
				inUse++
				start(tn, arrived, func() {
					inUse--
					if len(fifo) > 0 {
						next := fifo[0]
						fifo = fifo[1:]
						next()
					}
				})
			}
			if inUse < fr.slots {
				begin()
			} else {
				fifo = append(fifo, begin)
				res.maxQueue = max(res.maxQueue, len(fifo))
			}
		}
		clock.AfterFunc(time.Duration(rng.ExpFloat64()/rate*float64(time.Second)), arrive)
	}
	clock.AfterFunc(0, arrive)
	clock.RunUntil(time.Unix(0, 0).Add(fr.duration))
	res.lightTTFTp90 = pct(res.lightTTFT, 0.9)
	res.lightGoodput = float64(res.lightGood) / float64(max(res.lightSent, 1))
	res.timeTo429p99 = pct(res.rejections, 0.99)
	res.heavyGoodShare = float64(res.heavyServed) / float64(max(res.heavyAdmitted, 1))
	return res
}

// TestFairnessInVirtualTime checks issue 11's fairness targets on the
// queue itself: at 1.5x capacity the light tenant's TTFT p90 stays within
// 1.5x of what it gets alone and its goodput within 5% of its demand; at 3x
// the queue stays bounded, admitted requests meet the SLO and the excess
// gets its 429 on arrival (p99 under 50ms). maxWait is the SLO less the
// prefill, so that a request that would miss the SLO is refused instead.
// Figures are logged (go test -v) and recorded in docs/benchmarks.md.
func TestFairnessInVirtualTime(t *testing.T) {
	base := fairnessRun{slots: 64, service: 4 * time.Second, prefill: 200 * time.Millisecond, duration: 10 * time.Minute,
		slo: 2 * time.Second, maxWait: 1800 * time.Millisecond}
	alone := base
	alone.load, alone.lightShare, alone.admission = 1.5/11, 1, true
	ra := alone.run(t)

	for _, load := range []float64{1.5, 3} {
		on, off := base, base
		on.load, on.lightShare, on.admission = load, 1.0/11, true
		off.load, off.lightShare = load, 1.0/11
		r1, r0 := on.run(t), off.run(t)
		ratio := float64(r1.lightTTFTp90) / float64(ra.lightTTFTp90)
		served := float64(r1.heavyAdmitted+len(r1.lightTTFT)) / base.duration.Seconds() / (float64(base.slots) / base.service.Seconds())
		t.Logf("%.1fx capacity: light alone TTFT p90 %s; admission on: light TTFT p90 %s (%.2fx alone), goodput %.1f%%, heavy admitted within SLO %.1f%%, fleet use %.1f%%, max queue %d, 429s %d, p99 time to 429 %s; admission off: light TTFT p90 %s, goodput %.1f%%, max queue %d",
			load, ra.lightTTFTp90, r1.lightTTFTp90, ratio, 100*r1.lightGoodput, 100*r1.heavyGoodShare, 100*served, r1.maxQueue, len(r1.rejections), r1.timeTo429p99,
			r0.lightTTFTp90, 100*r0.lightGoodput, r0.maxQueue)
		if ratio > 1.5 {
			t.Errorf("%.1fx: light TTFT p90 %s is %.2fx its p90 alone (%s), want within 1.5x", load, r1.lightTTFTp90, ratio, ra.lightTTFTp90)
		}
		if r1.lightGoodput < 0.95 {
			t.Errorf("%.1fx: light goodput %.3f < 95%% of demand", load, r1.lightGoodput)
		}
		if r1.heavyGoodShare < 0.95 {
			t.Errorf("%.1fx: only %.3f of the heavy tenant's admitted requests met the SLO", load, r1.heavyGoodShare)
		}
		if served < 0.9 {
			t.Errorf("%.1fx: the fleet served %.3f of its capacity, want at least 0.9 (the reserve idles too much)", load, served)
		}
		if r1.maxQueue > 256 {
			t.Errorf("%.1fx: queue reached %d past its bound 256", load, r1.maxQueue)
		}
		if r1.timeTo429p99 >= 50*time.Millisecond {
			t.Errorf("%.1fx: p99 time to 429 %s, want under 50ms", load, r1.timeTo429p99)
		}
		if r0.lightGoodput > 0.5 {
			t.Errorf("%.1fx without admission: light goodput %.3f; the comparison expects it to collapse", load, r0.lightGoodput)
		}
	}
}
