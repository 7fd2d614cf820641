// Package rng gives pickers a source of random numbers: the runtime's
// goroutine-safe generator by default, or a seeded one for reproducible runs
// (the bench's virtual-time mode).
package rng
