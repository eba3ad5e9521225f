//go:build linux

package iopool_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/iopool/iopool"
)

// A thread-per-core echo server: one pool per CPU (here two), each on its
// own thread, each accepting from its own SO_REUSEPORT listener on the same
// port and serving its connections alone.
func ExampleGroup() {
	g, err := iopool.NewGroup(2, iopool.WithLockOSThread()) // NewGroup(0, iopool.WithPinCPU()) for one pinned pool per CPU
	if err != nil {
		panic(err)
	}
	defer g.Close()
	ln, err := g.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}

	go func() { // a client, then stop the server
		defer g.Close()
		for i := range 3 {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				panic(err)
			}
			fmt.Fprintf(c, "hello %d\n", i)
			line, _ := bufio.NewReader(c).ReadString('\n')
			fmt.Print(line)
			c.Close()
		}
	}()

	err = g.Run(func(t *iopool.Task, pool int) error {
		for {
			c, err := ln.Accept(t) // from this pool's own listener
			if err != nil {
				return err
			}
			iopool.Spawn(t.Driver(), "echo", func(t *iopool.Task) (int64, error) {
				defer c.Close()
				return io.Copy(c.Writer(t), c.Reader(t))
			})
		}
	})
	fmt.Println("stopped:", errors.Is(err, iopool.ErrClosed))
	// Output:
	// hello 0
	// hello 1
	// hello 2
	// stopped: true
}

// A task of pool 0 hands work to pool 1 and awaits the answer: Spawn on
// the other pool's driver, reply through a Oneshot (or Join the handle).
// Pool 1 runs tasks only while its root runs, so its root waits until
// pool 0 is done.
func ExampleGroup_spawnOnAnotherPool() {
	g, err := iopool.NewGroup(2)
	if err != nil {
		panic(err)
	}
	defer g.Close()
	done := iopool.NewOneshot[struct{}]()
	err = g.Run(func(t *iopool.Task, pool int) error {
		if pool == 1 {
			_, err := done.Recv(t)
			return err
		}
		defer done.Send(struct{}{})
		reply := iopool.NewOneshot[string]()
		iopool.Spawn(g.Driver(1), "upper", func(t *iopool.Task) (struct{}, error) {
			// Runs on pool 1, one at a time with pool 1's other tasks.
			return struct{}{}, reply.Send(strings.ToUpper("asked from pool 0"))
		})
		s, err := reply.Recv(t)
		fmt.Println(s)
		return err
	})
	if err != nil {
		panic(err)
	}
	// Output: ASKED FROM POOL 0
}
