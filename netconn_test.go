//go:build linux

package iopool

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// servePool runs p in the background until the test ends.
func servePool(t *testing.T, p *Pool) {
	t.Helper()
	stop := NewOneshot[struct{}]()
	done := make(chan error, 1)
	go func() {
		done <- p.Run(func(tk *Task) error {
			_, err := stop.Recv(tk)
			return err
		})
	}()
	t.Cleanup(func() {
		_ = stop.Send(struct{}{})
		require.NoError(t, <-done)
	})
}

// netConnPair returns two NetConns over a socketpair on a running pool.
func netConnPair(t *testing.T, opts ...Option) (*Pool, *NetConn, *NetConn) {
	t.Helper()
	p := newTestPool(t, opts...)
	servePool(t, p)
	sp := socketpair(t)
	a, err := p.Driver().NewNetConn(sp[0])
	require.NoError(t, err)
	b, err := p.Driver().NewNetConn(sp[1])
	require.NoError(t, err)
	t.Cleanup(func() { a.Close(); b.Close() })
	return p, a, b
}

// Plain goroutines stream through NetConns with bufio and io.Copy; more
// than the socket buffer is in flight, so both sides wait on the pool.
func TestNetConnStreamsBetweenGoroutines(t *testing.T) {
	parallel(t)
	_, a, b := netConnPair(t)
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	go func() {
		w := bufio.NewWriterSize(a, 3000)
		_, _ = w.Write(want)
		_ = w.Flush()
		_ = a.CloseWrite()
	}()
	var got bytes.Buffer
	_, err := io.Copy(&got, b)
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got.Bytes()), "got %d bytes, want %d", got.Len(), len(want))
	require.Equal(t, "unix", a.LocalAddr().Network())
}

func TestNetConnDeadlines(t *testing.T) {
	_, a, b := netConnPair(t)
	buf := make([]byte, 16)

	require.NoError(t, a.SetReadDeadline(time.Now().Add(-time.Second)))
	var n int
	var err error
	within(t, watchdog, func() { n, err = a.Read(buf) }) // no data comes: only the deadline ends it
	require.Zero(t, n)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout(), "a past deadline times out at once: %v", err)
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)

	// A deadline set while a read waits (with no deadline) ends that read.
	require.NoError(t, a.SetReadDeadline(time.Time{}))
	errc := make(chan error, 1)
	go func() { _, err := a.Read(buf); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	require.NoError(t, a.SetReadDeadline(time.Now().Add(10*time.Millisecond)))
	select {
	case err := <-errc:
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		require.Less(t, time.Since(start), time.Second)
	case <-time.After(5 * time.Second):
		t.Fatal("a deadline set during a read did not end it")
	}

	// Once the deadline is cleared the connection works again.
	require.NoError(t, a.SetDeadline(time.Time{}))
	_, err = b.Write([]byte("after"))
	require.NoError(t, err)
	n, err = a.Read(buf)
	require.NoError(t, err)
	require.Equal(t, "after", string(buf[:n]))

	// A write deadline ends a write blocked on a full socket and reports
	// what was written. (200 ms: the write must make its first syscall
	// before the deadline, on a machine that may be loaded.)
	require.NoError(t, a.SetWriteDeadline(time.Now().Add(200*time.Millisecond)))
	n, err = a.Write(make([]byte, 8<<20))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	require.Positive(t, n)
}

// Close wakes a waiting Read with net.ErrClosed; closing the pool wakes a
// goroutine parked on it.
func TestNetConnCloseWakesWaiters(t *testing.T) {
	_, a, _ := netConnPair(t)
	errc := make(chan error, 1)
	go func() { _, err := a.Read(make([]byte, 8)); errc <- err }()
	time.Sleep(10 * time.Millisecond)
	require.NoError(t, a.Close())
	require.NoError(t, a.Close(), "twice is a no-op")
	select {
	case err := <-errc:
		require.ErrorIs(t, err, net.ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake the reader")
	}
	_, err := a.Write([]byte("x"))
	require.ErrorIs(t, err, net.ErrClosed)

	requireNoLeaks(t)
	p, err := New()
	require.NoError(t, err)
	runDone := make(chan error, 1)
	stop := NewOneshot[struct{}]()
	go func() {
		runDone <- p.Run(func(tk *Task) error { _, err := stop.Recv(tk); return err })
	}()
	sp := socketpair(t)
	defer unix.Close(sp[1])
	c, err := p.Driver().NewNetConn(sp[0])
	require.NoError(t, err)
	defer c.Close()
	go func() { _, err := c.Read(make([]byte, 8)); errc <- err }()
	time.Sleep(10 * time.Millisecond)
	require.NoError(t, p.Close())
	require.ErrorIs(t, <-runDone, ErrClosed)
	select {
	case err := <-errc:
		require.ErrorIs(t, err, ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("closing the pool did not wake the reader")
	}
}

// Many goroutines read, write and set deadlines at once: no race, no lost
// byte among the reads that succeed.
func TestNetConnConcurrentCalls(t *testing.T) {
	parallel(t)
	_, a, b := netConnPair(t)
	go func() { _, _ = io.Copy(b, b) }() // echo
	var wg sync.WaitGroup
	var mu sync.Mutex
	written, read := 0, 0
	for range 8 {
		wg.Add(3)
		go func() {
			defer wg.Done()
			n, _ := a.Write(make([]byte, 1000))
			mu.Lock()
			written += n
			mu.Unlock()
		}()
		go func() {
			defer wg.Done()
			_ = a.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		}()
		go func() {
			defer wg.Done()
			n, err := a.Read(make([]byte, 500))
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("read: %v", err)
			}
			mu.Lock()
			read += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	require.NoError(t, a.SetReadDeadline(time.Now().Add(2*time.Second)))
	rest := make([]byte, written)
	for read < written {
		n, err := a.Read(rest)
		require.NoError(t, err)
		read += n
	}
	require.Equal(t, 8000, written)
	require.Equal(t, written, read)
}

// BenchmarkNetConnPingPong: a goroutine sends 64 bytes and waits for them
// to come back from an echo goroutine that reads into a 4 KiB buffer, over
// NetConns on a running pool: a unix socketpair with both ends NetConns,
// and loopback TCP with the echo end a NetConn accepted through
// NetListener and the client Go's net.
func BenchmarkNetConnPingPong(b *testing.B) {
	echo := func(c net.Conn) {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
	}
	run := func(b *testing.B, client net.Conn) {
		b.ReportAllocs()
		msg, got := make([]byte, 64), make([]byte, 4096)
		b.ResetTimer()
		for range b.N {
			if _, err := client.Write(msg); err != nil {
				b.Fatal(err)
			}
			for n := 0; n < len(msg); {
				m, err := client.Read(got)
				if err != nil {
					b.Fatal(err)
				}
				n += m
			}
		}
		b.StopTimer()
	}
	b.Run("unix", func(b *testing.B) {
		p, err := New()
		require.NoError(b, err)
		defer p.Close()
		stop := NewOneshot[struct{}]()
		done := make(chan error, 1)
		go func() { done <- p.Run(func(tk *Task) error { _, err := stop.Recv(tk); return err }) }()
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		require.NoError(b, err)
		a, err := p.Driver().NewNetConn(fds[0])
		require.NoError(b, err)
		c, err := p.Driver().NewNetConn(fds[1])
		require.NoError(b, err)
		go echo(c)
		run(b, a)
		a.Close()
		c.Close()
		_ = stop.Send(struct{}{})
		require.NoError(b, <-done)
	})
	b.Run("tcp", func(b *testing.B) {
		p, err := New()
		require.NoError(b, err)
		defer p.Close()
		stop := NewOneshot[struct{}]()
		done := make(chan error, 1)
		go func() { done <- p.Run(func(tk *Task) error { _, err := stop.Recv(tk); return err }) }()
		l, err := p.Driver().Listen("tcp", "127.0.0.1:0")
		require.NoError(b, err)
		nl := l.NetListener()
		client, err := net.Dial("tcp", nl.Addr().String())
		require.NoError(b, err)
		c, err := nl.Accept()
		require.NoError(b, err)
		go echo(c)
		run(b, client)
		client.Close()
		c.Close()
		nl.Close()
		_ = stop.Send(struct{}{})
		require.NoError(b, <-done)
	})
}
