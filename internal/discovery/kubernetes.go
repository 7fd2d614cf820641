package discovery

import (
	"context"
	"log/slog"
	"net"
	"reflect"
	"sort"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/datastore"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// Kubernetes reports the ready pods of ModelServings as endpoints: the pool
// is "<namespace>/<ModelServing name>" (PoolName; what a ModelRoute's target
// resolves to, and what a config file's route names), the role comes from the role label (prefill
// and decode keep their meaning, any other role serves both), and the
// group, role, instance, topology domain and node go into the endpoint's
// labels. It follows pods through an informer, so pods becoming ready,
// unready or gone change the set without a restart. A pod annotated
// serving.halyard.dev/draining is reported Draining: routers send it no
// new requests while those in flight finish (autoscaler scale-down).
type Kubernetes struct {
	Client kubernetes.Interface
	// Namespace limits discovery to one namespace; empty: all.
	Namespace string
	// DefaultPort is used when a pod's engine container names no port;
	// default 8000.
	DefaultPort int32
	Log         *slog.Logger
}

// Endpoint labels set by the Kubernetes source.
const (
	LabelGroup    = "group"
	LabelRole     = "role"
	LabelInstance = "instance"
	LabelDomain   = "domain"
	LabelNode     = "node"
)

// Run watches the pods and reports the endpoint set whenever it changes.
func (k *Kubernetes) Run(ctx context.Context, update func([]datastore.EndpointSpec)) error {
	log := k.Log
	if log == nil {
		log = slog.Default()
	}
	factory := informers.NewSharedInformerFactoryWithOptions(k.Client, 10*time.Minute,
		informers.WithNamespace(k.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = servingv1.LabelModelServing }))
	inf := factory.Core().V1().Pods()
	var last []datastore.EndpointSpec
	return follow(ctx, "kubernetes discovery", factory, inf.Informer(), func() {
		pods, err := inf.Lister().List(labels.Everything())
		if err != nil {
			log.Warn("kubernetes discovery: list pods", "error", err)
			return
		}
		specs := k.endpoints(pods)
		if last != nil && reflect.DeepEqual(last, specs) {
			return
		}
		last = specs
		update(specs)
	})
}

// endpoints turns the ready pods into endpoint specs, sorted by name.
func (k *Kubernetes) endpoints(pods []*corev1.Pod) []datastore.EndpointSpec {
	out := []datastore.EndpointSpec{}
	for _, p := range pods {
		if !podServing(p) {
			continue
		}
		role := framework.RoleBoth
		switch p.Labels[servingv1.LabelRole] {
		case string(framework.RolePrefill):
			role = framework.RolePrefill
		case string(framework.RoleDecode):
			role = framework.RoleDecode
		}
		labels := map[string]string{
			LabelGroup:    p.Labels[servingv1.LabelGroup],
			LabelRole:     p.Labels[servingv1.LabelRole],
			LabelInstance: p.Labels[servingv1.LabelInstance],
			LabelNode:     p.Spec.NodeName,
		}
		if d := p.Annotations[servingv1.AnnotationDomain]; d != "" {
			labels[LabelDomain] = d
		}
		out = append(out, datastore.EndpointSpec{
			Draining: p.Annotations[servingv1.AnnotationDraining] != "",
			Pool:     PoolName(p.Namespace, p.Labels[servingv1.LabelModelServing]),
			Metadata: framework.EndpointMetadata{
				Name:    p.Namespace + "/" + p.Name,
				Address: "http://" + net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(k.port(p)))),
				Model:   engineEnv(p, "HALYARD_MODEL"),
				Role:    role,
				Labels:  labels,
			},
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Metadata.Name < out[j].Metadata.Name })
	return out
}

// podServing: running, ready, with an IP, and not being deleted.
func podServing(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.PodIP == "" || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// port is the engine container's port named "http", else its first port.
func (k *Kubernetes) port(p *corev1.Pod) int32 {
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == "http" {
				return cp.ContainerPort
			}
		}
	}
	for _, c := range p.Spec.Containers {
		if len(c.Ports) > 0 {
			return c.Ports[0].ContainerPort
		}
	}
	if k.DefaultPort > 0 {
		return k.DefaultPort
	}
	return 8000
}

// engineEnv reads a variable the controller injected into the engine.
func engineEnv(p *corev1.Pod, name string) string {
	for _, c := range p.Spec.Containers {
		for _, e := range c.Env {
			if e.Name == name {
				return e.Value
			}
		}
	}
	return ""
}

var _ Source = (*Kubernetes)(nil)
