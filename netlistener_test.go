//go:build linux

package iopool

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

// Plain goroutines accept through the net.Listener and echo over the
// *NetConn it returns, over TCP and a unix socket; Close wakes an Accept
// that waits.
func TestNetListenerAcceptsFromGoroutines(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{
		{"tcp", "127.0.0.1:0"},
		{"tcp6", "[::1]:0"},
		{"unix", filepath.Join(t.TempDir(), "nl.sock")},
	} {
		t.Run(tc.network, func(t *testing.T) {
			if tc.network == "tcp6" {
				skipWithoutIPv6Loopback(t)
			}
			p := newTestPool(t)
			servePool(t, p)
			l, err := p.Driver().Listen(tc.network, tc.addr)
			require.NoError(t, err)
			nl := l.NetListener()
			require.Equal(t, l.Addr(), nl.Addr())

			served := make(chan error, 1)
			go func() {
				c, err := nl.Accept()
				if err != nil {
					served <- err
					return
				}
				defer c.Close()
				if _, ok := c.(*NetConn); !ok {
					served <- errors.New("Accept did not return a *NetConn")
					return
				}
				_, err = io.Copy(c, c)
				served <- err
			}()
			c, err := net.Dial(nl.Addr().Network(), nl.Addr().String())
			require.NoError(t, err)
			defer c.Close()
			_, err = c.Write([]byte("ping"))
			require.NoError(t, err)
			buf := make([]byte, 4)
			_, err = io.ReadFull(c, buf)
			require.NoError(t, err)
			require.Equal(t, "ping", string(buf))
			require.NoError(t, c.(interface{ CloseWrite() error }).CloseWrite())
			require.NoError(t, <-served)

			// An Accept waiting with no client is woken by Close.
			accepted := make(chan error, 1)
			go func() {
				_, err := nl.Accept()
				accepted <- err
			}()
			time.Sleep(10 * time.Millisecond) // let it park (not needed for correctness)
			require.NoError(t, nl.Close())
			select {
			case err := <-accepted:
				require.ErrorIs(t, err, net.ErrClosed)
				var oe *net.OpError
				require.ErrorAs(t, err, &oe)
				require.Equal(t, "accept", oe.Op)
			case <-time.After(5 * time.Second):
				t.Fatal("Close did not wake the waiting Accept")
			}
			require.NoError(t, nl.Close(), "a second Close is a no-op")
			_, err = nl.Accept()
			require.ErrorIs(t, err, net.ErrClosed)
		})
	}
}

// Accepted TCP connections have TCP_NODELAY set, from Listener.Accept in a
// task and from the net.Listener, as in package net.
func TestAcceptedTCPHasNoDelay(t *testing.T) {
	parallel(t)
	p := newTestPool(t)
	servePool(t, p)
	l, err := p.Driver().Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	nl := l.NetListener()
	defer nl.Close()
	dialed := make(chan struct{})
	go func() {
		defer close(dialed)
		c, err := net.Dial("tcp", l.Addr().String())
		if err == nil {
			_, _ = c.Read(make([]byte, 1)) // until the server closes
			c.Close()
		}
	}()
	c, err := nl.Accept()
	require.NoError(t, err)
	v, err := unix.GetsockoptInt(c.(*NetConn).Fd(), unix.IPPROTO_TCP, unix.TCP_NODELAY)
	require.NoError(t, c.Close())
	<-dialed
	require.NoError(t, err)
	require.Equal(t, 1, v)

	runPool(t, func(tk *Task) error {
		l, err := tk.Driver().Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		dialed := make(chan struct{})
		go func() {
			defer close(dialed)
			c, err := net.Dial("tcp", l.Addr().String())
			if err == nil {
				_, _ = c.Read(make([]byte, 1)) // until the server closes
				c.Close()
			}
		}()
		s, err := l.Accept(tk)
		require.NoError(t, err)
		v, err := unix.GetsockoptInt(s.Fd(), unix.IPPROTO_TCP, unix.TCP_NODELAY)
		require.NoError(t, s.Close())
		<-dialed
		require.NoError(t, err)
		require.Equal(t, 1, v)
		return nil
	})
}

// Closing the pool wakes an Accept parked on it: it fails with ErrClosed
// and the goroutine goes on.
func TestNetListenerAcceptWokenByPoolClose(t *testing.T) {
	requireNoLeaks(t)
	p, err := New()
	require.NoError(t, err)
	stop := NewOneshot[struct{}]()
	ran := make(chan error, 1)
	go func() { ran <- p.Run(func(tk *Task) error { _, err := stop.Recv(tk); return err }) }()
	l, err := p.Driver().Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	nl := l.NetListener()
	accepted := make(chan error, 1)
	go func() {
		_, err := nl.Accept()
		accepted <- err
	}()
	time.Sleep(10 * time.Millisecond) // let it park (not needed for correctness)
	require.NoError(t, p.Close())
	require.ErrorIs(t, <-ran, ErrClosed)
	select {
	case err := <-accepted:
		require.ErrorIs(t, err, ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("the pool's Close did not wake the waiting Accept")
	}
	require.NoError(t, nl.Close())
}

// A NetConn has the socket options of *net.TCPConn.
func TestNetConnSocketOptions(t *testing.T) {
	parallel(t)
	p := newTestPool(t)
	servePool(t, p)
	l, err := p.Driver().Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	nl := l.NetListener()
	defer nl.Close()
	dialed := make(chan struct{})
	go func() {
		defer close(dialed)
		if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
			_, _ = c.Read(make([]byte, 1))
			c.Close()
		}
	}()
	c, err := nl.Accept()
	require.NoError(t, err)
	nc := c.(*NetConn)
	require.NoError(t, nc.SetNoDelay(false))
	require.NoError(t, nc.SetKeepAlive(true))
	require.NoError(t, nc.SetKeepAlivePeriod(3*time.Second))
	require.NoError(t, nc.SetReadBuffer(1<<16))
	require.NoError(t, nc.SetWriteBuffer(1<<16))
	require.NoError(t, nc.SetLinger(0))
	v, err := unix.GetsockoptInt(nc.Fd(), unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
	require.NoError(t, err)
	require.Equal(t, 3, v)
	require.NoError(t, nc.Close())
	<-dialed
	require.ErrorIs(t, nc.SetNoDelay(true), ErrClosed)
}

// signalWriter closes seen when a write contains want: a log sink that
// tells the test when a line has been logged.
type signalWriter struct {
	want string
	once sync.Once
	seen chan struct{}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

// Regression (issue 19, bug 6): under EMFILE the NetListener's Accept
// backed off with time.Sleep (up to 1 s) holding its lock, deaf to Close:
// the Accept returned only when the pause ended. Close must end the pause:
// the waiting Accept fails with net.ErrClosed well before its 1 s pause
// would have run out. (The fault seam fails every accept4 with EMFILE; the
// log line of the 1 s pause says the Accept is in it.)
func TestRegressionCloseEndsNetListenerEMFILEBackoff(t *testing.T) {
	logged := &signalWriter{want: "pause=1s", seen: make(chan struct{})}
	fs := new(sys.Faults)
	p := newTestPool(t, WithLogger(slog.New(slog.NewTextHandler(logged, nil))), withFaults(fs))
	servePool(t, p)
	l, err := p.Driver().Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	nl := l.NetListener()
	prev := fs.Set(func(c sys.Call) error {
		if c == sys.CallAccept {
			return unix.EMFILE
		}
		return nil
	})
	t.Cleanup(func() { fs.Set(prev) })
	accepted := make(chan error, 1)
	go func() {
		_, err := nl.Accept()
		accepted <- err
	}()
	c, err := net.Dial("tcp", l.Addr().String()) // readiness for the accept to fail on
	require.NoError(t, err)
	defer c.Close()
	select {
	case <-logged.seen:
	case err := <-accepted:
		t.Fatalf("Accept returned during the back-off: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the back-off never reached 1 s")
	}
	closed := make(chan error, 1)
	go func() { closed <- nl.Close() }()
	// Generous bounds, far below the 1 s pause the Accept is in.
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(500 * time.Millisecond):
		t.Fatal("Close waited for the back-off")
	}
	select {
	case err := <-accepted:
		require.ErrorIs(t, err, net.ErrClosed)
		var oe *net.OpError
		require.ErrorAs(t, err, &oe)
		require.Equal(t, "accept", oe.Op)
	case <-time.After(500 * time.Millisecond):
		t.Fatal("the Accept pausing for fds did not wake at Close")
	}
}

// A NetConn that a NetListener accepts keeps its peer's address as accept4
// gave it (no getpeername): the same as the kernel reports afterwards, for
// TCP and for unix sockets, named or not.
func TestNetListenerAcceptedPeerAddressIsGetpeernames(t *testing.T) {
	parallel(t)
	p := newTestPool(t)
	for _, tc := range []struct{ network, addr string }{
		{"tcp", "127.0.0.1:0"},
		{"unix", filepath.Join(t.TempDir(), "peer.sock")},
	} {
		l, err := p.Driver().Listen(tc.network, tc.addr)
		require.NoError(t, err)
		nl := l.NetListener()
		client, err := net.Dial(tc.network, nl.Addr().String())
		require.NoError(t, err)
		c, err := nl.Accept()
		require.NoError(t, err)
		nc := c.(*NetConn)
		require.Equal(t, nc.s.RemoteAddr(), nc.RemoteAddr(), tc.network)
		require.Equal(t, client.LocalAddr().String(), nc.RemoteAddr().String(), tc.network)
		require.NoError(t, c.Close())
		require.NoError(t, client.Close())
		require.NoError(t, nl.Close())
	}
}
