// Package secretkeys follows the Kubernetes Secrets that hold tenants' API
// keys (keysFrom.secret) through informers and hands each tenant's keys to
// admission whenever its Secret changes, so that keys rotate without a
// restart. Each data entry of a Secret is one plain key; keys are handed
// on as bytes and never logged. What does not belong here: hashing and
// comparing keys (package admission).
package secretkeys

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/halyard-dev/halyard/internal/admission"
)

// Follower follows Secrets. One informer per Secret, selected by name, so
// the router needs get, list and watch on those Secrets only.
type Follower struct {
	Client  kubernetes.Interface
	Secrets []admission.KeySecret
	// Resync is the informers' resync period; default 10m.
	Resync time.Duration
	Log    *slog.Logger
}

var _ admission.KeySource = (*Follower)(nil)

// Run starts the informers and calls set with a tenant's keys after each
// add, update or delete of its Secret (none: deleted or empty), until ctx
// ends.
func (f *Follower) Run(ctx context.Context, set func(tenant string, keys [][]byte)) error {
	log := f.Log
	if log == nil {
		log = slog.Default()
	}
	resync := f.Resync
	if resync <= 0 {
		resync = 10 * time.Minute
	}
	var synced []cache.InformerSynced
	for _, s := range f.Secrets {
		factory := informers.NewSharedInformerFactoryWithOptions(f.Client, resync, informers.WithNamespace(s.Namespace),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("metadata.name", s.Name).String()
			}))
		inf := factory.Core().V1().Secrets().Informer()
		push := func(obj any, gone bool) {
			sec, ok := obj.(*corev1.Secret)
			if !ok {
				if tomb, isTomb := obj.(cache.DeletedFinalStateUnknown); isTomb {
					sec, ok = tomb.Obj.(*corev1.Secret)
				}
			}
			if !ok || sec.Name != s.Name {
				return
			}
			var keys [][]byte
			if !gone {
				keys = secretKeys(sec)
			}
			set(s.Tenant, keys)
			// Counts and names only: never the keys.
			log.Info("tenant keys from secret", "tenant", s.Tenant, "secret", s.Namespace+"/"+s.Name, "keys", len(keys), "deleted", gone)
		}
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { push(o, false) },
			UpdateFunc: func(_, o any) { push(o, false) },
			DeleteFunc: func(o any) { push(o, true) },
		}); err != nil {
			return fmt.Errorf("secret %s/%s: %w", s.Namespace, s.Name, err)
		}
		factory.Start(ctx.Done())
		defer factory.Shutdown()
		synced = append(synced, inf.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil
	}
	<-ctx.Done()
	return nil
}

// secretKeys are a Secret's data values (and stringData, which the API
// server folds into data), in key order.
func secretKeys(sec *corev1.Secret) [][]byte {
	names := make([]string, 0, len(sec.Data))
	for k := range sec.Data {
		names = append(names, k)
	}
	slices.Sort(names)
	out := make([][]byte, 0, len(names))
	for _, k := range names {
		out = append(out, sec.Data[k])
	}
	return out
}
