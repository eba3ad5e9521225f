//go:build linux

package iopool

import (
	"bufio"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

// collect runs the garbage collector until the finalizers of what is
// unreachable have had their chance to run.
func collect() {
	for range 3 {
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
}

// waitForIOWait waits until some goroutine waits in the runtime's network
// poller ("IO wait" in its stack trace).
func waitForIOWait(t *testing.T) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for start := time.Now(); time.Since(start) < watchdog; time.Sleep(time.Millisecond) {
		if strings.Contains(string(buf[:runtime.Stack(buf, true)]), "[IO wait") {
			return
		}
	}
	t.Fatal("no goroutine waits in the runtime's poller")
}

// requireOpen fails unless fd is open.
func requireOpen(t *testing.T, fd int, msg string) {
	t.Helper()
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	require.NoError(t, err, msg)
}

// A NetConn's fd number is closed exactly once: by its Close (through the
// NetConn or through its Socket), never again by the os.File the runtime's
// poller holds it through, whose finalizer would close the number's next
// owner.
func TestNetConnClosesItsNumberOnce(t *testing.T) {
	for _, via := range []string{"NetConn", "Socket"} {
		t.Run(via, func(t *testing.T) {
			p := newTestPool(t)
			sp := socketpair(t)
			defer unix.Close(sp[1])
			s, err := p.Driver().NewSocket(sp[0])
			require.NoError(t, err)
			c := s.NetConn()
			require.NoError(t, c.err)
			if via == "NetConn" {
				require.NoError(t, c.Close())
			} else {
				require.NoError(t, s.Close())
			}
			n, err := unix.Read(sp[1], make([]byte, 1))
			require.NoError(t, err)
			require.Zero(t, n, "the peer sees the end of the stream")
			reused := takeNumber(t, sp[0], openEventfd)
			c, s = nil, nil
			collect()
			requireOpen(t, reused[0], "the number's new owner was closed")
			require.Zero(t, p.Stats().FdsGoPolled)
		})
	}
}

// A NetConn whose number was closed behind its back (a caller bug) does
// not close the number again at Close, nor later from a finalizer: by then
// the number is another file's.
func TestNetConnNumberClosedFirstIsLeftAlone(t *testing.T) {
	p := newTestPool(t)
	sp := socketpair(t)
	defer unix.Close(sp[1])
	c, err := p.Driver().NewNetConn(sp[0])
	require.NoError(t, err)
	require.NoError(t, unix.Close(sp[0]))
	reused := takeNumber(t, sp[0], openEventfd)
	require.ErrorIs(t, c.Close(), ErrFdClosedFirst)
	c = nil
	collect()
	requireOpen(t, reused[0], "the number's new owner was closed")
}

// The connections a NetListener accepts, and the listener itself, are out
// of the pool's epoll set: their traffic does not wake the pool's loop.
// Before, every request cost the loop a wake and a cycle.
func TestNetConnTrafficDoesNotWakeTheLoop(t *testing.T) {
	p := newTestPool(t)
	require.NoError(t, p.Start())
	l, err := p.Driver().Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	registered := p.Stats().FdsRegistered
	nl := l.NetListener()
	defer nl.Close()
	require.Equal(t, registered-1, p.Stats().FdsRegistered, "the listener left the epoll set")
	go func() {
		c, err := nl.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := c.Write([]byte(line)); err != nil {
				return
			}
		}
	}()
	client, err := net.Dial("tcp", nl.Addr().String())
	require.NoError(t, err)
	defer client.Close()
	r := bufio.NewReader(client)
	const trips = 200
	before := p.Stats()
	for range trips {
		_, err := client.Write([]byte("ping\n"))
		require.NoError(t, err)
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "ping\n", line)
	}
	after := p.Stats()
	require.Less(t, after.Cycles-before.Cycles, uint64(trips/10), "loop cycles during %d round trips", trips)
	require.Equal(t, int64(2), after.FdsGoPolled, "the listener and the connection")
	require.Equal(t, registered-1, after.FdsRegistered, "the connection is not in the epoll set")
}

// A task that waits on a Socket a NetConn took over would wait forever
// (the socket left the pool's epoll set): it panics, saying so.
func TestTaskWaitingOnANetConnsSocketPanics(t *testing.T) {
	within(t, watchdog, func() {
		runPool(t, func(tk *Task) error {
			sp := socketpair(t)
			defer unix.Close(sp[1])
			s, err := tk.Driver().NewSocket(sp[0])
			require.NoError(t, err)
			c := s.NetConn()
			defer c.Close()
			v := panicValue(func() { _, _ = s.Read(tk, make([]byte, 8)) })
			require.Contains(t, v, "took it over: a task cannot wait on it")
			return nil
		})
	})
}

// On a pool with a virtual clock a goroutine's deadline follows the pool's
// clock, and moving it while the goroutine waits takes effect: the wait
// ends at the new deadline, in virtual time.
func TestVirtualClockNetConnDeadlineMovesWhileWaiting(t *testing.T) {
	p, c := virtualNetConn(t)
	require.NoError(t, c.SetReadDeadline(p.Now().Add(50*time.Minute)))
	read := NewOneshot[error]()
	go func() {
		_, err := c.Read(make([]byte, 1))
		_ = read.Send(err)
	}()
	// The virtual clock runs the whole Run below in microseconds: the
	// reader must be waiting before it starts.
	waitForIOWait(t)
	var readErr, runErr error
	var at time.Time
	within(t, watchdog, func() { // a lost deadline leaves the read, and the Run, waiting forever
		runErr = p.Run(func(tk *Task) error {
			if err := tk.Sleep(5 * time.Minute); err != nil {
				return err
			}
			if err := c.SetReadDeadline(p.Now().Add(5 * time.Minute)); err != nil { // 10 min
				return err
			}
			// No timer but the deadline's: the clock stops there until the
			// reader's result comes.
			var err error
			readErr, err = read.Recv(tk)
			at = p.Now()
			return err
		})
	})
	require.NoError(t, runErr)
	require.ErrorIs(t, readErr, os.ErrDeadlineExceeded)
	require.Equal(t, virtualEpoch.Add(10*time.Minute), at)
}

// The net adapters wait in the Go runtime's poller, as package net's
// sockets do: a pool that was never started serves an Accept, a NetConn's
// reads and writes, a deadline and a NetPacketConn's datagrams, and its
// loop never runs for them.
func TestNetAdaptersAreServedWithoutTheLoop(t *testing.T) {
	p := newTestPool(t)
	p.opts.notRunningBound = 50 * time.Millisecond // a wait on the loop would fail fast
	l, err := p.Driver().Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	nl := l.NetListener()
	defer nl.Close()

	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := nl.Accept() // waits: the dial comes later
		if err != nil {
			c = nil
		}
		accepted <- c
	}()
	time.Sleep(60 * time.Millisecond) // past the bound: the Accept must still be waiting, not failed
	client, err := net.Dial("tcp", nl.Addr().String())
	require.NoError(t, err)
	defer client.Close()
	var server net.Conn
	within(t, watchdog, func() { server = <-accepted })
	require.NotNil(t, server, "Accept failed")
	defer server.Close()

	echoed := make(chan string, 1)
	go func() {
		line, err := bufio.NewReader(server).ReadString('\n') // waits for the line
		if err == nil {
			_, err = server.Write([]byte(line))
		}
		if err != nil {
			line = err.Error()
		}
		echoed <- line
	}()
	time.Sleep(60 * time.Millisecond)
	_, err = client.Write([]byte("no loop\n"))
	require.NoError(t, err)
	within(t, watchdog, func() { require.Equal(t, "no loop\n", <-echoed) })
	got, err := bufio.NewReader(client).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "no loop\n", got)

	require.NoError(t, server.SetReadDeadline(time.Now().Add(30*time.Millisecond)))
	_, err = server.Read(make([]byte, 1))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)

	ps, err := p.Driver().ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	pc := ps.NetPacketConn()
	defer pc.Close()
	from, err := net.Dial("udp", pc.LocalAddr().String())
	require.NoError(t, err)
	defer from.Close()
	got2 := make(chan string, 1)
	go func() {
		buf := make([]byte, 16)
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			got2 <- err.Error()
			return
		}
		got2 <- string(buf[:n])
	}()
	time.Sleep(60 * time.Millisecond)
	_, err = from.Write([]byte("datagram"))
	require.NoError(t, err)
	within(t, watchdog, func() { require.Equal(t, "datagram", <-got2) })
	require.Zero(t, p.Stats().Cycles, "the loop ran")
}

// Regression: Socket.NetConn took the socket out of the pool's epoll set
// (epoll_ctl DEL) without a reference on its fd, so a Close racing the
// conversion could close the number, a new file could take it and join the
// pool's epoll set, and the conversion's DEL, let go, removed the new
// file's registration: it never heard of its data again. The DEL now holds
// the reference: Close waits for it.
func TestRegressionNetConnDetachRacingCloseSparesReusedFd(t *testing.T) {
	fs := &sys.Faults{}
	p, err := New(withFaults(fs))
	require.NoError(t, err)
	defer p.Close()
	require.NoError(t, p.Start())
	sp := socketpair(t)
	defer unix.Close(sp[1])
	s, err := p.Driver().NewSocket(sp[0])
	require.NoError(t, err)
	num := s.Fd()

	pa := pauseFirst(t, fs, sys.CallEpollCtl) // the conversion's DEL
	converted := make(chan *NetConn, 1)
	go func() { converted <- s.NetConn() }()
	pa.waitReached(t)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	var fr *FdReady
	register := func() {
		reused := takeNumber(t, num, openEventfd)
		var err error
		fr, err = p.Driver().NewFdReady(reused[0])
		require.NoError(t, err)
	}
	select {
	case err := <-closed:
		// The bug: Close did not wait for the DEL in flight. A new file
		// takes the number and joins the epoll set before the DEL goes on.
		require.NoError(t, err)
		register()
		pa.let()
		within(t, watchdog, func() { <-converted })
	case <-time.After(200 * time.Millisecond): // Close waits, as it should
		pa.let()
		within(t, watchdog, func() { <-converted })
		within(t, watchdog, func() { require.NoError(t, <-closed) })
		register()
	}
	defer fr.Close()
	_, err = unix.Write(fr.Fd(), []byte{1, 0, 0, 0, 0, 0, 0, 0})
	require.NoError(t, err)
	ready := make(chan error, 1)
	Spawn(p.Driver(), "waiter", func(tk *Task) (PollEvents, error) {
		ev, err := fr.WaitReady(tk, SlotRead, PollIn)
		ready <- err
		return ev, err
	})
	select {
	case err := <-ready:
		require.NoError(t, err)
	case <-time.After(2 * time.Second):
		t.Fatal("the file that took the number lost its epoll registration")
	}
}

// A deadline set on a Socket before it becomes a NetConn carries over to
// the NetConn, and a deadline set on the NetConn afterwards replaces it:
// the Socket's own is not left to expire a later read.
func TestNetConnTakesTheSocketsDeadline(t *testing.T) {
	p := newTestPool(t)
	sp := socketpair(t)
	defer unix.Close(sp[1])
	s, err := p.Driver().NewSocket(sp[0])
	require.NoError(t, err)
	require.NoError(t, s.SetReadDeadline(time.Now().Add(30*time.Millisecond)))
	c := s.NetConn()
	defer c.Close()
	var n int
	within(t, watchdog, func() { n, err = c.Read(make([]byte, 8)) })
	require.ErrorIs(t, err, os.ErrDeadlineExceeded, "the Socket's deadline carried over")
	require.Zero(t, n)

	require.NoError(t, c.SetReadDeadline(time.Now().Add(time.Hour)))
	_, err = unix.Write(sp[1], []byte("later"))
	require.NoError(t, err)
	buf := make([]byte, 8)
	within(t, watchdog, func() { n, err = c.Read(buf) })
	require.NoError(t, err, "the Socket's passed deadline no longer counts")
	require.Equal(t, "later", string(buf[:n]))
}
