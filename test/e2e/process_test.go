package e2e

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/halyard-dev/halyard/internal/testbin"
)

// binary is the halyard binary built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	code := func() int {
		flag.Parse()
		if testing.Short() {
			return m.Run()
		}
		defer testbin.Remove()
		var err error
		if binary, err = testbin.Halyard(); err != nil {
			fmt.Fprintln(os.Stderr, "build halyard:", err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// required tells whether a missing binary fails the tests instead of
// skipping them: in CI (CI=true) and wherever HALYARD_REQUIRE_E2E=1 (set by
// `make test`), a run that cannot build or start halyard must not pass.
func required() bool {
	return os.Getenv("HALYARD_REQUIRE_E2E") == "1" || os.Getenv("CI") == "true"
}

// needBinary skips a test when TestMain built no binary (-short), or fails
// it when end-to-end tests are required.
func needBinary(t *testing.T) {
	t.Helper()
	if binary != "" {
		return
	}
	if required() {
		t.Fatal("end-to-end tests need the binary, but it was not built (-short) and HALYARD_REQUIRE_E2E=1 or CI=true")
	}
	t.Skip("end-to-end tests need the binary (not built with -short)")
}

// needSim and needUp are kept for the tests that call them: the binary
// must be there; whether its subcommands work is for the tests to find
// (TestSubcommandsRun checks that each starts).
func needSim(t *testing.T) { t.Helper(); needBinary(t) }

func needUp(t *testing.T) { t.Helper(); needBinary(t) }

// process is a running halyard subcommand.
type process struct {
	t    *testing.T
	cmd  *exec.Cmd
	name string
	addr string

	mu   sync.Mutex
	logs strings.Builder
	out  strings.Builder // stdout
	done chan struct{}
	err  error
}

var addrRE = regexp.MustCompile(`\baddr=(\S+)`)

// start runs the binary with args and waits (up to a minute) for a log line
// containing readyMsg with an addr= field, which it records.
func start(t *testing.T, name string, readyMsg string, args ...string) *process {
	t.Helper()
	needBinary(t)
	p := &process{t: t, name: name, done: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs.WriteString(line + "\n")
			p.mu.Unlock()
			if readyMsg != "" && strings.Contains(line, readyMsg) {
				if m := addrRE.FindStringSubmatch(line); m != nil {
					select {
					case ready <- m[1]:
					default:
					}
				}
			}
		}
	})
	wg.Go(func() {
		b := make([]byte, 4096)
		for {
			n, err := stdout.Read(b)
			p.mu.Lock()
			p.out.Write(b[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	})
	go func() {
		wg.Wait()
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { _ = p.stop() })
	if readyMsg == "" {
		return p
	}
	select {
	case p.addr = <-ready:
	case <-p.done:
		t.Fatalf("%s exited before it was ready (%v):\n%s", name, p.err, p.Logs())
	case <-time.After(time.Minute):
		t.Fatalf("%s not ready within a minute:\n%s", name, p.Logs())
	}
	return p
}

// Logs returns what the process wrote to stderr so far.
func (p *process) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// Stdout returns what the process wrote to stdout so far.
func (p *process) Stdout() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// URL is the process's base URL.
func (p *process) URL() string { return "http://" + p.addr }

// stop interrupts the process and waits up to 15 s before killing it. It
// returns the exit error.
func (p *process) stop() error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.t.Errorf("%s did not stop within 15s of SIGINT; killing it", p.name)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return p.err
}

// kill ends the process at once, as a crash would.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// waitReady polls url+"/ready" (or another path) until it answers 200, for at
// most a minute.
func waitHTTP(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s not 200 within a minute (last error %v)", url, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o644) }

func asExit(err error, target **exec.ExitError) bool { return errors.As(err, target) }
