// Package agent is `halyard agent`, the restartable init container the
// controller injects into every pod of a serving group. It watches its own
// pod through the API server. When the controller raises the pod's
// serving.halyard.dev/restart-generation annotation above the generation the
// agent started under, the agent exits with code 88, which the container's
// restart rule turns into RestartAllContainers: the kubelet restarts every
// container of the pod in place (same pod, same node, same UID). Its
// /startup endpoint, the container's startup probe, answers 200 only once
// serving.halyard.dev/barrier reaches that generation, so the engine
// containers of a group start together after every pod has restarted.
//
// Why the API server and not a downward-API file or an HTTP call from the
// controller: a downward-API volume follows annotation changes only at the
// kubelet's sync period (up to a minute or more), and a controller-to-pod
// call needs the pod network to reach every pod and a port opened to the
// controller; a watch on one's own pod needs neither, reacts within the
// watch latency, and works in tests without a kubelet (the test runs the
// agent as a process against the test API server).
package agent
