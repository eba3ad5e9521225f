//go:build linux

package iopool

import (
	"io/fs"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Seed scenario: a write and a read of a file through the ring.
func TestUringReadWrite(t *testing.T) {
	runPool(t, func(tk *Task) error {
		u := requireUring(t, tk.Driver())
		f, err := os.CreateTemp(t.TempDir(), "uring")
		require.NoError(t, err)
		defer f.Close()
		fd := int(f.Fd())
		msg := []byte("through the ring")
		n, err := u.Write(tk, fd, msg, 0)
		require.NoError(t, err)
		require.Equal(t, len(msg), n)
		require.NoError(t, u.Fsync(tk, fd))
		got := make([]byte, 64)
		n, err = u.Read(tk, fd, got, 0)
		require.NoError(t, err)
		require.Equal(t, msg, got[:n])

		a, b := make([]byte, 7), make([]byte, 9)
		n, err = u.Readv(tk, fd, [][]byte{a, b}, 0)
		require.NoError(t, err)
		require.Equal(t, len(msg), n)
		require.Equal(t, msg, append(a, b...)[:n])

		nfd, err := u.Openat(tk, unix.AT_FDCWD, f.Name(), unix.O_RDONLY, 0)
		require.NoError(t, err)
		require.NoError(t, u.CloseFd(tk, nfd))
		require.NoError(t, u.Nop(tk))
		start := time.Now()
		require.NoError(t, u.Timeout(tk, 2*time.Millisecond))
		require.GreaterOrEqual(t, time.Since(start), 2*time.Millisecond)
		require.True(t, u.Probe(OpRead))
		require.False(t, u.Probe(250))
		return nil
	})
}

func TestUringBadInput(t *testing.T) {
	var u *Uring
	runPool(t, func(tk *Task) error {
		u = requireUring(t, tk.Driver())
		_, err := u.Read(tk, 987654, make([]byte, 8), 0)
		require.ErrorIs(t, err, unix.EBADF)
		require.ErrorContains(t, err, "io_uring read")
		_, err = u.Read(tk, 0, nil, 0)
		require.ErrorContains(t, err, "nil buffer")
		_, err = u.Write(tk, 0, []byte("x"), -2)
		require.ErrorContains(t, err, "negative offset -2")
		_, err = u.Readv(tk, 0, nil, 0)
		require.ErrorContains(t, err, "no buffers")
		return nil
	})
	_, err := New(WithUringEntries(0))
	require.ErrorContains(t, err, "WithUringEntries(0)")
	_, err = New(WithUringEntries(1 << 20))
	require.Error(t, err)
	_, err = u.Start(func(s *SQE) { s.Opcode = OpNop })
	require.ErrorIs(t, err, ErrClosed, "submitting after Close")
}

// Statx, Accept and Connect through the ring: a TCP and a unix connection
// made and accepted by io_uring, and the status of a file.
func TestUringStatxAcceptConnect(t *testing.T) {
	parallel(t)
	runPool(t, func(tk *Task) error {
		u := requireUring(t, tk.Driver())
		f, err := os.CreateTemp(t.TempDir(), "statx")
		require.NoError(t, err)
		defer f.Close()
		_, err = f.Write(make([]byte, 1234))
		require.NoError(t, err)
		var st unix.Statx_t
		require.NoError(t, u.Statx(tk, unix.AT_FDCWD, f.Name(), 0, unix.STATX_BASIC_STATS, &st))
		require.EqualValues(t, 1234, st.Size)
		require.NoError(t, u.Statx(tk, int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_SIZE, &st))
		require.EqualValues(t, 1234, st.Size)
		err = u.Statx(tk, unix.AT_FDCWD, "/no/such/file", 0, unix.STATX_SIZE, &st)
		require.ErrorIs(t, err, unix.ENOENT)
		require.ErrorIs(t, err, fs.ErrNotExist)
		require.ErrorContains(t, err, "io_uring statx /no/such/file")
		require.ErrorContains(t, u.Statx(tk, unix.AT_FDCWD, "x", 0, 0, nil), "nil Statx_t")
		_, err = u.Openat(tk, unix.AT_FDCWD, "/no/such/dir/f", unix.O_RDONLY, 0)
		require.ErrorIs(t, err, fs.ErrNotExist)
		require.ErrorContains(t, err, "io_uring openat /no/such/dir/f: no such file or directory")

		for _, tc := range []struct {
			domain int
			addr   unix.Sockaddr
		}{
			{unix.AF_INET, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}},
			{unix.AF_UNIX, &unix.SockaddrUnix{Name: t.TempDir() + "/a.sock"}},
			{unix.AF_UNIX, &unix.SockaddrUnix{Name: "@iopool-test-" + t.Name()}},
		} {
			lfd, err := unix.Socket(tc.domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			require.NoError(t, err)
			require.NoError(t, unix.Bind(lfd, tc.addr))
			require.NoError(t, unix.Listen(lfd, 8))
			bound, err := unix.Getsockname(lfd)
			require.NoError(t, err)
			if un, ok := bound.(*unix.SockaddrUnix); ok && un.Name == "" {
				bound = tc.addr
			}
			accepted := Spawn(tk.Driver(), "accept", func(t *Task) (int, error) { return u.Accept(t, lfd) })
			cfd, err := unix.Socket(tc.domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			require.NoError(t, err)
			require.NoError(t, u.Connect(tk, cfd, bound), "connect to %v", bound)
			nfd, err := accepted.Join(tk)
			require.NoError(t, err)
			n, err := u.Send(tk, cfd, []byte("hi"), 0)
			require.NoError(t, err)
			require.Equal(t, 2, n)
			buf := make([]byte, 8)
			n, err = u.Recv(tk, nfd, buf, 0)
			require.NoError(t, err)
			require.Equal(t, "hi", string(buf[:n]))
			fl, err := unix.FcntlInt(uintptr(nfd), unix.F_GETFL, 0)
			require.NoError(t, err)
			require.NotZero(t, fl&unix.O_NONBLOCK, "accepted fds are nonblocking")
			for _, fd := range []int{nfd, cfd, lfd} {
				require.NoError(t, u.CloseFd(tk, fd))
			}
		}
		cfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(cfd)
		require.ErrorContains(t, u.Connect(tk, cfd, &unix.SockaddrInet4{Port: 70000}), "port 70000 out of range")
		require.ErrorContains(t, u.Connect(tk, cfd, nil), "nil address")
		require.ErrorContains(t, u.Connect(tk, cfd, &unix.SockaddrUnix{}), "unix socket path")
		return nil
	})
}
