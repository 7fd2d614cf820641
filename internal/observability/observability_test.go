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
			if got := strings.Contains(out, "d"); tt.wantDebug && !strings.Contains(out, `msg=d`) || !tt.wantDebug && strings.Contains(out, `msg=d `) {
				t.Errorf("debug line present=%v in %q", got, out)
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
