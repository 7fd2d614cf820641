package vllmapi

import (
	"github.com/halyard-dev/halyard/internal/simulator/vllmapi/wire"

	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"
)

// Faults are injected failures. The zero value injects none. Set them at
// start (Options.Faults, the --fault-* flags) or at run time with
// POST /admin/faults.
type Faults struct {
	// ErrorRate is the fraction of generation requests answered with a 500
	// error before any byte of a response.
	ErrorRate float64 `json:"errorRate"`
	// SpikeRate is the fraction of engine steps that take SpikeDuration
	// longer (a latency spike that every running request feels).
	SpikeRate     float64  `json:"spikeRate"`
	SpikeDuration Duration `json:"spikeDuration"`
	// CrashAfterTokens > 0 drops the connection of a generation request
	// (without ending the response) once that many tokens were generated,
	// for a CrashRate fraction of requests (CrashRate 0 means all).
	CrashAfterTokens int     `json:"crashAfterTokens"`
	CrashRate        float64 `json:"crashRate"`
	// Unhealthy makes /health answer 503 and refuses generation requests
	// with 503, as an engine that is not ready.
	Unhealthy bool `json:"unhealthy"`
}

// Validate checks the ranges and names the field of each error.
func (f Faults) Validate() error {
	var errs []error
	rate := func(name string, v float64) {
		if v < 0 || v > 1 || v != v {
			errs = append(errs, fmt.Errorf("%s: must be in [0, 1], got %v", name, v))
		}
	}
	rate("errorRate", f.ErrorRate)
	rate("spikeRate", f.SpikeRate)
	rate("crashRate", f.CrashRate)
	if f.SpikeDuration.Duration < 0 {
		errs = append(errs, fmt.Errorf("spikeDuration: must be >= 0, got %v", f.SpikeDuration))
	}
	if f.CrashAfterTokens < 0 {
		errs = append(errs, fmt.Errorf("crashAfterTokens: must be >= 0, got %d", f.CrashAfterTokens))
	}
	return errors.Join(errs...)
}

// Duration is a time.Duration written as a Go duration string ("200ms").
type Duration struct{ time.Duration }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string such as "250ms".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"100ms\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// faultState holds the current faults and a seeded generator.
type faultState struct {
	mu  sync.Mutex
	f   Faults
	rng *rand.Rand
}

func (s *faultState) get() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f
}

func (s *faultState) set(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.f = f
}

// draw decides the faults of one request: whether it fails at once, and
// after how many tokens its connection drops (0: never).
func (s *faultState) draw() (fail bool, crashAfter int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f.ErrorRate > 0 && s.rng.Float64() < s.f.ErrorRate {
		return true, 0
	}
	if s.f.CrashAfterTokens > 0 && (s.f.CrashRate == 0 || s.rng.Float64() < s.f.CrashRate) {
		return false, s.f.CrashAfterTokens
	}
	return false, 0
}

func (s *Server) handleFaults(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		writeJSON(w, http.StatusOK, s.faults.get())
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, wire.BadRequest("", "read body: %v", err))
		return
	}
	var f Faults
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		writeError(w, wire.BadRequest("", "invalid faults: %v", err))
		return
	}
	if err := f.Validate(); err != nil {
		writeError(w, wire.BadRequest("", "invalid faults: %v", err))
		return
	}
	s.applyFaults(f)
	s.log.Info("faults changed", "faults", f)
	writeJSON(w, http.StatusOK, f)
}

func (s *Server) applyFaults(f Faults) {
	s.faults.set(f)
	s.engine.SetStepSpike(f.SpikeRate, f.SpikeDuration.Duration)
}
