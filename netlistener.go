//go:build linux

package iopool

import (
	"net"
	"sync"
)

// NetListener returns l as a net.Listener for code that runs on plain
// goroutines, such as net/http's Server.Serve. Its Accept may be called from
// any goroutine (calls are serialized) and returns a *NetConn of l's pool;
// while no connection is queued it parks the calling goroutine in the Go
// runtime's network poller, as package net's Accept does, so it is served
// whether or not the pool's loop runs, and neither the listener nor the
// connections it accepts wake that loop. Close closes the listener and
// wakes a waiting Accept (also one pausing for lack of fds), which fails
// with net.ErrClosed.
//
// The net.Listener takes over l, which leaves the pool's epoll set: a task
// that waits on l from then on panics.
func (l *Listener) NetListener() net.Listener {
	nl := &netListener{l: l}
	nl.gp, nl.err = l.sock.attachGoPoll()
	return nl
}

// netListener is a Listener seen from plain goroutines: Accept is the
// Listener's one accept path (doAccept), waiting in the runtime's poller.
type netListener struct {
	l   *Listener
	gp  *goPoll
	err error      // why gp could not be made: Accept fails with it
	mu  sync.Mutex // serializes Accept (gp.read)
}

var _ net.Listener = (*netListener)(nil)

// Accept waits for a connection and returns it as a *NetConn. Accepted TCP
// connections have TCP_NODELAY set, as in package net. When the process is
// out of fds it backs off (10 ms doubling to 1 s) as Listener.Accept does.
func (nl *netListener) Accept() (net.Conn, error) {
	if nl.err != nil {
		return nil, nl.l.opError(nl.err)
	}
	nl.mu.Lock()
	defer nl.mu.Unlock() // also when the misuse check panics
	s, peer, err := nl.l.sock.doAccept(waiter{g: &nl.gp.read}, nl.l.addr)
	if err != nil {
		return nil, nl.l.opError(err)
	}
	c := s.netConn(sockaddrToAddr(peer, s.read.kind))
	if c.err != nil {
		s.Close()
		return nil, nl.l.opError(c.err)
	}
	return c, nil
}

// Close closes the listener; a waiting Accept wakes and fails with
// net.ErrClosed. Closing twice is a no-op.
func (nl *netListener) Close() error {
	return nl.l.sock.Close()
}

// Addr returns the listener's address.
func (nl *netListener) Addr() net.Addr { return nl.l.addr }
