//go:build linux

package iopool

import (
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// skipWithoutIPv6Loopback skips the test where the machine has no IPv6
// loopback. It asks package net, not the code under test: an IPv6 address
// the code gets wrong (bind says EADDRNOTAVAIL) must fail the test, not
// skip it.
func skipWithoutIPv6Loopback(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback on this machine:", err)
	}
	require.NoError(t, l.Close())
}

// Regression (issue 19, bug 1): IPv4 addresses were 16-byte net.IPs, so
// AddrPort() gave [::ffff:127.0.0.1]:p, never equal to what package net
// reports for the same socket. Each address is compared with the one Go's
// net reports for the other end: ReadFrom and LocalAddr of a PacketSocket,
// LocalAddr and RemoteAddr of a dialed Socket, and of a NetConn accepted
// through NetListener.
func TestRegressionIPv4AddrsAreWhatPackageNetReports(t *testing.T) {
	parallel(t)
	t.Run("PacketSocket", func(t *testing.T) {
		runPool(t, func(tk *Task) error {
			ps, err := tk.Driver().ListenPacket("udp", "127.0.0.1:0")
			require.NoError(t, err)
			defer ps.Close()
			peer, err := net.ListenPacket("udp", "127.0.0.1:0")
			require.NoError(t, err)
			defer peer.Close()
			_, err = peer.WriteTo([]byte("hi"), ps.LocalAddr())
			require.NoError(t, err)
			require.NoError(t, ps.SetReadDeadline(time.Now().Add(5*time.Second)))
			_, from, err := ps.ReadFrom(tk, make([]byte, 8))
			require.NoError(t, err)
			require.Equal(t, peer.LocalAddr().(*net.UDPAddr).AddrPort(), from.(*net.UDPAddr).AddrPort(), "ReadFrom's sender")
			_, err = ps.WriteTo(tk, []byte("ho"), from)
			require.NoError(t, err)
			require.NoError(t, peer.SetReadDeadline(time.Now().Add(5*time.Second)))
			_, back, err := peer.ReadFrom(make([]byte, 8))
			require.NoError(t, err)
			require.Equal(t, back.(*net.UDPAddr).AddrPort(), ps.LocalAddr().(*net.UDPAddr).AddrPort(), "LocalAddr")
			require.Equal(t, back.(*net.UDPAddr).AddrPort(), ps.NetPacketConn().LocalAddr().(*net.UDPAddr).AddrPort(), "NetPacketConn's LocalAddr")
			return nil
		})
	})
	t.Run("Socket", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		runPool(t, func(tk *Task) error {
			s, err := Dial(tk, "tcp", ln.Addr().String())
			require.NoError(t, err)
			defer s.Close()
			c, err := ln.Accept()
			require.NoError(t, err)
			defer c.Close()
			require.Equal(t, c.RemoteAddr().(*net.TCPAddr).AddrPort(), s.LocalAddr().(*net.TCPAddr).AddrPort(), "LocalAddr")
			require.Equal(t, c.LocalAddr().(*net.TCPAddr).AddrPort(), s.RemoteAddr().(*net.TCPAddr).AddrPort(), "RemoteAddr")
			return nil
		})
	})
	t.Run("NetListener", func(t *testing.T) {
		p := newTestPool(t)
		servePool(t, p)
		l, err := p.Driver().Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		nl := l.NetListener()
		defer nl.Close()
		dialed := make(chan net.Conn, 1)
		go func() {
			c, _ := net.Dial("tcp", nl.Addr().String())
			dialed <- c // nil on error: Accept below then fails
		}()
		c, err := nl.Accept()
		require.NoError(t, err)
		defer c.Close()
		peer := <-dialed
		require.NotNil(t, peer)
		defer peer.Close()
		require.Equal(t, peer.RemoteAddr().(*net.TCPAddr).AddrPort(), c.LocalAddr().(*net.TCPAddr).AddrPort(), "LocalAddr")
		require.Equal(t, peer.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort(), "RemoteAddr")
		require.Equal(t, peer.RemoteAddr().(*net.TCPAddr).AddrPort(), nl.Addr().(*net.TCPAddr).AddrPort(), "the listener's Addr")
	})
}

// Regression (issue 19, bug 2): WriteTo with a typed nil address
// ((*net.UDPAddr)(nil), (*net.UnixAddr)(nil)) dereferenced it and
// panicked; package net returns an error, and so do the task and the
// net.PacketConn methods.
func TestRegressionWriteToTypedNilAddressIsAnError(t *testing.T) {
	parallel(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		network, addr string
		to            net.Addr
	}{
		{"udp", "127.0.0.1:0", (*net.UDPAddr)(nil)},
		{"unixgram", filepath.Join(dir, "a.sock"), (*net.UnixAddr)(nil)},
		{"udp", "127.0.0.1:0", nil},
	} {
		t.Run(tc.network, func(t *testing.T) {
			runPool(t, func(tk *Task) error {
				ps, err := tk.Driver().ListenPacket(tc.network, tc.addr)
				require.NoError(t, err)
				defer ps.Close()
				_, err = ps.WriteTo(tk, []byte("x"), tc.to)
				require.ErrorIs(t, err, errMissingAddress)
				var oe *net.OpError
				require.ErrorAs(t, err, &oe)
				require.Equal(t, "write", oe.Op)
				_, err = ps.NetPacketConn().WriteTo([]byte("x"), tc.to)
				require.ErrorIs(t, err, errMissingAddress, "NetPacketConn")
				return nil
			})
		})
	}
}

// Regression (issue 19, bug 3): LocalAddr of an unbound unixgram socket
// (ListenPacket with "") was &UnixAddr{Name: "@"}, the kernel's unnamed
// address; its doc says nil.
func TestRegressionUnboundUnixgramHasNoLocalAddr(t *testing.T) {
	parallel(t)
	runPool(t, func(tk *Task) error {
		ps, err := tk.Driver().ListenPacket("unixgram", "")
		require.NoError(t, err)
		defer ps.Close()
		require.True(t, ps.LocalAddr() == nil, "LocalAddr is %#v", ps.LocalAddr())
		require.True(t, ps.NetPacketConn().LocalAddr() == nil, "the net.PacketConn's LocalAddr")
		return nil
	})
}

// The one conversion, both ways: IPv4 is 4 bytes, the type follows the
// socket's kind, a unix address carries the socket's network.
func TestSockaddrConversionTable(t *testing.T) {
	parallel(t)
	for _, tc := range []struct {
		addr   net.Addr
		family int
		kind   sockKind
	}{
		{&net.UDPAddr{IP: net.IP{127, 0, 0, 1}, Port: 53}, unix.AF_INET, kindUDP},
		{&net.UDPAddr{IP: net.ParseIP("::1"), Port: 53}, unix.AF_INET6, kindUDP},
		{&net.UnixAddr{Name: "/run/x.sock", Net: "unixgram"}, unix.AF_UNIX, kindUnixgram},
		{&net.UnixAddr{Name: "@abstract", Net: "unix"}, unix.AF_UNIX, kindUnix},
		{&net.UnixAddr{Name: "/run/p.sock", Net: "unixpacket"}, unix.AF_UNIX, kindUnixpacket},
	} {
		sa, err := addrToSockaddr(tc.addr, tc.family, tc.kind.network())
		require.NoError(t, err, "%v", tc.addr)
		got := sockaddrToAddr(sa, tc.kind)
		t.Logf("%#v -> %#v", tc.addr, got)
		require.Equal(t, tc.addr, got)
	}
	got := sockaddrToAddr(&unix.SockaddrInet4{Addr: [4]byte{10, 1, 2, 3}, Port: 80}, kindTCP)
	require.Equal(t, &net.TCPAddr{IP: net.IP{10, 1, 2, 3}, Port: 80}, got, "IPv4 as 4 bytes, as package net reports it")

	_, err := addrToSockaddr(&net.UDPAddr{IP: net.ParseIP("::1"), Port: 1}, unix.AF_INET, "udp4")
	require.ErrorContains(t, err, "an IPv4 socket cannot send to the IPv6 address")
	_, err = addrToSockaddr(&net.UnixAddr{Name: "x"}, unix.AF_INET, "udp")
	require.ErrorContains(t, err, "cannot send to the unix address")
	_, err = addrToSockaddr(&net.UDPAddr{IP: net.IP{1, 2, 3, 4}}, unix.AF_UNIX, "unixgram")
	require.ErrorContains(t, err, "cannot send to the IP address")
	_, err = addrToSockaddr(&net.IPAddr{IP: net.IP{1, 2, 3, 4}}, unix.AF_INET, "udp")
	require.ErrorContains(t, err, "unsupported address type *net.IPAddr")
}

func TestInetSockaddrZones(t *testing.T) {
	parallel(t)
	lo, err := net.InterfaceByIndex(1)
	require.NoError(t, err)
	for _, zone := range []string{lo.Name, "1"} {
		sa, family, err := inetSockaddr("udp6", net.ParseIP("fe80::1"), 53, zone)
		require.NoError(t, err, zone)
		require.Equal(t, unix.AF_INET6, family)
		require.Equal(t, uint32(1), sa.(*unix.SockaddrInet6).ZoneId, zone)
	}
	_, _, err = inetSockaddr("udp6", net.ParseIP("fe80::1"), 53, "no-such-if0")
	require.ErrorContains(t, err, `unknown IPv6 zone "no-such-if0"`)
}
