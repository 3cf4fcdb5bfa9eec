//go:build !unix

package provider

// peekAlive cannot look at the socket here: a connection the server
// closed while idle fails at its first read, and the request goes again
// on a fresh connection (h1Transport.roundTrip).
func (pc *h1Conn) peekAlive() bool { return true }

func (pc *h1Conn) peekProbe(uintptr) bool { return true }
