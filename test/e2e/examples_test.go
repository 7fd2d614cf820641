package e2e

import (
	"context"
	"fmt"
	"github.com/openai/openai-go/v3/option"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
)

// portRE finds the fixed loopback ports of an example: engine ports,
// basePorts, KV-event sockets, bootstrap ports.
var portRE = regexp.MustCompile(`(127\.0\.0\.1:|basePort: |bootstrap-port: ")(\d{4,5})\b`)

// shiftPorts moves every fixed port of an example by one offset to a range
// where all of them are free now, so the test does not meet other
// processes on the example's ports.
func shiftPorts(t *testing.T, doc string) string {
	t.Helper()
	var ports []int
	for _, m := range portRE.FindAllStringSubmatch(doc, -1) {
		p, _ := strconv.Atoi(m[2])
		ports = append(ports, p)
	}
	// basePort replicas take the following ports too.
	for try := 0; try < 50; try++ {
		off := 20000 + rand.IntN(30000)
		free := true
		for _, p := range ports {
			for k := range 4 {
				ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+off+k)))
				if err != nil {
					free = false
					break
				}
				_ = ln.Close()
			}
			if !free {
				break
			}
		}
		if free {
			return portRE.ReplaceAllStringFunc(doc, func(s string) string {
				m := portRE.FindStringSubmatch(s)
				p, _ := strconv.Atoi(m[2])
				return m[1] + strconv.Itoa(p+off)
			})
		}
	}
	t.Fatal("no free port range for the example")
	return ""
}

// TestEveryExampleServesUnderUp starts `halyard up --config` on each file
// of examples/ (ports moved to free ones) and sends each one chat request
// for its first public model.
func TestEveryExampleServesUnderUp(t *testing.T) {
	needUp(t)
	files, err := filepath.Glob(filepath.Join("..", "..", "examples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Engines) == 0 {
				t.Fatalf("%s has no engines block: halyard up --config cannot serve it", f)
			}
			path := filepath.Join(t.TempDir(), filepath.Base(f))
			if err := writeFile(path, shiftPorts(t, string(b))); err != nil {
				t.Fatal(err)
			}
			p := start(t, "up "+filepath.Base(f), "router serving", "up", "--config", path, "--listen", "127.0.0.1:0", "--log-level", "info")
			waitCond(func() bool { return strings.Contains(p.Stdout(), "Halyard is up") })
			if !strings.Contains(p.Stdout(), "Halyard is up") {
				t.Fatalf("not up:\n%s\n%s", p.Stdout(), p.Logs())
			}
			model := cfg.Routes[0].Model
			cl := client(p)
			// An example with API keys names one of them in a comment
			// (`# key "..."`); the request authenticates with it.
			var opts []option.RequestOption
			if m := regexp.MustCompile(`# key "([^"]+)"`).FindStringSubmatch(string(b)); m != nil {
				opts = append(opts, option.WithAPIKey(m[1]))
			}
			chat, err := cl.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
				Model:     model,
				Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello from " + filepath.Base(f))},
				MaxTokens: openai.Int(4),
			}, opts...)
			if err != nil {
				t.Fatalf("chat with %s: %v\n%s", model, err, p.Logs())
			}
			if chat.Usage.CompletionTokens != 4 || len(chat.Choices) != 1 {
				t.Errorf("chat answer %+v", chat.Usage)
			}
		})
	}
}

// TestUpNamesTheEndpointsThatDoNotAnswer runs `halyard up` on a config
// whose endpoints nobody serves and checks that it names them, with the
// command that would start them, within seconds.
func TestUpNamesTheEndpointsThatDoNotAnswer(t *testing.T) {
	needUp(t)
	addr := freeAddrE2E(t)
	doc := fmt.Sprintf(`apiVersion: config.halyard.dev/v1alpha1
kind: Config
endpoints:
  - {name: d0, url: "http://%s", model: llama-3-8b, role: both}
routes:
  - {model: llama-3-8b, targets: [{pool: llama-3-8b}]}
`, addr)
	path := filepath.Join(t.TempDir(), "silent.yaml")
	if err := writeFile(path, doc); err != nil {
		t.Fatal(err)
	}
	p := start(t, "up silent", "router serving", "up", "--config", path, "--listen", "127.0.0.1:0", "--log-level", "info")
	want := "start it: halyard sim --model llama-3-8b --listen " + addr
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.Stdout(), want) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if out := p.Stdout(); !strings.Contains(out, "d0 at http://"+addr) || !strings.Contains(out, want) {
		t.Fatalf("halyard up does not name the silent endpoint and what to start:\n%s", out)
	}
}

func freeAddrE2E(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
