package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	configv1alpha1 "github.com/halyard-dev/halyard/api/config/v1alpha1"
)

// ModelRouteSpec is the router's route schema (the same type as a route in
// the router's config file, so one document serves both), plus external
// endpoints that its targets may name as pools.
//
// A target's pool names a ModelServing in the route's namespace, or an
// entry of Endpoints.
//
// +kubebuilder:validation:XValidation:rule="self.targets.exists(t, !has(t.weight) || t.weight > 0)",message="targets: at least one target needs a positive weight"
// +kubebuilder:validation:XValidation:rule="self.targets.all(t, self.targets.exists_one(u, u.pool == t.pool))",message="targets: each pool may appear only once"
// +kubebuilder:validation:XValidation:rule="!has(self.endpoints) || self.endpoints.all(e, self.endpoints.exists_one(f, f.url == e.url))",message="endpoints: each url may appear only once"
type ModelRouteSpec struct {
	configv1alpha1.RouteSpec `json:",inline"`
	// Endpoints are engines outside the cluster's ModelServings (another
	// cluster, a hosted API) that targets may name by their pool.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Endpoints []configv1alpha1.EndpointSpec `json:"endpoints,omitempty"`
}

// ModelRouteStatus is what the controller found when it checked the route.
type ModelRouteStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Accepted (the route is well formed) and ResolvedRefs
	// (every pool names a ModelServing or an endpoint).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ModelRoute maps a public model name to pools of engines: ModelServings or
// external endpoints, split by weight, chosen by header matches, with a LoRA
// adapter and fallbacks.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=mr;mroute,categories=halyard
// +kubebuilder:printcolumn:name="Model",type=string,JSONPath=`.spec.model`
// +kubebuilder:printcolumn:name="Adapter",type=string,JSONPath=`.spec.adapter`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Resolved",type=string,JSONPath=`.status.conditions[?(@.type=="ResolvedRefs")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ModelRoute struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ModelRouteSpec   `json:"spec"`
	Status ModelRouteStatus `json:"status,omitempty"`
}

// ModelRouteList is a list of ModelRoutes.
// +kubebuilder:object:root=true
type ModelRouteList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ModelRoute `json:"items"`
}
