package framework

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
)

// Factory builds a plugin instance. It decodes params strictly (unknown
// fields are errors) and validates them; errors name the offending field.
type Factory func(name string, params json.RawMessage, h Handle) (Plugin, error)

// ErrUnknownPluginType is returned by Registry.New for an unregistered type.
var ErrUnknownPluginType = errors.New("unknown plugin type")

// Registry maps plugin types to factories. Wiring code registers plugins
// explicitly; the registry is safe for concurrent use and refuses duplicates.
type Registry struct {
	mu        sync.RWMutex
	factories map[string]Factory
}

// Register adds a factory for typ.
func (r *Registry) Register(typ string, f Factory) error {
	if typ == "" || f == nil {
		return errors.New("register plugin: empty type or nil factory")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.factories == nil {
		r.factories = make(map[string]Factory)
	}
	if _, dup := r.factories[typ]; dup {
		return fmt.Errorf("register plugin %q: already registered", typ)
	}
	r.factories[typ] = f
	return nil
}

// New builds a plugin of type typ. An empty name defaults to the type.
func (r *Registry) New(typ, name string, params json.RawMessage, h Handle) (Plugin, error) {
	r.mu.RLock()
	f, ok := r.factories[typ]
	r.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w %q (known: %v)", ErrUnknownPluginType, typ, r.Types())
	}
	if name == "" {
		name = typ
	}
	return f(name, params, h)
}

// Types lists the registered types, sorted.
func (r *Registry) Types() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.factories))
	for t := range r.factories {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// DecodeParams decodes a plugin's JSON params into out, strictly: unknown
// fields and trailing data are errors. Empty or null params leave out as it is,
// so factories set defaults before calling it.
func DecodeParams(params json.RawMessage, out any) error {
	if len(params) == 0 || string(params) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(params))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("params: %w", err)
	}
	if dec.More() {
		return errors.New("params: trailing data after the object")
	}
	return nil
}
