package controller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/weights"
	"github.com/halyard-dev/halyard/internal/weights/dragonfly"
)

// Preheater warms a model's files in Dragonfly's seed peers before (and
// while) the pods of a new revision fetch them.
type Preheater interface {
	// Preheat starts a preheat of what a fetch of source with fetch's
	// filters downloads; it returns the job and the number of files.
	Preheat(ctx context.Context, source string, fetch *servingv1.FetchSpec) (job int64, files int, err error)
	// Job reports a job's state: Pending, Success or Failure.
	Job(ctx context.Context, job int64) (state, message string, err error)
}

// errNoURLs: the source has no plain download URLs to preheat.
var errNoURLs = errors.New("only hf, modelscope and http(s) sources can be preheated")

// DragonflyPreheater preheats through a Dragonfly manager's Open API. It
// lists the files as `halyard fetch` would (same endpoint, filters, tag and
// application), so the preheated tasks are the fetched ones.
type DragonflyPreheater struct {
	Manager dragonfly.Manager
	// HFEndpoint is the hub the fetches use (empty: the public hub).
	HFEndpoint string
	// ModelScopeEndpoint is the ModelScope hub the fetches use (empty: the
	// public one).
	ModelScopeEndpoint string
	// Tag and Application must equal the fetch's --dragonfly-tag and
	// --dragonfly-application.
	Tag, Application string
	// Scope is single_seed_peer, all_seed_peers (default) or all_peers.
	Scope string
	// Client lists the files; default a client with a 30 s timeout.
	Client *http.Client
}

// Preheat implements Preheater. Gated repositories are not preheated: the
// controller does not read the ModelServing's credentials.
func (d *DragonflyPreheater) Preheat(ctx context.Context, source string, fetch *servingv1.FetchSpec) (int64, int, error) {
	src, err := weights.ParseSource(source)
	if err != nil {
		return 0, 0, err
	}
	if src.Scheme != "hf" && src.Scheme != "modelscope" && src.Scheme != "http" && src.Scheme != "https" {
		return 0, 0, errNoURLs
	}
	c := d.Client
	if c == nil {
		c = &http.Client{Timeout: 30 * time.Second}
	}
	o := weights.Options{Endpoint: d.HFEndpoint, ModelScopeEndpoint: d.ModelScopeEndpoint, Client: c}
	if fetch != nil {
		o.Include, o.Exclude = fetch.Include, fetch.Exclude
	}
	l, err := weights.ListSource(ctx, source, o)
	if err != nil {
		return 0, 0, err
	}
	job, err := d.Manager.Preheat(ctx, dragonfly.PreheatArgs{
		URLs: l.URLs, Scope: d.Scope, Tag: d.Tag, Application: d.Application,
	})
	if err != nil {
		return 0, len(l.URLs), err
	}
	return job.ID, len(l.URLs), nil
}

// Job implements Preheater.
func (d *DragonflyPreheater) Job(ctx context.Context, id int64) (string, string, error) {
	j, err := d.Manager.Job(ctx, id)
	if err != nil {
		return "", "", err
	}
	switch {
	case !j.Done():
		return "Pending", "", nil
	case j.Succeeded():
		return "Success", "", nil
	default:
		return "Failure", string(j.Result), nil
	}
}

// preheatTimeout bounds one call to the manager or the origin from a
// reconcile.
const preheatTimeout = 10 * time.Second

// preheatPoll is how often a pending preheat job is looked at.
const preheatPoll = 2 * time.Second

// preheat starts a preheat of the update revision when ms uses dragonfly
// distribution and a manager is configured, follows it, and sets the
// Preheated condition. With a PreheatGate, the revision's groups that have
// no pods yet wait for the job (p.preheatHold) until it ends or the gate
// elapses; without one the pods are created in the same reconcile and fetch
// through their peers (falling back to the origin) whatever the preheat does.
func (r *ModelServingReconciler) preheat(ctx context.Context, ms *servingv1.ModelServing, st *servingv1.ModelServingStatus, p *planner) {
	r.followPreheat(ctx, ms, st, p)
	r.gatePreheat(ms, st, p)
}

func (r *ModelServingReconciler) followPreheat(ctx context.Context, ms *servingv1.ModelServing, st *servingv1.ModelServingStatus, p *planner) {
	dist, ok := r.Weights.fetched(ms)
	if !ok || dist != servingv1.DistributionDragonfly || r.Weights.Preheater == nil || st.Weights == nil {
		return
	}
	cur := st.Weights.Preheat
	key := string(ms.UID) + "/" + p.rev + "/" + ms.Spec.Model.Source
	if cur == nil || cur.Revision != p.rev || cur.Source != ms.Spec.Model.Source {
		// A job created by a reconcile whose status write was lost (a
		// conflict) is not created twice.
		if v, ok := r.preheats.Load(key); ok {
			st.Weights.Preheat = v.(*servingv1.PreheatStatus).DeepCopy()
			p.wake(p.now.Add(preheatPoll))
			return
		}
		cctx, cancel := context.WithTimeout(ctx, preheatTimeout)
		id, files, err := r.Weights.Preheater.Preheat(cctx, ms.Spec.Model.Source, ms.Spec.Model.Fetch)
		cancel()
		now := metav1.NewTime(p.now)
		ph := &servingv1.PreheatStatus{Revision: p.rev, Source: ms.Spec.Model.Source, JobID: id, Files: int32(files), State: "Pending", StartedAt: &now}
		switch {
		case errors.Is(err, errNoURLs):
			ph.State, ph.Message = "Skipped", err.Error()
			r.countPreheat("skipped")
		case err != nil:
			ph.State, ph.Message = "Failure", err.Error()
			p.acts.eventf(true, ReasonPreheatFailed, "Preheat", "preheat of revision %s failed: %v; pods fetch from their peers or the origin", p.rev, err)
			r.countPreheat("failed")
		default:
			p.acts.eventf(false, ReasonPreheating, "Preheat", "preheating %d files of revision %s into Dragonfly's seed peers (job %d)", files, p.rev, id)
			r.countPreheat("created")
			p.wake(p.now.Add(preheatPoll))
		}
		st.Weights.Preheat = ph
		r.preheats.Store(key, ph.DeepCopy())
		return
	}
	if cur.State != "Pending" || cur.JobID == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, preheatTimeout)
	state, msg, err := r.Weights.Preheater.Job(cctx, cur.JobID)
	cancel()
	if err != nil {
		r.Logger.Warn("preheat job", "modelserving", ms.Name, "job", cur.JobID, "err", err)
		p.wake(p.now.Add(preheatPoll))
		return
	}
	ph := cur.DeepCopy()
	ph.State, ph.Message = state, msg
	switch state {
	case "Success":
		p.acts.eventf(false, ReasonPreheated, "Preheat", "revision %s is preheated (job %d, %d files)", p.rev, cur.JobID, cur.Files)
		r.countPreheat("succeeded")
	case "Failure":
		p.acts.eventf(true, ReasonPreheatFailed, "Preheat", "preheat job %d of revision %s failed: %s; pods fetch from their peers or the origin", cur.JobID, p.rev, msg)
		r.countPreheat("failed")
	default:
		p.wake(p.now.Add(preheatPoll))
	}
	st.Weights.Preheat = ph
}

// gatePreheat sets the Preheated condition from the update revision's
// preheat and, while the job runs within the gate, holds the revision's
// new groups (p.preheatHold).
func (r *ModelServingReconciler) gatePreheat(ms *servingv1.ModelServing, st *servingv1.ModelServingStatus, p *planner) {
	var ph *servingv1.PreheatStatus
	if dist, ok := r.Weights.fetched(ms); ok && dist == servingv1.DistributionDragonfly && r.Weights.Preheater != nil && st.Weights != nil {
		ph = st.Weights.Preheat
	}
	if ph == nil || ph.Revision != p.rev || ph.State == "Skipped" {
		removeCondition(st, ConditionPreheated)
		return
	}
	held := false
	if c := findCondition(st, ConditionPreheated); c != nil {
		held = c.Reason == ReasonWaitingForPreheat
	}
	gen := ms.Generation
	release, reason := "", ReasonPreheated
	switch ph.State {
	case "Success":
		setCondition(st, gen, ConditionPreheated, metav1.ConditionTrue, ReasonPreheated,
			fmt.Sprintf("preheat job %d warmed %d files of revision %s", ph.JobID, ph.Files, ph.Revision))
		release = "the preheat finished"
	case "Failure":
		setCondition(st, gen, ConditionPreheated, metav1.ConditionFalse, ReasonPreheatFailed,
			fmt.Sprintf("preheat job %d of revision %s failed: %s; pods fetch from their peers or the origin", ph.JobID, ph.Revision, ph.Message))
		release, reason = "the preheat failed", ReasonPreheatFailed
	default:
		gate := r.Weights.PreheatGate
		if gate <= 0 {
			setCondition(st, gen, ConditionPreheated, metav1.ConditionFalse, ReasonPreheating,
				fmt.Sprintf("preheat job %d of revision %s is running; pods are not held (no preheat gate)", ph.JobID, ph.Revision))
			return
		}
		start := p.now
		if ph.StartedAt != nil {
			start = ph.StartedAt.Time
		}
		deadline := start.Add(gate)
		if p.now.Before(deadline) {
			p.preheatHold = fmt.Sprintf("the first pods of revision %s wait for preheat job %d until it ends or %s have passed (%s)",
				ph.Revision, ph.JobID, gate, deadline.UTC().Format(time.RFC3339))
			setCondition(st, gen, ConditionPreheated, metav1.ConditionFalse, ReasonWaitingForPreheat, p.preheatHold)
			p.wake(deadline)
			return
		}
		setCondition(st, gen, ConditionPreheated, metav1.ConditionFalse, ReasonPreheatTimedOut,
			fmt.Sprintf("preheat job %d of revision %s did not finish within %s; pods were created and fetch from their peers or the origin", ph.JobID, ph.Revision, gate))
		release, reason = fmt.Sprintf("the preheat gate (%s) elapsed", gate), ReasonPreheatTimedOut
	}
	if held {
		p.acts.eventf(reason != ReasonPreheated, reason, "ReleasePreheatGate", "creating the pods of revision %s: %s", ph.Revision, release)
	}
}

func (r *ModelServingReconciler) countPreheat(outcome string) {
	if r.Metrics != nil {
		r.Metrics.Preheats.WithLabelValues(outcome).Inc()
	}
}

var _ Preheater = (*DragonflyPreheater)(nil)
