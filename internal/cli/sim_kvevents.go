package cli

import (
	"github.com/spf13/pflag"

	"github.com/halyard-dev/halyard/internal/simulator/vllmapi"
)

// bindKVEventFlags defines the `halyard sim` flags of KV-cache events and
// tokenisation (docs/kv-events.md).
func bindKVEventFlags(f *pflag.FlagSet, sp *vllmapi.Spec) {
	f.StringVar(&sp.KVEventsReplay, "kv-events-replay", "", "replay socket of the KV events (default: the --kv-events port plus one; \"off\" for none)")
	f.StringVar(&sp.KVEventsFormat, "kv-events-format", "array", "KV-event layout: array (vLLM before 0.26, DESIGN.md) or map (vLLM 0.26 on)")
	f.StringVar(&sp.Name, "name", "", "engine name in the KV-event topic kv@NAME@MODEL (default: the host name)")
	f.StringVar(&sp.Tokenizer, "tokenizer", "pseudo", "tokenizer of prompts: pseudo, a tiktoken rank file, or a Hugging Face tokenizer.json; give the router the same (models[].tokenizer)")
}
