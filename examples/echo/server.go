//go:build linux

package main

import (
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/iopool/iopool"
)

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

// serve accepts connections on l inside task t and echoes each in a task
// of its own (echoSocket), until t is canceled.
//
// This is the task layer's fast path: Socket.Read makes the read system
// call only when the kernel has signaled data since the socket was last
// found empty, and a short read counts as found empty, so a request costs
// one read and one write, not the extra read failing with EAGAIN of a
// read-until-EAGAIN loop; Write suspends the task while the socket is full.
func serve(t *iopool.Task, l *iopool.Listener) error {
	defer l.Close()
	var echoed int64
	var bufs bufferList
	for {
		s, err := l.Accept(t)
		if err != nil {
			return err
		}
		iopool.Spawn(t.Driver(), "conn", func(t *iopool.Task) (struct{}, error) {
			return struct{}{}, echoSocket(t, s, &bufs, &echoed)
		})
	}
}

// threadCPU returns the calling thread's CPU time in nanoseconds.
func threadCPU() int64 {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
