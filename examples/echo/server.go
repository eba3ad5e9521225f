package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/iopool/iopool"
)

// listenTCP opens a nonblocking TCP listener on an IPv4 or IPv6 address.
// reusePort lets several pools share the port (thread-per-core).
func listenTCP(addr string, reusePort bool) (int, *net.TCPAddr, error) {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return -1, nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	// IPv4 for an IPv4 or empty host, IPv6 for an IPv6 one ("[::1]:7000").
	var sa unix.Sockaddr
	family := unix.AF_INET
	if ip4 := ta.IP.To4(); ip4 != nil || ta.IP == nil {
		sa4 := &unix.SockaddrInet4{Port: ta.Port}
		copy(sa4.Addr[:], ip4)
		sa = sa4
	} else {
		family = unix.AF_INET6
		sa6 := &unix.SockaddrInet6{Port: ta.Port}
		copy(sa6.Addr[:], ta.IP.To16())
		sa = sa6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, os.NewSyscallError("socket", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if reusePort {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("listen %s: %w", addr, os.NewSyscallError("bind", err))
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("listen %s: %w", addr, os.NewSyscallError("listen", err))
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, nil, os.NewSyscallError("getsockname", err)
	}
	switch in := got.(type) {
	case *unix.SockaddrInet4:
		return fd, &net.TCPAddr{IP: net.IP(in.Addr[:]), Port: in.Port}, nil
	case *unix.SockaddrInet6:
		return fd, &net.TCPAddr{IP: net.IP(in.Addr[:]), Port: in.Port}, nil
	}
	unix.Close(fd)
	return -1, nil, fmt.Errorf("listen %s: unexpected local address %v", addr, got)
}

// isTerminal reports whether w is a terminal, where a \r progress line
// makes sense (not a file or a pipe).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// serve accepts connections on lfd inside task t and spawns one echo task
// per connection, until t is canceled.
func serve(t *iopool.Task, lfd int) error {
	drv := t.Driver()
	lr, err := drv.NewFdReady(lfd)
	if err != nil {
		return err
	}
	defer lr.Close()
	for {
		cfd, _, err := unix.Accept4(lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch {
		case err == nil:
			_ = unix.SetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
			iopool.Spawn(drv, "conn", func(t *iopool.Task) (struct{}, error) {
				return struct{}{}, echoConn(t, cfd)
			})
		case err == unix.EAGAIN || err == unix.EINTR || err == unix.ECONNABORTED:
			if err == unix.EAGAIN {
				lr.ClearReady(iopool.SlotRead)
				if _, err := lr.WaitReady(t, iopool.SlotRead, iopool.PollIn); err != nil {
					return err
				}
			}
		case err == unix.EMFILE || err == unix.ENFILE:
			if err := t.Sleep(10e6); err != nil { // back off 10 ms; the listener keeps working
				return err
			}
		default:
			return os.NewSyscallError("accept4", err)
		}
	}
}

// echoConn echoes one connection: read until EAGAIN, write everything back,
// wait for readiness with the edge-triggered protocol.
func echoConn(t *iopool.Task, fd int) error {
	fr, err := t.Driver().NewFdReady(fd)
	if err != nil {
		unix.Close(fd)
		return err
	}
	defer func() {
		fr.Close()
		unix.Close(fd)
	}()
	buf := make([]byte, 16<<10)
	for {
		n, err := unix.Read(fd, buf)
		switch {
		case err == unix.EAGAIN:
			fr.ClearReady(iopool.SlotRead)
			if _, err := fr.WaitReady(t, iopool.SlotRead, iopool.PollIn|iopool.PollRdHup); err != nil {
				return err
			}
			continue
		case err == unix.EINTR:
			continue
		case err != nil:
			if errors.Is(err, unix.ECONNRESET) {
				return nil
			}
			return os.NewSyscallError("read", err)
		case n == 0:
			return nil // EOF
		}
		if err := writeAll(t, fr, fd, buf[:n]); err != nil {
			return err
		}
	}
}

func writeAll(t *iopool.Task, fr *iopool.FdReady, fd int, p []byte) error {
	for len(p) > 0 {
		n, err := unix.Write(fd, p)
		switch {
		case err == unix.EAGAIN:
			fr.ClearReady(iopool.SlotWrite)
			if _, err := fr.WaitReady(t, iopool.SlotWrite, iopool.PollOut); err != nil {
				return err
			}
		case err == unix.EINTR:
		case err != nil:
			if errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET) {
				return nil
			}
			return os.NewSyscallError("write", err)
		default:
			p = p[n:]
		}
	}
	return nil
}

// threadCPU returns the calling thread's CPU time in nanoseconds.
func threadCPU() int64 {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
