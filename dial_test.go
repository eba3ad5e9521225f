//go:build linux

package iopool

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Regression: Dial("unix") on a listener whose accept queue was full took
// connect's EAGAIN for EINPROGRESS, waited for writability (at once) and
// returned an unconnected socket with no error; its first write failed with
// ENOTCONN. It returns the EAGAIN error, as package net does.
func TestRegressionDialUnixFullQueueFails(t *testing.T) {
	runPool(t, func(tk *Task) error {
		l, err := ListenConfig{Backlog: 1}.Listen(tk.Driver(), "unix", filepath.Join(t.TempDir(), "full.sock"))
		require.NoError(t, err)
		defer l.Close()
		var dialed []*Socket
		defer func() {
			for _, s := range dialed {
				s.Close()
			}
		}()
		for range 16 {
			s, err := Dial(tk, "unix", l.Addr().String())
			if err != nil {
				require.ErrorIs(t, err, unix.EAGAIN)
				require.ErrorContains(t, err, "connect")
				require.NotEmpty(t, dialed, "the first dials fit the queue")
				return nil
			}
			dialed = append(dialed, s)
			// Every socket Dial returns is connected.
			_, err = s.Write(tk, []byte("x"))
			require.False(t, errors.Is(err, unix.ENOTCONN), "Dial returned an unconnected socket")
			require.NoError(t, err)
		}
		t.Fatalf("%d dials to a listener with a full queue (backlog 1, never accepting) all succeeded", len(dialed))
		return nil
	})
}
