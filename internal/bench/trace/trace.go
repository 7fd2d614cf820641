package trace

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// MooncakeBlockTokens is the number of tokens one Mooncake hash id stands for.
const MooncakeBlockTokens = 512

// maxLineBytes bounds one line of a trace.
const maxLineBytes = 16 << 20

// LineError is a parse error at a line of a trace (1-based).
type LineError struct {
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// MooncakeEntry is one request of the Mooncake trace.
type MooncakeEntry struct {
	// Timestamp is the arrival time in milliseconds from the trace's start.
	Timestamp int64 `json:"timestamp"`
	// InputLength and OutputLength are in tokens.
	InputLength  int `json:"input_length"`
	OutputLength int `json:"output_length"`
	// HashIDs name the prompt's 512-token blocks in order; equal ids mean
	// equal content.
	HashIDs []int64 `json:"hash_ids"`
}

// Validate checks one entry's fields.
func (e *MooncakeEntry) Validate() error {
	switch {
	case e.Timestamp < 0:
		return fmt.Errorf("timestamp: must not be negative, got %d", e.Timestamp)
	case e.InputLength <= 0:
		return fmt.Errorf("input_length: must be positive, got %d", e.InputLength)
	case e.OutputLength < 0:
		return fmt.Errorf("output_length: must not be negative, got %d", e.OutputLength)
	}
	need := (e.InputLength + MooncakeBlockTokens - 1) / MooncakeBlockTokens
	if len(e.HashIDs) < need {
		return fmt.Errorf("hash_ids: %d ids cannot cover input_length %d (need %d blocks of %d)",
			len(e.HashIDs), e.InputLength, need, MooncakeBlockTokens)
	}
	for i, h := range e.HashIDs {
		if h < 0 {
			return fmt.Errorf("hash_ids[%d]: must not be negative, got %d", i, h)
		}
	}
	return nil
}

// ReadMooncake reads a Mooncake trace. Blank lines are skipped; any other
// line must be one JSON object with exactly the known fields. Timestamps must
// not decrease.
func ReadMooncake(r io.Reader) ([]MooncakeEntry, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLineBytes)
	var out []MooncakeEntry
	line := 0
	var last int64
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var e MooncakeEntry
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return nil, &LineError{line, err}
		}
		if dec.More() {
			return nil, &LineError{line, errors.New("trailing data after the object")}
		}
		if err := e.Validate(); err != nil {
			return nil, &LineError{line, err}
		}
		if e.Timestamp < last {
			return nil, &LineError{line, fmt.Errorf("timestamp: %d is before the previous line's %d", e.Timestamp, last)}
		}
		last = e.Timestamp
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, &LineError{line + 1, err}
	}
	return out, nil
}

// AzureEntry is one request of an Azure LLM inference trace.
type AzureEntry struct {
	// At is the arrival time from the trace's first request.
	At time.Duration
	// ContextTokens and GeneratedTokens are the prompt and output lengths.
	ContextTokens   int
	GeneratedTokens int
}

// AzureTimeLayout is the layout of the TIMESTAMP column.
const AzureTimeLayout = "2006-01-02 15:04:05.9999999"

// ReadAzure reads an Azure trace: a header line TIMESTAMP,ContextTokens,
// GeneratedTokens, then one request per line. Times must not decrease.
func ReadAzure(r io.Reader) ([]AzureEntry, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = 3
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &LineError{1, errors.New("empty trace: want a header TIMESTAMP,ContextTokens,GeneratedTokens")}
		}
		return nil, &LineError{1, err}
	}
	want := []string{"TIMESTAMP", "ContextTokens", "GeneratedTokens"}
	for i, h := range header {
		if strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")) != want[i] {
			return nil, &LineError{1, fmt.Errorf("header column %d is %q, want %q", i+1, h, want[i])}
		}
	}
	var out []AzureEntry
	var first, prev time.Time
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, &LineError{pe.Line, pe.Err}
			}
			return nil, &LineError{len(out) + 2, err}
		}
		line, _ := cr.FieldPos(0)
		ts, err := time.Parse(AzureTimeLayout, strings.TrimSpace(rec[0]))
		if err != nil {
			return nil, &LineError{line, fmt.Errorf("TIMESTAMP: %w", err)}
		}
		ctx, err := parseCount(rec[1], false)
		if err != nil {
			return nil, &LineError{line, fmt.Errorf("ContextTokens: %w", err)}
		}
		gen, err := parseCount(rec[2], true)
		if err != nil {
			return nil, &LineError{line, fmt.Errorf("GeneratedTokens: %w", err)}
		}
		if len(out) == 0 {
			first, prev = ts, ts
		}
		if ts.Before(prev) {
			return nil, &LineError{line, fmt.Errorf("TIMESTAMP: %s is before the previous line's", rec[0])}
		}
		prev = ts
		out = append(out, AzureEntry{At: ts.Sub(first), ContextTokens: ctx, GeneratedTokens: gen})
	}
	return out, nil
}

func parseCount(s string, zeroOK bool) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not an integer", s)
	}
	if n < 0 || (n == 0 && !zeroOK) {
		return 0, fmt.Errorf("%d is out of range", n)
	}
	return n, nil
}
