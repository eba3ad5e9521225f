//go:build linux

package iopool

import (
	"fmt"
	"net"
	"strconv"

	"golang.org/x/sys/unix"
)

// The one conversion between kernel addresses (unix.Sockaddr) and net.Addr,
// both ways, giving what package net gives for the same socket: IPv4 as a
// 4-byte net.IP, IPv6 with its zone as an interface name (or its index when
// no interface has it), unix addresses with the socket's network.

// sockKind is what a registered fd is, as far as addresses and errors go:
// it picks the net.Addr type (TCPAddr, UDPAddr, UnixAddr) and the network
// named in errors ("tcp", "unixgram"). Decided once, when the Socket is
// made.
type sockKind uint8

const (
	kindOther      sockKind = iota // not a socket (pipe, tty, tun) or unknown
	kindTCP                        // AF_INET or AF_INET6, SOCK_STREAM (TCP, MPTCP, SCTP)
	kindUDP                        // AF_INET or AF_INET6, SOCK_DGRAM
	kindUnix                       // AF_UNIX, SOCK_STREAM
	kindUnixgram                   // AF_UNIX, SOCK_DGRAM
	kindUnixpacket                 // AF_UNIX, SOCK_SEQPACKET
)

// sockKindOf is the kind of a socket of family and sotype.
func sockKindOf(family, sotype int) sockKind {
	inet := family == unix.AF_INET || family == unix.AF_INET6
	switch {
	case inet && sotype == unix.SOCK_STREAM:
		return kindTCP
	case inet && sotype == unix.SOCK_DGRAM:
		return kindUDP
	case family == unix.AF_UNIX && sotype == unix.SOCK_STREAM:
		return kindUnix
	case family == unix.AF_UNIX && sotype == unix.SOCK_DGRAM:
		return kindUnixgram
	case family == unix.AF_UNIX && sotype == unix.SOCK_SEQPACKET:
		return kindUnixpacket
	}
	return kindOther
}

// network is the kind's name in package net ("" for kindOther).
func (k sockKind) network() string {
	return [...]string{kindOther: "", kindTCP: "tcp", kindUDP: "udp", kindUnix: "unix",
		kindUnixgram: "unixgram", kindUnixpacket: "unixpacket"}[k]
}

// sockaddrToAddr converts a kernel address to the net.Addr package net
// reports for a socket of kind k (nil for nil or an unknown family).
func sockaddrToAddr(sa unix.Sockaddr, k sockKind) net.Addr {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		ip := net.IP(sa.Addr[:]) // 4 bytes, as package net reports IPv4
		if k == kindUDP {
			return &net.UDPAddr{IP: ip, Port: sa.Port}
		}
		return &net.TCPAddr{IP: ip, Port: sa.Port}
	case *unix.SockaddrInet6:
		ip, zone := net.IP(sa.Addr[:]), zoneName(sa.ZoneId)
		if k == kindUDP {
			return &net.UDPAddr{IP: ip, Port: sa.Port, Zone: zone}
		}
		return &net.TCPAddr{IP: ip, Port: sa.Port, Zone: zone}
	case *unix.SockaddrUnix:
		network := k.network()
		if k != kindUnixgram && k != kindUnixpacket {
			network = "unix"
		}
		return &net.UnixAddr{Name: sa.Name, Net: network}
	}
	return nil
}

// zoneName is an IPv6 zone index as package net names it: the interface's
// name, or the index in decimal when no interface has it.
func zoneName(index uint32) string {
	if index == 0 {
		return ""
	}
	if ifi, err := net.InterfaceByIndex(int(index)); err == nil {
		return ifi.Name
	}
	return strconv.FormatUint(uint64(index), 10)
}

// addrToSockaddr converts a destination to a sockaddr of family (AF_INET,
// AF_INET6 or AF_UNIX); network names the socket in errors.
func addrToSockaddr(addr net.Addr, family int, network string) (unix.Sockaddr, error) {
	switch a := addr.(type) {
	case *net.UDPAddr:
		if a == nil {
			return nil, errMissingAddress
		}
		return ipSockaddr(a.IP, a.Port, a.Zone, family, network, a)
	case *net.UnixAddr:
		if a == nil {
			return nil, errMissingAddress
		}
		if family != unix.AF_UNIX {
			return nil, fmt.Errorf("a %s socket cannot send to the unix address %v", network, a)
		}
		return &unix.SockaddrUnix{Name: a.Name}, nil
	case nil:
		return nil, errMissingAddress
	}
	return nil, fmt.Errorf("unsupported address type %T (want *net.UDPAddr or *net.UnixAddr)", addr)
}

// ipSockaddr is addrToSockaddr for an IP address a.
func ipSockaddr(ip net.IP, port int, zone string, family int, network string, a net.Addr) (unix.Sockaddr, error) {
	switch family {
	case unix.AF_UNIX:
		return nil, fmt.Errorf("a %s socket cannot send to the IP address %v", network, a)
	case unix.AF_INET:
		ip4 := ip.To4()
		if ip4 == nil && ip != nil {
			return nil, fmt.Errorf("an IPv4 socket cannot send to the IPv6 address %v", a)
		}
		sa := &unix.SockaddrInet4{Port: port}
		copy(sa.Addr[:], ip4)
		return sa, nil
	}
	sa, _, err := inetSockaddr("udp6", ip, port, zone)
	return sa, err
}

// inetSockaddr builds the sockaddr for ip:port as network wants it: an IPv4
// socket for tcp4 and udp4, and for tcp or udp with an IPv4 or unspecified
// address; IPv6 otherwise. It returns the socket's family.
func inetSockaddr(network string, ip net.IP, port int, zone string) (unix.Sockaddr, int, error) {
	if ip4 := ip.To4(); network != "udp6" && network != "tcp6" && (ip4 != nil || ip == nil) {
		sa := &unix.SockaddrInet4{Port: port}
		if ip4 != nil {
			copy(sa.Addr[:], ip4)
		}
		return sa, unix.AF_INET, nil
	}
	if network == "udp4" || network == "tcp4" {
		return nil, 0, fmt.Errorf("%v is not an IPv4 address", ip)
	}
	sa := &unix.SockaddrInet6{Port: port}
	copy(sa.Addr[:], ip.To16())
	if zone != "" {
		if ifi, err := net.InterfaceByName(zone); err == nil {
			sa.ZoneId = uint32(ifi.Index)
		} else if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
			sa.ZoneId = uint32(n) // "fe80::1%2": an interface index
		} else {
			return nil, 0, fmt.Errorf("unknown IPv6 zone %q (want an interface name or index)", zone)
		}
	}
	return sa, unix.AF_INET6, nil
}
