// Package roundrobin is the round-robin picker: it picks the candidates in
// turn, ignoring scores. The turn follows endpoint names, not candidate
// order: each pick takes the first candidate whose name comes after the last
// pick's (wrapping around), so the rotation holds when the candidate list
// arrives in a different order each time or endpoints come and go.
//
// Params: {"count": N} returns N endpoints, the next N in turn (default 1).
package roundrobin
