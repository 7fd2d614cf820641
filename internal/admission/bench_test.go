package admission

import (
	"context"
	"syscall"
	"testing"
	"time"
)

// processCPU is the CPU time (user + system) this process has used. On a
// shared machine ns/op is wall time inflated by other work; cpu-ns/op is
// what admission costs.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAdmit measures admission's CPU per request: authenticate an API
// key, check the model, reserve tenant and model budgets, pass the fair
// queue, settle. "auth" is the key check alone; compare with the router's
// BenchmarkAdmission for the whole handler with admission off and on.
func BenchmarkAdmit(b *testing.B) {
	doc := `
router:
  admission: {queue: {maxPerModel: 1024}}
auth: {}
tenants:
  - name: team-a
    apiKeys: [{sha256: "` + sha("key-a") + `"}]
    limits: {requestsPerMinute: 1000000000, tokensPerMinute: 1000000000000, concurrency: 100000}
    modelLimits: {llama: {tokensPerMinute: 1000000000000}}
`
	t := &testing.T{}
	for _, bc := range []string{"auth", "local-budgets+queue"} {
		b.Run(bc, func(b *testing.B) {
			a := newTestAdmission(t, doc, &fixedGate{slots: -1, endpoints: 2}, nil)
			ctx := context.Background()
			b.ReportAllocs()
			cpu0 := processCPU()
			for b.Loop() {
				tn, rej := a.Authenticate("Bearer key-a")
				if rej != nil {
					b.Fatal(rej.Message)
				}
				if bc == "auth" {
					continue
				}
				if rej := a.Authorize(tn, "llama"); rej != nil {
					b.Fatal(rej.Message)
				}
				tk, rej := a.Admit(ctx, Request{ID: "r", Tenant: tn, Model: "llama", PromptTokens: 200, OutputTokens: 100})
				if rej != nil {
					b.Fatal(rej.Message)
				}
				tk.Done(Usage{PromptTokens: 200, CompletionTokens: 50, Known: true})
			}
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}
