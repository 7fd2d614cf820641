package openai

import (
	"bytes"
	"encoding/json"
)

// Usage is the "usage" object of a response or of the last chunk of a
// stream with stream_options.include_usage.
type Usage struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails *struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details,omitempty"`
}

// CachedTokens returns prompt_tokens_details.cached_tokens, or 0.
func (u *Usage) CachedTokens() int {
	if u.PromptTokensDetails == nil {
		return 0
	}
	return u.PromptTokensDetails.CachedTokens
}

var usageKey = []byte(`"usage"`)

// FindUsage returns the usage object of a JSON response body or SSE data
// payload, if it has a non-null one. It decodes nothing else.
func FindUsage(doc []byte) (Usage, bool) {
	var u Usage
	if !bytes.Contains(doc, usageKey) {
		return u, false
	}
	found := false
	_ = topFields(doc, func(f field) bool {
		if f.key != "usage" {
			return true
		}
		v := doc[f.start:f.end]
		if isNull(v) {
			return false
		}
		found = json.Unmarshal(v, &u) == nil
		return false
	})
	return u, found
}
