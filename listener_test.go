//go:build linux

package iopool

import (
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

func TestAcceptBacksOffUnderEMFILE(t *testing.T) {
	parallel(t)
	var failures atomic.Int32
	fs := new(sys.Faults)
	fs.Set(func(c sys.Call) error {
		if c == sys.CallAccept && failures.Add(1) <= 3 {
			return unix.EMFILE
		}
		return nil
	})
	runPool(t, func(tk *Task) error {
		l, err := tk.Driver().Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		accepted := Spawn(tk.Driver(), "accept", func(t *Task) (*Socket, error) { return l.Accept(t) })
		c, err := Dial(tk, "tcp", l.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		s, err := accepted.Join(tk)
		require.NoError(t, err, "the listener keeps working after EMFILE")
		require.NoError(t, s.Close())
		require.GreaterOrEqual(t, failures.Load(), int32(4))
		return nil
	}, withFaults(fs))
}

func TestListenAndDialErrorsNameTheAddress(t *testing.T) {
	parallel(t)
	runPool(t, func(tk *Task) error {
		l, err := tk.Driver().Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		_, err = tk.Driver().Listen("tcp", l.Addr().String())
		require.ErrorIs(t, err, unix.EADDRINUSE)
		require.ErrorContains(t, err, l.Addr().String())
		_, err = tk.Driver().Listen("udp", "127.0.0.1:0")
		require.ErrorContains(t, err, `unsupported network "udp"`)
		_, err = Dial(tk, "unix", filepath.Join(t.TempDir(), "nobody.sock"))
		require.ErrorIs(t, err, unix.ENOENT)
		return nil
	})
}
