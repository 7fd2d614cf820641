package v1alpha1

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/halyard-dev/halyard/internal/fuzzseed"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestLoadGolden loads every testdata/*.yaml and compares the defaulted
// configuration (as YAML) or the error, one per line, with testdata/*.golden.
func TestLoadGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			var got string
			c, err := Load(f)
			if err != nil {
				var es Errors
				if errors.As(err, &es) {
					lines := make([]string, len(es))
					for i, e := range es {
						lines[i] = e.Error()
					}
					got = "error:\n" + strings.Join(lines, "\n") + "\n"
				} else {
					got = "error: " + err.Error() + "\n"
				}
			} else {
				b, err := yaml.Marshal(c)
				if err != nil {
					t.Fatal(err)
				}
				got = string(b)
			}
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("%s (-want +got):\n%s", golden, diff)
			}
		})
	}
}

func TestDefaultIsIdempotentAndValidatesRoundTrip(t *testing.T) {
	c, err := Load("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Parse(b)
	if err != nil {
		t.Fatalf("re-parsing the marshalled config: %v", err)
	}
	if diff := cmp.Diff(c, c2); diff != "" {
		t.Errorf("round trip changed the config (-first +second):\n%s", diff)
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{"empty", ``, "empty document"},
		{"not a mapping", `[1,2]`, "document must be a mapping"},
		{"nested unknown", "apiVersion: config.halyard.dev/v1alpha1\nkind: Config\nrouter: {timeouts: {conect: 1s}}", "router.timeouts.conect: unknown field"},
		{"type in list", "apiVersion: config.halyard.dev/v1alpha1\nkind: Config\nendpoints: [{url: 'http://a:1', model: m, adapters: 3}]", "endpoints[0].adapters: must be a list, got a number"},
		{"fractional int", "apiVersion: config.halyard.dev/v1alpha1\nkind: Config\nrouter: {maxAttempts: 1.5}", "router.maxAttempts: must be an integer, got a number"},
		{"int32 overflow", "apiVersion: config.halyard.dev/v1alpha1\nkind: Config\nroutes: [{model: m, targets: [{pool: p, weight: 5000000000}]}]", "routes[0].targets[0].weight: 5e+09 is out of range"},
		{"bad duration", "apiVersion: config.halyard.dev/v1alpha1\nkind: Config\nrouter: {scrapeInterval: soon}", "router.scrapeInterval: time: invalid duration \"soon\""},
		{"tracing protocol", "apiVersion: config.halyard.dev/v1alpha1\nkind: Config\ntracing: {enabled: true, protocol: http/json}", `tracing.protocol: must be "grpc" or "http/protobuf", got "http/json"`},
		{"tracing sample ratio", "apiVersion: config.halyard.dev/v1alpha1\nkind: Config\ntracing: {sampleRatio: 2}", "tracing.sampleRatio: must be between 0 and 1, got 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestParseRefusesAliasBomb: a "billion laughs" document (nine levels of
// nine aliases, 387 million strings if expanded) is refused with an error
// that names the aliasing, not expanded: the YAML library bounds alias
// expansion relative to the document's size.
func TestParseRefusesAliasBomb(t *testing.T) {
	for _, doc := range [][]byte{
		fuzzseed.YAMLAliasBomb(),
		append([]byte("router: {maxAttempts: 2}\n"), fuzzseed.YAMLAliasBomb()...),
	} {
		_, err := Parse(doc)
		if err == nil || !strings.Contains(err.Error(), "excessive aliasing") {
			t.Errorf("err = %v, want the YAML library's excessive aliasing error", err)
		}
	}
}

// FuzzParse checks that no document makes Parse panic, and that whatever it
// accepts is valid and survives a marshal round trip.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("{}"))
	f.Add([]byte("router: {profiles: {x: {scorers: [{type: a, params: [1]}]}}}"))
	for _, d := range fuzzseed.YAMLDocuments() {
		f.Add(d)
	}
	for _, d := range fuzzseed.JSONDocuments(`{"router":{"maxAttempts":1},"endpoints":`) {
		f.Add(d)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that Validate rejects: %v", err)
		}
		b, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("marshal accepted config: %v", err)
		}
		if _, err := Parse(b); err != nil {
			t.Fatalf("re-parse of accepted config: %v\n%s", err, b)
		}
	})
}
