package kubelet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// router is a `halyard router` process with a static config.
type router struct {
	url       string
	mu        sync.Mutex
	unhealthy map[string]bool // endpoints seen out of rotation
	stopWatch context.CancelFunc
}

func startRouter(t *testing.T, engines map[string]int) *router {
	t.Helper()
	port := freePort(t)
	var eps []string
	names := make([]string, 0, len(engines))
	for n := range engines {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		eps = append(eps, fmt.Sprintf("  - {name: %s, url: \"http://127.0.0.1:%d\", model: %s}", n, engines[n], modelName))
	}
	cfg := fmt.Sprintf(`apiVersion: config.halyard.dev/v1alpha1
kind: Config
router:
  listen: 127.0.0.1:%d
  scrapeInterval: 100ms
  health: {failureThreshold: 2, successThreshold: 2}
endpoints:
%s
routes:
  - model: %s
    targets: [{pool: %s}]
`, port, strings.Join(eps, "\n"), modelName, modelName)
	path := filepath.Join(t.TempDir(), "router.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	startProcess(t, "router", "--config", path)
	r := &router{url: fmt.Sprintf("http://127.0.0.1:%d", port), unhealthy: map[string]bool{}}
	eventually(t, 30*time.Second, "router serving", func() (bool, string) {
		resp, err := http.Get(r.url + "/health")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	// Follow the endpoints' health from the router's metrics.
	ctx, cancel := context.WithCancel(context.Background())
	r.stopWatch = cancel
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if h, err := r.health(); err == nil {
				r.mu.Lock()
				for n, v := range h {
					if v == 0 {
						r.unhealthy[n] = true
					}
				}
				r.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// health reads halyard_router_endpoint_healthy by endpoint.
func (r *router) health() (map[string]float64, error) {
	fams, err := families(r.url + "/metrics")
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	if f := fams["halyard_router_endpoint_healthy"]; f != nil {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "endpoint" {
					out[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	return out, nil
}

func (r *router) waitHealthy(t *testing.T, want map[string]float64) {
	t.Helper()
	eventually(t, time.Minute, fmt.Sprintf("router endpoints %v", want), func() (bool, string) {
		h, err := r.health()
		if err != nil {
			return false, err.Error()
		}
		for n, v := range want {
			if h[n] != v {
				return false, fmt.Sprintf("%v", h)
			}
		}
		return true, ""
	})
}

func (r *router) sawUnhealthy() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]bool{}
	for k, v := range r.unhealthy {
		out[k] = v
	}
	return out
}

// clients send non-streamed chat completions through the router with the
// OpenAI SDK (its own retries off) until stopped: none of them has started
// streaming when an engine dies, so none may fail.
type clients struct {
	mu     sync.Mutex
	n      int
	errs   []string
	served map[string]int // by X-Halyard-Endpoint
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startClients(t *testing.T, url string, workers int) *clients {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &clients{served: map[string]int{}, cancel: cancel}
	oc := openai.NewClient(option.WithBaseURL(url+"/v1"), option.WithAPIKey("none"), option.WithMaxRetries(0),
		option.WithRequestTimeout(60*time.Second))
	for w := 0; w < workers; w++ {
		c.wg.Add(1)
		go func(w int) {
			defer c.wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				var resp *http.Response
				_, err := oc.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
					Model:     modelName,
					Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage(fmt.Sprintf("client %d request %d: tell me about ships", w, i))},
					MaxTokens: openai.Int(8),
				}, option.WithResponseInto(&resp))
				c.mu.Lock()
				c.n++
				if err != nil {
					c.errs = append(c.errs, err.Error())
				} else if resp != nil {
					c.served[resp.Header.Get("X-Halyard-Endpoint")]++
				}
				c.mu.Unlock()
				select {
				case <-ctx.Done():
				case <-time.After(20 * time.Millisecond):
				}
			}
		}(w)
	}
	t.Cleanup(c.stop)
	return c
}

func (c *clients) stop() { c.cancel(); c.wg.Wait() }

func (c *clients) result() (int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, append([]string(nil), c.errs...)
}

func (c *clients) waitServed(t *testing.T, n int) {
	t.Helper()
	eventually(t, time.Minute, fmt.Sprintf("%d client requests", n), func() (bool, string) {
		got, errs := c.result()
		return got >= n, fmt.Sprintf("%d requests, errors %v", got, errs)
	})
}

// waitServedBy waits until each endpoint has served a request counted
// from now.
func (c *clients) waitServedBy(t *testing.T, endpoints ...string) {
	t.Helper()
	c.mu.Lock()
	base := map[string]int{}
	for k, v := range c.served {
		base[k] = v
	}
	c.mu.Unlock()
	eventually(t, time.Minute, fmt.Sprintf("requests served by %v", endpoints), func() (bool, string) {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, e := range endpoints {
			if c.served[e] <= base[e] {
				return false, fmt.Sprintf("served %v", c.served)
			}
		}
		return true, ""
	})
}

// families parses a /metrics page.
func families(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, errors.New(resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(strings.NewReader(string(b)))
}

// scrape sums the series of one family.
func scrape(t *testing.T, url, family string) float64 {
	t.Helper()
	fams, err := families(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	f := fams[family]
	if f == nil {
		return 0
	}
	var sum float64
	for _, m := range f.GetMetric() {
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
	}
	return sum
}
