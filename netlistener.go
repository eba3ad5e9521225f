//go:build linux

package iopool

import (
	"net"
	"sync"
)

// NetListener returns l as a net.Listener for code that runs on plain
// goroutines, such as net/http's Server.Serve. Its Accept may be called from
// any goroutine (calls are serialized) and returns a *NetConn registered on
// l's pool; while no connection is queued it parks the calling goroutine on
// the pool's readiness, so the pool must be running (Start, or inside Run)
// for Accept to wait; otherwise Accept fails with ErrNotRunning after a
// second. Close closes the listener and wakes a waiting Accept (also one
// pausing for lack of fds), which fails with net.ErrClosed.
//
// The net.Listener takes over l: do not accept from tasks as well.
func (l *Listener) NetListener() net.Listener {
	return &netListener{l: l, park: newParkWaker()}
}

// netListener is a Listener seen from plain goroutines: Accept is the
// Listener's one accept path (doAccept), waiting by parking.
type netListener struct {
	l    *Listener
	mu   sync.Mutex // serializes Accept
	park *parkWaker // mu: the accepting goroutine's waker
}

var _ net.Listener = (*netListener)(nil)

// Accept waits for a connection and returns it as a *NetConn. Accepted TCP
// connections have TCP_NODELAY set, as in package net. When the process is
// out of fds it backs off (10 ms doubling to 1 s) as Listener.Accept does.
func (nl *netListener) Accept() (net.Conn, error) {
	nl.mu.Lock()
	defer nl.mu.Unlock() // also when the misuse check panics
	s, err := nl.l.sock.doAccept(waiter{park: nl.park}, nl.l.addr)
	if err != nil {
		return nil, nl.l.opError(err)
	}
	return s.NetConn(), nil
}

// Close closes the listener; a waiting Accept wakes and fails with
// net.ErrClosed. Closing twice is a no-op.
func (nl *netListener) Close() error {
	return nl.l.sock.Close()
}

// Addr returns the listener's address.
func (nl *netListener) Addr() net.Addr { return nl.l.addr }
