package wire

import (
	"slices"
	"testing"

	"github.com/halyard-dev/halyard/internal/fuzzseed"
	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// FuzzParseGeneration feeds arbitrary bodies to the request parser: it must
// never panic, and whatever it accepts must satisfy the engine's limits.
func FuzzParseGeneration(f *testing.F) {
	for _, seed := range []string{
		`{"model":"m","prompt":"hello world","max_tokens":5}`,
		`{"model":"m","prompt":[1,2,3],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"m","prompt":[[1,2]],"min_tokens":1,"max_tokens":3}`,
		`{"model":"m","prompt":["one"],"seed":-4,"ignore_eos":true}`,
		`{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"text","text":"x"}]}],"max_completion_tokens":7}`,
		`{"model":"m","messages":[{"role":"tool","content":null}]}`,
		`{"model":"m","prompt":"x","max_tokens":1e309}`,
		`{"model":"m","prompt":[1.5]}`,
		`{"model":"m","prompt":"x","logprobs":5,"stop":["a",""],"include_stop_str_in_output":true}`,
		`{"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":20,"stop":"q"}`,
		`{"model":"m","MODEL":"x","Prompt":"y","prompt":"z","max_tokens":"1e1","stream":"yes","seed":-1}`,
		`{"model":"m","messages":[{"Role":"user"},{"role":7}],"stream_options":{"include_usage":"no"},"stop":[],"logprobs":false}`,
		`{"model":"m","prompt":"x","kv_transfer_params":{"do_remote_decode":true,"do_remote_prefill":false,"remote_engine_id":null,"remote_block_ids":null,"remote_host":null,"remote_port":null}}`,
		`{"model":"m","prompt":"x","kv_transfer_params":{"do_remote_prefill":true,"remote_block_ids":[1,2,3],"remote_engine_id":"e","remote_host":"h","remote_port":5600,"tp_size":1}}`,
		`{"model":"m","prompt":"x","bootstrap_host":"10.0.0.1","bootstrap_port":8998,"bootstrap_room":9223372036854775807}`,
		`{`, `null`, `[]`, `""`,
	} {
		f.Add([]byte(seed), false)
		f.Add([]byte(seed), true)
	}
	for _, base := range []string{`{"model":"m","prompt":`, `{"model":"m","messages":`, `{"model":"m","prompt":"x","max_tokens":`, `{"model":"m","prompt":"x","stop":`, `{"model":"m","prompt":"x","kv_transfer_params":`} {
		for _, d := range fuzzseed.JSONDocuments(base) {
			f.Add(d, false)
			f.Add(d, true)
		}
	}
	lim := Limits{MaxModelLen: 64, VocabSize: 1000, DefaultMaxTokens: 16, DefaultChatMaxTokens: 32}
	f.Fuzz(func(t *testing.T, body []byte, chat bool) {
		p, aerr := ParseGeneration(body, chat, tokenizer.Pseudo{VocabSize: 1000}, lim)
		if aerr != nil {
			if aerr.Status != 400 || aerr.Message == "" || (aerr.Type != "BadRequestError" && aerr.Type != "Bad Request") {
				t.Fatalf("error %+v is not a 400 with a message", aerr)
			}
			return
		}
		if p.Model == "" || len(p.Prompt) == 0 || p.MaxTokens < 1 || len(p.Prompt)+p.MaxTokens > lim.MaxModelLen ||
			p.MinTokens < 0 || p.MinTokens > p.MaxTokens || p.TopLogprobs < 0 || p.TopLogprobs > MaxLogprobs ||
			(!p.Logprobs && p.TopLogprobs != 0) || slices.Contains(p.Stop, "") {
			t.Fatalf("accepted an invalid request: %+v", p)
		}
		for _, id := range p.Prompt {
			if id >= 1000 {
				t.Fatalf("token id %d out of vocabulary accepted", id)
			}
		}
	})
}
