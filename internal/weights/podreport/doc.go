// Package podreport lets `halyard fetch`, run as the init container the
// controller injects, report its progress and outcome to the controller: one
// core Event about its pod, labelled with the pod and its ModelServing,
// whose annotations carry the bytes done and total, the Dragonfly fallbacks
// and the state (Fetching, Done, Failed with a reason). The controller
// watches only such Events. Nothing else belongs here: the fetch itself is
// package weights.
package podreport
