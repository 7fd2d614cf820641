package cli

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/halyard-dev/halyard/internal/simulator/vllmapi"
)

func TestSimHelpListsFlags(t *testing.T) {
	cmd := NewRootCommand()
	var out strings.Builder
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"sim", "--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, flag := range []string{"--listen", "--model", "--profile", "--kv-blocks", "--block-size", "--max-num-seqs",
		"--max-num-batched-tokens", "--max-model-len", "--role", "--kv-events", "--kv-events-replay", "--kv-events-format", "--name", "--tokenizer", "--lora", "--max-loras", "--seed",
		"--ready-delay", "--fault-error-rate", "--fault-spike-rate", "--fault-spike-duration",
		"--fault-crash-after-tokens", "--fault-crash-rate", "h100-llama3-8b", "a100-llama3-8b", "zero",
		"--engine-id", "--side-channel", "--bootstrap-port", "--kv-abort-timeout", "--kv-transfer-per-token", "--bootstrap-timeout"} {
		if !strings.Contains(out.String(), flag) {
			t.Errorf("sim --help does not mention %s", flag)
		}
	}
}

func TestSimRejectsBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"sim"}, "--model is required"},
		{[]string{"sim", "--model", "m", "--profile", "nope"}, "unknown profile"},
		{[]string{"sim", "--model", "m", "--kv-events", "udp://127.0.0.1:0"}, "must be tcp://HOST:PORT"},
		{[]string{"sim", "--model", "m", "--kv-events", "tcp://127.0.0.1:0", "--kv-events-format", "xml"}, "array or map"},
		{[]string{"sim", "--model", "m", "--kv-events-format", "xml"}, "array or map"},
		{[]string{"sim", "--model", "m", "--tokenizer", "/no/such/tokenizer.json"}, "tokenizer"},
		{[]string{"sim", "--model", "m", "--role", "middle"}, "role: must be both, prefill or decode"},
		{[]string{"sim", "--model", "m", "--role", "prefill", "--side-channel", "nocolon"}, "side channel"},
		{[]string{"sim", "--model", "m", "--role", "prefill", "--bootstrap-port", "70000"}, "bootstrap port"},
		{[]string{"sim", "--model", "m", "--fault-error-rate", "2"}, "errorRate"},
		{[]string{"sim", "--model", "m", "--max-num-seqs", "-1"}, "capacity.maxNumSeqs"},
		{[]string{"sim", "--model", "m", "--listen", "256.0.0.1:1"}, "listen"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			cmd := NewRootCommand()
			cmd.SetArgs(tt.args)
			cmd.SetOut(new(strings.Builder))
			cmd.SetErr(new(strings.Builder))
			err := cmd.ExecuteContext(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

// TestSimProcess builds the halyard binary, runs `halyard sim` as a real
// process, talks to it with the OpenAI SDK, and stops it with SIGTERM.
func TestSimProcess(t *testing.T) {
	bin := buildHalyard(t)
	cmd := exec.Command(bin, "sim", "--listen", "127.0.0.1:0", "--model", "llama-3-8b", "--profile", "zero", "--lora", "sql=/a/sql")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	waited := false
	defer func() {
		if !waited {
			_ = cmd.Process.Kill()
			if err := <-exited; err != nil {
				t.Logf("killed halyard sim: %v", err)
			}
		}
	}()
	urls := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`url=(http://\S+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case urls <- m[1]:
				default:
				}
			}
		}
		exited <- cmd.Wait()
	}()
	var url string
	select {
	case url = <-urls:
	case err := <-exited:
		waited = true
		t.Fatalf("halyard sim exited early: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no listening log line within 30s")
	}
	c := openai.NewClient(option.WithBaseURL(url+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	for _, model := range []string{"llama-3-8b", "sql"} {
		resp, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model:               model,
			Messages:            []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")},
			MaxCompletionTokens: openai.Int(3),
		})
		if err != nil {
			t.Fatalf("chat to %s: %v", model, err)
		}
		if resp.Usage.CompletionTokens != 3 {
			t.Errorf("%s: %d completion tokens", model, resp.Usage.CompletionTokens)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		waited = true
		if err != nil {
			t.Errorf("halyard sim exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("halyard sim did not stop within 30s of SIGTERM")
	}
	_ = os.Remove(bin)
}

func TestParseSimArgs(t *testing.T) {
	base := vllmapi.Spec{Model: "m", Profile: "zero", Listen: "127.0.0.1:8101", MaxNumSeqs: 8}
	got, err := parseSimArgs([]string{"--max-num-batched-tokens=512", "--lora", "a=/p", "--fault-spike-duration", "20ms"}, base)
	if err != nil {
		t.Fatal(err)
	}
	want := base
	want.MaxNumBatchedTokens = 512
	want.LoRAs = []string{"a=/p"}
	want.Faults.SpikeDuration.Duration = 20 * time.Millisecond
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(vllmapi.Spec{}, "OnResult")); diff != "" {
		t.Errorf("spec (-want +got):\n%s", diff)
	}
	for _, bad := range [][]string{{"--no-such-flag"}, {"--max-num-seqs=x"}, {"stray"}} {
		if _, err := parseSimArgs(bad, base); err == nil {
			t.Errorf("parseSimArgs(%v) succeeded", bad)
		}
	}
}
