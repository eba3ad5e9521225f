//go:build linux

package iopool

import (
	"reflect"
	"runtime"
	"testing"
	"weak"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/uring"
)

// SQE mirrors the ring's entry field for field, and entry copies every one.
func TestSQEEntryCopiesEveryField(t *testing.T) {
	parallel(t)
	ours, ring := reflect.TypeFor[SQE](), reflect.TypeFor[uring.SQE]()
	var names []string
	for f := range ring.Fields() {
		if !f.IsExported() {
			continue
		}
		o, ok := ours.FieldByName(f.Name)
		require.True(t, ok, "SQE lacks the ring entry's field %s", f.Name)
		require.Equal(t, f.Type, o.Type, "field %s", f.Name)
		names = append(names, f.Name)
	}
	for f := range ours.Fields() {
		if f.IsExported() {
			_, ok := ring.FieldByName(f.Name)
			require.True(t, ok, "SQE has a field %s the ring entry lacks", f.Name)
		}
	}
	var s SQE
	v := reflect.ValueOf(&s).Elem()
	for i, name := range names {
		f := v.FieldByName(name)
		f.Set(reflect.ValueOf(uint64(i + 1)).Convert(f.Type()))
	}
	e := s.entry()
	ev := reflect.ValueOf(e)
	for i, name := range names {
		require.Equal(t, uint64(i+1), ev.FieldByName(name).Convert(reflect.TypeFor[uint64]()).Uint(), "field %s", name)
	}
}

// Each setter stores what the ring's setter stores, and lends every piece
// of Go memory it points the kernel at (a nil pointer lends nothing).
func TestSQESettersLendWhatTheyPointAt(t *testing.T) {
	parallel(t)
	buf, buf2 := make([]byte, 8), make([]byte, 4)
	iov := []unix.Iovec{uring.Iovec(buf), uring.Iovec(buf2)}
	path, err := unix.BytePtrFromString("/tmp")
	require.NoError(t, err)
	st, ts, raw := new(unix.Statx_t), new(unix.Timespec), new(unix.RawSockaddrAny)
	for _, tc := range []struct {
		name string
		set  func(*SQE)
		ring func(*uring.SQE)
		lent int
	}{
		{"SetBuffer", func(s *SQE) { s.SetBuffer(buf) }, func(e *uring.SQE) { e.SetBuffer(buf) }, 1},
		{"SetBuffer(nil)", func(s *SQE) { s.SetBuffer(nil) }, func(e *uring.SQE) { e.SetBuffer(nil) }, 0},
		{"SetIovecs", func(s *SQE) { s.SetIovecs(iov) }, func(e *uring.SQE) { e.SetIovecs(iov) }, 3},
		{"SetPath", func(s *SQE) { s.SetPath(path) }, func(e *uring.SQE) { e.SetPath(path) }, 1},
		{"SetStatx", func(s *SQE) { s.SetStatx(st) }, func(e *uring.SQE) { e.SetStatx(st) }, 1},
		{"SetTimespec", func(s *SQE) { s.SetTimespec(ts) }, func(e *uring.SQE) { e.SetTimespec(ts) }, 1},
		{"SetTimespec(nil)", func(s *SQE) { s.SetTimespec(nil) }, func(e *uring.SQE) { e.SetTimespec(nil) }, 0},
		{"SetSockaddr", func(s *SQE) { s.SetSockaddr(raw, 16) }, func(e *uring.SQE) { e.SetSockaddr(raw, 16) }, 1},
	} {
		var s SQE
		var want uring.SQE
		tc.set(&s)
		tc.ring(&want)
		require.Equal(t, want, s.entry(), tc.name)
		require.Len(t, s.lent, tc.lent, tc.name)
	}
}

// The memory an SQE setter points the kernel at stays allocated while the
// operation is in the kernel, though nothing but the entry names it, and is
// let go after the completion: a recv whose buffer only the prep function
// saw, through Uring.Submit, Uring.Start and Batch.Submit. Before, the
// setters stored a bare address, and the garbage collector freed the buffer
// the kernel was about to write.
func TestRegressionSQESetterMemoryStaysUntilTheCompletion(t *testing.T) {
	parallel(t)
	for _, via := range []string{"Submit", "Start", "Batch.Submit"} {
		t.Run(via, func(t *testing.T) {
			runPool(t, func(tk *Task) error {
				u := requireUring(t, tk.Driver())
				fds := socketpair(t)
				defer unix.Close(fds[0])
				defer unix.Close(fds[1])
				var lent weak.Pointer[byte]
				prep := func(s *SQE) {
					buf := make([]byte, 16)
					lent = weak.Make(&buf[0])
					s.Opcode, s.Fd = OpRecv, int32(fds[0])
					s.SetBuffer(buf)
				}
				var wait func(t *Task) (int32, error)
				switch via {
				case "Submit":
					h := Spawn(tk.Driver(), "recv", func(t *Task) (int32, error) { return u.Submit(t, prep) })
					wait = h.Join
				case "Start":
					c, err := u.Start(prep)
					require.NoError(t, err)
					wait = func(t *Task) (int32, error) { return Await[int32](t, c) }
				case "Batch.Submit":
					b := u.NewBatch()
					require.NoError(t, b.Submit(tk, prep))
					wait = func(t *Task) (int32, error) { return 0, b.Await(t) }
				}
				require.NoError(t, tk.Yield()) // the loop submits the recv
				runtime.GC()
				runtime.GC()
				require.NotNil(t, lent.Value(), "the buffer of a recv in the kernel was collected")
				_, err := unix.Write(fds[1], []byte("hello"))
				require.NoError(t, err)
				n, err := wait(tk)
				require.NoError(t, err)
				if via != "Batch.Submit" {
					require.Equal(t, int32(5), n)
				}
				runtime.GC()
				require.Nil(t, lent.Value(), "the buffer outlived its completion")
				return nil
			})
		})
	}
}
