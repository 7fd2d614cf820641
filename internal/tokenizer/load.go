package tokenizer

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Load returns the tokenizer a configuration names: "pseudo" (or "") for
// Pseudo, a path ending in ".json" for a Hugging Face tokenizer.json, any
// other path for a tiktoken rank file (cl100k_base.tiktoken,
// o200k_base.tiktoken, Llama 3's tokenizer.model). The simulator and the
// router both call it, so that, given the same file, they agree on tokens.
func Load(spec string) (Tokenizer, error) {
	switch spec {
	case "", "pseudo":
		return Pseudo{}, nil
	}
	t, err := LoadFile(spec, TiktokenOptions{})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// LoadFile loads a tokenizer.json (by its ".json" suffix) or a tiktoken
// rank file; opts apply to rank files only.
func LoadFile(path string, opts TiktokenOptions) (*BPE, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer: %w", err)
	}
	defer f.Close()
	var t *BPE
	if strings.HasSuffix(path, ".json") {
		t, err = LoadHF(f)
	} else {
		t, err = LoadTiktoken(f, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("load tokenizer %s: %w", path, err)
	}
	t.name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	return t, nil
}

// TiktokenOptions complete a tiktoken rank file, which holds only the
// ranks. Left empty, they are chosen by the number of ranks: 100,256 is
// cl100k_base, 199,998 o200k_base, 128,000 Llama 3; anything else gets
// cl100k's pattern and no special tokens.
type TiktokenOptions struct {
	// Pattern is the pre-tokenizer regular expression.
	Pattern string
	// Specials maps special tokens to their ids.
	Specials map[string]uint32
}

// Known rank files, by their number of ranks.
var knownRankFiles = map[int]TiktokenOptions{
	100256: {Pattern: PatternCL100K, Specials: map[string]uint32{
		"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
		"<|fim_suffix|>": 100260, "<|endofprompt|>": 100276,
	}},
	199998: {Pattern: PatternO200K, Specials: map[string]uint32{
		"<|endoftext|>": 199999, "<|endofprompt|>": 200018,
	}},
	// Llama 3's special tokens that every 3.x release shares.
	128000: {Pattern: PatternCL100K, Specials: map[string]uint32{
		"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001,
		"<|start_header_id|>": 128006, "<|end_header_id|>": 128007, "<|eot_id|>": 128009,
	}},
}

// maxTokenID bounds token ids (ranks) in loaded files: the token table is a
// slice indexed by id, so an id of 2^32-1 in a file would allocate 64 GiB
// (and one of 2^24, as rank files were once allowed, 256 MiB). The largest
// vocabularies in use are about 2^18.
const maxTokenID = 1 << 21

// LoadTiktoken reads a tiktoken rank file: one "<base64 token> <rank>" per
// line.
func LoadTiktoken(r io.Reader, opts TiktokenOptions) (*BPE, error) {
	ranks := make(map[string]uint32)
	var tokens []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		b64, num, ok := bytes.Cut(text, []byte{' '})
		if !ok {
			return nil, fmt.Errorf("line %d: want \"<base64 token> <rank>\"", line)
		}
		tok, err := base64.StdEncoding.DecodeString(string(b64))
		if err != nil {
			return nil, fmt.Errorf("line %d: token: %w", line, err)
		}
		rank, err := strconv.ParseUint(string(bytes.TrimSpace(num)), 10, 32)
		if err != nil || rank >= maxTokenID {
			return nil, fmt.Errorf("line %d: rank %q is not an integer below 2^21", line, num)
		}
		if len(tok) == 0 {
			return nil, fmt.Errorf("line %d: empty token", line)
		}
		if _, dup := ranks[string(tok)]; dup {
			return nil, fmt.Errorf("line %d: token %q appears twice", line, tok)
		}
		if need := int(rank) + 1; need > len(tokens) {
			tokens = append(tokens, make([]string, need-len(tokens))...)
		}
		if tokens[rank] != "" {
			return nil, fmt.Errorf("line %d: rank %d appears twice", line, rank)
		}
		ranks[string(tok)] = uint32(rank)
		tokens[rank] = string(tok)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", line+1, err)
	}
	known := knownRankFiles[len(ranks)]
	if opts.Pattern == "" {
		opts.Pattern = known.Pattern
		if opts.Pattern == "" {
			opts.Pattern = PatternCL100K
		}
	}
	if opts.Specials == nil {
		opts.Specials = known.Specials
	}
	t := &BPE{ranks: ranks, tokens: tokens, wholePiece: true}
	if err := t.finish(opts.Pattern, opts.Specials); err != nil {
		return nil, err
	}
	return t, nil
}

// rankPairs turns tiktoken ranks into pair merges: tiktoken merges two
// adjacent parts (each a token) when their concatenation is a token, with
// that token's rank as priority, so every split of a token into two tokens
// is a pair that merges into it.
func rankPairs(words *wordTable) *pairTable {
	p := newPairTable(2 * words.count())
	for id, tok := range words.tokens {
		for k := 1; k < len(tok); k++ {
			a, okA := words.get(tok[:k])
			if !okA {
				continue
			}
			if b, okB := words.get(tok[k:]); okB {
				p.putIfAbsent(pairKey(a, b), merge{rank: uint32(id), id: uint32(id)})
			}
		}
	}
	return p
}

// finish sets the byte tokens, the splitter and the specials.
func (t *BPE) finish(pattern string, specials map[string]uint32) error {
	// Specials are matched before splitting, never as pieces: index the
	// ordinary tokens only.
	// The byte check comes first: it is cheap, and the tables below are
	// sized by the highest id, which a file that fails it need not cost.
	for b := range 256 {
		id, ok := t.ranks[string([]byte{byte(b)})]
		if !ok {
			return fmt.Errorf("not a byte-level vocabulary: byte 0x%02x has no token", b)
		}
		t.byteID[b] = id
	}
	t.words = newWordTable(slices.Clone(t.tokens))
	if t.pairs == nil {
		t.pairs = rankPairs(t.words)
	}
	var err error
	if t.split, t.regex, err = newSplitter(pattern); err != nil {
		return err
	}
	for s, id := range specials {
		if tok := t.tokenAt(id); tok != "" && tok != s {
			return fmt.Errorf("special token %q: id %d already holds %q", s, id, tok)
		}
	}
	t.setSpecials(specials)
	return nil
}

func (t *BPE) tokenAt(id uint32) string {
	if int(id) < len(t.tokens) {
		return t.tokens[id]
	}
	return ""
}

// hfTokenizer is the part of a Hugging Face tokenizer.json that byte-level
// BPE needs.
type hfTokenizer struct {
	AddedTokens []struct {
		ID      uint32 `json:"id"`
		Content string `json:"content"`
	} `json:"added_tokens"`
	Normalizer   *hfNormalizer   `json:"normalizer"`
	PreTokenizer *hfPreTokenizer `json:"pre_tokenizer"`
	Model        struct {
		Type         string            `json:"type"`
		Vocab        map[string]uint32 `json:"vocab"`
		Merges       []json.RawMessage `json:"merges"`
		IgnoreMerges bool              `json:"ignore_merges"`
		ByteFallback bool              `json:"byte_fallback"`
	} `json:"model"`
}

type hfNormalizer struct {
	Type        string         `json:"type"`
	Normalizers []hfNormalizer `json:"normalizers"`
}

type hfPreTokenizer struct {
	Type          string           `json:"type"`
	PreTokenizers []hfPreTokenizer `json:"pretokenizers"`
	Pattern       *struct {
		Regex  *string `json:"Regex"`
		String *string `json:"String"`
	} `json:"pattern"`
	Behavior       string `json:"behavior"`
	Invert         bool   `json:"invert"`
	AddPrefixSpace bool   `json:"add_prefix_space"`
	UseRegex       *bool  `json:"use_regex"`
}

// LoadHF reads a Hugging Face tokenizer.json of a byte-level BPE model:
// model.type BPE with vocab and merges, a ByteLevel pre-tokenizer alone or
// after one Split by regular expression (behavior Isolated), an optional NFC
// normaliser, added tokens as specials. Other shapes are refused with an
// error naming the field.
func LoadHF(r io.Reader) (*BPE, error) {
	var hf hfTokenizer
	if err := json.NewDecoder(r).Decode(&hf); err != nil {
		return nil, fmt.Errorf("decode tokenizer.json: %w", err)
	}
	if hf.Model.Type != "BPE" && hf.Model.Type != "" {
		return nil, fmt.Errorf("model.type: %q is not BPE", hf.Model.Type)
	}
	if hf.Model.ByteFallback {
		return nil, errors.New("model.byte_fallback: byte-fallback BPE (SentencePiece style) is not byte-level")
	}
	if len(hf.Model.Vocab) == 0 {
		return nil, errors.New("model.vocab: empty")
	}
	nfc, err := hfNormalize(hf.Normalizer, "normalizer")
	if err != nil {
		return nil, err
	}
	pattern, err := hfPattern(hf.PreTokenizer)
	if err != nil {
		return nil, err
	}

	decode := byteLevelDecoder()
	t := &BPE{ranks: make(map[string]uint32, len(hf.Model.Vocab)), wholePiece: hf.Model.IgnoreMerges, nfc: nfc}
	for s, id := range hf.Model.Vocab {
		if id >= maxTokenID {
			return nil, fmt.Errorf("model.vocab: %q has id %d, not below 2^21", s, id)
		}
		raw, ok := decode(s)
		if !ok {
			return nil, fmt.Errorf("model.vocab: %q is not in the byte-level alphabet", s)
		}
		for int(id) >= len(t.tokens) {
			t.tokens = append(t.tokens, "")
		}
		t.tokens[id] = raw
		t.ranks[raw] = id
	}
	t.pairs = newPairTable(len(hf.Model.Merges))
	for i, m := range hf.Model.Merges {
		a, b, err := parseMerge(m)
		if err != nil {
			return nil, fmt.Errorf("model.merges[%d]: %w", i, err)
		}
		ida, oka := hf.Model.Vocab[a]
		idb, okb := hf.Model.Vocab[b]
		idm, okm := hf.Model.Vocab[a+b]
		if !oka || !okb || !okm {
			return nil, fmt.Errorf("model.merges[%d]: %q + %q: a token is missing from model.vocab", i, a, b)
		}
		t.pairs.putIfAbsent(pairKey(ida, idb), merge{rank: uint32(i), id: idm})
	}
	specials := make(map[string]uint32, len(hf.AddedTokens))
	for i, at := range hf.AddedTokens {
		if at.ID >= maxTokenID {
			return nil, fmt.Errorf("added_tokens[%d].id: %d is not below 2^21", i, at.ID)
		}
		specials[at.Content] = at.ID
	}
	if err := t.finish(pattern, specials); err != nil {
		return nil, err
	}
	return t, nil
}

func hfNormalize(n *hfNormalizer, path string) (nfc bool, err error) {
	if n == nil {
		return false, nil
	}
	switch n.Type {
	case "NFC":
		return true, nil
	case "Sequence":
		for i := range n.Normalizers {
			v, err := hfNormalize(&n.Normalizers[i], fmt.Sprintf("%s.normalizers[%d]", path, i))
			if err != nil {
				return false, err
			}
			nfc = nfc || v
		}
		return nfc, nil
	}
	return false, fmt.Errorf("%s.type: %q is not supported (NFC or none)", path, n.Type)
}

// hfPattern reduces the pre-tokenizer to one splitting pattern.
func hfPattern(p *hfPreTokenizer) (string, error) {
	if p == nil {
		return "", errors.New("pre_tokenizer: missing (want ByteLevel, alone or after Split)")
	}
	steps := []hfPreTokenizer{*p}
	if p.Type == "Sequence" {
		steps = p.PreTokenizers
	}
	pattern, byteLevel := "", false
	for i, s := range steps {
		path := fmt.Sprintf("pre_tokenizer.pretokenizers[%d]", i)
		if p.Type != "Sequence" {
			path = "pre_tokenizer"
		}
		switch s.Type {
		case "Split":
			if pattern != "" || byteLevel {
				return "", fmt.Errorf("%s: only one Split, before ByteLevel, is supported", path)
			}
			if s.Behavior != "Isolated" || s.Invert {
				return "", fmt.Errorf("%s.behavior: %q (invert %v) is not supported (Isolated only)", path, s.Behavior, s.Invert)
			}
			switch {
			case s.Pattern != nil && s.Pattern.Regex != nil:
				pattern = *s.Pattern.Regex
			case s.Pattern != nil && s.Pattern.String != nil:
				pattern = regexpQuote(*s.Pattern.String)
			default:
				return "", fmt.Errorf("%s.pattern: missing", path)
			}
		case "ByteLevel":
			if s.AddPrefixSpace {
				return "", fmt.Errorf("%s.add_prefix_space: true is not supported", path)
			}
			byteLevel = true
			if s.UseRegex == nil || *s.UseRegex {
				if pattern != "" {
					return "", fmt.Errorf("%s.use_regex: true after a Split is not supported", path)
				}
				pattern = PatternGPT2
			}
		default:
			return "", fmt.Errorf("%s.type: %q is not supported (Split, ByteLevel)", path, s.Type)
		}
	}
	if !byteLevel {
		return "", errors.New("pre_tokenizer: no ByteLevel step; not a byte-level BPE")
	}
	if pattern == "" {
		return "", errors.New("pre_tokenizer: no splitting pattern")
	}
	return pattern, nil
}

func regexpQuote(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`\.+*?()|[]{}^$#`, r) || r == ' ' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// parseMerge reads a merge, either "a b" or ["a", "b"].
func parseMerge(m json.RawMessage) (string, string, error) {
	var s string
	if err := json.Unmarshal(m, &s); err == nil {
		a, b, ok := strings.Cut(s, " ")
		if !ok || a == "" || b == "" {
			return "", "", fmt.Errorf("%q is not two tokens", s)
		}
		return a, b, nil
	}
	var pair []string
	if err := json.Unmarshal(m, &pair); err != nil || len(pair) != 2 {
		return "", "", fmt.Errorf("%s is neither \"a b\" nor [a, b]", m)
	}
	return pair[0], pair[1], nil
}

// byteLevelAlphabet is GPT-2's map from bytes to printable runes: printable
// Latin-1 bytes stand for themselves, the others for 256, 257, ... in order.
func byteLevelAlphabet() [256]rune {
	var a [256]rune
	next := rune(256)
	for b := range 256 {
		if (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff) {
			a[b] = rune(b)
		} else {
			a[b] = next
			next++
		}
	}
	return a
}

// byteLevelDecoder returns the inverse of byteLevelAlphabet on strings.
func byteLevelDecoder() func(string) (string, bool) {
	inv := make(map[rune]byte, 256)
	for b, r := range byteLevelAlphabet() {
		inv[r] = byte(b)
	}
	return func(s string) (string, bool) {
		out := make([]byte, 0, len(s))
		for _, r := range s {
			b, ok := inv[r]
			if !ok {
				return "", false
			}
			out = append(out, b)
		}
		return string(out), true
	}
}

// byteLevelEncode maps raw bytes to the byte-level alphabet (for tests and
// tools that write tokenizer.json files).
func byteLevelEncode(raw string) string {
	a := byteLevelAlphabet()
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		b.WriteRune(a[raw[i]])
	}
	return b.String()
}
