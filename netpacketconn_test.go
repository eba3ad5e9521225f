//go:build linux

package iopool

import (
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Plain goroutines use the net.PacketConn; its deadlines and Close behave
// like package net's.
func TestNetPacketConnFromGoroutines(t *testing.T) {
	p := newTestPool(t)
	servePool(t, p)
	ps, err := p.Driver().ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	pc := ps.NetPacketConn()
	peer, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer peer.Close()

	go func() {
		time.Sleep(5 * time.Millisecond)
		_, _ = peer.WriteTo([]byte("hello"), pc.LocalAddr())
	}()
	buf := make([]byte, 3)
	n, from, err := pc.ReadFrom(buf)
	require.ErrorIs(t, err, ErrTruncated, "a waiting read wakes for a datagram and reports truncation")
	require.Equal(t, 3, n)
	require.Equal(t, peer.LocalAddr().String(), from.String())
	_, err = pc.WriteTo([]byte("back"), from)
	require.NoError(t, err)
	require.NoError(t, peer.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, _, err = peer.ReadFrom(buf[:])
	require.NoError(t, err)
	require.Equal(t, "bac", string(buf[:n]))

	require.NoError(t, pc.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
	_, _, err = pc.ReadFrom(buf)
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout())
	require.NoError(t, pc.SetReadDeadline(time.Time{}))

	read := make(chan error, 1)
	go func() {
		_, _, err := pc.ReadFrom(buf)
		read <- err
	}()
	time.Sleep(10 * time.Millisecond)
	require.NoError(t, pc.Close())
	select {
	case err := <-read:
		require.ErrorIs(t, err, net.ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake the waiting ReadFrom")
	}
	require.NoError(t, pc.Close())
	_, err = pc.WriteTo([]byte("x"), peer.LocalAddr())
	require.ErrorIs(t, err, net.ErrClosed)
}
