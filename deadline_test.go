//go:build linux

package iopool

import (
	"math"
	"os"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// withWallStep returns t with its monotonic reading unchanged and its wall
// reading moved by step (whole seconds): the deadline a user computes with
// time.Now().Add(d) right after the wall clock stepped by step since the
// pool was created. The system clock cannot be stepped in a test (other
// processes share it), so the value is built from time.Time's documented
// encoding (wall: hasMonotonic bit, 33 bits of seconds since 1885, 30 bits
// of nanoseconds; ext: the monotonic reading), and checked.
func withWallStep(t *testing.T, tm time.Time, step time.Duration) time.Time {
	t.Helper()
	type timeLayout struct {
		wall uint64
		ext  int64
		loc  *time.Location
	}
	require.Equal(t, unsafe.Sizeof(time.Time{}), unsafe.Sizeof(timeLayout{}))
	out := tm
	l := (*timeLayout)(unsafe.Pointer(&out))
	require.NotZero(t, l.wall&(1<<63), "tm must carry a monotonic reading")
	l.wall += uint64(int64(step/time.Second)) << 30
	if out.Sub(tm) != 0 || out.Round(0).Sub(tm.Round(0)) != step {
		t.Fatalf("time.Time's encoding changed: cannot build a wall-stepped time (mono diff %v, wall diff %v)",
			out.Sub(tm), out.Round(0).Sub(tm.Round(0)))
	}
	return out
}

// readWithDeadline waits in a Read with deadline set and returns how long
// the Read took and its error; nothing is ever written to the socket.
func readWithDeadline(t *testing.T, deadline time.Time) (time.Duration, error) {
	var err error
	var took time.Duration
	runPool(t, func(tk *Task) error {
		sp := socketpair(t)
		defer unix.Close(sp[1])
		s, e := tk.Driver().NewSocket(sp[0])
		require.NoError(t, e)
		defer s.Close()
		require.NoError(t, s.SetReadDeadline(deadline))
		guard := Spawn(tk.Driver(), "guard", func(g *Task) (int, error) {
			// Ends a Read that would wait an hour.
			if err := g.Sleep(3 * time.Second); err != nil {
				return 0, nil
			}
			return 0, s.SetReadDeadline(time.Now())
		})
		start := time.Now()
		_, err = s.Read(tk, make([]byte, 16))
		took = time.Since(start)
		guard.Cancel()
		_, _ = guard.Join(tk)
		return nil
	})
	return took, err
}

// Regression: deadlines were kept as wall-clock nanoseconds and rebuilt with
// time.Unix(0, ns), losing the monotonic reading: a wall-clock step of an
// hour moved a 30 ms deadline by an hour (forward step: fired an hour late;
// backward: at once). They are converted once to the pool's monotonic clock.
func TestRegressionDeadlineIgnoresWallClockStep(t *testing.T) {
	took, err := readWithDeadline(t, withWallStep(t, time.Now().Add(30*time.Millisecond), time.Hour))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	require.Less(t, took, 2*time.Second, "a 30 ms deadline after a +1 h wall step")

	took, err = readWithDeadline(t, withWallStep(t, time.Now().Add(200*time.Millisecond), -time.Hour))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	require.GreaterOrEqual(t, took, 150*time.Millisecond, "a 200 ms deadline after a -1 h wall step")
	require.Less(t, took, 2*time.Second)
}

// Regression: a deadline after the year 2262 overflowed UnixNano and
// expired at once. It means never, as in package net: a Read waits for its
// data, a Write goes through.
func TestRegressionFarFutureDeadlineMeansNever(t *testing.T) {
	// (time.Unix(math.MaxInt64, 0) is not among them: the time package
	// itself counts it before now, and package net expires it at once.)
	for _, far := range []time.Time{time.Now().Add(math.MaxInt64), time.Unix(1<<62, 0), time.Now().AddDate(300, 0, 0)} {
		runPool(t, func(tk *Task) error {
			sp := socketpair(t)
			a, err := tk.Driver().NewSocket(sp[0])
			require.NoError(t, err)
			defer a.Close()
			b, err := tk.Driver().NewSocket(sp[1])
			require.NoError(t, err)
			defer b.Close()
			require.NoError(t, a.SetDeadline(far))
			writer := Spawn(tk.Driver(), "late-writer", func(t *Task) (int, error) {
				if err := t.Sleep(20 * time.Millisecond); err != nil {
					return 0, err
				}
				return b.Write(t, []byte("late"))
			})
			buf := make([]byte, 16)
			n, err := a.Read(tk, buf)
			require.NoError(t, err, "deadline %v", far)
			require.Equal(t, "late", string(buf[:n]))
			_, err = writer.Join(tk)
			require.NoError(t, err)
			_, err = a.Write(tk, []byte("ok"))
			require.NoError(t, err, "deadline %v", far)
			return nil
		})
	}

	// The same through a NetConn.
	_, a, b := netConnPair(t)
	require.NoError(t, a.SetDeadline(time.Unix(1<<62, 0)))
	go func() {
		time.Sleep(20 * time.Millisecond)
		_, _ = b.Write([]byte("late"))
	}()
	buf := make([]byte, 16)
	n, err := a.Read(buf)
	require.NoError(t, err)
	require.Equal(t, "late", string(buf[:n]))
	_, err = a.Write([]byte("ok"))
	require.NoError(t, err)
}

// Regression: a NetConn call waiting on a pool that is not running (no Run
// active) ignored its deadline and blocked forever: the deadline was only a
// pool timer. It now also parks on a Go timer.
func TestRegressionNetConnDeadlineWithoutRunningPool(t *testing.T) {
	p := newTestPool(t)
	sp := socketpair(t)
	a, err := p.Driver().NewNetConn(sp[0])
	require.NoError(t, err)
	b, err := p.Driver().NewNetConn(sp[1])
	require.NoError(t, err)
	defer a.Close()
	defer b.Close()
	within(t, 10*time.Second, func() {
		require.NoError(t, a.SetReadDeadline(time.Now().Add(30*time.Millisecond)))
		_, err := a.Read(make([]byte, 16))
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)

		require.NoError(t, a.SetWriteDeadline(time.Now().Add(30*time.Millisecond)))
		chunk := make([]byte, 64<<10)
		for err == nil || !isTimeout(err) {
			_, err = a.Write(chunk) // fills the socket buffer, then waits
			if err != nil && !isTimeout(err) {
				require.NoError(t, err)
			}
		}
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	})
}

func isTimeout(err error) bool {
	te, ok := err.(interface{ Timeout() bool })
	return ok && te.Timeout()
}
