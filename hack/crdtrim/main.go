// Command crdtrim removes the descriptions that controller-gen copies from
// Kubernetes' own types into the pod templates embedded in Halyard's CRDs.
// They would make the ModelServing CRD about 1.3 MB, close to etcd's request
// limit; without them it is about a third of that. Descriptions of
// Halyard's own fields stay, so `kubectl explain` still documents them.
//
//	go run ./hack/crdtrim config/crd/bases/*.yaml
package main

import (
	"fmt"
	"os"

	"sigs.k8s.io/yaml"
)

// trimmed lists the property names whose subtrees lose their descriptions.
var trimmed = map[string]bool{"template": true, "workerTemplate": true}

func main() {
	for _, path := range os.Args[1:] {
		if err := trimFile(path); err != nil {
			fmt.Fprintln(os.Stderr, "crdtrim:", err)
			os.Exit(1)
		}
	}
}

func trimFile(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	walk(doc, false)
	out, err := yaml.Marshal(doc)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, append([]byte("---\n"), out...), 0o644)
}

// walk strips "description" keys below a trimmed property; the trimmed
// property keeps its own description.
func walk(n any, strip bool) {
	switch v := n.(type) {
	case map[string]any:
		if strip {
			delete(v, "description")
		}
		for k, child := range v {
			if k == "properties" {
				if props, ok := child.(map[string]any); ok {
					for name, p := range props {
						if trimmed[name] {
							if pm, ok := p.(map[string]any); ok {
								for pk, pc := range pm {
									if pk != "description" {
										walk(pc, true)
									}
								}
								continue
							}
						}
						walk(p, strip)
					}
					continue
				}
			}
			walk(child, strip)
		}
	case []any:
		for _, child := range v {
			walk(child, strip)
		}
	}
}
