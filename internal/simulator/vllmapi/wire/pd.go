package wire

import (
	"bytes"
	"encoding/json"
	"math"
)

// KVTransferParams is vLLM's kv_transfer_params request field as the
// NixlConnector reads it. A null member is the zero value.
type KVTransferParams struct {
	DoRemoteDecode  bool
	DoRemotePrefill bool
	RemoteEngineID  string
	// RemoteBlockIDs is nil when the member is null or absent.
	RemoteBlockIDs  []int64
	RemoteHost      string
	RemotePort      int
	RemoteRequestID string
	TPSize          int
}

// Bootstrap holds SGLang's disaggregation fields: the prefill engine's
// bootstrap server and the room that pairs a prefill with its decode.
type Bootstrap struct {
	// Host and Port are the prefill engine's bootstrap server; zero when
	// the body does not give them.
	Host string
	Port int
	// Room pairs the prefill and the decode of one request.
	Room    uint64
	HasRoom bool
}

// kvParamsWire decodes kv_transfer_params member by member so that a wrong
// type names its member.
type kvParamsWire map[string]json.RawMessage

func parseKVTransferParams(raw json.RawMessage) (*KVTransferParams, *Error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	var m kvParamsWire
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, BadRequest("kv_transfer_params", "kv_transfer_params must be an object")
	}
	p := &KVTransferParams{}
	boolean := func(key string, dst *bool) *Error {
		v, ok := m[key]
		if !ok || isNull(v) {
			return nil
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return BadRequest("kv_transfer_params", "kv_transfer_params.%s must be a boolean", key)
		}
		return nil
	}
	str := func(key string, dst *string) *Error {
		v, ok := m[key]
		if !ok || isNull(v) {
			return nil
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return BadRequest("kv_transfer_params", "kv_transfer_params.%s must be a string or null", key)
		}
		return nil
	}
	integer := func(key string, dst *int, lo, hi int64) *Error {
		v, ok := m[key]
		if !ok || isNull(v) {
			return nil
		}
		n, ok := parseInteger(v)
		if !ok || n < lo || n > hi {
			return BadRequest("kv_transfer_params", "kv_transfer_params.%s must be an integer in [%d, %d] or null", key, lo, hi)
		}
		*dst = int(n)
		return nil
	}
	for _, e := range []*Error{
		boolean("do_remote_decode", &p.DoRemoteDecode),
		boolean("do_remote_prefill", &p.DoRemotePrefill),
		str("remote_engine_id", &p.RemoteEngineID),
		str("remote_host", &p.RemoteHost),
		str("remote_request_id", &p.RemoteRequestID),
		integer("remote_port", &p.RemotePort, 0, 65535),
		integer("tp_size", &p.TPSize, 0, 1<<20),
	} {
		if e != nil {
			return nil, e
		}
	}
	if v, ok := m["remote_block_ids"]; ok && !isNull(v) {
		var items []json.RawMessage
		if err := json.Unmarshal(v, &items); err != nil {
			return nil, BadRequest("kv_transfer_params", "kv_transfer_params.remote_block_ids must be a list of block ids or null")
		}
		p.RemoteBlockIDs = make([]int64, len(items))
		for i, it := range items {
			n, ok := parseInteger(it)
			if !ok || n < 0 {
				return nil, BadRequest("kv_transfer_params", "kv_transfer_params.remote_block_ids[%d] must be a non-negative integer", i)
			}
			p.RemoteBlockIDs[i] = n
		}
	}
	return p, nil
}

func parseBootstrap(host, port, room json.RawMessage) (*Bootstrap, *Error) {
	if host == nil && port == nil && room == nil {
		return nil, nil
	}
	b := &Bootstrap{}
	if host != nil && !isNull(host) {
		if err := json.Unmarshal(host, &b.Host); err != nil {
			return nil, BadRequest("bootstrap_host", "bootstrap_host must be a string")
		}
	}
	if port != nil && !isNull(port) {
		n, ok := parseInteger(port)
		if !ok || n < 1 || n > 65535 {
			return nil, BadRequest("bootstrap_port", "bootstrap_port must be a port number")
		}
		b.Port = int(n)
	}
	if room != nil && !isNull(room) {
		n, ok := parseInteger(room)
		if !ok || n < 0 {
			return nil, BadRequest("bootstrap_room", "bootstrap_room must be an integer in [0, 2^63-1]")
		}
		b.Room, b.HasRoom = uint64(n), true
	}
	return b, nil
}

func isNull(v json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(v), []byte("null")) }

// parseInteger reads a JSON integer (no fraction, no exponent beyond an
// integral value) that fits an int64.
func parseInteger(v json.RawMessage) (int64, bool) {
	var n json.Number
	if err := json.Unmarshal(v, &n); err != nil {
		return 0, false
	}
	if i, err := n.Int64(); err == nil {
		return i, true
	}
	f, err := n.Float64()
	if err != nil || f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
		return 0, false
	}
	return int64(f), true
}
