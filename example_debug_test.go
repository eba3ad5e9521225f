//go:build linux

package iopool_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/iopool/iopool"
)

// Pool.Tasks is the goroutine dump of a pool: each live task, its state
// and what it waits on. It is safe from any goroutine;
// iopooldebug.Handler serves it over HTTP.
func ExamplePool_Tasks() {
	p, _ := iopool.New()
	defer p.Close()
	drv := p.Driver()
	requests := iopool.NewChan[string]()
	err := p.Run(func(t *iopool.Task) error {
		server := iopool.Spawn(drv, "server", func(t *iopool.Task) (string, error) {
			return requests.Recv(t)
		})
		client := iopool.Spawn(drv, "client", func(t *iopool.Task) (string, error) {
			return server.Join(t)
		})
		if err := t.Yield(); err != nil { // both run until they wait
			return err
		}
		tasks := p.Tasks()
		slices.SortFunc(tasks, func(a, b iopool.TaskInfo) int { return strings.Compare(a.Name, b.Name) })
		for _, ti := range tasks {
			fmt.Println(strings.TrimSpace(fmt.Sprintf("%s: %s %s", ti.Name, ti.State, ti.WaitingOn)))
		}
		if err := requests.Send("hello"); err != nil {
			return err
		}
		v, err := client.Join(t)
		fmt.Println(v)
		return err
	})
	fmt.Println(err)
	// Output:
	// client: waiting Join of task "server"
	// root: running
	// server: waiting Chan.Recv
	// hello
	// <nil>
}

// Socket errors test as those of package net do: each is a *net.OpError
// naming the operation, over the system call's error; a deadline is a
// net.Error whose Timeout is true and matches os.ErrDeadlineExceeded; a
// closed socket's error matches net.ErrClosed (and iopool.ErrClosed).
func ExampleSocket_errors() {
	p, _ := iopool.New()
	defer p.Close()
	drv := p.Driver()
	err := p.Run(func(t *iopool.Task) error {
		l, err := drv.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer l.Close()

		// Nothing listens on a port the kernel just gave and took back.
		gone, err := drv.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		_ = gone.Close()
		_, err = iopool.Dial(t, "tcp", gone.Addr().String())
		var op *net.OpError
		fmt.Println(errors.As(err, &op), op.Op, errors.Is(err, syscall.ECONNREFUSED))

		c, err := iopool.Dial(t, "tcp", l.Addr().String())
		if err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		_, err = c.Read(t, make([]byte, 1)) // nobody writes
		var ne net.Error
		fmt.Println(errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded))

		_ = c.Close()
		_, err = c.Read(t, make([]byte, 1))
		fmt.Println(errors.Is(err, net.ErrClosed), errors.Is(err, iopool.ErrClosed))
		return nil
	})
	fmt.Println(err)
	// Output:
	// true dial true
	// true true
	// true true
	// <nil>
}
