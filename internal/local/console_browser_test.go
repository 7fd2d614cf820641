package local

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/chromedp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// chromium returns the path of a Chromium (Debian's package, installed by
// make test-deps). Missing, the test skips, or fails with CI=true or
// HALYARD_REQUIRE_CHROMIUM=1.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "chromium is not installed (make test-deps installs Debian's chromium)"
	if os.Getenv("CI") == "true" || os.Getenv("HALYARD_REQUIRE_CHROMIUM") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// artifactPath is where a test keeps a file for CI: $HALYARD_ARTIFACTS_DIR
// (set by .ci/run), else the test's temporary directory.
func artifactPath(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("HALYARD_ARTIFACTS_DIR")
	if dir == "" {
		return filepath.Join(t.TempDir(), name)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, name)
}

// lineValue returns the first word after marker in out, "" when absent.
func lineValue(out, marker string) string {
	i := strings.Index(out, marker)
	if i < 0 {
		return ""
	}
	v, _, _ := strings.Cut(out[i+len(marker):], " ")
	v, _, _ = strings.Cut(v, "\n")
	return strings.TrimSuffix(v, ",")
}

// TestConsoleInChromium drives the console of a local fleet (halyard up's
// Run: the router and two simulated engines on real sockets) in headless
// Chromium: the page loads without console errors or exceptions, lists the
// endpoints, shows a request's decision within a second of the request,
// the playground's answer streams beside its decision, and the fleet shows
// predicted and actual prefix hit ratios. It saves a
// screenshot (console.png in $HALYARD_ARTIFACTS_DIR).
func TestConsoleInChromium(t *testing.T) {
	chrome := chromium(t)
	out, done, cancel := startRun(t, `apiVersion: config.halyard.dev/v1alpha1
kind: Config
router: {listen: "127.0.0.1:0"}
engines: [{model: llama-3-8b, replicas: 2}]
routes: [{model: llama-3-8b, targets: [{pool: llama-3-8b}]}]
`, Options{})
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	deadline := time.After(30 * time.Second)
	waitUntil(t, out, done, deadline, "no console URL within 30s", func() bool { return strings.Contains(out.String(), "Console: ") })
	consoleURL, routerURL := lineValue(out.String(), "Console: "), lineValue(out.String(), "router on ")
	if !strings.HasSuffix(consoleURL, "/ui/") || !strings.HasPrefix(routerURL, "http://127.0.0.1:") {
		t.Fatalf("console %q, router %q in:\n%s", consoleURL, routerURL, out)
	}
	// The public listener does not serve the console.
	if resp, err := http.Get(routerURL + "/ui/"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET %s/ui/: %v %v, want 404", routerURL, resp.StatusCode, err)
	}

	actx, acancel := chromedp.NewExecAllocator(t.Context(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1280, 1000))...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	bctx, tcancel := context.WithTimeout(bctx, 60*time.Second)
	defer tcancel()

	var mu sync.Mutex
	var problems []string
	messages := chromedp.Console(bctx) // subscribes now: nothing the page writes is lost
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleException || m.Type == "assert" {
				mu.Lock()
				problems = append(problems, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line))
				mu.Unlock()
			}
		}
	}()
	checkProblems := func(when string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if len(problems) > 0 {
			t.Errorf("%s: the page reported:\n%s", when, strings.Join(problems, "\n"))
		}
	}
	poll := func(what, expr string, within time.Duration) {
		t.Helper()
		if _, err := chromedp.Run(bctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(within))); err != nil {
			html, _ := chromedp.Run(bctx, chromedp.OuterHTML(chromedp.CSS("main")))
			t.Fatalf("%s: not within %s (%v); page:\n%s", what, within, err, html)
		}
	}
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return v
	}

	// The page loads, follows the decisions and lists both endpoints.
	if _, err := chromedp.Call(bctx, cdplog.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(bctx, chromedp.Navigate(consoleURL)); err != nil {
		t.Fatal(err)
	}
	poll("the fleet lists the endpoints and the feed is open",
		`document.body.dataset.feed === 'open' && ['llama-3-8b-0', 'llama-3-8b-1'].every(n => document.querySelector('#fleet tr[data-endpoint="' + n + '"]') !== null)`,
		10*time.Second)
	if fleet := text("#fleet tbody"); strings.Count(fleet, "healthy") != 2 {
		t.Errorf("fleet does not show both endpoints healthy: %q", fleet)
	}
	checkProblems("after loading")

	// A request sent with the OpenAI SDK shows up within a second.
	client := openai.NewClient(option.WithBaseURL(routerURL+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	var raw *http.Response
	sent := time.Now()
	stream := client.Chat.Completions.NewStreaming(t.Context(), openai.ChatCompletionNewParams{
		Model:     "llama-3-8b",
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello from the SDK")},
		MaxTokens: openai.Int(8),
	}, option.WithResponseInto(&raw))
	if !stream.Next() {
		t.Fatalf("stream: %v", stream.Err())
	}
	id := raw.Header.Get("X-Request-Id")
	if id == "" {
		t.Fatal("no X-Request-Id")
	}
	poll("the SDK request's decision", fmt.Sprintf(`document.querySelector('#decisions tr[data-id=%q]') !== null`, id), time.Until(sent.Add(time.Second)))
	t.Logf("decision shown %s after the request was sent", time.Since(sent).Round(time.Millisecond))
	for stream.Next() {
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	_ = stream.Close()
	poll("the SDK request's outcome", fmt.Sprintf(`(document.querySelector('#decisions tr[data-id=%q]') || {textContent: ''}).textContent.includes('200')`, id), 5*time.Second)

	// The playground streams an answer beside its decision.
	if err := chromedp.Do(bctx,
		chromedp.SetValue(chromedp.CSS("#pg-max"), "24"),
		chromedp.Click(chromedp.CSS("#pg-send")),
	); err != nil {
		t.Fatal(err)
	}
	poll("the playground's answer", `document.querySelector('#pg-answer').dataset.state === 'done'`, 15*time.Second)
	answer, decision := text("#pg-answer"), text("#pg-decision")
	attr := func(name string) float64 {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.AttributeValue(chromedp.CSS("#pg-answer"), name))
		if err != nil {
			t.Fatal(err)
		}
		var f float64
		_, _ = fmt.Sscan(v.Value, &f)
		return f
	}
	chunks, first, last := attr("data-chunks"), attr("data-first-at"), attr("data-last-at")
	if strings.TrimSpace(answer) == "" || chunks < 2 || !(last > first) {
		t.Errorf("the answer did not stream: %.0f chunks rendered from %.1f to %.1f ms: %q", chunks, first, last, answer)
	}
	if !strings.Contains(decision, "picked llama-3-8b-") || !strings.Contains(decision, "candidates:") {
		t.Errorf("the playground shows no decision: %q", decision)
	}

	// The endpoints that served show predicted and actual prefix hit
	// ratios once the engines' counters are scraped.
	poll("the fleet's prefix hit ratios", `[...document.querySelectorAll('#fleet tbody tr')].some(r => /\d+% \/ \d+%/.test(r.lastChild.textContent))`, 5*time.Second)

	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)) // quality 100: PNG
	if err != nil {
		t.Fatal(err)
	}
	path := artifactPath(t, "console.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	checkProblems("at the end")
}
