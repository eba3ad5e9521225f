//go:build linux

package main

import (
	"io"
	"net"
	"net/http"
	"strconv"

	"github.com/iopool/iopool"
)

// The HTTP servers answer every POST with the length of its body, read in
// full: the same handler served by net/http over Go net (http-gonet) and
// over a started pool's NetListener (http-netconn).

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

// serveHTTPNetConn serves net/http from a started pool, as a user would
// (the README's snippet, examples/httpserver): the pool runs its own loop
// (Pool.Start) and its listener is handed to http.Server as a net.Listener;
// every connection is a NetConn whose waits park on the pool's loop.
func serveHTTPNetConn(addr string, ready func()) error {
	p, err := iopool.New(poolOptions()...)
	if err != nil {
		return err
	}
	defer p.Close()
	if err := p.Start(); err != nil {
		return err
	}
	l, err := iopool.ListenConfig{Backlog: 16384}.Listen(p.Driver(), "tcp", addr)
	if err != nil {
		return err
	}
	ready()
	return (&http.Server{Handler: httpHandler()}).Serve(l.NetListener())
}
