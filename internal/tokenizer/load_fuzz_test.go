package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/halyard-dev/halyard/internal/fuzzseed"
)

// smallRanks is a byte-level rank file: the 256 bytes, then "ab" and
// "abc".
func smallRanks() []byte {
	var b bytes.Buffer
	for i := range 256 {
		fmt.Fprintf(&b, "%s %d\n", b64([]byte{byte(i)}), i)
	}
	fmt.Fprintf(&b, "%s 256\n%s 257\n", b64([]byte("ab")), b64([]byte("abc")))
	return b.Bytes()
}

// smallHF is a byte-level tokenizer.json with the 256 bytes, the merges
// "a b" and "ab c", and one added token.
func smallHF() []byte {
	vocab := map[string]uint32{}
	for i := range 256 {
		vocab[byteLevelEncode(string([]byte{byte(i)}))] = uint32(i)
	}
	vocab["ab"], vocab["abc"] = 256, 257
	doc := map[string]any{
		"added_tokens":  []any{map[string]any{"id": 258, "content": "<|end|>"}},
		"pre_tokenizer": map[string]any{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
		"model":         map[string]any{"type": "BPE", "vocab": vocab, "merges": []string{"a b", "ab c"}},
	}
	out, err := json.Marshal(doc)
	if err != nil {
		panic(err)
	}
	return out
}

// loadedRoundTrips checks what a tokenizer that loaded must do: encode any
// text (valid UTF-8 or not) and decode it back unchanged.
func loadedRoundTrips(t *testing.T, bpe *BPE) {
	t.Helper()
	for _, text := range []string{"", "abc abcd", "héllo wörld 123", "\xff\xfe\xc3", "<|end|>a\x00b"} {
		if back := bpe.Decode(bpe.Encode(text)); back != text {
			t.Fatalf("Decode(Encode(%q)) = %q", text, back)
		}
	}
}

// FuzzLoadTiktoken: no rank file makes LoadTiktoken panic or allocate
// beyond its rank bound, and what it accepts encodes and decodes text.
func FuzzLoadTiktoken(f *testing.F) {
	small := smallRanks()
	f.Add(small)
	for _, hostile := range []string{
		"YQ== 2097151\n",    // the largest rank allowed (maxTokenID-1)
		"YQ== 2097152\n",    // one beyond
		"YQ== 4294967295\n", // 2^32-1
		"YQ== 1e400\n", "YQ== -1\n", "YQ== " + strings.Repeat("9", 400) + "\n",
		"YQ== 0\nYQ== 1\n", "YQ== 0\nYg== 0\n", // a duplicate token, a duplicate rank
		"=== 0\n", "\xff\xfe 0\n", "YQ==\x000\n", " 0\n", "YQ==\n",
	} {
		f.Add([]byte(hostile))
		f.Add(append(bytes.Clone(small), hostile...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		bpe, err := LoadTiktoken(bytes.NewReader(data), TiktokenOptions{})
		if err != nil {
			return
		}
		loadedRoundTrips(t, bpe)
	})
}

// TestLoadTiktokenRefusesOverlongLine: a rank line beyond the scanner's
// 1 MiB is an error naming the line, not a truncated rank. (This was a fuzz
// seed; a 2 MiB seed slowed FuzzLoadTiktoken to about a hundred inputs a
// second, so it is checked once here.)
func TestLoadTiktokenRefusesOverlongLine(t *testing.T) {
	data := append(smallRanks(), "YQ== "+strings.Repeat("1", 2<<20)+"\n"...)
	_, err := LoadTiktoken(bytes.NewReader(data), TiktokenOptions{})
	if err == nil || !strings.Contains(err.Error(), "line 259") {
		t.Fatalf("LoadTiktoken with a 2 MiB line: err = %v, want an error naming line 259", err)
	}
}

// FuzzLoadHF: no tokenizer.json makes LoadHF panic or allocate for an id
// beyond its bound, and what it accepts encodes and decodes text.
func FuzzLoadHF(f *testing.F) {
	small := smallHF()
	f.Add(small)
	for _, hostile := range []string{
		`{"model":{"type":"BPE","vocab":{"a":4294967295},"merges":[]}}`,
		`{"model":{"type":"BPE","vocab":{"a":2097152},"merges":[]}}`,
		`{"added_tokens":[{"id":4294967295,"content":"x"}],"model":{"type":"BPE","vocab":{"a":0}}}`,
		`{"model":{"type":"BPE","vocab":{"a":0,"b":0},"merges":["a b"]}}`,
		`{"model":{"type":"BPE","vocab":{"a":0},"merges":[["a"],"a b c",7,null,""]}}`,
		`{"pre_tokenizer":{"type":"Split","pattern":{"Regex":"(?<=a)"},"behavior":"Isolated"},"model":{"type":"BPE","vocab":{"a":0}}}`,
		`{"pre_tokenizer":{"type":"Split","pattern":{"Regex":"` + strings.Repeat("(", 2000) + `"}},"model":{"vocab":{"a":0}}}`,
		`{"normalizer":{"type":"Sequence","normalizers":` + string(fuzzseed.Nested("[", "", "]", 500)) + `},"model":{"vocab":{"a":0}}}`,
	} {
		f.Add([]byte(hostile))
	}
	for _, d := range fuzzseed.JSONDocuments(`{"model":{"type":"BPE","vocab":`) {
		f.Add(d)
	}
	// The small tokenizer with a hostile vocabulary entry spliced in.
	f.Add(bytes.Replace(small, []byte(`"ab":256`), []byte(`"ab":4294967295`), 1))
	f.Add(bytes.Replace(small, []byte(`"ab":256`), []byte(`"\ud800":256`), 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		bpe, err := LoadHF(bytes.NewReader(data))
		if err != nil {
			return
		}
		loadedRoundTrips(t, bpe)
	})
}
