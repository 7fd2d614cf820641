package vllmapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/halyard-dev/halyard/internal/simclock"
	"github.com/halyard-dev/halyard/internal/simulator"
	"github.com/halyard-dev/halyard/internal/simulator/kvcache"
	"github.com/halyard-dev/halyard/internal/simulator/vllmapi/wire"
)

// Disaggregation roles of an engine (`halyard sim --role`).
const (
	// RoleBoth serves whole requests and, like vLLM without a KV connector,
	// ignores kv_transfer_params and SGLang's bootstrap fields.
	RoleBoth = "both"
	// RolePrefill computes prompts for remote decode engines and keeps
	// their KV blocks until a decode engine pulls them.
	RolePrefill = "prefill"
	// RoleDecode pulls prompt KV from a prefill engine, then decodes.
	RoleDecode = "decode"
)

// Defaults of PDSpec.
const (
	// DefaultKVAbortTimeout is how long a prefill engine keeps blocks that
	// no decode engine pulls: vLLM's VLLM_NIXL_ABORT_REQUEST_TIMEOUT.
	DefaultKVAbortTimeout = 480 * time.Second
	// DefaultKVTransferPerToken is the modelled KV transfer time per token:
	// Llama-3-8B's 128 KiB of KV per token over a 200 Gb/s link (25 GB/s)
	// takes 5.2 µs.
	DefaultKVTransferPerToken = 5 * time.Microsecond
	// DefaultBootstrapTimeout bounds a decode engine's wait for the prefill
	// of its bootstrap room: SGLang's SGLANG_DISAGGREGATION_WAITING_TIMEOUT.
	DefaultBootstrapTimeout = 300 * time.Second
	// DefaultBootstrapPort is SGLang's --disaggregation-bootstrap-port.
	DefaultBootstrapPort = 8998
	// pullTimeout bounds one NixlConnector pull from a prefill engine.
	pullTimeout = 30 * time.Second
	// maxPDEvents is how many transfer events /admin/pd keeps.
	maxPDEvents = 1024
)

// Connector names, as the connector label of the PD metrics.
const (
	connectorNixl   = "nixl"
	connectorSGLang = "sglang"
)

// Reasons a KV pull is refused, as the reason label of the PD metrics and
// the side channel's error bodies.
const (
	refuseUnknown       = "unknown_request"
	refuseEngine        = "engine_mismatch"
	refuseBlocks        = "block_mismatch"
	refusePrompt        = "prompt_mismatch"
	refuseMalformed     = "malformed_params"
	refuseUnreachable   = "unreachable"
	refuseTimeout       = "bootstrap_timeout"
	refusePrefillFailed = "prefill_failed"
	refuseRole          = "wrong_role"
)

// PDSpec configures an engine's part in prefill/decode disaggregation.
// Zero fields take the defaults.
type PDSpec struct {
	// EngineID names the engine in kv_transfer_params (remote_engine_id);
	// default a random UUID, as vLLM's.
	EngineID string
	// SideChannel is the host:port a prefill engine serves its
	// NixlConnector side channel on, where decode engines pull KV; it is
	// advertised as remote_host and remote_port. Default the --listen host
	// with a free port.
	SideChannel string
	// BootstrapPort is the port of a prefill engine's SGLang bootstrap
	// server (on the --listen host); 0 picks a free port.
	BootstrapPort int
	// AbortTimeout frees kept blocks that no decode engine pulled.
	AbortTimeout time.Duration
	// TransferPerToken is the modelled KV transfer time per prompt token
	// that a decode engine does not already cache.
	TransferPerToken time.Duration
	// BootstrapTimeout bounds a decode engine's wait for its room's prefill.
	BootstrapTimeout time.Duration
}

func (p *PDSpec) defaults() {
	if p.EngineID == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		b[6] = b[6]&0x0f | 0x40
		b[8] = b[8]&0x3f | 0x80
		h := hex.EncodeToString(b[:])
		p.EngineID = h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
	}
	if p.AbortTimeout <= 0 {
		p.AbortTimeout = DefaultKVAbortTimeout
	}
	if p.TransferPerToken < 0 {
		p.TransferPerToken = 0
	}
	if p.BootstrapTimeout <= 0 {
		p.BootstrapTimeout = DefaultBootstrapTimeout
	}
}

// Validate checks the spec for role.
func (p PDSpec) Validate(role string) error {
	switch role {
	case "", RoleBoth, RolePrefill, RoleDecode:
	default:
		return fmt.Errorf("role: must be both, prefill or decode, got %q", role)
	}
	if p.SideChannel != "" {
		if _, _, err := net.SplitHostPort(p.SideChannel); err != nil {
			return fmt.Errorf("side channel %q: must be host:port: %w", p.SideChannel, err)
		}
	}
	if p.BootstrapPort < 0 || p.BootstrapPort > 65535 {
		return fmt.Errorf("bootstrap port: must be 0 to 65535, got %d", p.BootstrapPort)
	}
	if p.AbortTimeout < 0 || p.TransferPerToken < 0 || p.BootstrapTimeout < 0 {
		return errors.New("kv abort timeout, transfer time per token and bootstrap timeout must not be negative")
	}
	return nil
}

// heldKV is a finished prefill's KV kept for a decode engine.
type heldKV struct {
	key       string
	connector string
	// engineReq is the engine's request id (remote_request_id).
	engineReq string
	xRequest  string
	blocks    []int64
	tokens    int
	digest    uint64
	room      uint64
	timer     simclock.Timer
	kept      time.Time
}

// room is one SGLang bootstrap room: a decode engine waits on ready until
// the room's prefill keeps its blocks or fails.
type room struct {
	ready   chan struct{}
	closed  bool
	failed  string
	waiters int
}

// PDEvent is one entry of /admin/pd's transfer log.
type PDEvent struct {
	Time time.Time `json:"time"`
	// Kind is kept (a prefill kept its blocks), pulled (a decode engine
	// took them), expired (the abort timeout freed them), transferred (this
	// decode engine received KV) or refused (a pull was refused).
	Kind      string `json:"kind"`
	Connector string `json:"connector"`
	// RequestID is the engine request id: the prefill's
	// remote_request_id, or the decode engine's own request.
	RequestID string `json:"request_id"`
	// XRequestID is the X-Request-Id header of the request that caused the
	// event.
	XRequestID string `json:"x_request_id,omitempty"`
	// Peer is the other engine: the puller's engine id on a prefill
	// engine, the prefill's remote_engine_id on a decode engine.
	Peer string `json:"peer,omitempty"`
	// RemoteRequestID is, on a decode engine, the prefill's request id.
	RemoteRequestID string  `json:"remote_request_id,omitempty"`
	Room            *uint64 `json:"room,omitempty"`
	Blocks          int     `json:"blocks"`
	Tokens          int     `json:"tokens"`
	Reason          string  `json:"reason,omitempty"`
}

// PDStatus is the body of GET /admin/pd.
type PDStatus struct {
	Role     string `json:"role"`
	EngineID string `json:"engine_id"`
	// SideChannel and Bootstrap are a prefill engine's listening addresses.
	SideChannel string `json:"side_channel,omitempty"`
	Bootstrap   string `json:"bootstrap,omitempty"`
	// Held lists the requests whose blocks are kept right now.
	Held []PDEvent `json:"held"`
	// WaitingRooms lists the bootstrap rooms decode engines are waiting on.
	WaitingRooms []uint64  `json:"waiting_rooms"`
	Events       []PDEvent `json:"events"`
}

// pdState is a server's disaggregation state.
type pdState struct {
	role   string
	spec   PDSpec
	engine *simulator.Engine
	log    *slog.Logger
	client *http.Client
	m      *pdMetrics

	mu        sync.Mutex
	held      map[string]*heldKV
	rooms     map[uint64]*room
	events    []PDEvent
	sideAddr  string // advertised side channel host:port
	bootAddr  string
	listeners []*http.Server
}

func newPDState(role string, spec PDSpec, eng *simulator.Engine, log *slog.Logger) *pdState {
	if role == "" {
		role = RoleBoth
	}
	spec.defaults()
	return &pdState{
		role: role, spec: spec, engine: eng, log: log,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}},
		m:      newPDMetrics(eng.Config().Model),
		held:   map[string]*heldKV{},
		rooms:  map[uint64]*room{},
	}
}

// pdAction is what a generation request asks of the disaggregation layer.
type pdAction uint8

const (
	pdNone     pdAction = iota
	pdKeepNixl          // prefill: keep blocks, answer with kv_transfer_params
	pdKeepRoom          // prefill: keep blocks under a bootstrap room
	pdPullNixl          // decode: pull from the named prefill engine
	pdPullRoom          // decode: pull from the room's prefill engine
)

// classify decides the action for a parsed request, or refuses it.
func (p *pdState) classify(g *wire.Generation) (pdAction, *wire.Error) {
	kv, bs := g.KVTransfer, g.Bootstrap
	if p.role == RoleBoth || (kv == nil && bs == nil) {
		return pdNone, nil // vLLM and SGLang ignore these fields without disaggregation
	}
	if kv != nil && (kv.DoRemoteDecode || kv.DoRemotePrefill) && bs != nil {
		return pdNone, wire.BadRequest("kv_transfer_params", "give either kv_transfer_params (NixlConnector) or bootstrap_* (SGLang), not both")
	}
	if kv != nil && kv.DoRemoteDecode && kv.DoRemotePrefill {
		return pdNone, wire.BadRequest("kv_transfer_params", "kv_transfer_params: do_remote_decode and do_remote_prefill are both true")
	}
	switch {
	case kv != nil && kv.DoRemoteDecode:
		if p.role != RolePrefill {
			p.m.refused.WithLabelValues(connectorNixl, refuseRole).Inc()
			return pdNone, wire.BadRequest("kv_transfer_params", "kv_transfer_params.do_remote_decode asks for a prefill, but this engine's role is %s", p.role)
		}
		if g.Stream {
			return pdNone, wire.BadRequest("stream", "a prefill for a remote decode (do_remote_decode) must not stream")
		}
		return pdKeepNixl, nil
	case kv != nil && kv.DoRemotePrefill:
		if p.role != RoleDecode {
			p.m.refused.WithLabelValues(connectorNixl, refuseRole).Inc()
			return pdNone, wire.BadRequest("kv_transfer_params", "kv_transfer_params.do_remote_prefill asks for a decode, but this engine's role is %s", p.role)
		}
		return pdPullNixl, nil
	case bs != nil:
		if !bs.HasRoom {
			return pdNone, wire.BadRequest("bootstrap_room", "bootstrap_room is required with bootstrap_host and bootstrap_port")
		}
		if p.role == RolePrefill {
			return pdKeepRoom, nil
		}
		if bs.Host == "" || bs.Port == 0 {
			return pdNone, wire.BadRequest("bootstrap_host", "a decode engine needs bootstrap_host and bootstrap_port to reach the prefill engine")
		}
		return pdPullRoom, nil
	}
	return pdNone, nil // kv_transfer_params asking for nothing
}

// promptDigest identifies a prompt and its adapter: a prefill's kept KV is
// only given to a decode of the same prompt.
func promptDigest(prompt []uint32, lora string) uint64 {
	return uint64(kvcache.HashBlock(kvcache.RootHash(lora), prompt))
}

// keep records a finished prefill's held blocks and returns the
// kv_transfer_params of the answer (nixl) or nil (a room).
func (p *pdState) keep(action pdAction, engineReq, xRequest string, g *wire.Generation, lora string, h *simulator.HeldBlocks) map[string]any {
	blocks := make([]int64, len(h.Blocks))
	for i, b := range h.Blocks {
		blocks[i] = int64(b)
	}
	hk := &heldKV{
		connector: connectorNixl, engineReq: engineReq, xRequest: xRequest, blocks: blocks,
		tokens: len(g.Prompt), digest: promptDigest(g.Prompt, lora), kept: p.engine.Clock().Now(),
	}
	hk.key = "req:" + engineReq
	if action == pdKeepRoom {
		hk.connector, hk.room = connectorSGLang, g.Bootstrap.Room
		hk.key = "room:" + strconv.FormatUint(hk.room, 10)
	}
	p.mu.Lock()
	if old := p.held[hk.key]; old != nil {
		// A room reused while its KV is still kept: the old KV is dropped.
		p.dropLocked(old, "replaced")
	}
	p.held[hk.key] = hk
	hk.timer = p.engine.Clock().AfterFunc(p.spec.AbortTimeout, func() { p.expire(hk) })
	p.m.kept.WithLabelValues(hk.connector).Inc()
	p.m.heldRequests.Inc()
	p.m.heldBlocks.Add(float64(len(blocks)))
	ev := hk.event("kept")
	if action == pdKeepRoom {
		r := p.roomLocked(hk.room)
		if !r.closed {
			r.closed = true
			close(r.ready)
		}
	}
	p.recordLocked(ev)
	sideAddr := p.sideAddr
	p.mu.Unlock()
	p.log.Debug("prefill kept its KV blocks", "request_id", engineReq, "x_request_id", xRequest, "connector", hk.connector, "blocks", len(blocks))
	if action != pdKeepNixl {
		return nil
	}
	host, port := splitAddr(sideAddr)
	return map[string]any{
		"do_remote_prefill": true,
		"do_remote_decode":  false,
		"remote_block_ids":  blocks,
		"remote_engine_id":  p.spec.EngineID,
		"remote_request_id": engineReq,
		"remote_host":       host,
		"remote_port":       port,
		"tp_size":           1,
	}
}

// prefillFailed wakes the decode engines waiting on a room whose prefill
// ended without KV.
func (p *pdState) prefillFailed(action pdAction, g *wire.Generation, why string) {
	if action != pdKeepRoom {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.roomLocked(g.Bootstrap.Room)
	if !r.closed {
		r.failed = why
		r.closed = true
		close(r.ready)
	}
	// Forget the mark once nobody can be waiting for it any more.
	room := g.Bootstrap.Room
	p.engine.Clock().AfterFunc(p.spec.BootstrapTimeout, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if cur := p.rooms[room]; cur == r && cur.waiters == 0 {
			delete(p.rooms, room)
		}
	})
}

func (p *pdState) roomLocked(n uint64) *room {
	r := p.rooms[n]
	if r == nil {
		r = &room{ready: make(chan struct{})}
		p.rooms[n] = r
	}
	return r
}

func (h *heldKV) event(kind string) PDEvent {
	ev := PDEvent{Kind: kind, Connector: h.connector, RequestID: h.engineReq, XRequestID: h.xRequest, Blocks: len(h.blocks), Tokens: h.tokens}
	if h.connector == connectorSGLang {
		r := h.room
		ev.Room = &r
	}
	return ev
}

func (p *pdState) recordLocked(ev PDEvent) {
	ev.Time = p.engine.Clock().Now()
	if len(p.events) == maxPDEvents {
		copy(p.events, p.events[1:])
		p.events = p.events[:maxPDEvents-1]
	}
	p.events = append(p.events, ev)
}

// dropLocked forgets kept KV and frees its blocks.
func (p *pdState) dropLocked(h *heldKV, reason string) {
	delete(p.held, h.key)
	if h.timer != nil {
		h.timer.Stop()
	}
	p.engine.Release(h.engineReq)
	p.m.heldRequests.Dec()
	p.m.heldBlocks.Sub(float64(len(h.blocks)))
	p.m.released.WithLabelValues(h.connector, reason).Inc()
	if h.connector == connectorSGLang {
		if r := p.rooms[h.room]; r != nil && r.waiters == 0 {
			delete(p.rooms, h.room)
		}
	}
}

func (p *pdState) expire(h *heldKV) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held[h.key] != h {
		return
	}
	p.dropLocked(h, "expired")
	ev := h.event("expired")
	ev.Reason = "abort timeout " + p.spec.AbortTimeout.String()
	p.recordLocked(ev)
	p.log.Info("kept KV blocks expired: no decode engine pulled them", "request_id", h.engineReq, "x_request_id", h.xRequest,
		"blocks", len(h.blocks), "timeout", p.spec.AbortTimeout.String())
}

// close frees every kept block and stops the side listeners.
func (p *pdState) close() {
	p.mu.Lock()
	for _, h := range p.held {
		p.dropLocked(h, "shutdown")
	}
	servers := p.listeners
	p.listeners = nil
	p.mu.Unlock()
	for _, s := range servers {
		_ = s.Close()
	}
	p.client.CloseIdleConnections()
}

// pullRequest is a decode engine's request to a prefill engine's side
// channel: give me the KV you keep for this request.
type pullRequest struct {
	// EngineID and RequestID name the kept KV (remote_engine_id,
	// remote_request_id), for the nixl connector.
	EngineID  string  `json:"engine_id,omitempty"`
	RequestID string  `json:"request_id,omitempty"`
	BlockIDs  []int64 `json:"block_ids,omitempty"`
	// Room names the kept KV for the sglang connector; WaitMillis is how
	// long to wait for the room's prefill.
	Room       *uint64 `json:"room,omitempty"`
	WaitMillis int64   `json:"wait_ms,omitempty"`
	// PromptTokens and PromptDigest identify the decode's prompt.
	PromptTokens int    `json:"prompt_tokens"`
	PromptDigest uint64 `json:"prompt_digest"`
	// Puller is the decode engine's id, XRequestID its request's header.
	Puller     string `json:"puller"`
	XRequestID string `json:"x_request_id,omitempty"`
}

// pullAnswer is the side channel's answer.
type pullAnswer struct {
	Tokens    int    `json:"tokens,omitempty"`
	Blocks    int    `json:"blocks,omitempty"`
	EngineID  string `json:"engine_id,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	Reason    string `json:"reason,omitempty"`
	Message   string `json:"message,omitempty"`
}

// sideHandler serves a prefill engine's side channel and bootstrap server.
func (p *pdState) sideHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /kv/pull", p.servePull)
	mux.HandleFunc("GET /kv/info", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"engine_id": p.spec.EngineID, "role": p.role, "model": p.engine.Config().Model,
			"block_size": p.engine.Config().Capacity.BlockSize})
	})
	return mux
}

func (p *pdState) servePull(w http.ResponseWriter, r *http.Request) {
	var req pullRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, pullAnswer{Reason: refuseMalformed, Message: "malformed pull request: " + err.Error()})
		return
	}
	connector, key := connectorNixl, "req:"+req.RequestID
	if req.Room != nil {
		connector, key = connectorSGLang, "room:"+strconv.FormatUint(*req.Room, 10)
		if !p.waitRoom(r.Context(), *req.Room, time.Duration(req.WaitMillis)*time.Millisecond) {
			p.refusePull(w, connector, &req, http.StatusGatewayTimeout, refuseTimeout,
				fmt.Sprintf("no prefill arrived for bootstrap room %d within %s", *req.Room, time.Duration(req.WaitMillis)*time.Millisecond))
			return
		}
	}
	p.mu.Lock()
	h := p.held[key]
	var status int
	var reason, msg string
	switch {
	case h == nil && req.Room != nil && p.rooms[*req.Room] != nil && p.rooms[*req.Room].failed != "":
		status, reason, msg = http.StatusConflict, refusePrefillFailed, fmt.Sprintf("the prefill of bootstrap room %d failed: %s", *req.Room, p.rooms[*req.Room].failed)
	case h == nil && req.Room != nil:
		status, reason, msg = http.StatusNotFound, refuseUnknown, fmt.Sprintf("no KV is kept for bootstrap room %d (expired or already pulled)", *req.Room)
	case req.Room == nil && req.EngineID != p.spec.EngineID:
		status, reason, msg = http.StatusNotFound, refuseEngine, fmt.Sprintf("remote_engine_id %q is not this engine (%s)", req.EngineID, p.spec.EngineID)
	case h == nil:
		status, reason, msg = http.StatusNotFound, refuseUnknown, fmt.Sprintf("no KV blocks are kept for remote_request_id %q (never prefilled here, expired or already pulled)", req.RequestID)
	case req.Room == nil && !equalIDs(h.blocks, req.BlockIDs):
		status, reason, msg = http.StatusConflict, refuseBlocks, fmt.Sprintf("remote_block_ids %v are not the blocks kept for %q", req.BlockIDs, req.RequestID)
	case h.tokens != req.PromptTokens || h.digest != req.PromptDigest:
		status, reason, msg = http.StatusConflict, refusePrompt, fmt.Sprintf("the kept KV is of another prompt (%d tokens kept, %d asked)", h.tokens, req.PromptTokens)
	}
	if reason != "" {
		if req.Room != nil {
			if rm := p.rooms[*req.Room]; rm != nil && rm.waiters == 0 && p.held[key] == nil && rm.failed == "" {
				delete(p.rooms, *req.Room)
			}
		}
		p.mu.Unlock()
		p.refusePull(w, connector, &req, status, reason, msg)
		return
	}
	p.dropLocked(h, "pulled")
	ev := h.event("pulled")
	ev.Peer = req.Puller
	p.recordLocked(ev)
	p.mu.Unlock()
	p.log.Debug("KV pulled by a decode engine", "request_id", h.engineReq, "puller", req.Puller, "blocks", len(h.blocks))
	writeJSON(w, http.StatusOK, pullAnswer{Tokens: h.tokens, Blocks: len(h.blocks), EngineID: p.spec.EngineID, RequestID: h.engineReq})
}

func (p *pdState) refusePull(w http.ResponseWriter, connector string, req *pullRequest, status int, reason, msg string) {
	p.m.pullRefused.WithLabelValues(connector, reason).Inc()
	p.mu.Lock()
	p.recordLocked(PDEvent{Kind: "refused", Connector: connector, RequestID: req.RequestID, XRequestID: req.XRequestID, Peer: req.Puller, Room: req.Room, Reason: reason})
	p.mu.Unlock()
	p.log.Info("KV pull refused", "reason", reason, "message", msg, "puller", req.Puller)
	writeJSON(w, status, pullAnswer{Reason: reason, Message: msg})
}

// waitRoom waits until the room's prefill kept its KV or failed, for at most
// wait. It reports false on timeout or when ctx ends.
func (p *pdState) waitRoom(ctx context.Context, n uint64, wait time.Duration) bool {
	p.mu.Lock()
	r := p.roomLocked(n)
	r.waiters++
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		r.waiters--
		if r.waiters == 0 && !r.closed && p.rooms[n] == r {
			delete(p.rooms, n)
		}
		p.mu.Unlock()
	}()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-r.ready:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// pull takes the prompt KV that the request's parameters name from the
// prefill engine and returns its token count, or a 400 naming the field.
func (p *pdState) pull(ctx context.Context, action pdAction, g *wire.Generation, lora, xRequest string) (int, *wire.Error) {
	req := pullRequest{PromptTokens: len(g.Prompt), PromptDigest: promptDigest(g.Prompt, lora), Puller: p.spec.EngineID, XRequestID: xRequest}
	connector, param := connectorNixl, "kv_transfer_params"
	var addr string
	timeout := pullTimeout
	if action == pdPullNixl {
		kv := g.KVTransfer
		switch {
		case kv.RemoteEngineID == "" || kv.RemoteRequestID == "" || kv.RemoteHost == "" || kv.RemotePort == 0 || len(kv.RemoteBlockIDs) == 0:
			p.m.refused.WithLabelValues(connector, refuseMalformed).Inc()
			p.m.nixlFailed.Inc()
			return 0, wire.BadRequest(param, "kv_transfer_params with do_remote_prefill must name remote_engine_id, remote_request_id, remote_block_ids, remote_host and remote_port")
		}
		req.EngineID, req.RequestID, req.BlockIDs = kv.RemoteEngineID, kv.RemoteRequestID, kv.RemoteBlockIDs
		addr = net.JoinHostPort(kv.RemoteHost, strconv.Itoa(kv.RemotePort))
	} else {
		connector, param = connectorSGLang, "bootstrap_room"
		room := g.Bootstrap.Room
		req.Room = &room
		req.WaitMillis = p.spec.BootstrapTimeout.Milliseconds()
		timeout = p.spec.BootstrapTimeout + pullTimeout
		addr = net.JoinHostPort(g.Bootstrap.Host, strconv.Itoa(g.Bootstrap.Port))
	}
	body, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/kv/pull", bytes.NewReader(body))
	var resp *http.Response
	if err == nil {
		hr.Header.Set("Content-Type", "application/json")
		resp, err = p.client.Do(hr)
	}
	if err != nil {
		p.refused(connector, refuseUnreachable, req, "")
		return 0, wire.BadRequest(param, "cannot reach the prefill engine at %s to pull the KV: %v", addr, err)
	}
	defer resp.Body.Close()
	var ans pullAnswer
	if derr := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&ans); derr != nil && resp.StatusCode == http.StatusOK {
		p.refused(connector, refuseUnreachable, req, "")
		return 0, wire.BadRequest(param, "the prefill engine at %s answered the pull with an unreadable body: %v", addr, derr)
	}
	if resp.StatusCode != http.StatusOK {
		reason := ans.Reason
		if reason == "" {
			reason = refuseUnreachable
		}
		p.refused(connector, reason, req, ans.Message)
		what := "kv_transfer_params name no live KV blocks"
		if action == pdPullRoom {
			what = "bootstrap_room has no prefilled KV"
		}
		return 0, wire.BadRequest(param, "%s on the prefill engine at %s: %s (%s)", what, addr, ans.Message, reason)
	}
	if ans.Tokens != len(g.Prompt) {
		p.refused(connector, refusePrompt, req, "")
		return 0, wire.BadRequest(param, "the prefill engine at %s kept %d tokens, the prompt has %d", addr, ans.Tokens, len(g.Prompt))
	}
	p.m.transfers.WithLabelValues(connector).Inc()
	p.m.transferTokens.WithLabelValues(connector).Add(float64(ans.Tokens))
	p.m.pullSeconds.WithLabelValues(connector).Observe(time.Since(start).Seconds())
	p.mu.Lock()
	ev := PDEvent{Kind: "transferred", Connector: connector, XRequestID: xRequest, Peer: ans.EngineID, RemoteRequestID: ans.RequestID,
		Room: req.Room, Blocks: ans.Blocks, Tokens: ans.Tokens}
	p.recordLocked(ev)
	p.mu.Unlock()
	return ans.Tokens, nil
}

func (p *pdState) refused(connector, reason string, req pullRequest, msg string) {
	p.m.refused.WithLabelValues(connector, reason).Inc()
	if connector == connectorNixl {
		p.m.nixlFailed.Inc()
	}
	p.mu.Lock()
	p.recordLocked(PDEvent{Kind: "refused", Connector: connector, XRequestID: req.XRequestID, Peer: req.EngineID, RemoteRequestID: req.RequestID, Room: req.Room, Reason: reason})
	p.mu.Unlock()
	p.log.Info("remote KV refused", "connector", connector, "reason", reason, "message", msg, "x_request_id", req.XRequestID)
}

// PDStatus returns the engine's disaggregation state, as GET /admin/pd.
func (s *Server) PDStatus() PDStatus { return s.pd.status() }

// status returns /admin/pd's body.
func (p *pdState) status() PDStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := PDStatus{Role: p.role, EngineID: p.spec.EngineID, SideChannel: p.sideAddr, Bootstrap: p.bootAddr,
		Held: []PDEvent{}, WaitingRooms: []uint64{}, Events: append([]PDEvent{}, p.events...)}
	for n, r := range p.rooms {
		if r.waiters > 0 {
			st.WaitingRooms = append(st.WaitingRooms, n)
		}
	}
	slices.Sort(st.WaitingRooms)
	for _, h := range p.held {
		ev := h.event("kept")
		ev.Time = h.kept
		st.Held = append(st.Held, ev)
	}
	return st
}

// listen opens a prefill engine's side channel and bootstrap listeners.
// host is the --listen host, the default of both.
func (p *pdState) listen(host string) error {
	if p.role != RolePrefill {
		return nil
	}
	side := p.spec.SideChannel
	if side == "" {
		side = net.JoinHostPort(host, "0")
	}
	boot := net.JoinHostPort(host, strconv.Itoa(p.spec.BootstrapPort))
	var lns []net.Listener
	for _, addr := range []string{side, boot} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range lns {
				_ = l.Close()
			}
			return fmt.Errorf("prefill side listener: %w", err)
		}
		lns = append(lns, ln)
	}
	h := p.sideHandler()
	p.mu.Lock()
	p.sideAddr, p.bootAddr = lns[0].Addr().String(), lns[1].Addr().String()
	for _, ln := range lns {
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		p.listeners = append(p.listeners, srv)
		go func() { _ = srv.Serve(ln) }()
	}
	p.mu.Unlock()
	p.log.Info("prefill KV side channel serving", "engine_id", p.spec.EngineID, "side_channel", p.sideAddr, "bootstrap", p.bootAddr)
	return nil
}

func splitAddr(addr string) (string, int) {
	h, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, 0
	}
	n, _ := strconv.Atoi(ps)
	return h, n
}

func equalIDs(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// pdMetrics are the disaggregation metrics (docs/simulator.md).
type pdMetrics struct {
	kept           *prometheus.CounterVec
	released       *prometheus.CounterVec
	pullRefused    *prometheus.CounterVec
	heldRequests   prometheus.Gauge
	heldBlocks     prometheus.Gauge
	transfers      *prometheus.CounterVec
	transferTokens *prometheus.CounterVec
	refused        *prometheus.CounterVec
	pullSeconds    *prometheus.HistogramVec
	nixlFailed     prometheus.Counter
}

func newPDMetrics(model string) *pdMetrics {
	labels := prometheus.Labels{"model_name": model, "engine": "0"}
	cv := func(name, help string, l ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, l)
	}
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels})
	}
	return &pdMetrics{
		kept:           cv("halyard_sim_pd_kept_total", "Prefills whose KV blocks were kept for a remote decode engine.", "connector"),
		released:       cv("halyard_sim_pd_released_total", "Kept KV released: pulled by a decode engine, expired after the abort timeout, replaced or shut down.", "connector", "reason"),
		pullRefused:    cv("halyard_sim_pd_pull_refused_total", "Pulls this prefill engine refused, by reason.", "connector", "reason"),
		heldRequests:   g("halyard_sim_pd_held_requests", "Finished prefills whose KV blocks are kept now."),
		heldBlocks:     g("halyard_sim_pd_held_blocks", "KV blocks kept for remote decode engines now."),
		transfers:      cv("halyard_sim_pd_transfers_total", "Remote KV transfers this decode engine received.", "connector"),
		transferTokens: cv("halyard_sim_pd_transfer_tokens_total", "Prompt tokens of KV received from prefill engines.", "connector"),
		refused:        cv("halyard_sim_pd_refused_total", "Requests this engine refused (400) because their transfer parameters named no live prefill KV, by reason.", "connector", "reason"),
		pullSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "halyard_sim_pd_pull_seconds",
			Help: "Wall time of a pull from a prefill engine's side channel (SGLang: includes waiting for the room's prefill).", ConstLabels: labels,
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"connector"}),
		nixlFailed: prometheus.NewCounter(prometheus.CounterOpts{Name: "vllm:nixl_num_failed_transfers",
			Help: "Number of failed NIXL KV Cache transfers.", ConstLabels: labels}),
	}
}

// initSeries creates every series at zero, so that a scrape shows them
// before the first event.
func (m *pdMetrics) initSeries() {
	refusals := []string{refuseUnknown, refuseEngine, refuseBlocks, refusePrompt, refuseMalformed, refuseUnreachable, refuseTimeout, refusePrefillFailed, refuseRole}
	for _, c := range []string{connectorNixl, connectorSGLang} {
		m.kept.WithLabelValues(c)
		m.transfers.WithLabelValues(c)
		m.transferTokens.WithLabelValues(c)
		for _, r := range []string{"pulled", "expired", "replaced", "shutdown"} {
			m.released.WithLabelValues(c, r)
		}
		for _, r := range refusals {
			m.refused.WithLabelValues(c, r)
			m.pullRefused.WithLabelValues(c, r)
		}
	}
}

func (m *pdMetrics) register(reg *prometheus.Registry) {
	m.initSeries()
	reg.MustRegister(m.kept, m.released, m.pullRefused, m.heldRequests, m.heldBlocks, m.transfers, m.transferTokens, m.refused, m.pullSeconds, m.nixlFailed)
}
