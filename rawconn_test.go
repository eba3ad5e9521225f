//go:build linux

package iopool

import (
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// SyscallConn's Control sees the fd, its Read waits for readiness between
// tries (the peer writes only after the first try found nothing), and
// after Close nothing is called.
func TestNetConnSyscallConn(t *testing.T) {
	parallel(t)
	_, a, b := netConnPair(t)
	rc, err := a.SyscallConn()
	require.NoError(t, err)
	var typ int
	require.NoError(t, rc.Control(func(fd uintptr) {
		typ, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
	}))
	require.NoError(t, err)
	require.Equal(t, unix.SOCK_STREAM, typ)

	tries := 0
	var got []byte
	wrote := make(chan error, 1)
	require.NoError(t, rc.Read(func(fd uintptr) bool {
		tries++
		buf := make([]byte, 16)
		n, err := unix.Read(int(fd), buf)
		if err == unix.EAGAIN {
			if tries == 1 {
				go func() { _, err := b.Write([]byte("raw")); wrote <- err }()
			}
			return false
		}
		got = buf[:max(n, 0)]
		return true
	}))
	require.NoError(t, <-wrote)
	require.Equal(t, "raw", string(got))
	require.GreaterOrEqual(t, tries, 2)

	require.NoError(t, a.Close())
	called := false
	err = rc.Control(func(uintptr) { called = true })
	require.ErrorIs(t, err, net.ErrClosed)
	require.False(t, called, "no call on a closed connection's fd number")
	err = rc.Write(func(uintptr) bool { called = true; return true })
	require.ErrorIs(t, err, net.ErrClosed)
	require.False(t, called)
}

// A RawConn's function is the caller's code: when it panics or calls
// runtime.Goexit, the reference on the fd number taken for the call is
// dropped on the way out, so Close (which waits for every reference)
// still closes the connection.
func TestNetConnRawFunctionPanicOrGoexitReleasesTheFd(t *testing.T) {
	parallel(t)
	for _, end := range []string{"panic", "Goexit"} {
		_, a, _ := netConnPair(t)
		rc, err := a.SyscallConn()
		require.NoError(t, err)
		ended := make(chan any, 1)
		go func() {
			defer func() { ended <- recover() }()
			_ = rc.Read(func(uintptr) bool {
				if end == "panic" {
					panic("raw function failed")
				}
				runtime.Goexit()
				return true
			})
		}()
		v := <-ended
		if end == "panic" {
			require.Equal(t, "raw function failed", v)
		} else {
			require.Nil(t, v)
		}
		closed := make(chan error, 1)
		go func() { closed <- a.Close() }()
		select {
		case err := <-closed:
			require.NoError(t, err, end)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s in a RawConn function: Close still waits for its fd reference", end)
		}
	}
}
