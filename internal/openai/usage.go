package openai

import "bytes"

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
		if string(f.key) != "usage" {
			return true
		}
		v := doc[f.start:f.end]
		if len(v) == 0 || v[0] != '{' {
			return false
		}
		found = true
		_ = topFields(v, func(g field) bool {
			w := v[g.start:g.end]
			switch string(g.key) {
			case "prompt_tokens":
				u.PromptTokens, _ = parseInt(w)
			case "completion_tokens":
				u.CompletionTokens, _ = parseInt(w)
			case "total_tokens":
				u.TotalTokens, _ = parseInt(w)
			case "prompt_tokens_details":
				if len(w) > 0 && w[0] == '{' {
					_ = topFields(w, func(h field) bool {
						if string(h.key) == "cached_tokens" {
							n, _ := parseInt(w[h.start:h.end])
							u.PromptTokensDetails = &struct {
								CachedTokens int `json:"cached_tokens"`
							}{n}
						}
						return true
					})
				}
			}
			return true
		})
		return false
	})
	return u, found
}
