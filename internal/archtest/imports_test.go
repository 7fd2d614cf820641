package archtest

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/halyard-dev/halyard"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// rule forbids packages under from to depend (transitively) on packages
// under any of deny, except those under allow.
type rule struct {
	from  string
	deny  []string
	allow []string
}

func TestImportBoundaries(t *testing.T) {
	in := func(p string) string { return module + "/internal/" + p }
	rules := []rule{
		{from: in("scheduling/framework"), deny: []string{module + "/internal/", module + "/api/"}, allow: []string{in("scheduling/framework")}},
		{from: in("scheduling/plugins/"), deny: []string{in("router"), in("routing"), in("simulator"), in("bench"), in("datastore"), in("discovery"), in("controller"), in("cli")}},
		{from: in("simulator"), deny: []string{in("router"), in("routing"), in("scheduling"), in("datastore"), in("bench"), in("controller")}},
		{from: in("prefixindex"), deny: []string{in("router"), in("scheduling"), in("simulator"), in("bench")}},
		{from: in("router"), deny: []string{in("simulator"), in("bench"), in("controller")}},
		// The decision (DESIGN.md §16) is transport-free: the router and
		// the virtual fleet drive it, it knows neither.
		{from: in("decision"), deny: []string{in("router"), in("routing"), in("datastore"), in("discovery"), in("bench"), in("simulator"), in("controller"), in("cli")}},
		// The virtual fleet decides through package decision, never
		// through the router.
		{from: in("bench/virtual"), deny: []string{in("router"), in("datastore"), in("discovery")}},
	}
	// The bench talks HTTP only, except its virtual-time mode.
	for _, p := range []string{"arrival", "client", "enginestats", "report", "stats", "trace", "workload", "benchtest"} {
		rules = append(rules, rule{from: in("bench/" + p), deny: []string{in("router"), in("scheduling"), in("simulator"), in("datastore")}})
	}
	// Transport-free packages do not speak HTTP themselves (their
	// dependencies may: the Prometheus client imports net/http).
	direct := map[string][]string{in("decision"): {"net/http"}, in("scheduling/pd"): {"net/http"}}
	for _, p := range listPackages(t) {
		for from, deny := range direct {
			if !strings.HasPrefix(p.ImportPath, from) {
				continue
			}
			for _, imp := range p.Imports {
				for _, d := range deny {
					if imp == d {
						t.Errorf("%s imports %s: the decision is transport-free (DESIGN.md §16)", p.ImportPath, imp)
					}
				}
			}
		}
		for _, r := range rules {
			if !strings.HasPrefix(p.ImportPath, r.from) {
				continue
			}
			for _, d := range p.Deps {
				if denied(d, r) {
					t.Errorf("%s depends on %s, which DESIGN.md §2 forbids", p.ImportPath, d)
				}
			}
		}
	}
}

func denied(dep string, r rule) bool {
	for _, a := range r.allow {
		if strings.HasPrefix(dep, a) {
			return false
		}
	}
	for _, d := range r.deny {
		if strings.HasPrefix(dep, d) {
			return true
		}
	}
	return false
}
