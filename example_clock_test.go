//go:build linux

package iopool_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iopool/iopool"
)

// A protocol's idle timeout, tested under a virtual clock: a server drops a
// client that says nothing for five minutes after its last line. The test
// runs in microseconds and always ends at the same virtual instants.
func ExampleWithVirtualClock() {
	p, err := iopool.New(iopool.WithVirtualClock())
	if err != nil {
		panic(err)
	}
	defer p.Close()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		panic(err)
	}
	const idle = 5 * time.Minute
	err = p.Run(func(t *iopool.Task) error {
		drv := t.Driver()
		start := t.Now()
		server := iopool.Spawn(drv, "server", func(t *iopool.Task) (int, error) {
			s, err := drv.NewSocket(fds[0])
			if err != nil {
				return 0, err
			}
			defer s.Close()
			in := bufio.NewScanner(s.Reader(t))
			lines := 0
			for {
				s.SetReadDeadline(t.Now().Add(idle))
				if !in.Scan() {
					return lines, in.Err()
				}
				lines++
				fmt.Printf("%v: server got %q\n", t.Now().Sub(start), in.Text())
			}
		})
		client, err := drv.NewSocket(fds[1])
		if err != nil {
			return err
		}
		defer client.Close()
		for _, line := range []string{"HELLO\n", "PING\n"} {
			if _, err := client.Write(t, []byte(line)); err != nil {
				return err
			}
			if err := t.Sleep(4 * time.Minute); err != nil { // within the timeout
				return err
			}
		}
		// Now the client goes silent.
		lines, err := server.Join(t)
		fmt.Printf("%v: server dropped the client after %d lines (timeout: %v)\n",
			t.Now().Sub(start), lines, errors.Is(err, os.ErrDeadlineExceeded))
		return nil
	})
	if err != nil {
		panic(err)
	}
	// Output:
	// 0s: server got "HELLO"
	// 4m0s: server got "PING"
	// 9m0s: server dropped the client after 2 lines (timeout: true)
}
