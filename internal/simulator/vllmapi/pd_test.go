package vllmapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/halyard-dev/halyard/internal/simulator"
)

// nixlPrefillParams is what a router sends with a prefill request.
var nixlPrefillParams = map[string]any{
	"do_remote_decode": true, "do_remote_prefill": false, "remote_engine_id": nil,
	"remote_block_ids": nil, "remote_host": nil, "remote_port": nil,
}

// pdStatus reads /admin/pd.
func pdStatus(t *testing.T, inst *Instance) PDStatus {
	t.Helper()
	resp, err := http.Get(inst.URL + "/admin/pd")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st PDStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// counter reads a PD metric, 0 when the series does not exist yet.
func counter(t *testing.T, inst *Instance, name string, labelPairs ...string) float64 {
	t.Helper()
	fams := scrape(t, inst)
	fam, ok := fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range fam.GetMetric() {
		for i := 0; i+1 < len(labelPairs); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				found = found || (l.GetName() == labelPairs[i] && l.GetValue() == labelPairs[i+1])
			}
			if !found {
				continue next
			}
		}
		if m.Counter != nil {
			return m.GetCounter().GetValue()
		}
		return m.GetGauge().GetValue()
	}
	return 0
}

// prefillNixl sends a router-style prefill request and returns the answer's
// kv_transfer_params.
func prefillNixl(t *testing.T, inst *Instance, prompt, xrid string) map[string]any {
	t.Helper()
	body := map[string]any{"model": "llama-3-8b", "prompt": prompt, "max_tokens": 1, "stream": false, "kv_transfer_params": nixlPrefillParams}
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, inst.URL+"/v1/completions", strings.NewReader(string(b)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", xrid)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		KV    map[string]any `json:"kv_transfer_params"`
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("prefill: status %d, %v", resp.StatusCode, err)
	}
	if out.Usage.CompletionTokens != 1 {
		t.Errorf("prefill generated %d tokens, want 1", out.Usage.CompletionTokens)
	}
	return out.KV
}

// errorOf decodes an error body.
func errorOf(t *testing.T, b []byte) (msg, param string) {
	t.Helper()
	var e struct {
		Error struct {
			Message string  `json:"message"`
			Param   *string `json:"param"`
			Code    int     `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("error body %q: %v", b, err)
	}
	if e.Error.Param != nil {
		param = *e.Error.Param
	}
	return e.Error.Message, param
}

func TestNixlPrefillThenDecode(t *testing.T) {
	const promptTokens = 1000
	perToken := 200 * time.Microsecond // 1000 tokens: 200ms of transfer
	prefill := startSim(t, Spec{Profile: "zero", Role: RolePrefill, PD: PDSpec{EngineID: "prefill-0"}})
	var mu sync.Mutex
	var results []simulator.Result
	decode := startSim(t, Spec{Profile: "zero", Role: RoleDecode, PD: PDSpec{EngineID: "decode-0", TransferPerToken: perToken},
		OnResult: func(r simulator.Result) { mu.Lock(); results = append(results, r); mu.Unlock() }})
	prompt := promptText(promptTokens, 1)

	kv := prefillNixl(t, prefill, prompt, "req-a")
	st := pdStatus(t, prefill)
	bs := prefill.Server.Engine().Config().Capacity.BlockSize
	ids, _ := kv["remote_block_ids"].([]any)
	if kv["do_remote_prefill"] != true || kv["do_remote_decode"] != false || kv["remote_engine_id"] != "prefill-0" ||
		kv["tp_size"] != 1.0 || len(ids) < promptTokens/bs || kv["remote_request_id"] == nil {
		t.Fatalf("kv_transfer_params = %v", kv)
	}
	if host, port := splitAddr(st.SideChannel); kv["remote_host"] != host || kv["remote_port"] != float64(port) {
		t.Errorf("remote_host/port = %v:%v, side channel %s", kv["remote_host"], kv["remote_port"], st.SideChannel)
	}
	if len(st.Held) != 1 || st.Held[0].XRequestID != "req-a" || st.Held[0].Blocks != len(ids) {
		t.Fatalf("prefill holds %+v", st.Held)
	}
	if got := prefill.Server.Engine().Snapshot().HeldBlocks; got != len(ids) {
		t.Errorf("engine holds %d blocks, want %d", got, len(ids))
	}

	// The decode request: the original request with the params copied in,
	// streamed with usage through the SDK.
	c := client(decode)
	stream := c.Completions.NewStreaming(context.Background(), openai.CompletionNewParams{
		Model: "llama-3-8b", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompt)},
		MaxTokens: openai.Int(8), StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	}, option.WithJSONSet("kv_transfer_params", kv), option.WithHeader("X-Request-Id", "req-a"))
	var text strings.Builder
	var usage openai.CompletionUsage
	for stream.Next() {
		ch := stream.Current()
		for _, ch := range ch.Choices {
			text.WriteString(ch.Text)
		}
		if ch.Usage.TotalTokens > 0 {
			usage = ch.Usage
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if usage.CompletionTokens != 8 || usage.PromptTokens != promptTokens || len(strings.Fields(text.String())) != 8 {
		t.Errorf("decode answered %q with usage %+v", text.String(), usage)
	}
	mu.Lock()
	res := results[len(results)-1]
	mu.Unlock()
	if want := time.Duration(promptTokens-1) * perToken; res.TTFT() < want {
		t.Errorf("decode TTFT %v, want at least the transfer time %v", res.TTFT(), want)
	}

	// The prefill engine released the blocks when pulled; both logs name
	// the same request.
	st = pdStatus(t, prefill)
	if len(st.Held) != 0 || prefill.Server.Engine().Snapshot().HeldBlocks != 0 {
		t.Errorf("blocks still held after the pull: %+v", st.Held)
	}
	pulled := st.Events[len(st.Events)-1]
	dst := pdStatus(t, decode)
	got := dst.Events[len(dst.Events)-1]
	if pulled.Kind != "pulled" || pulled.Peer != "decode-0" || got.Kind != "transferred" || got.Peer != "prefill-0" ||
		got.RemoteRequestID != pulled.RequestID || got.RemoteRequestID != kv["remote_request_id"] || got.XRequestID != "req-a" {
		t.Errorf("prefill event %+v, decode event %+v", pulled, got)
	}
	for _, m := range []struct {
		inst   *Instance
		name   string
		labels []string
		want   float64
	}{
		{prefill, "halyard_sim_pd_kept_total", []string{"connector", "nixl"}, 1},
		{prefill, "halyard_sim_pd_released_total", []string{"reason", "pulled"}, 1},
		{prefill, "halyard_sim_pd_held_requests", nil, 0},
		{decode, "halyard_sim_pd_transfers_total", []string{"connector", "nixl"}, 1},
		{decode, "halyard_sim_pd_transfer_tokens_total", []string{"connector", "nixl"}, promptTokens},
		{decode, "vllm:nixl_num_failed_transfers", nil, 0},
	} {
		if got := counter(t, m.inst, m.name, m.labels...); got != m.want {
			t.Errorf("%s%v = %v, want %v", m.name, m.labels, got, m.want)
		}
	}

	// The decode engine now holds the prompt: a plain request hits its cache.
	comp, err := c.Completions.New(context.Background(), openai.CompletionNewParams{
		Model: "llama-3-8b", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompt)}, MaxTokens: openai.Int(1)})
	if err != nil {
		t.Fatal(err)
	}
	if cached := comp.Usage.PromptTokensDetails.CachedTokens; cached < promptTokens-2*int64(bs) {
		t.Errorf("cached_tokens after the transfer = %d, want about %d", cached, promptTokens)
	}

	// The same params again: the blocks are gone, a clear 400.
	status, body := postJSON(t, decode.URL+"/v1/completions", map[string]any{"model": "llama-3-8b", "prompt": prompt, "kv_transfer_params": kv})
	msg, param := errorOf(t, body)
	if status != 400 || param != "kv_transfer_params" || !strings.Contains(msg, "no live KV blocks") || !strings.Contains(msg, "unknown_request") {
		t.Errorf("replayed params: %d %q (param %q)", status, msg, param)
	}
	if got := counter(t, decode, "halyard_sim_pd_refused_total", "reason", "unknown_request"); got != 1 {
		t.Errorf("refused{unknown_request} = %v", got)
	}
	if got := counter(t, decode, "vllm:nixl_num_failed_transfers"); got != 1 {
		t.Errorf("vllm:nixl_num_failed_transfers = %v", got)
	}
}

func TestDecodeRefusesForgedParams(t *testing.T) {
	prefill := startSim(t, Spec{Profile: "zero", Role: RolePrefill, PD: PDSpec{EngineID: "p"}})
	decode := startSim(t, Spec{Profile: "zero", Role: RoleDecode, PD: PDSpec{EngineID: "d"}})
	prompt := promptText(100, 2)
	kv := prefillNixl(t, prefill, prompt, "real")
	host, port := kv["remote_host"], kv["remote_port"]
	with := func(change map[string]any) map[string]any {
		out := map[string]any{}
		for k, v := range kv {
			out[k] = v
		}
		for k, v := range change {
			out[k] = v
		}
		return out
	}
	tests := []struct {
		name   string
		kv     map[string]any
		prompt string
		reason string
	}{
		{"made-up request", map[string]any{"do_remote_prefill": true, "remote_engine_id": "p", "remote_request_id": "cmpl-999",
			"remote_block_ids": []int{1, 2, 3}, "remote_host": host, "remote_port": port}, prompt, refuseUnknown},
		{"another engine's id", with(map[string]any{"remote_engine_id": "someone-else"}), prompt, refuseEngine},
		{"wrong blocks", with(map[string]any{"remote_block_ids": []int{0, 1}}), prompt, refuseBlocks},
		{"another prompt", kv, promptText(100, 3), refusePrompt},
		{"nobody there", with(map[string]any{"remote_host": "127.0.0.1", "remote_port": 1}), prompt, refuseUnreachable},
		{"missing fields", map[string]any{"do_remote_prefill": true, "remote_block_ids": []int{1}}, prompt, refuseMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := counter(t, decode, "halyard_sim_pd_refused_total", "reason", tt.reason)
			status, body := postJSON(t, decode.URL+"/v1/completions", map[string]any{"model": "llama-3-8b", "prompt": tt.prompt, "kv_transfer_params": tt.kv})
			msg, param := errorOf(t, body)
			if status != 400 || param != "kv_transfer_params" {
				t.Fatalf("status %d param %q: %s", status, param, msg)
			}
			if after := counter(t, decode, "halyard_sim_pd_refused_total", "reason", tt.reason); after != before+1 {
				t.Errorf("refused{%s} went from %v to %v (message %q)", tt.reason, before, after, msg)
			}
		})
	}
	// Refused pulls take nothing: the real request still pulls its KV.
	status, body := postJSON(t, decode.URL+"/v1/completions", map[string]any{"model": "llama-3-8b", "prompt": prompt, "max_tokens": 2, "kv_transfer_params": kv})
	if status != 200 {
		t.Fatalf("the real pull after refusals: %d %s", status, body)
	}
	if got := counter(t, prefill, "halyard_sim_pd_pull_refused_total", "reason", refuseBlocks); got != 1 {
		t.Errorf("prefill's pull_refused{block_mismatch} = %v", got)
	}
}

func TestKeptBlocksExpire(t *testing.T) {
	prefill := startSim(t, Spec{Profile: "zero", Role: RolePrefill, PD: PDSpec{AbortTimeout: 100 * time.Millisecond}})
	decode := startSim(t, Spec{Profile: "zero", Role: RoleDecode})
	prompt := promptText(200, 4)
	kv := prefillNixl(t, prefill, prompt, "late")
	eventually(t, 10*time.Second, "the kept blocks to expire", func() bool {
		return counter(t, prefill, "halyard_sim_pd_released_total", "reason", "expired") == 1
	})
	if n := prefill.Server.Engine().Snapshot().HeldBlocks; n != 0 {
		t.Errorf("%d blocks held after expiry", n)
	}
	status, body := postJSON(t, decode.URL+"/v1/completions", map[string]any{"model": "llama-3-8b", "prompt": prompt, "kv_transfer_params": kv})
	if msg, _ := errorOf(t, body); status != 400 || !strings.Contains(msg, "expired or already pulled") {
		t.Errorf("pull after expiry: %d %s", status, msg)
	}
}

func TestRoleChecks(t *testing.T) {
	prefill := startSim(t, Spec{Profile: "zero", Role: RolePrefill})
	decode := startSim(t, Spec{Profile: "zero", Role: RoleDecode})
	both := startSim(t, Spec{Profile: "zero"})
	decodeParams := map[string]any{"do_remote_prefill": true, "remote_engine_id": "x", "remote_request_id": "y", "remote_block_ids": []int{1}, "remote_host": "h", "remote_port": 1}
	tests := []struct {
		name   string
		inst   *Instance
		body   map[string]any
		status int
		param  string
	}{
		{"a decode engine refuses a prefill", decode, map[string]any{"kv_transfer_params": nixlPrefillParams}, 400, "kv_transfer_params"},
		{"a prefill engine refuses a decode", prefill, map[string]any{"kv_transfer_params": decodeParams}, 400, "kv_transfer_params"},
		{"a streamed remote prefill", prefill, map[string]any{"stream": true, "kv_transfer_params": nixlPrefillParams}, 400, "stream"},
		{"both at once", decode, map[string]any{"kv_transfer_params": decodeParams, "bootstrap_room": 5}, 400, "kv_transfer_params"},
		{"a decode without the bootstrap server", decode, map[string]any{"bootstrap_room": 5}, 400, "bootstrap_host"},
		{"a role-both engine ignores kv_transfer_params", both, map[string]any{"kv_transfer_params": decodeParams}, 200, ""},
		{"and bootstrap fields", both, map[string]any{"bootstrap_host": "h", "bootstrap_port": 1, "bootstrap_room": 1}, 200, ""},
		{"a plain request on a prefill engine", prefill, map[string]any{}, 200, ""},
		{"a plain request on a decode engine", decode, map[string]any{}, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.body["model"], tt.body["prompt"], tt.body["max_tokens"] = "llama-3-8b", "hello there", 2
			status, body := postJSON(t, tt.inst.URL+"/v1/completions", tt.body)
			if status != tt.status {
				t.Fatalf("status %d, want %d: %s", status, tt.status, body)
			}
			if tt.status != 200 {
				if _, param := errorOf(t, body); param != tt.param {
					t.Errorf("param %q, want %q", param, tt.param)
				}
				return
			}
			if strings.Contains(string(body), "kv_transfer_params") {
				t.Errorf("a plain answer carries kv_transfer_params: %s", body)
			}
		})
	}
	if n := both.Server.Engine().Snapshot().HeldBlocks; n != 0 {
		t.Errorf("a role-both engine holds %d blocks", n)
	}
}

// sglangBody is one SGLang-style request body.
func sglangBody(prompt string, st PDStatus, room uint64, stream bool) map[string]any {
	host, port := splitAddr(st.Bootstrap)
	b := map[string]any{"model": "llama-3-8b", "messages": []map[string]string{{"role": "user", "content": prompt}},
		"max_tokens": 6, "bootstrap_host": host, "bootstrap_port": port, "bootstrap_room": room}
	if stream {
		b["stream"] = true
		b["stream_options"] = map[string]any{"include_usage": true}
	}
	return b
}

func TestSGLangBootstrapPairsByRoom(t *testing.T) {
	prefill := startSim(t, Spec{Profile: "zero", Role: RolePrefill, PD: PDSpec{EngineID: "sp"}})
	decode := startSim(t, Spec{Profile: "zero", Role: RoleDecode, PD: PDSpec{EngineID: "sd", BootstrapTimeout: 20 * time.Second}})
	st := pdStatus(t, prefill)
	if st.Bootstrap == "" {
		t.Fatal("no bootstrap server")
	}
	prompt := promptText(300, 5)
	const room = uint64(1<<63 - 7)

	// The decode request arrives first and waits for its room.
	type answer struct {
		status int
		body   []byte
	}
	decoded := make(chan answer, 1)
	go func() {
		status, body := postJSONNoFatal(decode.URL+"/v1/chat/completions", sglangBody(prompt, st, room, false))
		decoded <- answer{status, body}
	}()
	eventually(t, 10*time.Second, "the decode engine to wait on the room", func() bool {
		w := pdStatus(t, prefill).WaitingRooms
		return len(w) == 1 && w[0] == room
	})
	select {
	case a := <-decoded:
		t.Fatalf("decode answered before its prefill: %d %s", a.status, a.body)
	default:
	}
	// The prefill arrives (streamed, as a router forwarding the client's
	// body would send it) and answers with one token.
	status, body := postJSON(t, prefill.URL+"/v1/chat/completions", sglangBody(prompt, st, room, true))
	if status != 200 || strings.Count(string(body), "data: ") != 4 { // role, token, usage, [DONE]
		t.Fatalf("prefill: %d %s", status, body)
	}
	var a answer
	select {
	case a = <-decoded:
	case <-time.After(20 * time.Second):
		t.Fatal("decode did not answer after its prefill")
	}
	var resp struct {
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(a.body, &resp); a.status != 200 || err != nil || resp.Usage.CompletionTokens != 6 {
		t.Fatalf("decode: %d %s", a.status, a.body)
	}
	if got := counter(t, prefill, "halyard_sim_pd_released_total", "connector", "sglang", "reason", "pulled"); got != 1 {
		t.Errorf("released{sglang,pulled} = %v", got)
	}
	if got := counter(t, decode, "halyard_sim_pd_transfers_total", "connector", "sglang"); got != 1 {
		t.Errorf("transfers{sglang} = %v", got)
	}
	if len(pdStatus(t, prefill).Held) != 0 || prefill.Server.Engine().Snapshot().HeldBlocks != 0 {
		t.Error("the room's blocks are still held")
	}

	// The prefill arrives first this time; the decode finds it kept.
	if status, body := postJSON(t, prefill.URL+"/v1/chat/completions", sglangBody(prompt, st, 7, false)); status != 200 {
		t.Fatalf("prefill: %d %s", status, body)
	}
	if status, body := postJSON(t, decode.URL+"/v1/chat/completions", sglangBody(prompt, st, 7, false)); status != 200 {
		t.Fatalf("decode after its prefill: %d %s", status, body)
	}
}

func TestSGLangRoomWithoutPrefill(t *testing.T) {
	prefill := startSim(t, Spec{Profile: "zero", Role: RolePrefill})
	decode := startSim(t, Spec{Profile: "zero", Role: RoleDecode, PD: PDSpec{BootstrapTimeout: 300 * time.Millisecond}})
	st := pdStatus(t, prefill)
	start := time.Now()
	status, body := postJSON(t, decode.URL+"/v1/chat/completions", sglangBody("lonely", st, 42, true))
	msg, param := errorOf(t, body)
	if status != 400 || param != "bootstrap_room" || !strings.Contains(msg, "bootstrap_timeout") {
		t.Errorf("room without prefill: %d %q (param %q)", status, msg, param)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("took %v", d)
	}
	if got := counter(t, decode, "halyard_sim_pd_refused_total", "connector", "sglang", "reason", refuseTimeout); got != 1 {
		t.Errorf("refused{bootstrap_timeout} = %v", got)
	}
	if len(pdStatus(t, prefill).WaitingRooms) != 0 {
		t.Error("a room is still waited on")
	}
}

func TestSGLangFailedPrefillWakesDecode(t *testing.T) {
	// 40 blocks of 16 tokens: a 700-token prompt does not fit the prefill
	// engine, which refuses it after reading its room.
	prefill := startSim(t, Spec{Profile: "zero", Role: RolePrefill, NumGPUBlocks: 40})
	decode := startSim(t, Spec{Profile: "zero", Role: RoleDecode, PD: PDSpec{BootstrapTimeout: time.Minute}})
	st := pdStatus(t, prefill)
	body := sglangBody(promptText(700, 6), st, 9, false)
	decoded := make(chan string, 1)
	go func() {
		_, b := postJSONNoFatal(decode.URL+"/v1/chat/completions", body)
		decoded <- string(b)
	}()
	eventually(t, 10*time.Second, "the decode engine to wait", func() bool { return len(pdStatus(t, prefill).WaitingRooms) == 1 })
	if status, b := postJSON(t, prefill.URL+"/v1/chat/completions", body); status != 400 {
		t.Fatalf("prefill status %d, want 400: %s", status, b)
	}
	select {
	case b := <-decoded:
		if msg, param := errorOf(t, []byte(b)); param != "bootstrap_room" || !strings.Contains(msg, refusePrefillFailed) {
			t.Errorf("decode answer %s", b)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the decode engine kept waiting after its prefill failed")
	}
}

// postJSONNoFatal is postJSON for goroutines: errors become the body.
func postJSONNoFatal(url string, body any) (int, []byte) {
	b, _ := json.Marshal(body)
	resp, err := http.Post(url, "application/json", strings.NewReader(string(b)))
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	var out strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, []byte(out.String())
}
