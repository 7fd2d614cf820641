package weights

import (
	"strings"
	"testing"
)

// FuzzParseSource: hostile sources never panic, and a parsed source's
// cache key is one safe path element.
func FuzzParseSource(f *testing.F) {
	for _, s := range []string{"hf://org/repo", "hf://org/repo@refs/pr/1", "hf://../x", "hf://a/b/../../c", "s3://b/../../etc",
		"http://h/../../x/", "gs://", "https://[::1]:80/a b/", "hf://o/r@..", "file:///etc/passwd", "\x00://"} {
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
