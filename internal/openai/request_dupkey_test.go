package openai

import "testing"

// TestParseRejectsDuplicateKeys: a key twice at the top level (also when
// escaped differently) is a 400 naming the key, since the engine may read
// the other value than the router routed on; nested repeats are the
// engine's business.
func TestParseRejectsDuplicateKeys(t *testing.T) {
	many := `{"model":"m","prompt":"p"`
	for i := range 40 {
		many += `,"k` + string(rune('a'+i%26)) + string(rune('a'+i/26)) + `":1`
	}
	for _, tt := range []struct {
		name, body, param string
	}{
		{"model twice", `{"model":"cheap","prompt":"p","model":"expensive"}`, "model"},
		{"escaped", `{"model":"cheap","prompt":"p","mod\u0065l":"expensive"}`, "model"},
		{"stream twice", `{"model":"m","prompt":"p","stream":false,"stream":true}`, "stream"},
		{"past the small set", many + `,"kab":2}`, "kab"},
		{"nested repeat is fine", `{"model":"m","prompt":"p","x":{"a":1,"a":2}}`, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(KindCompletion, []byte(tt.body))
			if tt.param == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil || err.Status != 400 || err.Code != CodeDuplicateKey || err.Param != tt.param {
				t.Fatalf("got %+v, want 400 %s naming %q", err, CodeDuplicateKey, tt.param)
			}
		})
	}
}
