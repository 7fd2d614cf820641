// Package placement decides where a serving group goes: which topology
// domain (a set of nodes sharing one value of a node label) holds it, and
// the node and pod (anti-)affinity that keeps every pod of the group inside
// that domain and puts each prefill next to its decode. Everything here is a
// pure function of its arguments: no API calls, no clock, no logging. The
// controller (internal/controller) gathers nodes and pods and applies the
// decisions.
package placement
