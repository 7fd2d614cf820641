package workload

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/bench/trace"
	"github.com/halyard-dev/halyard/internal/tokenizer"
)

func mustShared(t *testing.T, w SharedPrefix) *SharedPrefix {
	t.Helper()
	out, err := NewSharedPrefix(w)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkExactTokens asserts that every request's text has exactly the tokens
// its shape claims, in chat and completions form.
func checkExactTokens(t *testing.T, w Workload) {
	t.Helper()
	tok := tokenizer.Pseudo{}
	for i := range w.Len() {
		r := w.Request(i)
		if diff := cmp.Diff(w.Shape(i), r.Shape); diff != "" {
			t.Fatalf("request %d: Shape and Request disagree (-shape +request):\n%s", i, diff)
		}
		sum := 0
		for _, m := range r.Messages {
			sum += tok.Count(m.Content)
		}
		if sum != r.PromptTokens {
			t.Fatalf("request %d: messages have %d tokens, shape says %d", i, sum, r.PromptTokens)
		}
		if n := tok.Count(r.Prompt()); n != r.PromptTokens {
			t.Fatalf("request %d: prompt has %d tokens, shape says %d", i, n, r.PromptTokens)
		}
	}
}

func TestSharedPrefixExactTokens(t *testing.T) {
	tests := []SharedPrefix{
		{Groups: 3, UsersPerGroup: 4, SystemTokens: 100, QuestionTokens: 20, OutputTokens: 7, Turns: 1},
		{Groups: 2, UsersPerGroup: 2, SystemTokens: 50, QuestionTokens: 10, OutputTokens: 5, Turns: 3},
		{Groups: 2, UsersPerGroup: 1, SystemTokens: 0, QuestionTokens: 9, OutputTokens: 3, Turns: 2},
	}
	for _, spec := range tests {
		w := mustShared(t, spec)
		t.Run(w.Name(), func(t *testing.T) { checkExactTokens(t, w) })
	}
}

func TestSharedPrefixSharesSystemPromptWithinGroupOnly(t *testing.T) {
	w := mustShared(t, SharedPrefix{Groups: 3, UsersPerGroup: 4, SystemTokens: 64, QuestionTokens: 16, OutputTokens: 4, Turns: 1, Seed: 7})
	systems := map[int]map[string]bool{} // group -> distinct system prompts
	questions := map[string]bool{}
	for i := range w.Len() {
		r := w.Request(i)
		var g, u, turn int
		if _, err := fmtSscanf(r.ID, &g, &u, &turn); err != nil {
			t.Fatal(err)
		}
		if systems[g] == nil {
			systems[g] = map[string]bool{}
		}
		systems[g][r.Messages[0].Content] = true
		questions[r.Messages[1].Content] = true
		if !strings.HasPrefix(r.Prompt(), r.Messages[0].Content+"\n") {
			t.Fatalf("request %d: prompt does not start with its system prompt", i)
		}
	}
	seen := map[string]bool{}
	for g, s := range systems {
		if len(s) != 1 {
			t.Errorf("group %d has %d distinct system prompts, want 1", g, len(s))
		}
		for p := range s {
			if seen[p] {
				t.Errorf("group %d shares its system prompt with another group", g)
			}
			seen[p] = true
		}
	}
	if len(questions) != 12 {
		t.Errorf("%d distinct questions, want 12 (one per user)", len(questions))
	}
}

func TestSharedPrefixMultiTurnExtendsPrefix(t *testing.T) {
	w := mustShared(t, SharedPrefix{Groups: 2, UsersPerGroup: 3, SystemTokens: 32, QuestionTokens: 8, OutputTokens: 4, Turns: 3, Seed: 1})
	prev := map[int]string{} // session -> prompt of its last turn
	lastTurn := map[int]int{}
	for i := range w.Len() {
		r := w.Request(i)
		if r.Session < 0 {
			t.Fatalf("request %d has no session", i)
		}
		if want := lastTurn[r.Session]; r.Turn != want {
			t.Fatalf("request %d: session %d turn %d comes before turn %d", i, r.Session, r.Turn, want)
		}
		lastTurn[r.Session] = r.Turn + 1
		p := r.Prompt()
		if before, ok := prev[r.Session]; ok && !strings.HasPrefix(p, before+"\n") {
			t.Fatalf("request %d: turn %d does not extend turn %d's prompt", i, r.Turn, r.Turn-1)
		}
		prev[r.Session] = p
		if want := 1 + 2*r.Turn + 1; len(r.Messages) != want {
			t.Fatalf("request %d: %d messages, want %d", i, len(r.Messages), want)
		}
	}
}

func TestSharedPrefixDeterministic(t *testing.T) {
	spec := SharedPrefix{Groups: 4, UsersPerGroup: 3, SystemTokens: 20, QuestionTokens: 5, OutputTokens: 2, Turns: 2, Seed: 42}
	a, b := mustShared(t, spec), mustShared(t, spec)
	spec.Seed = 43
	c := mustShared(t, spec)
	differs := false
	for i := range a.Len() {
		ra, rb, rc := a.Request(i), b.Request(i), c.Request(i)
		if diff := cmp.Diff(ra, rb); diff != "" {
			t.Fatalf("request %d differs for the same seed:\n%s", i, diff)
		}
		if ra.Prompt() != rc.Prompt() {
			differs = true
		}
	}
	if !differs {
		t.Error("a different seed gave the same prompts")
	}
}

func TestSharedPrefixValidate(t *testing.T) {
	base := SharedPrefix{Groups: 1, UsersPerGroup: 1, SystemTokens: 1, QuestionTokens: 1, OutputTokens: 1, Turns: 1}
	tests := []struct {
		name  string
		mod   func(*SharedPrefix)
		field string
	}{
		{"groups", func(w *SharedPrefix) { w.Groups = 0 }, "groups"},
		{"users", func(w *SharedPrefix) { w.UsersPerGroup = -1 }, "users per group"},
		{"system", func(w *SharedPrefix) { w.SystemTokens = -1 }, "system tokens"},
		{"question", func(w *SharedPrefix) { w.QuestionTokens = 0 }, "question tokens"},
		{"output", func(w *SharedPrefix) { w.OutputTokens = 0 }, "output tokens"},
		{"turns", func(w *SharedPrefix) { w.Turns = 0 }, "turns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := base
			tt.mod(&w)
			_, err := NewSharedPrefix(w)
			if err == nil || !strings.HasPrefix(err.Error(), tt.field+":") {
				t.Errorf("error = %v, want one naming %q", err, tt.field)
			}
		})
	}
}

func TestMultiTurn(t *testing.T) {
	w, err := NewMultiTurn(3, 4, 10, 6, 3, 9)
	if err != nil {
		t.Fatal(err)
	}
	if w.Name() != "multi-turn" || w.Len() != 12 {
		t.Fatalf("name %q len %d, want multi-turn 12", w.Name(), w.Len())
	}
	checkExactTokens(t, w)
	sys := map[string]bool{}
	for i := range w.Len() {
		sys[w.Request(i).Messages[0].Content] = true
	}
	if len(sys) != 3 {
		t.Errorf("%d distinct system prompts, want one per session (3)", len(sys))
	}
}

func TestMooncakeSharedBlocksShareTokens(t *testing.T) {
	w := &Mooncake{Seed: 5, Entries: []trace.MooncakeEntry{
		{Timestamp: 0, InputLength: 1000, OutputLength: 3, HashIDs: []int64{0, 1}},
		{Timestamp: 20, InputLength: 600, OutputLength: 0, HashIDs: []int64{0, 2}},
		{Timestamp: 30, InputLength: 512, OutputLength: 9, HashIDs: []int64{3}},
	}}
	checkExactTokens(t, w)
	a, b, c := w.TokenIDs(0), w.TokenIDs(1), w.TokenIDs(2)
	if diff := cmp.Diff(a[:512], b[:512]); diff != "" {
		t.Errorf("hash id 0 gave different tokens in two requests:\n%s", diff)
	}
	if cmp.Equal(a[512:600], b[512:600]) {
		t.Error("hash ids 1 and 2 gave equal tokens")
	}
	if cmp.Equal(a[:512], c) {
		t.Error("hash ids 0 and 3 gave equal tokens")
	}
	if got := w.Shape(1); got.OutputTokens != 1 || got.At != 20*time.Millisecond {
		t.Errorf("shape 1 = %+v, want output 1 (at least one) at 20ms", got)
	}
	if !strings.HasPrefix(w.Request(0).Prompt(), tokenizer.Pseudo{}.Decode(a[:512])) {
		t.Error("rendered prompt does not start with the first block's text")
	}
	again := &Mooncake{Seed: 5, Entries: w.Entries}
	if !cmp.Equal(a, again.TokenIDs(0)) {
		t.Error("same seed gave different tokens")
	}
}

func TestAzure(t *testing.T) {
	w := &Azure{Kind: "azure-code", Seed: 1, Entries: []trace.AzureEntry{
		{At: 0, ContextTokens: 30, GeneratedTokens: 4},
		{At: time.Second, ContextTokens: 30, GeneratedTokens: 0},
	}}
	checkExactTokens(t, w)
	if w.Request(0).Prompt() == w.Request(1).Prompt() {
		t.Error("two azure requests have the same content")
	}
	if got := w.Shape(1); got.OutputTokens != 1 || got.At != time.Second {
		t.Errorf("shape 1 = %+v", got)
	}
}

func TestLimitAndHead(t *testing.T) {
	w := &Azure{Entries: []trace.AzureEntry{
		{ContextTokens: 10, GeneratedTokens: 5},
		{ContextTokens: 100, GeneratedTokens: 5},
		{ContextTokens: 20, GeneratedTokens: 5},
	}}
	lw, dropped, err := Limit(w, 50)
	if err != nil {
		t.Fatal(err)
	}
	if dropped != 1 || lw.Len() != 2 || lw.Shape(1).PromptTokens != 20 || lw.Request(1).Index != 1 {
		t.Errorf("Limit: dropped %d, len %d, second %+v", dropped, lw.Len(), lw.Shape(1))
	}
	if h := Head(lw, 1); h.Len() != 1 || h.Shape(0).PromptTokens != 10 {
		t.Errorf("Head: len %d", h.Len())
	}
	mt, _ := NewMultiTurn(1, 3, 10, 10, 10, 0)
	if _, _, err := Limit(mt, 25); err == nil {
		t.Error("Limit dropped a turn of a session without an error")
	}
}

func fmtSscanf(id string, g, u, turn *int) (int, error) {
	return fmt.Sscanf(id[len("shared-prefix-"):], "g%d-u%d-t%d", g, u, turn)
}

func BenchmarkSharedPrefixRequest(b *testing.B) {
	w, err := NewSharedPrefix(SharedPrefix{Groups: 150, UsersPerGroup: 5, SystemTokens: 6000, QuestionTokens: 1200, OutputTokens: 100, Turns: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_ = w.Request(i % w.Len())
		i++
	}
}
