//go:build linux

package iopool

import (
	"io"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

// Errors are shaped as package net shapes them, from the task layer: a
// refused Dial and a Listen on a used address are *net.OpError over an
// *os.SyscallError, with the address; use after Close matches both
// ErrClosed and net.ErrClosed; a deadline is a net.Error with Timeout()
// and matches os.ErrDeadlineExceeded; io.EOF stays bare.
func TestSocketErrorsAreShapedAsPackageNets(t *testing.T) {
	parallel(t)
	runPool(t, func(tk *Task) error {
		l, err := tk.Driver().Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		_, err = tk.Driver().Listen("tcp", l.Addr().String())
		requireOpError(t, err, "listen", "tcp", "bind", unix.EADDRINUSE)
		require.Equal(t, "listen tcp "+l.Addr().String()+": bind: address already in use", err.Error(), "the message package net gives")

		refused := l.Addr().String()
		require.NoError(t, l.Close()) // nobody listens on the port now
		_, err = Dial(tk, "tcp", refused)
		requireOpError(t, err, "dial", "tcp", "connect", unix.ECONNREFUSED)
		require.Equal(t, "dial tcp "+refused+": connect: connection refused", err.Error())

		a, b := socketpairSockets(t, tk)
		defer b.Close()
		require.NoError(t, a.SetReadDeadline(time.Now().Add(-time.Second)))
		_, err = a.Read(tk, make([]byte, 1))
		var ne net.Error
		require.ErrorAs(t, err, &ne)
		require.True(t, ne.Timeout())
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		var oe *net.OpError
		require.ErrorAs(t, err, &oe)
		require.Equal(t, "read", oe.Op)
		require.Equal(t, "unix", oe.Net)

		require.NoError(t, b.CloseWrite())
		require.NoError(t, a.SetReadDeadline(time.Time{}))
		_, err = a.Read(tk, make([]byte, 1))
		require.Same(t, io.EOF, err, "io.EOF is bare, as in package net")

		require.NoError(t, a.Close())
		for _, err := range []error{
			second(a.Read(tk, make([]byte, 1))),
			second(a.Write(tk, []byte("x"))),
			second(a.TryRead(make([]byte, 1))),
			a.CloseWrite(),
			a.SetNoDelay(true),
		} {
			require.ErrorIs(t, err, ErrClosed)
			require.ErrorIs(t, err, net.ErrClosed)
			require.ErrorAs(t, err, &oe)
		}
		return nil
	})
}

func second[T any](_ T, err error) error { return err }

// requireOpError checks that err is a *net.OpError for op on network
// wrapping an *os.SyscallError of call with errno.
func requireOpError(t *testing.T, err error, op, network, call string, errno unix.Errno) {
	t.Helper()
	var oe *net.OpError
	require.ErrorAs(t, err, &oe, "%v", err)
	require.Equal(t, op, oe.Op)
	require.Equal(t, network, oe.Net)
	var se *os.SyscallError
	require.ErrorAs(t, err, &se)
	require.Equal(t, call, se.Syscall)
	require.ErrorIs(t, err, errno)
}

// socketpairSockets returns the two ends of a unix stream socketpair as
// Sockets on tk's pool.
func socketpairSockets(t *testing.T, tk *Task) (*Socket, *Socket) {
	t.Helper()
	sp := socketpair(t)
	a, err := tk.Driver().NewSocket(sp[0])
	require.NoError(t, err)
	b, err := tk.Driver().NewSocket(sp[1])
	require.NoError(t, err)
	return a, b
}

// TryRead and TryWrite never wait: with nothing to read TryRead returns
// ErrWouldBlock itself; TryWrite fills the socket and reports how much it
// took with ErrWouldBlock; once the peer drains it, the rest goes.
func TestTryReadTryWriteNeverWait(t *testing.T) {
	runPool(t, func(tk *Task) error {
		a, b := socketpairSockets(t, tk)
		defer a.Close()
		defer b.Close()
		buf := make([]byte, 64<<10)
		n, err := a.TryRead(buf)
		require.Equal(t, 0, n)
		require.Same(t, ErrWouldBlock, err, "unwrapped")
		n, err = a.TryRead(buf)
		require.Same(t, ErrWouldBlock, err, "again, without a new edge")
		require.Zero(t, n)

		n, err = b.TryWrite([]byte("hello"))
		require.NoError(t, err)
		require.Equal(t, 5, n)
		require.NoError(t, a.WaitReadable(tk))
		n, err = a.TryRead(buf)
		require.NoError(t, err)
		require.Equal(t, "hello", string(buf[:n]))

		big := make([]byte, 8<<20) // more than a socketpair holds
		n, err = b.TryWrite(big)
		require.Same(t, ErrWouldBlock, err)
		require.Positive(t, n)
		require.Less(t, n, len(big))
		// Both ends in one task: each side goes as far as it can without
		// waiting; Yield lets the loop record their edges.
		sent, got := n, 0
		for got < len(big) {
			k, err := b.TryWrite(big[sent:])
			if err != nil {
				require.Same(t, ErrWouldBlock, err)
			}
			sent += k
			m, err := a.TryRead(buf)
			if err != nil {
				require.Same(t, ErrWouldBlock, err)
			}
			got += m
			if k == 0 && m == 0 {
				require.NoError(t, tk.Yield())
			}
		}
		require.Equal(t, len(big), sent)
		return nil
	})
}

// Regression: a new Socket started with its readiness assumed recorded,
// so WaitReadable on a freshly accepted connection returned at once,
// without data, and a server that takes a read buffer only for a ready
// connection took one per connection at accept. WaitReadable now waits
// for the kernel's word: it stays pending through the connection's
// data-less edges (the registration's writable edge, the peer's writes
// of nothing) and loop cycles, and returns once the peer writes.
func TestRegressionWaitReadableOnNewSocketWaitsForData(t *testing.T) {
	runPool(t, func(tk *Task) error {
		l, err := tk.Driver().Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		c, err := Dial(tk, "tcp", l.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		srv, err := l.Accept(tk)
		require.NoError(t, err)
		defer srv.Close()

		woke := false
		h := Spawn(tk.Driver(), "wait", func(t *Task) (struct{}, error) {
			err := srv.WaitReadable(t)
			woke = true
			return struct{}{}, err
		})
		n, err := c.Write(tk, nil) // a write of nothing: no data, no edge of data
		require.NoError(t, err)
		require.Zero(t, n)
		for range 50 { // loop cycles: the registration's edges are delivered
			require.NoError(t, tk.Yield())
		}
		require.False(t, woke, "WaitReadable returned on a new socket without data")

		_, err = c.Write(tk, []byte("x"))
		require.NoError(t, err)
		_, err = h.Join(tk)
		require.NoError(t, err)
		require.True(t, woke)
		buf := make([]byte, 4)
		n, err = srv.TryRead(buf)
		require.NoError(t, err)
		require.Equal(t, "x", string(buf[:n]))

		// Data queued before the socket was registered is known at the
		// loop's next cycle (the registration's first edge).
		a, b := socketpairSockets(t, tk)
		defer a.Close()
		defer b.Close()
		_, err = b.Write(tk, []byte("y"))
		require.NoError(t, err)
		require.NoError(t, a.WaitReadable(tk))
		n, err = a.TryRead(buf)
		require.NoError(t, err)
		require.Equal(t, "y", string(buf[:n]))
		return nil
	})
}

// stackPerSuspendedTask returns the goroutine stack bytes per task of n
// tasks, each on a socketpair of its own, suspended in body.
func stackPerSuspendedTask(t *testing.T, n int, body func(tk *Task, s *Socket) error) float64 {
	stacks := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.StackInuse
	}
	var per float64
	runPool(t, func(tk *Task) error {
		socks := make([]*Socket, 0, 2*n)
		defer func() {
			for _, s := range socks {
				s.Close()
			}
		}()
		for range n {
			a, b := socketpairSockets(t, tk)
			socks = append(socks, a, b)
		}
		before := stacks()
		started := 0
		for i := 0; i < len(socks); i += 2 {
			s := socks[i]
			Spawn(tk.Driver(), "idle", func(tk *Task) (struct{}, error) {
				started++
				return struct{}{}, body(tk, s)
			})
		}
		for started < n { // each ran until it suspended in body
			require.NoError(t, tk.Yield())
		}
		per = float64(stacks()-before) / float64(n)
		return nil
	})
	return per
}

// Regression: with the wait passed down the one I/O path, a task
// suspended in Socket.Read sat about 270 bytes deeper, past what a
// goroutine's smallest stack (2 KiB) holds: each idle connection of a
// task-per-connection server cost a 4 KiB stack. Tasks suspended in Read
// (as BenchmarkIdleConnMemory's task layer: a deferred Close, a one-byte
// buffer) and in WaitReadable then Read (the conns tool's iopool-task
// server) must keep the 2 KiB stack. Not under the race detector, which
// makes every frame bigger.
func TestRegressionTaskInReadFitsTheSmallestStack(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's instrumentation changes frame sizes")
	}
	const n = 500
	inRead := stackPerSuspendedTask(t, n, func(tk *Task, s *Socket) error {
		defer s.Close()
		var buf [1]byte
		_, err := s.Read(tk, buf[:])
		return err
	})
	require.Less(t, inRead, 3072.0, "stack bytes per task suspended in Read")
	inWait := stackPerSuspendedTask(t, n, func(tk *Task, s *Socket) error {
		defer s.Close()
		if err := s.WaitReadable(tk); err != nil {
			return err
		}
		var buf [16]byte
		_, err := s.Read(tk, buf[:])
		return err
	})
	require.Less(t, inWait, 3072.0, "stack bytes per task suspended in WaitReadable")
	require.Greater(t, inWait, 1024.0, "the tasks hold their stacks (the measure measures)")
}

// Regression: a task's stack grows (to 4 KiB) when a call goes deeper than
// the smallest stack (2 KiB) less the runtime's guard (928 bytes), and the
// runtime shrinks it back only while the task uses less than a quarter of
// it, guard included: a task suspended in a wait never does. So the
// deepest points of a task's I/O (the system call under Read and Write,
// the readiness check under a wait) must fit in about 1,100 bytes together
// with the coroutine's base (344 bytes: the runtime's, iter.Pull's and
// the task's frames) and the user's own frames. With four more frames
// under the read (withFd's closure, x/sys's wrappers), the conns tool's
// iopool-task server (echo.ServeTask) held a 4 KiB stack per idle
// connection: 5,452 bytes per connection instead of 3,400.
//
// The task echoes twice, as that server does (a wait that suspends, a
// read, a write), under user frames of 0 and of 96 bytes. Whether its
// stack grew is exact, not a measure of memory: growing copies the stack,
// so the address of a variable on it changes.
func TestRegressionTaskEchoFitsTheSmallestStack(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's instrumentation changes frame sizes")
	}
	echoTwice := func(tk *Task, s *Socket) error {
		var buf [64]byte // as a buffer taken from a free list
		for range 2 {
			if err := s.WaitReadable(tk); err != nil {
				return err
			}
			n, err := s.Read(tk, buf[:])
			if err == nil {
				_, err = s.Write(tk, buf[:n])
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	for _, user := range []struct {
		name  string
		frame func(*Task, *Socket, func(*Task, *Socket) error) error
	}{
		{"none", func(tk *Task, s *Socket, f func(*Task, *Socket) error) error { return f(tk, s) }},
		{"96 bytes", userFrame96},
	} {
		var grew bool
		runPool(t, func(tk *Task) error {
			a, b := socketpairSockets(t, tk)
			defer a.Close()
			defer b.Close()
			h := Spawn(tk.Driver(), "echo", func(tk *Task) (struct{}, error) {
				var mark byte
				at := uintptr(unsafe.Pointer(&mark))
				err := user.frame(tk, a, echoTwice)
				grew = uintptr(unsafe.Pointer(&mark)) != at
				return struct{}{}, err
			})
			for _, msg := range []string{"ping", "pong"} {
				_, err := b.Write(tk, []byte(msg))
				require.NoError(t, err)
				got := make([]byte, len(msg))
				_, err = io.ReadFull(b.Reader(tk), got)
				require.NoError(t, err)
				require.Equal(t, msg, string(got))
			}
			_, err := h.Join(tk)
			return err
		})
		require.False(t, grew, "user frames %s: the task's stack grew past 2 KiB during an echo", user.name)
	}
}

// userFrame96 calls f from a frame of 96 bytes.
//
//go:noinline
func userFrame96(tk *Task, s *Socket, f func(*Task, *Socket) error) error {
	var state [72]byte
	state[len(state)-1] = byte(s.Fd())
	err := f(tk, s)
	if state[len(state)-1] == 0xff && err == nil { // keeps state live across the call
		return io.ErrUnexpectedEOF
	}
	return err
}

// A side's hint to try the system call at once (ioWait.tryNext) can be
// stale: WaitReadable said readable, or a write took everything, and then
// the data went or the send buffer filled without the pool seeing it (a
// raw read or write on the fd). The hinted call then meets EAGAIN, forgets
// the readiness and waits for the kernel's next edge, as after any EAGAIN:
// Read returns the next data, not an error, and Write the bytes once the
// peer makes room. The reads are counted: the hinted Read makes one read
// that fails (EAGAIN) and one that returns the data.
func TestSocketStaleTryNextWaits(t *testing.T) {
	parallel(t)
	fs := &sys.Faults{}
	var reads atomic.Int32
	fs.Set(func(c sys.Call) error {
		if c == sys.CallRead {
			reads.Add(1)
		}
		return nil
	})
	runPool(t, func(tk *Task) error {
		a, b := socketpairSockets(t, tk)
		defer a.Close()
		defer b.Close()

		// Read: WaitReadable ends ready, a raw read takes the data.
		_, err := b.Write(tk, []byte("x"))
		require.NoError(t, err)
		require.NoError(t, a.WaitReadable(tk))
		var raw [8]byte
		n, err := unix.Read(a.Fd(), raw[:])
		require.NoError(t, err)
		require.Equal(t, "x", string(raw[:n]))
		reads.Store(0)
		got := Spawn(tk.Driver(), "reader", func(tk *Task) (string, error) {
			var buf [8]byte
			n, err := a.Read(tk, buf[:])
			return string(buf[:n]), err
		})
		require.NoError(t, tk.Yield()) // the reader met EAGAIN and waits
		_, err = b.Write(tk, []byte("y"))
		require.NoError(t, err)
		s, err := got.Join(tk)
		require.NoError(t, err)
		require.Equal(t, "y", s)
		require.EqualValues(t, 2, reads.Load(), "the hinted read: one EAGAIN, then the data")

		// Write: a write that took everything, then a raw write fills the
		// send buffer.
		_, err = a.Write(tk, []byte("w"))
		require.NoError(t, err)
		fill := make([]byte, 64<<10)
		for {
			if _, err := unix.Write(a.Fd(), fill); err == unix.EAGAIN {
				break
			} else {
				require.NoError(t, err)
			}
		}
		wrote := Spawn(tk.Driver(), "writer", func(tk *Task) (int, error) {
			return a.Write(tk, []byte("z"))
		})
		require.NoError(t, tk.Yield()) // the writer met EAGAIN and waits
		var last byte
		drain := make([]byte, 64<<10)
		for {
			if _, done, _ := wrote.Result(); done {
				break
			}
			n, err := unix.Read(b.Fd(), drain)
			if err == unix.EAGAIN {
				require.NoError(t, tk.Yield())
				continue
			}
			require.NoError(t, err)
			last = drain[n-1]
		}
		n, err = wrote.Join(tk)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		for { // what the writer wrote comes last
			n, err := unix.Read(b.Fd(), drain)
			if err == unix.EAGAIN {
				break
			}
			require.NoError(t, err)
			last = drain[n-1]
		}
		require.Equal(t, byte('z'), last)
		return nil
	}, withFaults(fs))
}
