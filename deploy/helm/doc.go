// Package helm holds no code, only the tests of the Helm chart in halyard/:
// the rendered output of `helm template` against golden files, the CRDs it
// ships against the generated ones, and its controller RBAC against the
// rules generated from the controller's kubebuilder markers.
package helm
