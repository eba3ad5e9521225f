//go:build linux

package iopool_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"

	"github.com/iopool/iopool"
)

// lineCounter is the whole state of one connection of the server below:
// while it is idle, it and its socket are all the connection costs.
type lineCounter struct {
	lines int
}

// ServeReady echoes what has arrived, numbering the lines, and returns as
// soon as the socket has nothing more to read.
func (c *lineCounter) ServeReady(t *iopool.Task, s *iopool.Socket, buf []byte) error {
	for {
		n, err := s.TryRead(buf)
		if errors.Is(err, iopool.ErrWouldBlock) {
			return nil // idle: no task waits for this connection
		}
		if err != nil {
			return err // io.EOF when the client hangs up
		}
		c.lines += bytes.Count(buf[:n], []byte("\n"))
		if _, err := fmt.Fprintf(s.Writer(t), "%d: %s", c.lines, buf[:n]); err != nil {
			return err
		}
	}
}

// A server whose idle connections hold no task: each connection is a
// lineCounter, run by a shared worker task only while data flows.
func ExampleLeanServer() {
	p, err := iopool.New()
	if err != nil {
		panic(err)
	}
	defer p.Close()
	srv := &iopool.LeanServer{
		NewConn: func(*iopool.Socket) iopool.ConnHandler { return &lineCounter{} },
	}
	err = p.Run(func(t *iopool.Task) error {
		l, err := t.Driver().Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		go func() { // a client, then stop the server
			defer srv.Close()
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				panic(err)
			}
			defer c.Close()
			r := bufio.NewReader(c)
			for _, line := range []string{"hello\n", "world\n"} {
				fmt.Fprint(c, line)
				echo, _ := r.ReadString('\n')
				fmt.Print(echo)
			}
		}()
		return srv.Serve(t, l) // nil once the server is closed
	})
	fmt.Println("served:", err)
	// Output:
	// 1: hello
	// 2: world
	// served: <nil>
}
