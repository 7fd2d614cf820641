// Package v1alpha1 holds Halyard's Kubernetes API, group serving.halyard.dev,
// version v1alpha1: the ModelServing and ModelRoute custom resources, the
// label and annotation keys the controller, the in-pod agent and the router
// agree on, and the generated deep-copy functions. The CRD manifests under
// config/crd are generated from these types by controller-gen (make
// generate). Behaviour lives in internal/controller, not here.
//
// +kubebuilder:object:generate=true
// +groupName=serving.halyard.dev
package v1alpha1
