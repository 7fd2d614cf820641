// Package k8s holds the control-plane integration tests of the controller,
// the agent and the CRDs. They run against a real kube-apiserver and etcd
// (controller-runtime's envtest with the binaries that hack/controlplane.sh
// builds; KUBEBUILDER_ASSETS points at them), plus kube-scheduler and KWOK
// fake nodes for the placement tests. Without KUBEBUILDER_ASSETS they skip,
// unless HALYARD_REQUIRE_K8S=1 (set by .ci/run) turns the skip into a
// failure.
package k8s
