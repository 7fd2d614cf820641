package perf

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/halyard-dev/halyard/internal/testbin"
)

const body = `{"model":"m","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello."}],"max_tokens":1}`

type proc struct {
	cmd   *exec.Cmd
	addr  string
	admin string // the router's admin listener
}

var (
	addrRE  = regexp.MustCompile(`\baddr=(\S+)`)
	adminRE = regexp.MustCompile(`\badmin_addr=(\S+)`)
)

func run(t *testing.T, bin, readyMsg string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		_ = cmd.Wait()
	})
	addr := make(chan *proc, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := addrRE.FindStringSubmatch(sc.Text()); m != nil && strings.Contains(sc.Text(), readyMsg) {
				p := &proc{cmd: cmd, addr: m[1]}
				if a := adminRE.FindStringSubmatch(sc.Text()); a != nil {
					p.admin = a[1]
				}
				select {
				case addr <- p:
				default:
				}
			}
		}
	}()
	select {
	case p := <-addr:
		return p
	case <-time.After(time.Minute):
		t.Fatalf("%v not ready", args)
		return nil
	}
}

// TestRouterOverhead prints the router-overhead table of docs/benchmarks.md.
func TestRouterOverhead(t *testing.T) {
	if os.Getenv("HALYARD_PERF") != "1" {
		t.Skip("set HALYARD_PERF=1 to measure")
	}
	dir := t.TempDir()
	bin, err := testbin.Halyard()
	if err != nil {
		t.Fatal(err)
	}
	defer testbin.Remove()
	sim := run(t, bin, "simulated engine serving", "sim", "--listen", "127.0.0.1:0", "--model", "m", "--profile", "zero", "--log-level", "info")
	cfg := filepath.Join(dir, "router.yaml")
	doc := fmt.Sprintf("apiVersion: config.halyard.dev/v1alpha1\nkind: Config\nendpoints:\n  - {name: e0, url: \"http://%s\", model: m}\nroutes:\n  - {model: m, targets: [{pool: m}]}\n", sim.addr)
	if err := os.WriteFile(cfg, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	router := run(t, bin, "router serving", "router", "--config", cfg, "--listen", "127.0.0.1:0", "--log-level", "info")
	direct := "http://" + sim.addr + "/v1/chat/completions"
	routed := "http://" + router.addr + "/v1/chat/completions"
	waitOK(t, routed)

	var report strings.Builder
	fmt.Fprintf(&report, "| measurement | straight to the engine | through the router | ratio |\n| --- | --- | --- | --- |\n")
	if _, err := exec.LookPath("wrk"); err == nil && os.Getenv("HALYARD_PERF_WRK") != "0" {
		conns := envInt("HALYARD_PERF_CONNS", 64)
		dur := envInt("HALYARD_PERF_SECONDS", 10)
		script := filepath.Join(dir, "post.lua")
		lua := "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = '" + body + "'\n"
		if err := os.WriteFile(script, []byte(lua), 0o644); err != nil {
			t.Fatal(err)
		}
		var d, r []wrkResult
		pids := []int{sim.cmd.Process.Pid, router.cmd.Process.Pid}
		for range 2 { // alternate, so both see the same machine
			d = append(d, runWrk(t, script, direct, conns, dur, pids))
			r = append(r, runWrk(t, script, routed, conns, dur, pids))
		}
		bd, br := best(d), best(r)
		fmt.Fprintf(&report, "| max requests/s (wrk, 1 thread, %d connections, best of 2×%ds) | %.0f | %.0f | %.2f |\n", conns, dur, bd.rps, br.rps, br.rps/bd.rps)
		fmt.Fprintf(&report, "| latency p50 / p99 at max load | %s / %s | %s / %s | |\n", bd.p50, bd.p99, br.p50, br.p99)
		if cd, cr := cpuPerRequest(d), cpuPerRequest(r); cd != nil && cr != nil {
			fmt.Fprintf(&report, "| CPU per request under wrk, engine (all wrk runs) | %s | %s | |\n", cd[0], cr[0])
			fmt.Fprintf(&report, "| CPU per request under wrk, router | | %s | |\n", cr[1])
		}
	} else {
		t.Log("wrk not installed: skipping the throughput measurement (apt-get install -y wrk)")
	}
	rate := envInt("HALYARD_PERF_RATE", 1000)
	windows := envInt("HALYARD_PERF_WINDOWS", 10)
	dl, rl := openLoop(t, direct, routed, rate, windows)
	fmt.Fprintf(&report, "| latency p50 at %d requests/s (open loop, %d×1s windows each, alternating) | %s | %s | added %s |\n", rate, windows, q(dl, 50), q(rl, 50), q(rl, 50)-q(dl, 50))
	fmt.Fprintf(&report, "| latency p99 at %d requests/s | %s | %s | added %s |\n", rate, q(dl, 99), q(rl, 99), q(rl, 99)-q(dl, 99))
	fmt.Fprintf(&report, "| latency p99.9 at %d requests/s | %s | %s | |\n", rate, q(dl, 99.9), q(rl, 99.9))
	own := ownAddedLatency(t, "http://"+router.admin+"/metrics")
	fmt.Fprintf(&report, "| router's own added latency, arrival to upstream send (`halyard_router_added_latency_seconds{stage=\"request\"}`), share of all requests of the run | | %s | |\n", own)
	if base := os.Getenv("HALYARD_PERF_BASE_BIN"); base != "" {
		compareRouters(t, &report, base, cfg, sim, router)
	}
	t.Log("\n" + report.String())
	if out := os.Getenv("HALYARD_PERF_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(report.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func waitOK(t *testing.T, url string) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		resp, err := http.Post(url, "application/json", strings.NewReader(body))
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never answered 200", url)
}

type wrkResult struct {
	rps      float64
	p50, p99 string
	requests int
	// cpu is the CPU time each of the pids given to runWrk used during
	// the run; nil when /proc cannot tell.
	cpu []time.Duration
}

func runWrk(t *testing.T, script, url string, conns, secs int, pids []int) wrkResult {
	t.Helper()
	before := cpuTimes(pids)
	out, err := exec.Command("wrk", "-t1", "-c"+strconv.Itoa(conns), "-d"+strconv.Itoa(secs)+"s", "--latency", "-s", script, url).CombinedOutput()
	after := cpuTimes(pids)
	if err != nil {
		t.Fatalf("wrk: %v\n%s", err, out)
	}
	var r wrkResult
	if before != nil && after != nil {
		for i := range pids {
			r.cpu = append(r.cpu, after[i]-before[i])
		}
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 5 && f[1] == "requests" && f[2] == "in":
			r.requests, _ = strconv.Atoi(f[0])
		case len(f) == 2 && f[0] == "Requests/sec:":
			r.rps, _ = strconv.ParseFloat(f[1], 64)
		case len(f) == 2 && f[0] == "50%":
			r.p50 = f[1]
		case len(f) == 2 && f[0] == "99%":
			r.p99 = f[1]
		case strings.Contains(line, "Non-2xx"):
			t.Errorf("wrk saw errors: %s", line)
		}
	}
	return r
}

// clockTick is the unit of /proc/PID/stat's CPU times (USER_HZ, 100 on
// Linux).
const clockTick = 10 * time.Millisecond

// cpuTimes returns the user+system CPU time of each process, or nil.
func cpuTimes(pids []int) []time.Duration {
	var out []time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil
		}
		// Fields after the command name (which may hold spaces).
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 13 {
			return nil
		}
		utime, err1 := strconv.ParseInt(f[11], 10, 64)
		stime, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			return nil
		}
		out = append(out, time.Duration(utime+stime)*clockTick)
	}
	return out
}

// cpuPerRequest is each process's CPU time per request over runs.
func cpuPerRequest(rs []wrkResult) []time.Duration {
	var total []time.Duration
	n := 0
	for _, r := range rs {
		if r.cpu == nil || r.requests == 0 {
			return nil
		}
		if total == nil {
			total = make([]time.Duration, len(r.cpu))
		}
		for i, c := range r.cpu {
			total[i] += c
		}
		n += r.requests
	}
	for i := range total {
		total[i] = (total[i] / time.Duration(n)).Round(time.Microsecond)
	}
	return total
}

func best(rs []wrkResult) wrkResult {
	b := rs[0]
	for _, r := range rs[1:] {
		if r.rps > b.rps {
			b = r
		}
	}
	return b
}

// openLoop sends rate requests per second on a fixed schedule, one second
// to the engine, one to the router, alternating, and returns the latencies.
func openLoop(t *testing.T, direct, routed string, rate, windows int) (d, r []time.Duration) {
	t.Helper()
	// A bounded pool: a hiccup queues requests instead of opening hundreds
	// of connections at once (whose SYNs the kernel may drop, adding a 1 s
	// retransmit to the tail).
	tr := &http.Transport{MaxConnsPerHost: 64, MaxIdleConnsPerHost: 64, MaxIdleConns: 128, IdleConnTimeout: time.Minute}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	defer tr.CloseIdleConnections()
	payload := []byte(body)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var errs int
	interval := time.Second / time.Duration(rate)
	// Warm both paths' connections.
	for range 50 {
		for _, u := range []string{direct, routed} {
			if resp, err := client.Post(u, "application/json", bytes.NewReader(payload)); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}
	for w := range 2 * windows {
		url, into := direct, &d
		if w%2 == 1 {
			url, into = routed, &r
		}
		start := time.Now()
		for i := range rate {
			due := start.Add(time.Duration(i) * interval)
			if wait := time.Until(due); wait > 0 {
				time.Sleep(wait)
			}
			wg.Go(func() {
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, url, bytes.NewReader(payload))
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				// Latency from the scheduled time: a late send counts.
				lat := time.Since(due)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs++
					return
				}
				*into = append(*into, lat)
			})
		}
	}
	wg.Wait()
	if errs > 0 {
		t.Errorf("%d requests failed", errs)
	}
	return d, r
}

func q(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.5) - 1
	i = min(max(i, 0), len(s)-1)
	return s[i].Round(time.Microsecond)
}

// ownAddedLatency returns the router's own added-latency histogram
// (stage=request) as the share of requests at or under each bucket bound.
func ownAddedLatency(t *testing.T, url string) string {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	type bucket struct {
		le    string
		count float64
	}
	var buckets []bucket
	var total float64
	for _, line := range strings.Split(string(b), "\n") {
		v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if rest, ok := strings.CutPrefix(line, `halyard_router_added_latency_seconds_bucket{stage="request",le="`); ok {
			buckets = append(buckets, bucket{rest[:strings.IndexByte(rest, '"')], v})
		}
		if strings.HasPrefix(line, `halyard_router_added_latency_seconds_count{stage="request"}`) {
			total = v
		}
	}
	if total == 0 {
		return "no data"
	}
	var parts []string
	for _, bk := range buckets {
		if le, err := strconv.ParseFloat(bk.le, 64); err == nil && le >= 50e-6 && le <= 0.0025 {
			parts = append(parts, fmt.Sprintf("≤%s %.2f%%", time.Duration(le*float64(time.Second)), 100*bk.count/total))
		}
	}
	return strings.Join(parts, ", ")
}

// compareRouters starts a second router from another build (baseBin) on the
// same config and engine, and runs wrk against the engine, that router and
// this tree's router in turn, HALYARD_PERF_ROUNDS times (default 6) for
// HALYARD_PERF_AB_SECONDS each (default 5): requests/s and CPU per request
// of each router, side by side.
func compareRouters(t *testing.T, report *strings.Builder, baseBin, cfg string, sim, router *proc) {
	t.Helper()
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Log("wrk not installed: skipping the comparison")
		return
	}
	base := run(t, baseBin, "router serving", "router", "--config", cfg, "--listen", "127.0.0.1:0", "--log-level", "info")
	baseURL := "http://" + base.addr + "/v1/chat/completions"
	waitOK(t, baseURL)
	script := filepath.Join(t.TempDir(), "post.lua")
	lua := "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = '" + body + "'\n"
	if err := os.WriteFile(script, []byte(lua), 0o644); err != nil {
		t.Fatal(err)
	}
	rounds, secs := envInt("HALYARD_PERF_ROUNDS", 6), envInt("HALYARD_PERF_AB_SECONDS", 5)
	direct := "http://" + sim.addr + "/v1/chat/completions"
	routed := "http://" + router.addr + "/v1/chat/completions"
	pids := []int{sim.cmd.Process.Pid, base.cmd.Process.Pid, router.cmd.Process.Pid}
	fmt.Fprintf(report, "\n| round | engine alone: requests/s | base router: requests/s, router CPU per request | this router: requests/s, router CPU per request |\n| --- | --- | --- | --- |\n")
	var sumB, sumR, cpuB, cpuR float64
	for i := range rounds {
		d := runWrk(t, script, direct, 64, secs, pids)
		b := runWrk(t, script, baseURL, 64, secs, pids)
		r := runWrk(t, script, routed, 64, secs, pids)
		cb, cr := perRequest(b, 1), perRequest(r, 2)
		sumB, sumR, cpuB, cpuR = sumB+b.rps, sumR+r.rps, cpuB+cb.Seconds(), cpuR+cr.Seconds()
		fmt.Fprintf(report, "| %d | %.0f | %.0f, %s | %.0f, %s |\n", i+1, d.rps, b.rps, cb, r.rps, cr)
	}
	n := float64(rounds)
	fmt.Fprintf(report, "| mean | | %.0f, %s | %.0f, %s |\n", sumB/n, seconds(cpuB/n), sumR/n, seconds(cpuR/n))
	fmt.Fprintf(report, "| this/base | | throughput %.2f | CPU per request %.2f |\n", sumR/sumB, cpuR/cpuB)
}

// perRequest is the CPU time of pids[i] per request of the run, 0 if unknown.
func perRequest(r wrkResult, i int) time.Duration {
	if r.cpu == nil || r.requests == 0 {
		return 0
	}
	return (r.cpu[i] / time.Duration(r.requests)).Round(time.Microsecond)
}

func seconds(s float64) time.Duration {
	return time.Duration(s * float64(time.Second)).Round(time.Microsecond)
}
