package main

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/iopool/iopool"
)

// The HTTP servers answer every POST with the length of its body, read in
// full: the same handler served by net/http over Go net (http-gonet) and
// over iopool's NetConn, the pool accepting the connections (http-netconn).

func httpHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, strconv.FormatInt(n, 10))
	})
}

func serveHTTPGoNet(addr string, ready func()) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	ready()
	return (&http.Server{Handler: httpHandler()}).Serve(l)
}

// serveHTTPNetConn accepts in a task of the pool and hands every
// connection, as a NetConn, to net/http's goroutines: the pool's loop
// delivers their readiness.
func serveHTTPNetConn(addr string, ready func()) error {
	p, err := iopool.New(poolOptions()...)
	if err != nil {
		return err
	}
	conns := &chanListener{conns: make(chan net.Conn, 1024), done: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		errc <- p.Run(func(t *iopool.Task) error {
			l, err := iopool.ListenConfig{Backlog: 16384}.Listen(t.Driver(), "tcp", addr)
			if err != nil {
				return err
			}
			conns.addr = l.Addr()
			ready()
			for {
				s, err := l.Accept(t)
				if err != nil {
					return err
				}
				_ = unix.SetsockoptInt(s.Fd(), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
				select {
				case conns.conns <- s.NetConn():
				default: // net/http is 1024 connections behind: refuse this one
					s.Close()
				}
			}
		})
		conns.Close()
	}()
	go func() { errc <- (&http.Server{Handler: httpHandler()}).Serve(conns) }()
	return <-errc
}

// chanListener is a net.Listener whose connections come from a channel.
type chanListener struct {
	conns chan net.Conn
	addr  net.Addr
	once  sync.Once
	done  chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
