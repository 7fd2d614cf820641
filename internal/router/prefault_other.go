//go:build !linux

package router

// prefault does nothing where MADV_POPULATE_WRITE does not exist: the
// pages fault as the body's bytes arrive.
func prefault([]byte, int, int) {}
