//go:build !unix

package h1

// alive cannot peek without unix sockets: a connection the server closed
// fails the request that reuses it.
func (pc *conn) alive() bool { return true }
