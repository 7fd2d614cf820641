package trace

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/fuzzseed"
)

func TestReadMooncake(t *testing.T) {
	in := `{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [0, 1]}

{"timestamp": 12, "input_length": 512, "output_length": 0, "hash_ids": [0]}
`
	got, err := ReadMooncake(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []MooncakeEntry{
		{Timestamp: 0, InputLength: 600, OutputLength: 5, HashIDs: []int64{0, 1}},
		{Timestamp: 12, InputLength: 512, OutputLength: 0, HashIDs: []int64{0}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ReadMooncake mismatch (-want +got):\n%s", diff)
	}
}

func TestReadMooncakeBadLines(t *testing.T) {
	good := `{"timestamp": 5, "input_length": 10, "output_length": 5, "hash_ids": [0]}` + "\n"
	tests := []struct {
		name     string
		bad      string
		wantLine int
		wantText string
	}{
		{"not json", "hello", 3, "invalid character"},
		{"unknown field", `{"timestamp": 5, "input_length": 10, "output_length": 5, "hash_ids": [0], "extra": 1}`, 3, "unknown field"},
		{"too few hash ids", `{"timestamp": 5, "input_length": 1025, "output_length": 5, "hash_ids": [0, 1]}`, 3, "hash_ids"},
		{"zero input", `{"timestamp": 5, "input_length": 0, "output_length": 5, "hash_ids": []}`, 3, "input_length"},
		{"negative output", `{"timestamp": 5, "input_length": 3, "output_length": -1, "hash_ids": [1]}`, 3, "output_length"},
		{"time goes back", `{"timestamp": 4, "input_length": 3, "output_length": 1, "hash_ids": [1]}`, 3, "before the previous"},
		{"wrong type", `{"timestamp": "x", "input_length": 3, "output_length": 1, "hash_ids": [1]}`, 3, "timestamp"},
		{"trailing data", `{"timestamp": 5, "input_length": 3, "output_length": 1, "hash_ids": [1]} {}`, 3, "trailing"},
		{"negative hash", `{"timestamp": 5, "input_length": 3, "output_length": 1, "hash_ids": [-2]}`, 3, "hash_ids[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadMooncake(strings.NewReader(good + good + tt.bad + "\n" + good))
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatalf("error = %v, want a *LineError", err)
			}
			if le.Line != tt.wantLine {
				t.Errorf("line = %d, want %d (%v)", le.Line, tt.wantLine, err)
			}
			if !strings.Contains(err.Error(), tt.wantText) || !strings.HasPrefix(err.Error(), "line 3: ") {
				t.Errorf("error %q should start with %q and mention %q", err, "line 3: ", tt.wantText)
			}
		})
	}
}

func TestReadAzure(t *testing.T) {
	in := "TIMESTAMP,ContextTokens,GeneratedTokens\n" +
		"2023-11-16 18:17:03.9799600,4808,10\n" +
		"2023-11-16 18:17:04.0319600,3180,0\n" +
		"2023-11-16 18:17:05.5,110,27\n"
	got, err := ReadAzure(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []AzureEntry{
		{At: 0, ContextTokens: 4808, GeneratedTokens: 10},
		{At: 52 * time.Millisecond, ContextTokens: 3180, GeneratedTokens: 0},
		{At: 1520040 * time.Microsecond, ContextTokens: 110, GeneratedTokens: 27},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ReadAzure mismatch (-want +got):\n%s", diff)
	}
}

func TestReadAzureBadLines(t *testing.T) {
	header := "TIMESTAMP,ContextTokens,GeneratedTokens\n"
	good := "2023-11-16 18:17:03.9799600,4808,10\n"
	tests := []struct {
		name     string
		in       string
		wantLine int
		wantText string
	}{
		{"empty", "", 1, "empty trace"},
		{"bad header", "time,ctx,gen\n" + good, 1, "header column 1"},
		{"bad time", header + good + "yesterday,1,2\n", 3, "TIMESTAMP"},
		{"bad context", header + good + "2023-11-16 18:17:04.0,abc,2\n", 3, "ContextTokens"},
		{"zero context", header + good + "2023-11-16 18:17:04.0,0,2\n", 3, "ContextTokens"},
		{"negative generated", header + good + "2023-11-16 18:17:04.0,5,-2\n", 3, "GeneratedTokens"},
		{"missing column", header + good + good + "2023-11-16 18:17:04.0,5\n", 4, "number of fields"},
		{"time goes back", header + good + "2023-11-16 18:17:03.0,5,2\n", 3, "before the previous"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadAzure(strings.NewReader(tt.in))
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatalf("error = %v, want a *LineError", err)
			}
			if le.Line != tt.wantLine {
				t.Errorf("line = %d, want %d (%v)", le.Line, tt.wantLine, err)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q should mention %q", err, tt.wantText)
			}
		})
	}
}

// TestVendoredTraces reads the traces shipped in the repository.
func TestVendoredTraces(t *testing.T) {
	root := filepath.Join("..", "..", "..", "traces")
	f, err := os.Open(filepath.Join(root, "conversation_trace.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mc, err := ReadMooncake(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(mc) != 12031 {
		t.Errorf("mooncake entries = %d, want 12031", len(mc))
	}
	if last := mc[len(mc)-1].Timestamp; last < 3_500_000 || last > 3_600_000 {
		t.Errorf("mooncake last timestamp = %d ms, want about 3,537 s", last)
	}
	for _, tc := range []struct {
		file string
		n    int
	}{{"AzureLLMInferenceTrace_code.csv", 8819}, {"AzureLLMInferenceTrace_conv.csv", 19366}} {
		f, err := os.Open(filepath.Join(root, tc.file))
		if err != nil {
			t.Fatal(err)
		}
		az, err := ReadAzure(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if len(az) != tc.n {
			t.Errorf("%s: %d entries, want %d", tc.file, len(az), tc.n)
		}
		if span := az[len(az)-1].At; span < 50*time.Minute || span > 70*time.Minute {
			t.Errorf("%s: spans %v, want about an hour", tc.file, span)
		}
	}
}

func FuzzReadMooncake(f *testing.F) {
	f.Add([]byte(`{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [0, 1]}` + "\n"))
	f.Add([]byte("{}\n\n{\"timestamp\":1}"))
	f.Add([]byte(`{"timestamp": 0, "input_length": 1e9, "output_length": 5, "hash_ids": []}`))
	for _, base := range []string{`{"timestamp": 0, "output_length": 5, "hash_ids": [0], "input_length": `, `{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": `, `{"input_length": 600, "output_length": 5, "hash_ids": [0], "timestamp": `} {
		for _, d := range fuzzseed.JSONDocuments(base) {
			f.Add(append(d, '\n'))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := ReadMooncake(strings.NewReader(string(data)))
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) || le.Line < 1 {
				t.Fatalf("error %v does not name a line", err)
			}
			return
		}
		for _, e := range entries {
			if err := e.Validate(); err != nil {
				t.Fatalf("accepted an invalid entry %+v: %v", e, err)
			}
		}
	})
}

func FuzzReadAzure(f *testing.F) {
	f.Add([]byte("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,4808,10\n"))
	f.Add([]byte("TIMESTAMP,ContextTokens,GeneratedTokens\n\"x\n"))
	f.Add([]byte(""))
	const head = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
	for _, row := range []string{
		"2023-11-16 18:17:03.9799600," + strings.Repeat("9", 400) + ",10",
		"2023-11-16 18:17:03.9799600,1e400,10", "2023-11-16 18:17:03.9799600,-1,-1", "9999-99-99 99:99:99,1,1",
		"2023-11-16 18:17:03.9799600,4808,10,extra", "\xff\xfe,1,1", "2023-11-16 18:17:03\x00,1,1", "\"a\"\"b,1,1",
		"2023-11-16 18:17:03.9799600,4808,10\n2023-11-16 18:17:02.0,4808,10", // back in time
	} {
		f.Add([]byte(head + row + "\n"))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := ReadAzure(strings.NewReader(string(data)))
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) || le.Line < 1 {
				t.Fatalf("error %v does not name a line", err)
			}
			return
		}
		for i, e := range entries {
			if e.At < 0 || e.ContextTokens <= 0 || e.GeneratedTokens < 0 {
				t.Fatalf("entry %d out of range: %+v", i, e)
			}
			if i > 0 && e.At < entries[i-1].At {
				t.Fatalf("entry %d goes back in time", i)
			}
		}
	})
}
