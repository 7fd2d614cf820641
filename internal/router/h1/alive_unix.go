//go:build unix

package h1

import (
	"errors"
	"syscall"
)

// alive reports whether an idle connection is still open and silent: a
// non-blocking peek finds nothing to read. End of stream (the server
// closed it), an error or unexpected bytes mean it cannot carry a request.
func (pc *conn) alive() bool {
	if pc.raw == nil {
		return true
	}
	var (
		one  [1]byte
		perr error
	)
	err := pc.raw.Read(func(fd uintptr) bool {
		_, _, perr = syscall.Recvfrom(int(fd), one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	})
	// Only "nothing to read yet" is alive: nil (end of stream or bytes
	// nobody asked for) and other errors are not.
	return err == nil && (errors.Is(perr, syscall.EAGAIN) || errors.Is(perr, syscall.EWOULDBLOCK))
}
