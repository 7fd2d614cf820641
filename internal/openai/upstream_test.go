package openai

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFromUpstream(t *testing.T) {
	for _, tt := range []struct {
		name   string
		status int
		body   string
		want   *Error // nil: passed through
	}{
		{"openai shaped", 500, `{"error":{"message":"boom","type":"x"}}`, nil},
		{"vllm object error", 503, `{"object":"error","message":"not ready","type":"ServiceUnavailable","param":null,"code":503}`,
			&Error{Status: 503, Type: TypeServer, Code: CodeUpstream, Message: "the model's endpoint answered 503: not ready"}},
		{"plain text", 502, "bad gateway\n",
			&Error{Status: 502, Type: TypeServer, Code: CodeUpstream, Message: "the model's endpoint answered 502: bad gateway"}},
		{"empty", 503, "",
			&Error{Status: 503, Type: TypeServer, Code: CodeUpstream, Message: "the model's endpoint answered 503: Service Unavailable"}},
		{"client error keeps param", 400, `{"message":"too long","param":"max_tokens"}`,
			&Error{Status: 400, Type: TypeInvalidRequest, Param: "max_tokens", Message: "the model's endpoint answered 400: too long"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, FromUpstream(tt.status, []byte(tt.body))); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseSaysNestingLimit(t *testing.T) {
	deep := `{"model":"m","prompt":` + strings.Repeat("[", MaxNesting+1) + strings.Repeat("]", MaxNesting+1) + `}`
	_, e := Parse(KindCompletion, []byte(deep))
	if e == nil || !strings.Contains(e.Message, "nested more than") {
		t.Fatalf("error %+v", e)
	}
	// At the limit, the body is JSON (json.Valid agrees): refused for
	// its prompt's type, not as unparsable.
	atLimit := `{"model":"m","prompt":` + strings.Repeat("[", MaxNesting-1) + strings.Repeat("]", MaxNesting-1) + `}`
	if !json.Valid([]byte(atLimit)) {
		t.Fatal("json.Valid refuses the body at the limit")
	}
	if _, e := Parse(KindCompletion, []byte(atLimit)); e == nil || e.Message == msgInvalidJSON || e.Message == msgTooDeep {
		t.Errorf("at the limit: %+v, want a type error", e)
	}
	if json.Valid([]byte(deep)) {
		t.Error("json.Valid accepts the body past the limit")
	}
	// Brackets inside strings do not count.
	if nestingExceeds([]byte(`{"a":"`+strings.Repeat("[", MaxNesting+1)+`"}`), MaxNesting) {
		t.Error("counted brackets inside a string")
	}
}
