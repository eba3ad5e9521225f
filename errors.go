//go:build linux

package iopool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
)

// Sentinel errors. Compare with errors.Is: the errors returned are often
// wrapped with the call and the object (the fd) that failed.
var (
	// ErrClosed is returned by operations on a closed pool or object. It
	// matches net.ErrClosed too, so errors.Is(err, net.ErrClosed) holds for
	// a socket used after Close (from a task or through a NetConn), as code
	// written for package net expects.
	ErrClosed error = closedError{}

	// ErrWouldBlock is returned, unwrapped, by Socket.TryRead and
	// Socket.TryWrite when the socket is not ready: nothing was read or
	// written, and the caller waits for readiness (Socket.WaitReadable, or
	// its own poll) before trying again.
	ErrWouldBlock = errors.New("iopool: operation would block")

	// ErrPending is what a Future's Poll returns while it is not ready,
	// after storing the waker (see Future). It is compared with ==: a
	// future returns it as is, never wrapped, and no call of this package
	// returns it to its caller.
	ErrPending error = pendingError{}

	// ErrTruncated is returned (wrapped) by ReadFrom when a datagram was
	// larger than the buffer: the buffer holds its first len(p) bytes, the
	// rest is lost, and the error says how large the datagram was. Package
	// net cuts such a datagram silently; here the caller learns to use a
	// larger buffer.
	ErrTruncated = errors.New("iopool: datagram truncated")

	// ErrCanceled is returned by the awaits of a canceled task. It wraps
	// context.Canceled, so errors.Is(err, context.Canceled) holds too.
	ErrCanceled = fmt.Errorf("iopool: task canceled: %w", context.Canceled)

	// ErrRunning is returned (wrapped, saying which) by Run and Start while
	// the pool's loop is already driven by a Run or a Start; the first one
	// keeps running.
	ErrRunning = errors.New("iopool: the pool is already running")

	// ErrNotRunning is returned (wrapped with the pool's name) to goroutine
	// code — a NetConn, net.Listener or net.PacketConn call, BlockOn,
	// Handle.Wait — that waited for the pool's loop while nobody ran it,
	// for a bound of one second (see Pool.Start).
	ErrNotRunning = errors.New("iopool: the pool's loop is not running: call Pool.Start (or Pool.Run) to serve goroutines that wait on it")

	// ErrNilTask is returned by Run(nil).
	ErrNilTask = errors.New("iopool: Run called with a nil task")

	// ErrFdClosedFirst is returned (wrapped) by FdReady.Close when the fd was
	// closed, or replaced by another file, before its FdReady was closed.
	ErrFdClosedFirst = errors.New("iopool: fd closed before its FdReady")

	// ErrUringUnavailable is returned, wrapped with the cause, by
	// Driver.Uring when the kernel refuses io_uring (ENOSYS, EPERM from
	// seccomp or io_uring_disabled, ENOMEM from a low memlock limit). The
	// rest of the pool works without it.
	ErrUringUnavailable = errors.New("iopool: io_uring unavailable")

	// ErrUnsupportedSQE is returned, wrapped with the call and the flag, by
	// Uring.Submit, Uring.Start and Batch.Submit for an SQE that would post
	// more than one completion or none (multishot variants, IOSQE_IO_LINK,
	// IOSQE_IO_HARDLINK, IOSQE_CQE_SKIP_SUCCESS): every operation of a pool
	// lives from one SQE to one final completion.
	ErrUnsupportedSQE = errors.New("iopool: io_uring SQE not supported")

	// ErrChannelClosed is returned by receives on a closed, drained channel
	// and by sends on a closed channel.
	ErrChannelClosed = errors.New("iopool: channel closed")

	// ErrGoexit is wrapped in the error of a task whose function called
	// runtime.Goexit (as t.FailNow and require.* do in a test): Join, Wait
	// and Run return it, naming the task. Only that task ends; the pool's
	// loop goes on.
	ErrGoexit = errors.New("runtime.Goexit called in the task")
)

// errMissingAddress is package net's error for a nil destination, typed
// (a nil *net.UDPAddr) or not, wrapped in the *net.OpError of WriteTo.
var errMissingAddress = errors.New("missing address")

// closedError is ErrClosed's type: one value, which also matches
// net.ErrClosed through errors.Is, as ErrCanceled matches context.Canceled.
type closedError struct{}

func (closedError) Error() string { return "iopool: closed" }

// Is reports whether target is net.ErrClosed.
func (closedError) Is(target error) bool { return target == net.ErrClosed }

// wrapError gives err the context "iopool: <format>: ", without repeating
// the "iopool: " that err's own text starts with when it is one of this
// package's errors ("iopool: group pool 1: closed", not "iopool: group
// pool 1: iopool: closed"). errors.Is and errors.As see err.
func wrapError(err error, format string, args ...any) error {
	return &wrappedError{context: fmt.Sprintf(format, args...), err: err}
}

type wrappedError struct {
	context string
	err     error
}

func (e *wrappedError) Error() string {
	return "iopool: " + e.context + ": " + strings.TrimPrefix(e.err.Error(), "iopool: ")
}

func (e *wrappedError) Unwrap() error { return e.err }

// pendingError is ErrPending's type: no other error has it, so a type
// check (isPending) tells ErrPending apart without comparing interfaces.
type pendingError struct{}

func (pendingError) Error() string { return "iopool: future pending" }

// isPending reports whether err is ErrPending (the check of every poll
// loop: one comparison of the type word, where err == ErrPending would
// call the runtime to compare the values).
func isPending(err error) bool {
	_, ok := err.(pendingError)
	return ok
}

// checkPending returns err, the error a future was ready with, and panics
// if it wraps ErrPending: a future that wrapped "pending" would be taken
// for failed, and its poller would stop waiting.
func checkPending(err error) error {
	if err != nil && errors.Is(err, ErrPending) {
		panic(fmt.Sprintf("iopool: a future returned a wrapped ErrPending (%v); return ErrPending itself while pending", err))
	}
	return err
}
