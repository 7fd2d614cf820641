package v1alpha1

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"
)

// Chat templates the router can render chat requests with before
// tokenising them (models[].chatTemplate).
const (
	// ChatTemplateSim is halyard sim's: "<|role|>\n{content}\n" per message,
	// then "<|assistant|>\n".
	ChatTemplateSim = "halyard-sim"
	// ChatTemplateLlama3 is Llama 3's: "<|begin_of_text|>", then per
	// message "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
	// then "<|start_header_id|>assistant<|end_header_id|>\n\n".
	ChatTemplateLlama3 = "llama3"
	// ChatTemplateChatML is ChatML's (Qwen): "<|im_start|>{role}\n{content}<|im_end|>\n"
	// per message, then "<|im_start|>assistant\n".
	ChatTemplateChatML = "chatml"
)

// Defaults of router.prefixIndex, applied when the block is absent too
// (PrefixIndexConfig.WithDefaults).
const (
	DefaultSilenceTimeout = 10 * time.Second
	DefaultRecoverAfter   = 2 * time.Minute
	DefaultPendingTTL     = 10 * time.Second
	DefaultReplayTimeout  = 2 * time.Second
	DefaultDriftWindow    = 5 * time.Minute
	DefaultDriftMinTokens = 1024
	DefaultBlockSize      = 16
)

// ModelSpec says how the router tokenises the prompts of one engine model,
// so that its block hashes are the engine's (precise prefix routing from
// KV events needs it; the approximate index then works on tokens too).
type ModelSpec struct {
	// Name is the base model as endpoints[].model (or engines[].model)
	// names it.
	Name string `json:"name"`
	// Tokenizer is "pseudo" (halyard sim's default), a tiktoken rank file,
	// or a Hugging Face tokenizer.json: the engine's. Required.
	Tokenizer string `json:"tokenizer"`
	// ChatTemplate renders chat messages into the prompt the engine sees:
	// halyard-sim (default), llama3 or chatml.
	ChatTemplate string `json:"chatTemplate,omitempty"`
	// BOS is text put before completion prompts, as engines that add
	// special tokens do (Llama 3 on vLLM: "<|begin_of_text|>"). Default
	// none, as halyard sim.
	BOS string `json:"bos,omitempty"`
}

// KVEventsSpec is where an endpoint's engine publishes its KV-cache events
// (vLLM's --kv-events-config, halyard sim's --kv-events).
type KVEventsSpec struct {
	// Endpoint is the engine's ZMQ PUB socket, tcp://HOST:PORT. Required.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	Endpoint string `json:"endpoint"`
	// ReplayEndpoint is the engine's replay socket, tcp://HOST:PORT;
	// without it a lost batch cannot be fetched again and the endpoint
	// falls back to approximate until it recovers.
	// +kubebuilder:validation:MaxLength=2048
	ReplayEndpoint string `json:"replayEndpoint,omitempty"`
	// Topic filters messages by topic prefix, e.g. "kv@pod-0@llama-3-8b";
	// default all.
	// +kubebuilder:validation:MaxLength=1024
	Topic string `json:"topic,omitempty"`
}

// PrefixIndexConfig tunes precise prefix routing and the drift alarm
// (docs/kv-events.md). Zero fields take the defaults.
type PrefixIndexConfig struct {
	// BlockSize is the tokens per block of the router's prefix hashing,
	// which must equal the engines' KV block size and the prefix-cache
	// scorers' blockSize. Default 16.
	BlockSize int `json:"blockSize,omitempty"`
	// SilenceTimeout: an endpoint with no KV events this long while its
	// metrics show it caching new prompts falls back to approximate.
	// Default 10s.
	SilenceTimeout Duration `json:"silenceTimeout,omitempty"`
	// RecoverAfter: an endpoint whose events were lost beyond repair
	// returns to precise after this long (sooner on a complete resync or a
	// cleared cache). Default 2m.
	RecoverAfter Duration `json:"recoverAfter,omitempty"`
	// PendingTTL: the blocks of a request just routed count as cached on
	// its endpoint until the engine reports them or this passes. Default
	// 10s; "0s" turns it off.
	PendingTTL *Duration `json:"pendingTTL,omitempty"`
	// ReplayTimeout bounds one replay exchange. Default 2s.
	ReplayTimeout Duration `json:"replayTimeout,omitempty"`
	// DriftWindow is the span over which predicted and engine-reported
	// prefix hits are compared. Default 5m.
	DriftWindow Duration `json:"driftWindow,omitempty"`
	// DriftMinTokens is the least number of hit tokens, predicted or
	// reported, in the window for a drift ratio. Default 1024.
	DriftMinTokens int `json:"driftMinTokens,omitempty"`
}

// WithDefaults returns p, or an empty block when p is nil, with every zero
// field defaulted.
func (p *PrefixIndexConfig) WithDefaults() PrefixIndexConfig {
	var out PrefixIndexConfig
	if p != nil {
		out = *p
	}
	if out.BlockSize == 0 {
		out.BlockSize = DefaultBlockSize
	}
	setDur(&out.SilenceTimeout, DefaultSilenceTimeout)
	setDur(&out.RecoverAfter, DefaultRecoverAfter)
	setDur(&out.ReplayTimeout, DefaultReplayTimeout)
	setDur(&out.DriftWindow, DefaultDriftWindow)
	if out.PendingTTL == nil {
		out.PendingTTL = &Duration{DefaultPendingTTL}
	}
	if out.DriftMinTokens == 0 {
		out.DriftMinTokens = DefaultDriftMinTokens
	}
	return out
}

// defaultPrefix fills the prefix-routing fields: the prefixIndex block when
// present (an absent one stays absent and means the defaults), and the
// models' chat templates.
func (c *Config) defaultPrefix() {
	if c.Router.PrefixIndex != nil {
		d := c.Router.PrefixIndex.WithDefaults()
		c.Router.PrefixIndex = &d
	}
	for i := range c.Models {
		if c.Models[i].ChatTemplate == "" {
			c.Models[i].ChatTemplate = ChatTemplateSim
		}
	}
}

// validatePrefix checks the models, the endpoints' kvEvents and
// router.prefixIndex.
func (c *Config) validatePrefix(add func(string, string, ...any)) {
	if p := c.Router.PrefixIndex; p != nil {
		const base = "router.prefixIndex."
		if p.BlockSize < 0 {
			add(base+"blockSize", "must be positive, got %d", p.BlockSize)
		}
		for _, f := range []struct {
			name string
			d    Duration
		}{{"silenceTimeout", p.SilenceTimeout}, {"recoverAfter", p.RecoverAfter}, {"replayTimeout", p.ReplayTimeout}, {"driftWindow", p.DriftWindow}} {
			if f.d.Duration < 0 {
				add(base+f.name, "must be positive, got %s", f.d.Duration)
			}
		}
		if p.PendingTTL != nil && p.PendingTTL.Duration < 0 {
			add(base+"pendingTTL", "must not be negative, got %s", p.PendingTTL.Duration)
		}
		if p.DriftMinTokens < 0 {
			add(base+"driftMinTokens", "must not be negative, got %d", p.DriftMinTokens)
		}
	}
	models := map[string]int{}
	for i, m := range c.Models {
		path := fmt.Sprintf("models[%d]", i)
		if m.Name == "" {
			add(path+".name", "required")
		} else if j, dup := models[m.Name]; dup {
			add(path+".name", "%q is also the name of models[%d]", m.Name, j)
		}
		models[m.Name] = i
		if m.Tokenizer == "" {
			add(path+".tokenizer", `required: "pseudo" (halyard sim), a tiktoken rank file or a tokenizer.json`)
		}
		switch m.ChatTemplate {
		case ChatTemplateSim, ChatTemplateLlama3, ChatTemplateChatML:
		default:
			add(path+".chatTemplate", "must be %s, %s or %s, got %q", ChatTemplateSim, ChatTemplateLlama3, ChatTemplateChatML, m.ChatTemplate)
		}
	}
	for i, e := range c.Endpoints {
		if e.KVEvents == nil {
			continue
		}
		path := fmt.Sprintf("endpoints[%d].kvEvents", i)
		checkZMQ(path+".endpoint", e.KVEvents.Endpoint, true, add)
		checkZMQ(path+".replayEndpoint", e.KVEvents.ReplayEndpoint, false, add)
		if _, ok := models[e.Model]; !ok && e.Model != "" {
			add(path, "model %q has no entry in models: give its tokenizer (the engine's; pseudo for halyard sim), so that the router's blocks are the engine's", e.Model)
		}
	}
}

// checkZMQ checks a ZMQ address the router connects to: tcp://HOST:PORT.
func checkZMQ(path, addr string, required bool, add func(string, string, ...any)) {
	if addr == "" {
		if required {
			add(path, "required, e.g. tcp://10.0.0.7:5557")
		}
		return
	}
	u, err := url.Parse(addr)
	if err != nil || u.Scheme != "tcp" || u.Host == "" || u.Path != "" {
		add(path, "must be tcp://HOST:PORT, got %q", addr)
		return
	}
	host, port, err := net.SplitHostPort(u.Host)
	n, perr := strconv.Atoi(port)
	switch {
	case err != nil:
		add(path, "must be tcp://HOST:PORT, got %q", addr)
	case host == "" || host == "*":
		add(path, "needs the engine's host to connect to, got %q", addr)
	case perr != nil || n < 1 || n > 65535:
		add(path, "port must be 1 to 65535, got %q", port)
	}
}
