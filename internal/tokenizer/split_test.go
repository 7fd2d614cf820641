package tokenizer

import (
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/dlclark/regexp2/v2"
	"github.com/google/go-cmp/cmp"
)

// pieces splits text with a hand-written splitter.
func pieces(s splitter, text string) []string {
	var out []string
	for i := 0; i < len(text); {
		end := s.piece(text, i)
		out = append(out, text[i:end])
		i = end
	}
	return out
}

// interpreted compiles pattern with regexp2's interpreter. The pattern is
// wrapped in a group: tiktoken-go registers regexp2cg-generated matchers
// for the exact pattern strings it uses, which regexp2.Compile would pick
// up, and those matchers get some inputs wrong (see docs/tokenizer.md).
func interpreted(pattern string) *regexSplitter {
	return &regexSplitter{re: regexp2.MustCompile("(?:"+pattern+")", regexp2.None)}
}

// regexPieces splits text with the pattern itself, run by regexp2.
func regexPieces(t testing.TB, pattern, text string) []string {
	t.Helper()
	rs := interpreted(pattern)
	var out []string
	start := 0
	for _, end := range rs.ends(text) {
		out = append(out, text[start:end])
		start = end
	}
	return out
}

var splitPatterns = map[string]string{
	"cl100k": PatternCL100K,
	"qwen2":  PatternQwen2,
	"o200k":  PatternO200K,
	"gpt2":   PatternGPT2,
}

// splitCorpus exercises every alternative of the patterns.
var splitCorpus = []string{
	"",
	"Hello, world! It's 2026 and we're serving LLMs.",
	"I'LL be there; you'VE SEEN it, haven't you? 'twas 'd 'm 'x",
	"  leading spaces and   inner runs\tand\ttabs  ",
	"line one\nline two\r\n\r\n\n  indented\n\n\n",
	"trailing newline spaces \n   ",
	"numbers 1 12 123 1234 12345 3.14159 1,000,000 -42 0x1F",
	"arabic-indic ١٢٣٤٥ and fractions ½¼ and roman Ⅻ",
	"CJK 你好世界，这是一个测试。日本語のテキストです。한국어 텍스트",
	"Ελληνικά ΚΕΦΑΛΑΙΑ και πεζά. Кириллица ПРОПИСНЫЕ строчные.",
	"emoji 👍🏽 👨‍👩‍👧 🇫🇷 ✨✨✨ and symbols ©®™ ∑∫√",
	"combining: e\u0301 a\u0308 n\u0303 — Hindi हिन्दी देवनागरी, Thai ภาษาไทย",
	"titlecase ǅungla ǈ and modifiers ʰʲ ˈstress",
	"code: func main() { fmt.Println(\"hi\") } // comment\n\tx := a[i]+b[j]*2;",
	"paths /usr/local/bin and urls https://example.com/a/b?c=d#e //\n",
	"punct!!!\n\n???\r\n...   ---\n",
	"nbsp\u00a0here\u00a0\u00a0twice and ideographic\u3000space\u2028line sep\u2029para",
	"  \n  \t\n",
	"'s's's '''' ''s",
	"MixedCASEWordsLikeThisHTTPServer and iPhone and McDonald's",
	"\x00\x01\x02 control \x7f chars",
}

func TestSplittersMatchTheirPatterns(t *testing.T) {
	splitters := map[string]splitter{
		"cl100k": cl100kSplitter{maxDigits: 3},
		"qwen2":  cl100kSplitter{maxDigits: 1},
		"o200k":  o200kSplitter{},
		"gpt2":   gpt2Splitter{},
	}
	for name, s := range splitters {
		t.Run(name, func(t *testing.T) {
			for _, text := range append(splitCorpus, randomTexts(2000, 7)...) {
				want := regexPieces(t, splitPatterns[name], text)
				got := pieces(s, text)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Fatalf("split(%q) (-regex +hand-written):\n%s", text, diff)
				}
			}
		})
	}
}

func TestSplitCL100KExamples(t *testing.T) {
	s := cl100kSplitter{maxDigits: 3}
	tests := []struct {
		text string
		want []string
	}{
		{"Hello world", []string{"Hello", " world"}},
		{"it's", []string{"it", "'s"}},
		{"a   b", []string{"a", "  ", " b"}},
		{"12345", []string{"123", "45"}},
		{"x!!\n\ny", []string{"x", "!!\n\n", "y"}},
		{"a \n  b", []string{"a", " \n", " ", " b"}},
		{"end  ", []string{"end", "  "}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, pieces(s, tt.text)); diff != "" {
			t.Errorf("split(%q) (-want +got):\n%s", tt.text, diff)
		}
	}
}

func TestRegexSplitterCoversText(t *testing.T) {
	// A pattern that does not match everything still yields every byte,
	// including invalid UTF-8.
	_, rs, err := newSplitter(`[a-z]+`)
	if err != nil {
		t.Fatal(err)
	}
	text := "ab1\xffcd é"
	var got []string
	start := 0
	for _, end := range rs.ends(text) {
		got = append(got, text[start:end])
		start = end
	}
	want := []string{"ab", "1", "\xff", "cd", " ", "é"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, _, err := newSplitter(`(unclosed`); err == nil {
		t.Error("bad pattern accepted")
	}
}

// interesting runes for random texts: every class the patterns tell apart.
var interesting = []rune("aZ09 \t\n\r'sStTmMdDrReEvVlL!?./-_,;:\"()[]{}#@$%^&*+=<>|\\~`" +
	"\u00a0\u3000\u2028\u0085éÉßſ你好ΩωДд١½Ⅻ\u0301\u0308ǅʰ👍🏽\u200d😀\x00\x7f")

// randomTexts returns n short texts of interesting runes.
func randomTexts(n int, seed uint64) []string {
	r := rand.New(rand.NewPCG(seed, 1))
	out := make([]string, n)
	var b strings.Builder
	for i := range out {
		b.Reset()
		for range r.IntN(24) {
			b.WriteRune(interesting[r.IntN(len(interesting))])
		}
		out[i] = b.String()
	}
	return out
}

func FuzzSplitters(f *testing.F) {
	for _, s := range splitCorpus {
		f.Add(s)
	}
	res := map[string]*regexSplitter{}
	for name, p := range splitPatterns {
		res[name] = interpreted(p)
	}
	splitters := map[string]splitter{
		"cl100k": cl100kSplitter{maxDigits: 3},
		"qwen2":  cl100kSplitter{maxDigits: 1},
		"o200k":  o200kSplitter{},
		"gpt2":   gpt2Splitter{},
	}
	f.Fuzz(func(t *testing.T, text string) {
		for name, s := range splitters {
			got := pieces(s, text)
			if strings.Join(got, "") != text {
				t.Fatalf("%s: pieces do not rebuild the text", name)
			}
			// regexp2 sees invalid UTF-8 as U+FFFD; compare on valid text.
			if !utf8.ValidString(text) {
				continue
			}
			var want []string
			start := 0
			for _, end := range res[name].ends(text) {
				want = append(want, text[start:end])
				start = end
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("%s split(%q) (-regex +hand-written):\n%s", name, text, diff)
			}
		}
	})
}
