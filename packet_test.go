//go:build linux

package iopool

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

// A task echoes datagrams back to a Go net peer over udp4, udp6 and
// unixgram; a datagram larger than the task's buffer is reported as
// truncated, with its real size.
func TestPacketSocketEchoWithGoPeer(t *testing.T) {
	parallel(t)
	dir := t.TempDir()
	for _, tc := range []struct{ network, addr, peerAddr string }{
		{"udp", "127.0.0.1:0", "127.0.0.1:0"},
		{"udp4", "127.0.0.1:0", "127.0.0.1:0"},
		{"udp6", "[::1]:0", "[::1]:0"},
		{"unixgram", filepath.Join(dir, "srv.sock"), filepath.Join(dir, "peer.sock")},
	} {
		t.Run(tc.network, func(t *testing.T) {
			if tc.network == "udp6" {
				skipWithoutIPv6Loopback(t)
			}
			runPool(t, func(tk *Task) error {
				ps, err := tk.Driver().ListenPacket(tc.network, tc.addr)
				require.NoError(t, err)
				defer ps.Close()
				la := ps.LocalAddr()
				require.NotNil(t, la)
				if ua, ok := la.(*net.UDPAddr); ok {
					require.NotZero(t, ua.Port, "the kernel's port is reported")
				}

				peer, err := net.ListenPacket(tc.network, tc.peerAddr)
				require.NoError(t, err)
				defer peer.Close()
				peerDone := make(chan error, 1)
				go func() {
					peerDone <- func() error {
						if err := peer.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
							return err
						}
						buf := make([]byte, 2048)
						for i := range 20 {
							msg := fmt.Sprintf("datagram %d", i)
							if _, err := peer.WriteTo([]byte(msg), la); err != nil {
								return err
							}
							n, _, err := peer.ReadFrom(buf)
							if err != nil {
								return err
							}
							if string(buf[:n]) != msg {
								return fmt.Errorf("echo of %q came back as %q", msg, buf[:n])
							}
						}
						_, err := peer.WriteTo(make([]byte, 1000), la)
						return err
					}()
				}()

				buf := make([]byte, 100)
				for range 20 {
					n, from, err := ps.ReadFrom(tk, buf)
					require.NoError(t, err)
					require.Equal(t, peer.LocalAddr().String(), from.String())
					_, err = ps.WriteTo(tk, buf[:n], from)
					require.NoError(t, err)
				}
				n, _, err := ps.ReadFrom(tk, buf)
				require.ErrorIs(t, err, ErrTruncated)
				require.ErrorContains(t, err, "a 1000-byte datagram")
				require.Equal(t, len(buf), n)
				require.NoError(t, <-peerDone)
				return nil
			})
		})
	}
}

func TestPacketSocketBadInput(t *testing.T) {
	parallel(t)
	runPool(t, func(tk *Task) error {
		_, err := tk.Driver().ListenPacket("tcp", "127.0.0.1:0")
		require.ErrorContains(t, err, `unsupported network "tcp" (want udp, udp4, udp6 or unixgram)`)
		_, err = tk.Driver().ListenPacket("udp4", "[::1]:0")
		require.ErrorContains(t, err, "listen udp4: address [::1]:0: no suitable address found")

		ps, err := tk.Driver().ListenPacket("udp4", "127.0.0.1:0")
		require.NoError(t, err)
		defer ps.Close()
		_, err = ps.WriteTo(tk, make([]byte, 70000), ps.LocalAddr())
		require.ErrorIs(t, err, unix.EMSGSIZE)
		require.ErrorContains(t, err, "a 70000-byte datagram is larger than the socket can send")
		_, err = ps.WriteTo(tk, []byte("x"), &net.UnixAddr{Name: "/x", Net: "unixgram"})
		require.ErrorContains(t, err, "cannot send to the unix address")
		_, err = ps.WriteTo(tk, []byte("x"), &net.UDPAddr{IP: net.ParseIP("::1"), Port: 9})
		require.ErrorContains(t, err, "an IPv4 socket cannot send to the IPv6 address")
		_, err = ps.WriteTo(tk, []byte("x"), nil)
		require.ErrorContains(t, err, "missing address")

		// Deadlines in a task.
		require.NoError(t, ps.SetReadDeadline(time.Now().Add(5*time.Millisecond)))
		_, _, err = ps.ReadFrom(tk, make([]byte, 10))
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)

		require.NoError(t, ps.Close())
		_, _, err = ps.ReadFrom(tk, make([]byte, 10))
		require.Error(t, err)
		return nil
	})
}

// The fault seam reaches packet sockets: a recvfrom held inside its
// syscall (a pause injected before it) holds the fd's reference, so Close
// waits for it instead of closing the number under it, and the read then
// fails with net.ErrClosed without another syscall; an injected sendto
// error comes back as package net shapes it.
func TestPacketSocketFaultSeam(t *testing.T) {
	parallel(t)
	fs := new(sys.Faults)
	p := newTestPool(t, withFaults(fs))
	servePool(t, p)
	ps, err := p.Driver().ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	pc := ps.NetPacketConn()

	inside, release := make(chan struct{}), make(chan struct{})
	var recvfroms atomic.Int32
	prev := fs.Set(func(c sys.Call) error {
		switch c {
		case sys.CallRecvfrom:
			if recvfroms.Add(1) == 1 {
				close(inside)
				<-release
			}
		case sys.CallSendto:
			return unix.ENETUNREACH
		}
		return nil
	})
	t.Cleanup(func() { fs.Set(prev) })

	_, err = pc.WriteTo([]byte("x"), &net.UDPAddr{IP: net.IP{127, 0, 0, 1}, Port: 9})
	var oe *net.OpError
	require.ErrorAs(t, err, &oe)
	require.Equal(t, "write", oe.Op)
	var se *os.SyscallError
	require.ErrorAs(t, err, &se)
	require.Equal(t, "sendto", se.Syscall)
	require.ErrorIs(t, err, unix.ENETUNREACH)

	read := make(chan error, 1)
	go func() {
		_, _, err := pc.ReadFrom(make([]byte, 16))
		read <- err
	}()
	select {
	case <-inside:
	case <-time.After(5 * time.Second):
		t.Fatal("recvfrom never went through the fault seam")
	}
	closed := make(chan error, 1)
	go func() { closed <- pc.Close() }()
	select {
	case <-closed:
		t.Fatal("Close returned while a recvfrom held the fd")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	require.NoError(t, <-closed)
	require.ErrorIs(t, <-read, net.ErrClosed)
	require.Equal(t, int32(1), recvfroms.Load(), "no recvfrom after Close began but the one in flight")
}
