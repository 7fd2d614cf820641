package workload

import "math/rand/v2"

// AssignTenants draws, for each of n requests, the index of the tenant it
// is sent as, in proportion to shares, seeded by seed and step: the live
// bench and the virtual one split a workload among tenants the same way.
// Nil without shares.
func AssignTenants(shares []float64, seed uint64, step, n int) []int {
	if len(shares) == 0 {
		return nil
	}
	var total float64
	for _, s := range shares {
		total += s
	}
	rng := rand.New(rand.NewPCG(seed, uint64(step)+0x7e4a))
	out := make([]int, n)
	for i := range out {
		x := rng.Float64() * total
		k := 0
		for ; k < len(shares)-1 && x >= shares[k]; k++ {
			x -= shares[k]
		}
		out[i] = k
	}
	return out
}
