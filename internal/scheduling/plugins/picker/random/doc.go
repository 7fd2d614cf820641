// Package random is the random picker: it picks uniformly among the
// candidates, ignoring scores. A profile with no scorers and this picker is
// the random baseline of the bench.
//
// Params: {"count": N} returns N distinct endpoints (default 1); {"seed": S}
// makes runs reproducible (default 0: the runtime's generator).
package random
