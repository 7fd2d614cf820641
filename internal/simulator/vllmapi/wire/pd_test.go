package wire

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/tokenizer"
)

func TestParsePDFields(t *testing.T) {
	lim := Limits{MaxModelLen: 64, VocabSize: 1000, DefaultMaxTokens: 16, DefaultChatMaxTokens: 32}
	tests := []struct {
		name, body string
		kv         *KVTransferParams
		boot       *Bootstrap
		err        string
	}{
		{
			name: "router's prefill request",
			body: `{"model":"m","prompt":"x","kv_transfer_params":{"do_remote_decode":true,"do_remote_prefill":false,"remote_engine_id":null,"remote_block_ids":null,"remote_host":null,"remote_port":null}}`,
			kv:   &KVTransferParams{DoRemoteDecode: true},
		},
		{
			name: "prefill's answer copied to decode",
			body: `{"model":"m","prompt":"x","kv_transfer_params":{"do_remote_prefill":true,"do_remote_decode":false,"remote_block_ids":[4,5],"remote_engine_id":"e1","remote_request_id":"cmpl-7","remote_host":"127.0.0.1","remote_port":5600,"tp_size":1,"future_field":{"x":1}}}`,
			kv:   &KVTransferParams{DoRemotePrefill: true, RemoteBlockIDs: []int64{4, 5}, RemoteEngineID: "e1", RemoteRequestID: "cmpl-7", RemoteHost: "127.0.0.1", RemotePort: 5600, TPSize: 1},
		},
		{name: "null params", body: `{"model":"m","prompt":"x","kv_transfer_params":null}`},
		{name: "not an object", body: `{"model":"m","prompt":"x","kv_transfer_params":[1]}`, err: "kv_transfer_params must be an object"},
		{name: "bad bool", body: `{"model":"m","prompt":"x","kv_transfer_params":{"do_remote_prefill":"yes"}}`, err: "kv_transfer_params.do_remote_prefill must be a boolean"},
		{name: "bad port", body: `{"model":"m","prompt":"x","kv_transfer_params":{"remote_port":70000}}`, err: "kv_transfer_params.remote_port must be an integer in [0, 65535] or null"},
		{name: "bad block id", body: `{"model":"m","prompt":"x","kv_transfer_params":{"remote_block_ids":[1,-2]}}`, err: "kv_transfer_params.remote_block_ids[1] must be a non-negative integer"},
		{name: "bad block list", body: `{"model":"m","prompt":"x","kv_transfer_params":{"remote_block_ids":"1,2"}}`, err: "kv_transfer_params.remote_block_ids must be a list of block ids or null"},
		{name: "bad engine id", body: `{"model":"m","prompt":"x","kv_transfer_params":{"remote_engine_id":5}}`, err: "kv_transfer_params.remote_engine_id must be a string or null"},
		{
			name: "bootstrap",
			body: `{"model":"m","prompt":"x","bootstrap_host":"10.0.0.1","bootstrap_port":8998,"bootstrap_room":9223372036854775807}`,
			boot: &Bootstrap{Host: "10.0.0.1", Port: 8998, Room: 1<<63 - 1, HasRoom: true},
		},
		{name: "room only", body: `{"model":"m","prompt":"x","bootstrap_room":0}`, boot: &Bootstrap{HasRoom: true}},
		{name: "negative room", body: `{"model":"m","prompt":"x","bootstrap_room":-1}`, err: "bootstrap_room must be an integer in [0, 2^63-1]"},
		{name: "fractional room", body: `{"model":"m","prompt":"x","bootstrap_room":1.5}`, err: "bootstrap_room must be an integer in [0, 2^63-1]"},
		{name: "bad bootstrap port", body: `{"model":"m","prompt":"x","bootstrap_port":0}`, err: "bootstrap_port must be a port number"},
		{name: "bad bootstrap host", body: `{"model":"m","prompt":"x","bootstrap_host":1}`, err: "bootstrap_host must be a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, aerr := ParseGeneration([]byte(tt.body), false, tokenizer.Pseudo{VocabSize: 1000}, lim)
			if tt.err != "" {
				if aerr == nil || aerr.Message != tt.err || aerr.Status != 400 {
					t.Fatalf("error = %+v, want 400 %q", aerr, tt.err)
				}
				return
			}
			if aerr != nil {
				t.Fatal(aerr)
			}
			if diff := cmp.Diff(tt.kv, p.KVTransfer); diff != "" {
				t.Errorf("kv_transfer_params (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.boot, p.Bootstrap); diff != "" {
				t.Errorf("bootstrap (-want +got):\n%s", diff)
			}
		})
	}
}
