//go:build linux

package iopool

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestSocketDeadlines(t *testing.T) {
	runPool(t, func(tk *Task) error {
		sp := socketpair(t)
		defer unix.Close(sp[1])
		s, err := tk.Driver().NewSocket(sp[0])
		require.NoError(t, err)
		defer s.Close()
		buf := make([]byte, 8)

		require.NoError(t, s.SetReadDeadline(time.Now().Add(5*time.Millisecond)))
		start := time.Now()
		_, err = s.Read(tk, buf)
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		require.GreaterOrEqual(t, time.Since(start), 5*time.Millisecond)

		// Past deadline: fails at once even with data waiting.
		unix.Write(sp[1], []byte("data"))
		_, err = s.Read(tk, buf)
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)

		// A new deadline (or none) makes the socket usable again.
		require.NoError(t, s.SetDeadline(time.Time{}))
		n, err := s.Read(tk, buf)
		require.NoError(t, err)
		require.Equal(t, "data", string(buf[:n]))

		// A deadline moved earlier from another goroutine wakes the reader.
		require.NoError(t, s.SetReadDeadline(time.Now().Add(time.Hour)))
		go func() {
			time.Sleep(3 * time.Millisecond)
			s.SetReadDeadline(time.Now())
		}()
		_, err = s.Read(tk, buf)
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)

		// Write deadline: fill the buffer until it expires.
		require.NoError(t, s.SetWriteDeadline(time.Now().Add(5*time.Millisecond)))
		big := make([]byte, 1<<20)
		_, err = s.Write(tk, big)
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		return nil
	})
}
