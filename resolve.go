//go:build linux

package iopool

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Name resolution never blocks a pool. An address with a numeric host and
// port ("127.0.0.1:80", "[::1]:0", ":8080") is parsed on the spot. A host
// name or a service name ("example.com:https") is looked up by
// net.DefaultResolver (the pure-Go or cgo resolver, as package net
// chooses) on a goroutine of its own while the task waits, with the task's
// Context: canceling the task cancels the lookup, and the task's await
// returns ErrCanceled at once.
//
// Dial always resolves this way. Driver.Listen and Driver.ListenPacket
// take no task: called from a task of the same pool they resolve through
// that task as Dial does; called from any other goroutine they look the
// name up on the caller's goroutine, which is then the one that waits.

// resolver is net.DefaultResolver; tests replace it with one whose DNS
// server never answers.
var resolver = net.DefaultResolver

// inetAddr is one resolved IP address and port.
type inetAddr struct {
	ip   net.IP // nil: the unspecified address (listen on all)
	port int
	zone string
}

// lookup resolves addr ("host:port") for a tcp or udp network without
// blocking the pool: see the comment at the top of this file. t may be nil
// (the caller's goroutine waits). The addresses are those of network's
// family (IPv4 only for tcp4/udp4, IPv6 only for tcp6/udp6), in the
// resolver's order.
func lookup(t *Task, network, addr string) ([]inetAddr, error) {
	host, service, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, perr := strconv.ParseUint(service, 10, 16)
	numericPort := perr == nil
	if service == "" {
		port, numericPort = 0, true
	}
	hostOnly, zone, _ := strings.Cut(host, "%")
	ip := net.ParseIP(hostOnly)
	if host != "" && ip == nil {
		zone = ""
	}
	if numericPort && (host == "" || ip != nil) {
		a := inetAddr{ip: ip, port: int(port), zone: zone}
		return filterFamily(network, []inetAddr{a}, addr)
	}

	resolveNames := func(ctx context.Context) ([]inetAddr, error) {
		p := int(port)
		if !numericPort {
			n, err := resolver.LookupPort(ctx, network, service)
			if err != nil {
				return nil, err
			}
			p = n
		}
		if host == "" || ip != nil {
			return []inetAddr{{ip: ip, port: p, zone: zone}}, nil
		}
		ips, err := resolver.LookupNetIP(ctx, ipNetwork(network), host)
		if err != nil {
			return nil, err
		}
		as := make([]inetAddr, 0, len(ips))
		for _, a := range ips {
			as = append(as, inetAddr{ip: net.IP(a.Unmap().AsSlice()), port: p, zone: a.Zone()})
		}
		return as, nil
	}
	var as []inetAddr
	if t == nil {
		as, err = resolveNames(context.Background())
	} else {
		as, err = resolveOnHelper(t, resolveNames)
	}
	if err != nil {
		return nil, err
	}
	return filterFamily(network, as, addr)
}

// resolveOnHelper runs resolve on a goroutine of its own, with t's
// Context, while t waits. If t is canceled it returns ErrCanceled at once;
// the lookup sees its context canceled and its goroutine ends soon after.
func resolveOnHelper(t *Task, resolve func(ctx context.Context) ([]inetAddr, error)) ([]inetAddr, error) {
	ctx := t.Context()
	type lookup struct {
		addrs []inetAddr
		err   error
	}
	done := NewOneshot[lookup]()
	go func() {
		as, err := resolve(ctx)
		_ = done.Send(lookup{as, err})
	}()
	r, err := done.Recv(t)
	if err != nil {
		return nil, err
	}
	return r.addrs, r.err
}

// ipNetwork is the resolver's network for a socket network.
func ipNetwork(network string) string {
	switch network {
	case "tcp4", "udp4":
		return "ip4"
	case "tcp6", "udp6":
		return "ip6"
	}
	return "ip"
}

// filterFamily keeps the addresses network can use; none is an error
// naming the address.
func filterFamily(network string, as []inetAddr, addr string) ([]inetAddr, error) {
	want := ipNetwork(network)
	kept := as[:0:0]
	for _, a := range as {
		is4 := a.ip == nil || a.ip.To4() != nil
		if want == "ip" || (want == "ip4") == is4 || (a.ip == nil) {
			kept = append(kept, a)
		}
	}
	if len(kept) == 0 {
		return nil, &net.AddrError{Err: "no suitable address found", Addr: addr}
	}
	return kept, nil
}

// preferIPv4 returns the first IPv4 address of as, or as[0]: what package
// net listens on for a name with both families.
func preferIPv4(as []inetAddr) inetAddr {
	for _, a := range as {
		if a.ip == nil || a.ip.To4() != nil {
			return a
		}
	}
	return as[0]
}

// resolve turns a stream address into one sockaddr and its family: a path
// for unix, the first IPv4 address (else the first) for tcp, tcp4, tcp6.
// t may be nil; see lookup.
func resolve(t *Task, network, addr string) (unix.Sockaddr, int, error) {
	sas, err := resolveAll(t, network, addr)
	if err != nil {
		return nil, 0, err
	}
	return sas[0].sa, sas[0].family, nil
}

// resolvedSockaddr is a sockaddr ready for socket(2) and bind or connect.
type resolvedSockaddr struct {
	sa     unix.Sockaddr
	family int
}

// resolveAll resolves a stream address to every sockaddr to try, for Dial:
// the preferred (IPv4) one first.
func resolveAll(t *Task, network, addr string) ([]resolvedSockaddr, error) {
	switch network {
	case "unix":
		return []resolvedSockaddr{{&unix.SockaddrUnix{Name: addr}, unix.AF_UNIX}}, nil
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("unsupported network %q (want tcp, tcp4, tcp6 or unix)", network)
	}
	as, err := lookup(t, network, addr)
	if err != nil {
		return nil, err
	}
	first := preferIPv4(as)
	out := make([]resolvedSockaddr, 0, len(as))
	for i, a := range append([]inetAddr{first}, as...) {
		if i > 0 && a.ip.Equal(first.ip) {
			continue
		}
		sa, family, err := inetSockaddr(network, a.ip, a.port, a.zone)
		if err != nil {
			return nil, err
		}
		out = append(out, resolvedSockaddr{sa, family})
	}
	return out, nil
}
