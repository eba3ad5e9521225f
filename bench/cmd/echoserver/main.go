//go:build linux

// Command echoserver is one server of the comparison, run as its own
// process by cmd/compare:
//
//	go run ./cmd/echoserver -impl iopool-task -listen 127.0.0.1:9000 [-lock=false]
//
// Echo servers (-impl): iopool-task (a task per connection, Socket
// Read/Write), iopool-poll (the poll layer: a Waker per connection, no
// coroutine), rawepoll (an edge-triggered x/sys/unix epoll loop with the
// same rules as iopool: the floor for Go), gonet (Go net, a goroutine per
// connection) and gnet (gnet v2, one event loop, its default: not locked to
// a thread). HTTP servers: http-gonet (net/http over Go net) and
// http-netconn (the same handler over a started pool's NetListener).
// The servers with a loop of their own (iopool-*, rawepoll, http-netconn)
// run it on a locked OS thread unless -lock=false. All run with the
// default GOMAXPROCS. It prints "ready" once listening and serves until
// SIGINT, SIGTERM or the end of stdin.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"syscall"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool"
	"github.com/iopool/iopool/bench/internal/echo"
)

// lockThread: the one-loop servers run on a locked OS thread (-lock).
var lockThread = true

// poolOptions are the iopool servers' options.
func poolOptions() []iopool.Option {
	if lockThread {
		return []iopool.Option{iopool.WithLockOSThread()}
	}
	return nil
}

var impls = map[string]func(addr string, ready func()) error{
	"iopool-task": serveIopoolTask,
	"iopool-poll": serveIopoolPoll,
	"rawepoll":    serveRawEpoll,
	"gonet":       serveGoNet,
	"gnet":        serveGnet,

	"http-gonet":   serveHTTPGoNet,
	"http-netconn": serveHTTPNetConn,
}

func main() {
	fs := flag.NewFlagSet("echoserver", flag.ContinueOnError)
	impl := fs.String("impl", "", "server implementation: iopool-task, iopool-poll, rawepoll, gonet, gnet")
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	fs.BoolVar(&lockThread, "lock", true, "run the one-loop servers (iopool, rawepoll) on a locked OS thread")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the server to this file, from ready to the stop")
	traceFile := fs.String("trace", "", "write an execution trace of the server to this file, from start to the stop")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	serve, ok := impls[*impl]
	if !ok || fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "echoserver: unknown -impl %q\n", *impl)
		fs.Usage()
		os.Exit(2)
	}
	raiseNofile()
	stopCPU := recordTo("-cpuprofile", *cpuProfile, pprof.StartCPUProfile, pprof.StopCPUProfile)
	stopTrace := recordTo("-trace", *traceFile, trace.Start, trace.Stop)
	stopProfile := func() { stopCPU(); stopTrace() }
	go func() { // stop on a signal or when the parent closes stdin
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		eof := make(chan struct{})
		go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(eof) }()
		select {
		case <-sig:
		case <-eof:
		}
		stopProfile()
		os.Exit(0)
	}()
	if err := serve(*listen, func() { fmt.Println("ready") }); err != nil {
		fmt.Fprintf(os.Stderr, "echoserver %s: %v\n", *impl, err)
		os.Exit(1)
	}
}

// recordTo starts a recording (a CPU profile, an execution trace) into the
// file path names, and returns what stops it and closes the file; with no
// path it records nothing. A file that cannot be made ends the program.
func recordTo(flag, path string, start func(io.Writer) error, stop func()) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = start(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "echoserver: %s: %v\n", flag, err)
		os.Exit(2)
	}
	return func() { stop(); f.Close() }
}

// raiseNofile lifts the soft fd limit to the hard one, for 10k connections.
func raiseNofile() {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &rl)
	}
}

func serveIopoolTask(addr string, ready func()) error {
	var bufs echo.BufPool
	p, err := iopool.New(poolOptions()...)
	if err != nil {
		return err
	}
	return p.Run(func(t *iopool.Task) error {
		l, err := iopool.ListenConfig{Backlog: 16384}.Listen(t.Driver(), "tcp", addr)
		if err != nil {
			return err
		}
		ready()
		for {
			s, err := l.Accept(t)
			if err != nil {
				return err
			}
			iopool.Spawn(t.Driver(), "conn", func(t *iopool.Task) (struct{}, error) {
				echo.ServeTask(t, s, &bufs)
				return struct{}{}, nil
			})
		}
	})
}

func serveIopoolPoll(addr string, ready func()) error {
	p, err := iopool.New(poolOptions()...)
	if err != nil {
		return err
	}
	return p.Run(func(t *iopool.Task) error {
		fd, err := echo.ListenFd(addr, false, 16384)
		if err != nil {
			return err
		}
		return echo.ServePoll(t, fd, true, nil, ready)
	})
}

// serveRawEpoll is an edge-triggered epoll loop on one locked thread with
// the same rules as the iopool servers: read only when readable, a short
// read or EAGAIN means empty until the next edge.
func serveRawEpoll(addr string, ready func()) error {
	if lockThread {
		runtime.LockOSThread()
	}
	lfd, err := echo.ListenFd(addr, false, 16384)
	if err != nil {
		return err
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	type rawConn struct {
		readable, writable bool
		pending            []byte
	}
	conns := map[int32]*rawConn{}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(lfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, lfd, &ev); err != nil {
		return err
	}
	ready()
	events := make([]unix.EpollEvent, 1024)
	buf := make([]byte, 16<<10)
	for {
		n, err := unix.EpollWait(epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		for _, e := range events[:n] {
			if e.Fd == int32(lfd) {
				for {
					cfd, _, err := unix.Accept4(lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
					if err == unix.EAGAIN {
						break
					}
					if err != nil {
						continue
					}
					_ = unix.SetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
					cev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(cfd)}
					if unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, cfd, &cev) != nil {
						unix.Close(cfd)
						continue
					}
					conns[int32(cfd)] = &rawConn{}
				}
				continue
			}
			c := conns[e.Fd]
			if c == nil {
				continue
			}
			fd := int(e.Fd)
			if e.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				c.readable = true
			}
			if e.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				c.writable = true
			}
			closed := false
			for !closed {
				if len(c.pending) > 0 {
					if !c.writable {
						c.pending = append([]byte(nil), c.pending...) // buf is shared
						break
					}
					m, err := unix.Write(fd, c.pending)
					if err == unix.EAGAIN {
						c.writable = false
						continue
					}
					if err != nil {
						closed = true
						break
					}
					if c.pending = c.pending[m:]; len(c.pending) > 0 {
						c.writable = false
					}
					continue
				}
				if !c.readable {
					break
				}
				m, err := unix.Read(fd, buf)
				switch {
				case err == unix.EAGAIN:
					c.readable = false
					continue
				case err != nil || m == 0:
					closed = true
					continue
				case m < len(buf):
					c.readable = false
				}
				c.pending = buf[:m]
			}
			if closed {
				delete(conns, e.Fd)
				unix.Close(fd) // also leaves the epoll set
			}
		}
	}
}

func serveGoNet(addr string, ready func()) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	ready()
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			continue
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 16<<10)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
		}()
	}
}

type gnetEcho struct {
	gnet.BuiltinEventEngine
	ready func()
}

func (e *gnetEcho) OnBoot(gnet.Engine) gnet.Action {
	e.ready()
	return gnet.None
}

func (e *gnetEcho) OnTraffic(c gnet.Conn) gnet.Action {
	buf, _ := c.Next(-1)
	_, _ = c.Write(buf)
	return gnet.None
}

func serveGnet(addr string, ready func()) error {
	return gnet.Run(&gnetEcho{ready: ready}, "tcp://"+addr,
		gnet.WithMulticore(false), gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithLogLevel(5)) // errors only
}
