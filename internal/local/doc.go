// Package local is Halyard's local mode (`halyard up`): simulated engines
// and the router in one process, wired from one configuration file, with a
// short built-in demo (one chat request, a few hundred requests of a
// shared-prefix mix, and a small report). It is wiring and a minimal load
// generator only: the engines are package simulator's, the router package
// router's, and the full benchmark is package bench's.
package local
