package kvevents

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/halyard-dev/halyard/internal/fuzzseed"
)

// readHex parses a testdata/*.hex golden file (see testdata/README.md). It
// checks that every quoted string follows a fixstr header of its length.
func readHex(t testing.TB, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for ln, line := range strings.Split(string(raw), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		for line = strings.TrimSpace(line); line != ""; line = strings.TrimSpace(line) {
			if line[0] == '"' {
				end := strings.IndexByte(line[1:], '"')
				if end < 0 {
					t.Fatalf("%s:%d: unterminated string", name, ln+1)
				}
				s := line[1 : end+1]
				if len(out) == 0 || out[len(out)-1] != 0xa0|byte(len(s)) {
					t.Fatalf("%s:%d: string %q does not follow fixstr header a0|%d", name, ln+1, s, len(s))
				}
				out = append(out, s...)
				line = line[end+2:]
				continue
			}
			tok, rest, _ := strings.Cut(line, " ")
			b, err := hex.DecodeString(tok)
			if err != nil || len(b) != 1 {
				t.Fatalf("%s:%d: bad byte %q", name, ln+1, tok)
			}
			out = append(out, b[0])
			line = rest
		}
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func bytesSeq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

var goldenBatches = map[string]*Batch{
	"array_all_events.hex": {
		TS: 1764201600.5,
		Events: []Event{
			&BlockStored{
				BlockHashes: []BlockHash{IntHash(1), IntHash(200)},
				TokenIDs:    []uint32{1, 2, 3, 4, 5, 6, 7, 300},
				BlockSize:   4,
				Medium:      ptr(MediumGPU),
			},
			&BlockRemoved{BlockHashes: []BlockHash{IntHash(15760518052499183552)}, Medium: ptr(MediumGPU)},
			&AllBlocksCleared{},
		},
		DataParallelRank: ptr(0),
	},
	"map_all_events.hex": {
		TS: 1749600000.25,
		Events: []Event{
			&BlockStored{
				BlockHashes:     []BlockHash{IntHash(42), IntHash(1234)},
				ParentBlockHash: ptr(IntHash(153)),
				TokenIDs:        []uint32{10, 11, 12, 13},
				BlockSize:       2,
				LoRAID:          ptr[int64](7),
				Medium:          ptr(MediumGPU),
				LoRAName:        ptr("adapter"),
				GroupIdx:        ptr[int64](0),
				KVCacheSpecKind: ptr("full_attention"),
			},
			&BlockRemoved{BlockHashes: []BlockHash{IntHash(42)}},
		},
		DataParallelRank: ptr(0),
	},
	"array_bytes_hash.hex": {
		TS: 1764201600.5,
		Events: []Event{
			&BlockStored{
				BlockHashes:     []BlockHash{BytesHash(bytesSeq(32))},
				ParentBlockHash: ptr(BytesHash([]byte{0xff, 0xfe})),
				TokenIDs:        []uint32{5, 6},
				BlockSize:       2,
			},
		},
	},
	"vllm_0_26_map.hex": {
		TS: 1789095808.8378847,
		Events: []Event{
			&BlockStored{
				BlockHashes:     []BlockHash{IntHash(15760518052499183552)},
				TokenIDs:        []uint32{151644, 872, 198, 9064, 374, 279, 6722, 315, 5616, 30, 151645, 198, 151644, 77091, 198, 151667},
				BlockSize:       16,
				Medium:          ptr(MediumGPU),
				GroupIdx:        ptr[int64](0),
				KVCacheSpecKind: ptr("full_attention"),
			},
		},
		DataParallelRank: ptr(0),
	},
	"vllm_0_9_array.hex": {
		TS: 1764201600.5,
		Events: []Event{
			&BlockStored{
				BlockHashes:     []BlockHash{SignedHash(-4284880390408332321), SignedHash(-5)},
				ParentBlockHash: ptr(SignedHash(-100)),
				TokenIDs:        []uint32{1, 2, 3, 4},
				BlockSize:       2,
			},
			&BlockRemoved{BlockHashes: []BlockHash{SignedHash(-5)}},
		},
	},
	"future_fields.hex": {
		TS: 1764201600.5,
		Events: []Event{
			&BlockStored{
				BlockHashes:              []BlockHash{IntHash(5)},
				TokenIDs:                 []uint32{1, 2},
				BlockSize:                2,
				Medium:                   ptr("CPU"),
				GroupIdx:                 ptr[int64](3),
				KVCacheSpecKind:          ptr("sliding_window"),
				KVCacheSpecSlidingWindow: ptr[int64](4096),
			},
			&BlockRemoved{BlockHashes: []BlockHash{IntHash(5)}, Medium: ptr("CPU")},
			&UnknownEvent{Type: "BlockPromoted"},
		},
		DataParallelRank: ptr(0),
	},
}

func TestDecodeGolden(t *testing.T) {
	for name, want := range goldenBatches {
		t.Run(name, func(t *testing.T) {
			got, err := DecodeBatch(readHex(t, name))
			if err != nil {
				t.Fatalf("DecodeBatch: %v", err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("decoded batch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEncodeGolden(t *testing.T) {
	tests := []struct {
		file   string
		format Format
	}{
		{"array_all_events.hex", FormatArray},
		{"map_all_events.hex", FormatMap},
		{"array_bytes_hash.hex", FormatArray},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := EncodeBatch(nil, goldenBatches[tt.file], tt.format)
			if err != nil {
				t.Fatal(err)
			}
			want := readHex(t, tt.file)
			if diff := cmp.Diff(hex.Dump(want), hex.Dump(got)); diff != "" {
				t.Errorf("encoding differs from the msgspec golden bytes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRoundTripBothFormats(t *testing.T) {
	for name, b := range goldenBatches {
		for _, f := range []Format{FormatArray, FormatMap} {
			t.Run(name+"/"+f.String(), func(t *testing.T) {
				// Unknown events cannot be encoded; drop them.
				in := *b
				in.Events = nil
				for _, ev := range b.Events {
					if _, ok := ev.(*UnknownEvent); !ok {
						in.Events = append(in.Events, ev)
					}
				}
				payload, err := EncodeBatch(nil, &in, f)
				if err != nil {
					t.Fatal(err)
				}
				got, err := DecodeBatch(payload)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(&in, got); diff != "" {
					t.Errorf("round trip (-want +got):\n%s", diff)
				}
			})
		}
	}
}

func TestDecodeMalformed(t *testing.T) {
	tests := []struct {
		name    string
		payload string // hex
	}{
		{"empty", ""},
		{"not a container", "01"},
		{"batch array too short", "91cb41da49e520200000"},
		{"events not an array", "92cb41da49e52020000001"},
		{"ts not a number", "92a1789090"},
		{"event not a container", "92cb41da49e52020000091" + "01"},
		{"event tag not a string", "92cb41da49e52020000091" + "9101"},
		{"empty event array", "92cb41da49e52020000091" + "90"},
		{"map event without type", "92cb41da49e52020000091" + "81a16101"},
		{"BlockStored lacks fields", "92cb41da49e52020000091" + "92ab" + hex.EncodeToString([]byte("BlockStored")) + "9101"},
		{"negative token id", "92cb41da49e52020000091" + "95ab" + hex.EncodeToString([]byte("BlockStored")) + "9101c091ff02"},
		{"zero block size", "92cb41da49e52020000091" + "95ab" + hex.EncodeToString([]byte("BlockStored")) + "9101c0910100"},
		{"hash of wrong type", "92cb41da49e52020000091" + "92ac" + hex.EncodeToString([]byte("BlockRemoved")) + "91c3"},
		{"truncated", "93cb41da49e520200000"},
		{"trailing bytes", "92cb41da49e5202000009000"},
		{"array32 claims 4 billion events", "92cb41da49e520200000ddffffffff"},
		{"deep nesting in unknown field", "92cb41da49e52020000091" + "92a178" + strings.Repeat("91", 100) + "c0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload, err := hex.DecodeString(tt.payload)
			if err != nil {
				t.Fatal(err)
			}
			b, err := DecodeBatch(payload)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodeBatch = %+v, %v; want an error wrapping ErrMalformed", b, err)
			}
		})
	}
}

func TestParseFormat(t *testing.T) {
	for _, f := range []Format{FormatArray, FormatMap} {
		got, err := ParseFormat(f.String())
		if err != nil || got != f {
			t.Errorf("ParseFormat(%q) = %v, %v", f.String(), got, err)
		}
	}
	if _, err := ParseFormat("json"); err == nil {
		t.Error("ParseFormat(json) succeeded")
	}
}

func TestBlockHashUint64(t *testing.T) {
	tests := []struct {
		h    BlockHash
		want uint64
	}{
		{IntHash(7), 7},
		{SignedHash(-1), 1<<64 - 1},
		{BytesHash(bytesSeq(32)), 0x18191a1b1c1d1e1f},
		{BytesHash([]byte{1, 2}), 0x0102},
	}
	for _, tt := range tests {
		if got := tt.h.Uint64(); got != tt.want {
			t.Errorf("%v.Uint64() = %#x, want %#x", tt.h, got, tt.want)
		}
	}
}

func FuzzDecodeBatch(f *testing.F) {
	for name := range goldenBatches {
		f.Add(readHex(f, name))
	}
	f.Add([]byte{0x92, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0x90})
	for _, v := range fuzzseed.MsgpackValues() {
		f.Add(v)
		// As the batch's events and as one event's fields.
		f.Add(append([]byte{0x92, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0}, v...))
		f.Add(append([]byte{0x92, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0x91, 0x92, 0xab, 'B', 'l', 'o', 'c', 'k', 'S', 't', 'o', 'r', 'e', 'd'}, v...))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		b, err := DecodeBatch(payload)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		// Whatever decodes must re-encode and decode to the same batch
		// (unknown events aside).
		known := *b
		known.Events = nil
		for _, ev := range b.Events {
			if _, ok := ev.(*UnknownEvent); !ok {
				known.Events = append(known.Events, ev)
			}
		}
		for _, f := range []Format{FormatArray, FormatMap} {
			payload2, err := EncodeBatch(nil, &known, f)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			b2, err := DecodeBatch(payload2)
			if err != nil {
				t.Fatalf("decode of re-encoded batch: %v", err)
			}
			if diff := cmp.Diff(&known, b2, cmp.Comparer(sameFloat), cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("re-encoded batch differs:\n%s", diff)
			}
		}
	})
}

// sameFloat treats NaNs as equal, since a fuzzed ts may be NaN.
func sameFloat(a, b float64) bool { return a == b || (a != a && b != b) }

func BenchmarkDecodeBatch(b *testing.B) {
	payload := readHex(b, "vllm_0_26_map.hex")
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeBatch(payload); err != nil {
			b.Fatal(err)
		}
	}
}
