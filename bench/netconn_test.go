//go:build linux

package bench

import (
	"net"
	"testing"

	"golang.org/x/net/nettest"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool"
)

// startPool runs a pool in the background; stop ends the run and closes it.
func startPool(t *testing.T) (*iopool.Pool, func()) {
	t.Helper()
	p, err := iopool.New()
	if err != nil {
		t.Fatal(err)
	}
	stop := iopool.NewOneshot[struct{}]()
	done := make(chan error, 1)
	go func() {
		done <- p.Run(func(tk *iopool.Task) error { _, err := stop.Recv(tk); return err })
	}()
	return p, func() {
		_ = stop.Send(struct{}{})
		if err := <-done; err != nil {
			t.Error(err)
		}
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	}
}

// iopool's NetConn passes x/net's net.Conn conformance suite over a unix
// socketpair and over TCP on the loopback.
func TestNetConnConformance(t *testing.T) {
	t.Run("unix", func(t *testing.T) {
		nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
			p, stopPool := startPool(t)
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				stopPool()
				return nil, nil, nil, err
			}
			a, err := p.Driver().NewNetConn(fds[0])
			if err != nil {
				stopPool()
				return nil, nil, nil, err
			}
			b, err := p.Driver().NewNetConn(fds[1])
			if err != nil {
				a.Close()
				stopPool()
				return nil, nil, nil, err
			}
			return a, b, func() { a.Close(); b.Close(); stopPool() }, nil
		})
	})
	t.Run("tcp", func(t *testing.T) {
		nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
			p, stopPool := startPool(t)
			l, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				stopPool()
				return nil, nil, nil, err
			}
			defer l.Close()
			accepted := make(chan net.Conn, 1)
			go func() {
				c, _ := l.Accept()
				accepted <- c
			}()
			client, err := net.Dial("tcp4", l.Addr().String())
			if err != nil {
				stopPool()
				return nil, nil, nil, err
			}
			server := <-accepted
			conns := []net.Conn{client, server}
			var out [2]*iopool.NetConn
			for i, c := range conns {
				// Take the fd out of Go's netpoller and give it to the pool.
				f, err := c.(*net.TCPConn).File()
				c.Close()
				if err != nil {
					stopPool()
					return nil, nil, nil, err
				}
				fd, err := unix.Dup(int(f.Fd()))
				f.Close()
				if err != nil {
					stopPool()
					return nil, nil, nil, err
				}
				if out[i], err = p.Driver().NewNetConn(fd); err != nil {
					stopPool()
					return nil, nil, nil, err
				}
			}
			return out[0], out[1], func() { out[0].Close(); out[1].Close(); stopPool() }, nil
		})
	})
}
