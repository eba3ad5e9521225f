//go:build linux

package iopool

import (
	"bytes"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

// FuzzSocketReadChunking: a peer writes a stream in chunks whose sizes come
// from the input, with pauses; a task reads it with buffer sizes from the
// input. The bytes read are exactly the bytes written, and EOF ends it.
func FuzzSocketReadChunking(f *testing.F) {
	f.Add([]byte{1, 200, 3, 17, 255, 0, 9}, []byte{1, 5, 64, 3})
	f.Add([]byte{255, 255, 255, 255}, []byte{255})
	f.Fuzz(func(t *testing.T, chunks, bufSizes []byte) {
		if len(chunks) == 0 || len(bufSizes) == 0 || len(chunks) > 64 {
			return
		}
		var want []byte
		for i, c := range chunks {
			for j := range int(c) + 1 {
				want = append(want, byte(i*31+j))
			}
		}
		p, err := New()
		require.NoError(t, err)
		defer p.Close()
		sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(sp[1])
		var got []byte
		require.NoError(t, p.Run(func(tk *Task) error {
			s, err := tk.Driver().NewSocket(sp[0])
			if err != nil {
				return err
			}
			defer s.Close()
			w, err := tk.Driver().NewSocket(sp[1])
			if err != nil {
				return err
			}
			writer := Spawn(tk.Driver(), "writer", func(t *Task) (int, error) {
				off := 0
				for i, c := range chunks {
					n := int(c) + 1
					if _, err := w.Write(t, want[off:off+n]); err != nil {
						return 0, err
					}
					off += n
					if i%3 == 0 {
						if err := t.Sleep(time.Duration(c) * time.Microsecond); err != nil {
							return 0, err
						}
					}
				}
				return 0, w.CloseWrite()
			})
			for i := 0; ; i++ {
				buf := make([]byte, int(bufSizes[i%len(bufSizes)])+1)
				n, err := s.Read(tk, buf)
				got = append(got, buf[:n]...)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return err
				}
			}
			_, err = writer.Join(tk)
			return err
		}))
		require.True(t, bytes.Equal(want, got), "read %d bytes, wrote %d", len(got), len(want))
	})
}

// TestEAGAINStorm: while a peer streams data, another goroutine steals
// reads from the same fd, so many wakes of the reading task find nothing
// (EAGAIN). Every byte is read once by one side or the other, the task never
// hangs, and nothing spins: neither the loop (cycles) nor the task inside
// Socket.Read (read system calls, counted at the fault seam: a Read that
// does not forget the readiness after EAGAIN retries the syscall at once,
// in a single cycle). Past the bound the seam fails the read, so a spin
// ends the test at once instead of burning CPU until the writer is done.
func TestEAGAINStorm(t *testing.T) {
	const total, chunk = 10000, 10
	const writes = total / chunk
	// A wake of the task costs a read that gets data or EAGAIN, and one
	// more to see EAGAIN after a short read; a deadline (every 20 ms)
	// costs nothing. 4 per write leaves room for a few spurious edges.
	const maxReads = 4 * writes
	errSpin := errors.New("TestEAGAINStorm: too many read system calls")
	var reads atomic.Int64
	fs := new(sys.Faults)
	prev := fs.Set(func(c sys.Call) error {
		if c == sys.CallRead && reads.Add(1) > maxReads {
			return errSpin
		}
		return nil
	})
	t.Cleanup(func() { fs.Set(prev) })
	runPool(t, func(tk *Task) error {
		sp := socketpair(t)
		defer unix.Close(sp[1])
		s, err := tk.Driver().NewSocket(sp[0])
		require.NoError(t, err)
		defer s.Close()
		stolen := 0
		stop, thiefDone := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(thiefDone)
			buf := make([]byte, 16)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if n, err := unix.Read(sp[0], buf); err == nil {
					stolen += n
				}
			}
		}()
		writerDone := make(chan struct{})
		go func() {
			defer close(writerDone)
			for range writes {
				unix.Write(sp[1], make([]byte, chunk))
				time.Sleep(10 * time.Microsecond)
			}
		}()
		stopThief := sync.OnceFunc(func() { close(stop); <-thiefDone })
		defer func() { stopThief(); <-writerDone }()
		mine := 0
		buf := make([]byte, 64)
		for writing := true; writing; {
			select {
			case <-writerDone:
				writing = false
			default:
			}
			require.NoError(t, s.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
			n, err := s.Read(tk, buf)
			if errors.Is(err, errSpin) {
				t.Fatalf("the reading task spins in Socket.Read: more than %d read system calls for %d writes "+
					"(is the readiness forgotten after EAGAIN? FdReady.ClearReady)", maxReads, writes)
			}
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				return err
			}
			mine += n
		}
		stopThief()
		for { // what neither side took yet
			n, err := unix.Read(sp[0], buf)
			if err != nil {
				break
			}
			mine += n
		}
		require.Equal(t, total, mine+stolen, "every byte was read exactly once")
		st := tk.Driver().Pool().Stats()
		t.Logf("read %d, stolen %d, read system calls %d for %d writes, stats %+v", mine, stolen, reads.Load(), writes, st)
		require.Less(t, st.Cycles, uint64(4*total), "the loop does not spin on EAGAIN")
		return nil
	}, withFaults(fs))
}
