//go:build linux

package main

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool"
	"github.com/iopool/iopool/bench/internal/echo"
)

// server is an echo server running in this process.
type server struct {
	addr     string
	accepted atomic.Int64
}

// impls start each server on addr and return once it listens; the servers
// run until the process ends. Every one echoes what it reads. The iopool
// servers run as shards pools when shards > 1 (see sharded).
var impls = map[string]func(addr string, shards int) (*server, error){
	"iopool-lean": sharded(startLean),
	"iopool-task": sharded(startTask),
	"iopool-poll": sharded(startPoll),
	"go-net":      unsharded(startGoNet),
	"gnet":        unsharded(startGnet),
}

// shardable reports whether impl can run as several pools.
func shardable(impl string) bool { return strings.HasPrefix(impl, "iopool-") }

// sharded runs an iopool server as shards pools, each on a locked thread
// with an fd table of its own (unshare CLONE_FILES), so that each holds
// up to RLIMIT_NOFILE sockets; they listen on one port with SO_REUSEPORT,
// and the kernel spreads the connections over them.
func sharded(one func(srv *server, addr string, own bool) error) func(string, int) (*server, error) {
	return func(addr string, shards int) (*server, error) {
		srv := &server{}
		for range max(shards, 1) {
			if err := one(srv, addr, shards > 1); err != nil {
				return nil, err
			}
			addr = srv.addr // the next shards listen on the port the first got
		}
		return srv, nil
	}
}

func unsharded(start func(addr string) (*server, error)) func(string, int) (*server, error) {
	return func(addr string, shards int) (*server, error) {
		if shards > 1 {
			return nil, fmt.Errorf("-shards %d: only the iopool servers run as several pools", shards)
		}
		return start(addr)
	}
}

func implNames() []string {
	var names []string
	for name := range impls {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// runPool runs serve as the root task of a new pool on its own goroutine
// and returns once serve has called ready (or failed first). With own, the
// pool runs on a locked thread that gets an fd table of its own before
// serve runs: every fd serve opens lives there, and only the loop uses
// them.
func runPool(srv *server, own bool, serve func(t *iopool.Task, ready func(addr string)) error) error {
	var opts []iopool.Option
	if own {
		opts = append(opts, iopool.WithLockOSThread())
	}
	p, err := iopool.New(opts...)
	if err != nil {
		return err
	}
	started := make(chan error, 1)
	go func() {
		err := p.Run(func(t *iopool.Task) error {
			if own {
				if err := unix.Unshare(unix.CLONE_FILES); err != nil {
					return fmt.Errorf("unshare(CLONE_FILES): %w", err)
				}
			}
			return serve(t, func(addr string) {
				srv.addr = addr
				started <- nil
			})
		})
		started <- fmt.Errorf("the pool stopped: %v", err)
	}()
	return <-started
}

func listenTask(t *iopool.Task, addr string, reusePort bool) (*iopool.Listener, error) {
	return iopool.ListenConfig{Backlog: 65535, ReusePort: reusePort}.Listen(t.Driver(), "tcp", addr)
}

// leanEcho is the whole state of an iopool-lean connection.
type leanEcho struct{ echoed int64 }

func (c *leanEcho) ServeReady(t *iopool.Task, s *iopool.Socket, buf []byte) error {
	for {
		n, err := s.TryRead(buf)
		if errors.Is(err, iopool.ErrWouldBlock) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := s.Write(t, buf[:n]); err != nil {
			return err
		}
		c.echoed += int64(n)
	}
}

func startLean(srv *server, addr string, own bool) error {
	lean := &iopool.LeanServer{NewConn: func(*iopool.Socket) iopool.ConnHandler {
		srv.accepted.Add(1)
		return &leanEcho{}
	}}
	return runPool(srv, own, func(t *iopool.Task, ready func(string)) error {
		l, err := listenTask(t, addr, own)
		if err != nil {
			return err
		}
		ready(l.Addr().String())
		return lean.Serve(t, l)
	})
}

func startTask(srv *server, addr string, own bool) error {
	var bufs echo.BufPool
	return runPool(srv, own, func(t *iopool.Task, ready func(string)) error {
		l, err := listenTask(t, addr, own)
		if err != nil {
			return err
		}
		ready(l.Addr().String())
		for {
			s, err := l.Accept(t)
			if err != nil {
				return err
			}
			srv.accepted.Add(1)
			iopool.Spawn(t.Driver(), "conn", func(t *iopool.Task) (struct{}, error) {
				echo.ServeTask(t, s, &bufs)
				return struct{}{}, nil
			})
		}
	})
}

func startPoll(srv *server, addr string, own bool) error {
	return runPool(srv, own, func(t *iopool.Task, ready func(string)) error {
		fd, err := echo.ListenFd(addr, own, 65535)
		if err != nil {
			return err
		}
		bound, err := echo.LocalAddr(fd)
		if err != nil {
			unix.Close(fd)
			return err
		}
		return echo.ServePoll(t, fd, false, &srv.accepted, func() { ready(bound) })
	})
}

func startGoNet(addr string) (*server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &server{addr: l.Addr().String()}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // EMFILE: the client counts the failure
			}
			srv.accepted.Add(1)
			go func() {
				defer c.Close()
				var buf [128]byte // on the goroutine's stack
				for {
					n, err := c.Read(buf[:])
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return srv, nil
}

type gnetEcho struct {
	gnet.BuiltinEventEngine
	srv   *server
	ready chan error
}

func (e *gnetEcho) OnBoot(gnet.Engine) gnet.Action {
	e.ready <- nil
	return gnet.None
}

func (e *gnetEcho) OnOpen(gnet.Conn) ([]byte, gnet.Action) {
	e.srv.accepted.Add(1)
	return nil, gnet.None
}

func (e *gnetEcho) OnTraffic(c gnet.Conn) gnet.Action {
	buf, _ := c.Next(-1)
	_, _ = c.Write(buf)
	return gnet.None
}

func startGnet(addr string) (*server, error) {
	fd, err := net.Listen("tcp", addr) // pick the port, then let gnet listen on it
	if err != nil {
		return nil, err
	}
	addr = fd.Addr().String()
	fd.Close()
	e := &gnetEcho{srv: &server{addr: addr}, ready: make(chan error, 1)}
	go func() {
		e.ready <- gnet.Run(e, "tcp://"+addr, gnet.WithMulticore(false), gnet.WithLogLevel(5))
	}()
	if err := <-e.ready; err != nil {
		return nil, err
	}
	return e.srv, nil
}
