//go:build linux

package iopool

import (
	"io"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLeanServerGoexitInHandlerEndsItsConnectionAndWorker(t *testing.T) {
	h := startLean(t, 3, nil)
	h.echo(t, 1, "warm")
	_, err := h.peers[1].Write([]byte("goexit"))
	require.NoError(t, err)
	e := h.nextEnded(t)
	require.Equal(t, 1, e.id)
	require.ErrorIs(t, e.err, ErrGoexit)
	h.requireEOF(t, 1)
	h.echo(t, 0, "ok") // another worker serves the rest
	h.echo(t, 2, "ok")
}

func TestLeanServerHandlerLeavingDataDoesNotStarveTheLoop(t *testing.T) {
	h := startLean(t, 2, nil)
	_, err := h.peers[0].Write([]byte("spin"))
	require.NoError(t, err)
	eventually(t, "connection 0 spinning", h.conns[0].spinning.Load)
	_, err = h.peers[0].Write([]byte("x")) // never read: connection 0 stays ready
	require.NoError(t, err)
	for range 3 {
		h.echo(t, 1, "served meanwhile")
	}
}

func TestLeanServerMaxWorkersQueuesReadyConnections(t *testing.T) {
	h := startLean(t, 2, func(srv *LeanServer) { srv.MaxWorkers = 1 })
	_, err := h.peers[0].Write([]byte("hold"))
	require.NoError(t, err)
	require.Equal(t, 0, <-h.holding)
	_, err = h.peers[1].Write([]byte("queued"))
	require.NoError(t, err)
	// The one worker is held: connection 1 waits in the queue.
	require.NoError(t, h.peers[1].SetReadDeadline(time.Now().Add(100*time.Millisecond)))
	_, err = h.peers[1].Read(make([]byte, 1))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	require.NoError(t, h.hold.Send(struct{}{}))
	require.NoError(t, h.peers[1].SetReadDeadline(time.Now().Add(5*time.Second)))
	got := make([]byte, 6)
	_, err = io.ReadFull(h.peers[1], got)
	require.NoError(t, err)
	require.Equal(t, "queued", string(got))
	require.Equal(t, 1, h.workers())
}
