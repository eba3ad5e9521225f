package iopool

import (
	"context"
	"errors"
	"fmt"
)

// Sentinel errors. Compare with errors.Is: the errors returned are often
// wrapped with the call and the object (the fd) that failed.
var (
	// ErrClosed is returned by operations on a closed pool or object.
	ErrClosed = errors.New("iopool: closed")

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
