package observability

import (
	"bytes"
	"strings"
	"testing"
)

func TestNewLogger(t *testing.T) {
	tests := []struct {
		level, format string
		wantErr       bool
		wantDebug     bool
		wantPrefix    string
	}{
		{"debug", "text", false, true, "time="},
		{"info", "json", false, false, "{"},
		{"warn", "", false, false, ""},
		{"loud", "text", true, false, ""},
		{"info", "xml", true, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.level+"/"+tt.format, func(t *testing.T) {
			var buf bytes.Buffer
			log, err := NewLogger(&buf, tt.level, tt.format)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			log.Debug("d", "k", 1)
			log.Warn("w", "k", 2)
			out := buf.String()
			lines := strings.Count(out, "\n")
			if want := map[bool]int{true: 2, false: 1}[tt.wantDebug]; lines != want {
				t.Errorf("%d lines logged, want %d: %q", lines, want, out)
			}
			if !strings.HasPrefix(out, tt.wantPrefix) || !strings.Contains(out, "w") {
				t.Errorf("output %q", out)
			}
		})
	}
}

func TestRouterMetricsNamesArePrefixed(t *testing.T) {
	m := NewRouterMetrics()
	m.Requests.WithLabelValues("m", "e", "200").Inc()
	m.AddedLatency.WithLabelValues("request").Observe(0.0001)
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, f := range fams {
		n := f.GetName()
		if strings.HasPrefix(n, "go_") || strings.HasPrefix(n, "process_") {
			continue
		}
		if !strings.HasPrefix(n, "halyard_router_") {
			t.Errorf("metric %s lacks the halyard_router_ prefix", n)
		}
		seen++
	}
	if seen < 3 {
		t.Errorf("only %d router families gathered", seen)
	}
}
