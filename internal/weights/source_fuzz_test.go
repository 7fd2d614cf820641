package weights

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseSource: hostile sources never panic, and a parsed source's
// cache key is one safe path element.
func FuzzParseSource(f *testing.F) {
	for _, s := range []string{"hf://org/repo", "hf://org/repo@refs/pr/1", "hf://../x", "hf://a/b/../../c", "s3://b/../../etc",
		"http://h/../../x/", "gs://", "https://[::1]:80/a b/", "hf://o/r@..", "file:///etc/passwd", "\x00://",
		"modelscope://Qwen/Qwen3-0.6B@v1.0", "modelscope://../x", "modelscope://a/b/c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		src, err := ParseSource(s)
		if err != nil {
			return
		}
		k := src.CacheKey()
		if k == "" || k == "." || k == ".." || strings.ContainsAny(k, "/\\\x00") {
			t.Fatalf("%q: unsafe cache key %q", s, k)
		}
	})
}

// FuzzGlob: any pattern compiles (malformed classes match literally) and
// matching never panics.
func FuzzGlob(f *testing.F) {
	for _, g := range []string{"*.safetensors", "[", "[]", "[!a-", "a[\\]", "original/", "**/x?"} {
		f.Add(g, "original/params.json")
	}
	f.Fuzz(func(_ *testing.T, g, path string) {
		newMatcher([]string{g}, []string{g}).match(path)
	})
}

// FuzzModelScopeEnvelope: hostile answers of the ModelScope API never
// panic, and an envelope that decodes without error had Code 200 (or none).
func FuzzModelScopeEnvelope(f *testing.F) {
	for _, s := range []string{
		`{"Code":200,"Data":{"Files":[{"Path":"a","Type":"blob","Size":1,"Sha256":"x"}]},"Success":true}`,
		`{"Code":"200","Data":{"Files":null}}`, `{"Code":401,"Message":"login","Success":false}`,
		`{"Code":"abc"}`, `{"Code":200,"Success":false,"Data":{}}`, `{"Data":[1,2]}`, `{"Code":1e999}`,
		`{"Code":200,"Data":{"RevisionMap":{"Branches":[{"Revision":1}]}}}`, `null`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var env msEnvelope
		if json.Unmarshal(b, &env) != nil {
			return
		}
		var listing struct {
			Files []msFile `json:"Files"`
		}
		if env.data(&listing) != nil || len(env.Code) == 0 || string(env.Code) == "null" {
			return
		}
		if n, err := strconv.Atoi(strings.Trim(string(env.Code), `"`)); err != nil || n != 200 {
			t.Fatalf("%s: accepted with Code %s", b, env.Code)
		}
	})
}
