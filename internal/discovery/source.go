package discovery

import (
	"context"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/datastore"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// Source reports the endpoints that exist. Run calls update with the whole
// set at least once, and again whenever it changes, until ctx is done.
type Source interface {
	Run(ctx context.Context, update func([]datastore.EndpointSpec)) error
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context, update func([]datastore.EndpointSpec)) error

// Run calls f.
func (f SourceFunc) Run(ctx context.Context, update func([]datastore.EndpointSpec)) error {
	return f(ctx, update)
}

// Specs converts a defaulted config's endpoints block.
func Specs(eps []config.EndpointSpec) []datastore.EndpointSpec {
	out := make([]datastore.EndpointSpec, 0, len(eps))
	for _, e := range eps {
		spec := datastore.EndpointSpec{
			Pool: e.Pool,
			Metadata: framework.EndpointMetadata{
				Name:     e.Name,
				Address:  strings.TrimSuffix(e.URL, "/"),
				Model:    e.Model,
				Role:     framework.Role(e.Role),
				Labels:   maps.Clone(e.Labels),
				Adapters: slices.Clone(e.Adapters),
			},
		}
		if k := e.KVEvents; k != nil {
			spec.KVEvents = &datastore.KVEvents{Endpoint: k.Endpoint, ReplayEndpoint: k.ReplayEndpoint, Topic: k.Topic}
		}
		out = append(out, spec)
	}
	return out
}

// Static is a fixed set of endpoints.
type Static struct {
	Endpoints []datastore.EndpointSpec
}

// Run reports the set once and waits for ctx.
func (s *Static) Run(ctx context.Context, update func([]datastore.EndpointSpec)) error {
	update(s.Endpoints)
	<-ctx.Done()
	return nil
}

// File watches a config file and reports its endpoints block whenever the
// file's modification time changes and it still loads. A file that fails to
// load is logged and the previous set is kept.
type File struct {
	Path string
	// Poll is how often the file's modification time is checked; default 2s.
	Poll time.Duration
	Log  *slog.Logger
}

// Run reports the file's endpoints, then follows its changes.
func (f *File) Run(ctx context.Context, update func([]datastore.EndpointSpec)) error {
	poll := f.Poll
	if poll <= 0 {
		poll = 2 * time.Second
	}
	log := f.Log
	if log == nil {
		log = slog.Default()
	}
	var last time.Time
	check := func() error {
		st, err := os.Stat(f.Path)
		if err != nil {
			return err
		}
		if st.ModTime().Equal(last) {
			return nil
		}
		cfg, err := config.Load(f.Path)
		if err != nil {
			return err
		}
		last = st.ModTime()
		update(Specs(cfg.Endpoints))
		return nil
	}
	if err := check(); err != nil {
		return err
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := check(); err != nil {
				log.Warn("endpoints file not reloaded", "path", f.Path, "error", err)
			}
		}
	}
}

var (
	_ Source = (*Static)(nil)
	_ Source = (*File)(nil)
	_ Source = SourceFunc(nil)
)
