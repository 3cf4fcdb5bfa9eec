//go:build !unix

package provider

// peekAlive cannot look at the socket here: a connection the server
// closed while idle fails at its first write or read: a failed write sends
// the request once more on a fresh connection (h1Transport.roundTrip), a
// failed read is an error.
func (pc *h1Conn) peekAlive() bool { return true }

func (pc *h1Conn) peekProbe(uintptr) bool { return true }
