package iopool

import "errors"

// TEMPORARY: the submitter lands with the io_uring issue.
const defaultUringEntries = 64

// ErrUringUnavailable is returned (wrapped with the cause) by Driver.Uring
// when the kernel refuses io_uring.
var ErrUringUnavailable = errors.New("iopool: io_uring unavailable")

// Uring submits io_uring operations on a pool.
type Uring struct{}

func (u *Uring) drain(w *WakerList) {}
func (u *Uring) flush()             {}
func (u *Uring) close() error       { return nil }
