package enginemetrics

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// Names of the engine metrics that are read. vLLM's are the reference;
// SGLang's are mapped onto the same fields.
const (
	VLLMRunning         = "vllm:num_requests_running"
	VLLMWaiting         = "vllm:num_requests_waiting"
	VLLMKVUsage         = "vllm:kv_cache_usage_perc"
	VLLMGPUCacheUsage   = "vllm:gpu_cache_usage_perc" // older alias of VLLMKVUsage
	VLLMPrefixQueries   = "vllm:prefix_cache_queries_total"
	VLLMPrefixHits      = "vllm:prefix_cache_hits_total"
	VLLMLoRAInfo        = "vllm:lora_requests_info"
	VLLMCacheConfigInfo = "vllm:cache_config_info"

	SGLangRunning      = "sglang:num_running_reqs"
	SGLangWaiting      = "sglang:num_queue_reqs"
	SGLangTokenUsage   = "sglang:token_usage"
	SGLangPromptTokens = "sglang:prompt_tokens_total"
	SGLangCachedTokens = "sglang:cached_tokens_total"
	SGLangMaxTokens    = "sglang:max_total_num_tokens"
)

// ErrNoEngineMetrics is returned when a scrape succeeded but held none of
// the known names (for example, a server that is not an inference engine).
var ErrNoEngineMetrics = errors.New("no vLLM or SGLang metrics in the exposition")

const maxLine = 64 << 10

var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}

// Parse reads a Prometheus text exposition from r into m, which it resets
// first (UpdateTime is left alone). Gauges and counters with several series
// (several engines behind one server, or SGLang's cache_source) are summed,
// except KV usage, which takes the highest series; of
// vllm:lora_requests_info the newest series (highest value) counts.
func Parse(r io.Reader, m *framework.Metrics) error {
	br := readers.Get().(*bufio.Reader)
	br.Reset(r)
	defer func() {
		br.Reset(nil)
		readers.Put(br)
	}()
	*m = framework.Metrics{UpdateTime: m.UpdateTime}
	p := parser{m: m}
	var long []byte   // a line longer than the reader's buffer
	overflow := false // the current line exceeds maxLine and is dropped
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			if len(long)+len(line) > maxLine {
				overflow = true
			} else {
				long = append(long, line...)
			}
			continue
		}
		if long != nil || overflow {
			line = append(long, line...)
			long = nil
			if overflow {
				line, overflow = nil, false
			}
		}
		if len(line) > 0 {
			p.line(line)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read metrics: %w", err)
		}
	}
	return p.finish()
}

type parser struct {
	m             *framework.Metrics
	seen          bool
	kvSeen        bool
	gpuCacheUsage float64
	gpuCacheSeen  bool
	loraNewest    float64
	loraSeen      bool
}

func (p *parser) line(line []byte) {
	line = bytes.TrimRight(line, "\r\n")
	if len(line) == 0 || line[0] == '#' {
		return
	}
	if !bytes.HasPrefix(line, []byte("vllm:")) && !bytes.HasPrefix(line, []byte("sglang:")) {
		return
	}
	end := bytes.IndexAny(line, "{ \t")
	if end < 0 {
		return
	}
	name := line[:end]
	if !known(name) {
		return
	}
	var labels []byte
	rest := line[end:]
	if rest[0] == '{' {
		close := labelsEnd(rest)
		if close < 0 {
			return
		}
		labels = rest[1:close]
		rest = rest[close+1:]
	}
	v, ok := value(rest)
	if !ok {
		return
	}
	m := p.m
	switch string(name) {
	case VLLMRunning, SGLangRunning:
		m.RunningRequests += int(v)
	case VLLMWaiting, SGLangWaiting:
		m.WaitingRequests += int(v)
	case VLLMKVUsage, SGLangTokenUsage:
		if !p.kvSeen || v > m.KVCacheUsage {
			m.KVCacheUsage = v
		}
		p.kvSeen = true
	case VLLMGPUCacheUsage:
		if !p.gpuCacheSeen || v > p.gpuCacheUsage {
			p.gpuCacheUsage = v
		}
		p.gpuCacheSeen = true
	case VLLMPrefixQueries, SGLangPromptTokens:
		m.PrefixCacheQueries += v
	case VLLMPrefixHits, SGLangCachedTokens:
		m.PrefixCacheHits += v
	case VLLMCacheConfigInfo:
		eachLabel(labels, func(k, val string) {
			switch k {
			case "block_size":
				m.BlockSize, _ = strconv.Atoi(val)
			case "num_gpu_blocks":
				m.NumBlocks, _ = strconv.Atoi(val)
			}
		})
	case SGLangMaxTokens:
		if m.NumBlocks == 0 {
			m.BlockSize, m.NumBlocks = 1, int(v)
		}
	case VLLMLoRAInfo:
		if p.loraSeen && v < p.loraNewest {
			break
		}
		p.loraSeen, p.loraNewest = true, v
		m.MaxLoRA, m.RunningAdapters, m.WaitingAdapters = 0, nil, nil
		eachLabel(labels, func(k, val string) {
			switch k {
			case "max_lora":
				m.MaxLoRA, _ = strconv.Atoi(val)
			case "running_lora_adapters":
				m.RunningAdapters = splitList(val)
			case "waiting_lora_adapters":
				m.WaitingAdapters = splitList(val)
			}
		})
	default:
		return
	}
	p.seen = true
}

func (p *parser) finish() error {
	if !p.kvSeen && p.gpuCacheSeen {
		p.m.KVCacheUsage = p.gpuCacheUsage
	}
	if p.m.KVCacheUsage > 1 { // some builds report percent
		p.m.KVCacheUsage /= 100
	}
	if !p.seen {
		return ErrNoEngineMetrics
	}
	return nil
}

// known reports whether name is one of the names Parse reads.
func known(name []byte) bool {
	switch string(name) {
	case VLLMRunning, VLLMWaiting, VLLMKVUsage, VLLMGPUCacheUsage, VLLMPrefixQueries, VLLMPrefixHits,
		VLLMLoRAInfo, VLLMCacheConfigInfo, SGLangRunning, SGLangWaiting, SGLangTokenUsage,
		SGLangPromptTokens, SGLangCachedTokens, SGLangMaxTokens:
		return true
	}
	return false
}

// labelsEnd returns the index of the '}' closing the label set that starts
// at s[0] == '{', honouring quoted values, or -1.
func labelsEnd(s []byte) int {
	inQuote := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == '}':
			return i
		}
	}
	return -1
}

// value parses the sample value after the labels (a timestamp may follow).
func value(rest []byte) (float64, bool) {
	rest = bytes.TrimLeft(rest, " \t")
	if i := bytes.IndexAny(rest, " \t"); i >= 0 {
		rest = rest[:i]
	}
	if len(rest) == 0 {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(rest), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false
	}
	return v, true
}

// eachLabel calls fn for each name="value" pair of a label set's inside.
func eachLabel(s []byte, fn func(k, v string)) {
	for len(s) > 0 {
		s = bytes.TrimLeft(s, " ,")
		eq := bytes.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			return
		}
		k := string(bytes.TrimSpace(s[:eq]))
		var b strings.Builder
		i := eq + 2
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					b.WriteByte('\n')
				default:
					b.WriteByte(s[i])
				}
				continue
			}
			b.WriteByte(s[i])
		}
		fn(k, b.String())
		if i >= len(s) {
			return
		}
		s = s[i+1:]
	}
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	parts := strings.Split(s, ",")
	out := parts[:0]
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
