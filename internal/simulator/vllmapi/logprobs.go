package vllmapi

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
)

// Log probabilities. The simulator has no model, so a generated token's
// log probability is drawn deterministically from its id and position: the
// chosen token is always the most likely one (as with greedy sampling), with
// probability in [0.35, 0.99); its alternatives share the rest in
// decreasing shares. The same output gets the same figures every time.

// lpAlt is one token and its log probability.
type lpAlt struct {
	token   string
	logprob float64
}

// genVocab is the range of generated token ids (the engine's words have at
// most three letters).
const genVocab = 18278

// tokenLogprobs returns the chosen token's text and log probability and
// its top alternatives, the chosen token first (top+1 entries, at least 1).
func tokenLogprobs(t tokenEvent, top int) []lpAlt {
	h := uint64(t.id)*0x9e3779b97f4a7c15 ^ uint64(t.index)*0xbf58476d1ce4e5b9
	next := func() float64 {
		h += 0x9e3779b97f4a7c15
		z := h
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		return float64(z>>11) / (1 << 53)
	}
	p := 0.35 + 0.64*next()
	out := make([]lpAlt, 0, top+1)
	out = append(out, lpAlt{token: tokenText(t), logprob: math.Log(p)})
	rest := 1 - p
	for j := 1; j <= top; j++ {
		share := rest * (0.3 + 0.4*next())
		rest -= share
		alt := tokenEvent{id: (t.id + uint32(j)*7919) % genVocab, index: t.index}
		out = append(out, lpAlt{token: tokenText(alt), logprob: math.Log(share)})
	}
	return out
}

// roundLP keeps log probabilities short in JSON.
func roundLP(v float64) float64 { return math.Round(v*1e6) / 1e6 }

// orderedLogprobs is a completion's top_logprobs entry: an object from token
// to log probability, in order (encoding/json would sort a map's keys).
type orderedLogprobs []lpAlt

// MarshalJSON implements json.Marshaler.
func (o orderedLogprobs) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, a := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(a.token)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.WriteString(strconv.FormatFloat(roundLP(a.logprob), 'g', -1, 64))
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// completionLogprobs is vLLM's logprobs object of a completion choice.
type completionLogprobs struct {
	TextOffset    []int             `json:"text_offset"`
	TokenLogprobs []float64         `json:"token_logprobs"`
	Tokens        []string          `json:"tokens"`
	TopLogprobs   []orderedLogprobs `json:"top_logprobs"`
}

func (c *completionLogprobs) add(t tokenEvent, offset, top int) {
	alts := tokenLogprobs(t, top)
	c.TextOffset = append(c.TextOffset, offset)
	c.TokenLogprobs = append(c.TokenLogprobs, roundLP(alts[0].logprob))
	c.Tokens = append(c.Tokens, alts[0].token)
	// The top alternatives, the chosen token (the most likely) among them;
	// just the chosen one for logprobs 0.
	c.TopLogprobs = append(c.TopLogprobs, orderedLogprobs(alts[:max(top, 1)]))
}

// chatLogprob is one entry of a chat choice's logprobs.content.
type chatLogprob struct {
	Token       string         `json:"token"`
	Logprob     float64        `json:"logprob"`
	Bytes       []int          `json:"bytes"`
	TopLogprobs []chatTopEntry `json:"top_logprobs"`
}

type chatTopEntry struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// chatLogprobs is vLLM's logprobs object of a chat choice.
type chatLogprobs struct {
	Content []chatLogprob `json:"content"`
}

func byteList(s string) []int {
	out := make([]int, len(s))
	for i := range len(s) {
		out[i] = int(s[i])
	}
	return out
}

func (c *chatLogprobs) add(t tokenEvent, top int) {
	alts := tokenLogprobs(t, top)
	e := chatLogprob{Token: alts[0].token, Logprob: roundLP(alts[0].logprob), Bytes: byteList(alts[0].token), TopLogprobs: []chatTopEntry{}}
	// top_logprobs holds the top alternatives, the chosen token (the most
	// likely) among them.
	for _, a := range alts[:top] {
		e.TopLogprobs = append(e.TopLogprobs, chatTopEntry{Token: a.token, Logprob: roundLP(a.logprob), Bytes: byteList(a.token)})
	}
	c.Content = append(c.Content, e)
}

// stopMatcher finds a request's stop strings in its output as the engine
// generates it (simulator.Request.StopAfter). The engine calls after on its
// step; the handler reads the match after the request's end.
type stopMatcher struct {
	stops  []string
	maxLen int
	text   strings.Builder
	// matched is the stop string found and at its offset in the text; at
	// is -1 until then.
	matched string
	at      int
}

func newStopMatcher(stops []string) *stopMatcher {
	m := &stopMatcher{stops: stops, at: -1}
	for _, s := range stops {
		m.maxLen = max(m.maxLen, len(s))
	}
	return m
}

// after appends the token's text and reports whether a stop string now
// appears (the earliest one wins).
func (m *stopMatcher) after(id uint32, index int) bool {
	start := m.text.Len()
	m.text.WriteString(tokenText(tokenEvent{id: id, index: index}))
	s := m.text.String()
	from := max(0, start-m.maxLen+1)
	for _, st := range m.stops {
		if i := strings.Index(s[from:], st); i >= 0 && (m.at < 0 || from+i < m.at) {
			m.at, m.matched = from+i, st
		}
	}
	return m.at >= 0
}

// textOut turns a request's tokens into text, holding back at the end
// what could be the start of a stop string (so that a stop string never
// reaches a streaming client) and cutting the text at a matched one.
type textOut struct {
	full    strings.Builder
	emitted int
	hold    int
}

func newTextOut(stops []string) *textOut {
	o := &textOut{}
	for _, s := range stops {
		o.hold = max(o.hold, len(s)-1)
	}
	return o
}

// add appends t's text and returns its offset in the text.
func (o *textOut) add(t tokenEvent) int {
	off := o.full.Len()
	o.full.WriteString(tokenText(t))
	return off
}

// delta returns the text not yet emitted that is safe to emit: up to cut
// when cut >= 0 (the request's final text end), else all of it when final,
// else all but the held-back tail.
func (o *textOut) delta(final bool, cut int) string {
	s := o.full.String()
	end := len(s)
	switch {
	case cut >= 0:
		end = min(cut, len(s))
	case !final:
		end = len(s) - o.hold
	}
	if end <= o.emitted {
		return ""
	}
	d := s[o.emitted:end]
	o.emitted = end
	return d
}

// cut is where a request's text ends: the matched stop string's start
// (or end, with include_stop_str_in_output), or -1 when none matched.
func (m *stopMatcher) cut(include bool) int {
	if m == nil || m.at < 0 {
		return -1
	}
	if include {
		return m.at + len(m.matched)
	}
	return m.at
}
