//go:build linux

package iopool_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iopool/iopool"
)

// An eventfd signaled by a plain goroutine wakes a task through its
// edge-triggered registration: wait, read until EAGAIN, ClearReady, wait
// again.
func ExampleFdReady() {
	p, _ := iopool.New()
	defer p.Close()
	efd, _ := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	defer unix.Close(efd) // after the FdReady's Close below
	fr, err := p.Driver().NewFdReady(efd)
	if err != nil {
		panic(err)
	}
	defer fr.Close()
	go func() {
		_, _ = unix.Write(efd, []byte{1, 0, 0, 0, 0, 0, 0, 0}) // add 1 (little-endian)
	}()
	err = p.Run(func(t *iopool.Task) error {
		for {
			if _, err := fr.WaitReady(t, iopool.SlotRead, iopool.PollIn); err != nil {
				return err
			}
			var buf [8]byte
			_, err := unix.Read(efd, buf[:])
			if err == unix.EAGAIN {
				fr.ClearReady(iopool.SlotRead) // drained: wait for the next edge
				continue
			}
			fmt.Println("eventfd counter:", buf[0], err)
			return nil
		}
	})
	fmt.Println(err)
	// Output:
	// eventfd counter: 1 <nil>
	// <nil>
}

// A line server and its client as two tasks of one pool: bufio works over
// a Socket through the task-bound Reader and Writer.
func ExampleSocket() {
	p, _ := iopool.New()
	defer p.Close()
	drv := p.Driver()
	err := p.Run(func(t *iopool.Task) error {
		l, err := drv.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer l.Close()
		server := iopool.Spawn(drv, "server", func(t *iopool.Task) (struct{}, error) {
			c, err := l.Accept(t)
			if err != nil {
				return struct{}{}, err
			}
			defer c.Close()
			line, err := bufio.NewReader(c.Reader(t)).ReadString('\n')
			if err != nil {
				return struct{}{}, err
			}
			_, err = c.Write(t, []byte(strings.ToUpper(line)))
			return struct{}{}, err
		})
		c, err := iopool.Dial(t, "tcp", l.Addr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write(t, []byte("hello, socket\n")); err != nil {
			return err
		}
		reply, err := bufio.NewReader(c.Reader(t)).ReadString('\n')
		fmt.Print(reply)
		if err != nil {
			return err
		}
		_, err = server.Join(t)
		return err
	})
	fmt.Println(err)
	// Output:
	// HELLO, SOCKET
	// <nil>
}

// A NetConn is a net.Conn for plain goroutines whose waits park on the
// pool: here one end of a socketpair, talking to package net's side.
func ExampleNetConn() {
	p, _ := iopool.New()
	defer p.Close()
	stop := iopool.NewOneshot[struct{}]()
	ran := make(chan error, 1)
	go func() {
		ran <- p.Run(func(t *iopool.Task) error { _, err := stop.Recv(t); return err })
	}()

	fds, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	conn, err := p.Driver().NewNetConn(fds[0])
	if err != nil {
		panic(err)
	}
	peer, _ := net.FileConn(os.NewFile(uintptr(fds[1]), "peer"))
	go func() {
		_, _ = fmt.Fprintln(peer, "ping")
	}()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	fmt.Printf("%q %v\n", line, err)
	conn.Close()
	peer.Close()
	_ = stop.Send(struct{}{})
	fmt.Println(<-ran)
	// Output:
	// "ping\n" <nil>
	// <nil>
}

// A task reads a file through io_uring. Where the kernel refuses io_uring
// (seccomp, sysctl io_uring_disabled), Uring returns ErrUringUnavailable
// and the program falls back to a plain pread.
func ExampleUring() {
	f, _ := os.CreateTemp("", "uring-example")
	defer os.Remove(f.Name())
	defer f.Close()
	_, _ = f.WriteString("hello, ring")

	p, _ := iopool.New()
	defer p.Close()
	err := p.Run(func(t *iopool.Task) error {
		buf := make([]byte, 64)
		var n int
		u, err := t.Driver().Uring()
		switch {
		case errors.Is(err, iopool.ErrUringUnavailable):
			n, err = f.ReadAt(buf, 0) // the fallback
			if err != nil && err != io.EOF {
				return err
			}
		case err != nil:
			return err
		default:
			// buf stays pinned until the kernel is done with it.
			if n, err = u.Read(t, int(f.Fd()), buf, 0); err != nil {
				return err
			}
		}
		fmt.Printf("read %d bytes: %s\n", n, buf[:n])
		return nil
	})
	fmt.Println(err)
	// Output:
	// read 11 bytes: hello, ring
	// <nil>
}

// A Batch queues many io_uring operations and waits for all of them with
// one suspension of the task: here four reads of one file at different
// offsets.
func ExampleBatch() {
	f, _ := os.CreateTemp("", "batch-example")
	defer os.Remove(f.Name())
	defer f.Close()
	_, _ = f.WriteString("zero one  two  three")

	p, _ := iopool.New()
	defer p.Close()
	err := p.Run(func(t *iopool.Task) error {
		bufs := make([][]byte, 4)
		for i := range bufs {
			bufs[i] = make([]byte, 5)
		}
		u, err := t.Driver().Uring()
		if errors.Is(err, iopool.ErrUringUnavailable) {
			for i := range bufs { // the fallback: one pread each
				_, _ = f.ReadAt(bufs[i], int64(5*i))
			}
		} else if err != nil {
			return err
		} else {
			b := u.NewBatch()
			for i := range bufs {
				if err := b.Read(t, int(f.Fd()), bufs[i], int64(5*i)); err != nil {
					return err
				}
			}
			if err := b.Await(t); err != nil { // one suspension for the four reads
				return err
			}
		}
		for _, buf := range bufs {
			fmt.Printf("%q\n", strings.TrimSpace(string(buf)))
		}
		return nil
	})
	fmt.Println(err)
	// Output:
	// "zero"
	// "one"
	// "two"
	// "three"
	// <nil>
}

// A JoinSet takes the results of many tasks in the order they finish.
func ExampleJoinSet() {
	p, _ := iopool.New()
	defer p.Close()
	_ = p.Run(func(t *iopool.Task) error {
		set := iopool.NewJoinSet[string](t.Driver())
		for _, ms := range []int{30, 10, 20} {
			set.Spawn(fmt.Sprintf("sleep %dms", ms), func(t *iopool.Task) (string, error) {
				return fmt.Sprintf("%dms", ms), t.Sleep(time.Duration(ms) * time.Millisecond)
			})
		}
		for set.Len() > 0 {
			j, err := set.Next(t)
			if err != nil {
				return err
			}
			fmt.Println(j.Task.Name(), "->", j.Value, j.Err)
		}
		return nil
	})
	// Output:
	// sleep 10ms -> 10ms <nil>
	// sleep 20ms -> 20ms <nil>
	// sleep 30ms -> 30ms <nil>
}

// Select waits for the first of several futures of different types: a
// message or a timeout.
func ExampleSelect() {
	p, _ := iopool.New()
	defer p.Close()
	msgs := iopool.NewChan[string]()
	_ = p.Run(func(t *iopool.Task) error {
		for round := range 2 {
			if round == 1 {
				_ = msgs.Send("hello")
			}
			timeout := t.Driver().After(10 * time.Millisecond) // fires 10ms from now
			var msg string
			i, err := iopool.Select(t, iopool.Case(msgs, &msg), iopool.Case[time.Time](timeout, nil))
			timeout.Stop() // leaves the heap now if the message won
			switch {
			case err != nil:
				return err
			case i == 0:
				fmt.Println("message:", msg)
			case i == 1:
				fmt.Println("timed out")
			}
		}
		return nil
	})
	// Output:
	// timed out
	// message: hello
}

// A Ticker drives periodic work; Next reports ticks the task missed.
func ExampleTicker() {
	p, _ := iopool.New()
	defer p.Close()
	_ = p.Run(func(t *iopool.Task) error {
		ticker, err := t.Driver().NewTicker(5 * time.Millisecond)
		if err != nil {
			return err
		}
		defer ticker.Stop()
		for i := range 3 {
			if _, err := ticker.Next(t); err != nil {
				return err
			}
			fmt.Println("tick", i+1)
		}
		return nil
	})
	// Output:
	// tick 1
	// tick 2
	// tick 3
}

// A UDP echo in a task, with package net as the client.
func ExampleDriver_ListenPacket() {
	p, _ := iopool.New()
	defer p.Close()
	_ = p.Run(func(t *iopool.Task) error {
		ps, err := t.Driver().ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ps.Close()
		client, err := net.Dial("udp", ps.LocalAddr().String())
		if err != nil {
			return err
		}
		defer client.Close()
		_, _ = client.Write([]byte("marco"))

		buf := make([]byte, 1500)
		n, from, err := ps.ReadFrom(t, buf)
		if err != nil {
			return err
		}
		fmt.Printf("server got %q\n", buf[:n])
		if _, err := ps.WriteTo(t, []byte("polo"), from); err != nil {
			return err
		}
		_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err = client.Read(buf) // a plain blocking read: fine for an example
		fmt.Printf("client got %q %v\n", buf[:n], err)
		return nil
	})
	// Output:
	// server got "marco"
	// client got "polo" <nil>
}

// SpawnContext ties a task to a context; the context's cause survives.
func ExampleSpawnContext() {
	p, _ := iopool.New()
	defer p.Close()
	_ = p.Run(func(t *iopool.Task) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		defer cancel()
		h := iopool.SpawnContext(t.Driver(), ctx, "slow", func(t *iopool.Task) (int, error) {
			return 0, t.Sleep(time.Hour)
		})
		_, err := h.Join(t)
		fmt.Println(errors.Is(err, iopool.ErrCanceled), errors.Is(err, context.DeadlineExceeded))
		return nil
	})
	// Output: true true
}

// A task handles SIGUSR1 sent to the process.
func ExampleDriver_NotifySignals() {
	p, _ := iopool.New()
	defer p.Close()
	_ = p.Run(func(t *iopool.Task) error {
		sigs, err := t.Driver().NotifySignals(syscall.SIGUSR1)
		if err != nil {
			return err
		}
		defer sigs.Stop()
		_ = syscall.Kill(os.Getpid(), syscall.SIGUSR1)
		sig, err := sigs.Recv(t)
		fmt.Println("got", sig, err)
		return nil
	})
	// Output: got user defined signal 1 <nil>
}
