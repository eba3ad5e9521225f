//go:build linux && !race

package sys

import "unsafe"

// Without the race detector, Read and Write tell it nothing (see race.go).
const raceEnabled = false

var ioSync int64

func raceAcquire(unsafe.Pointer)         {}
func raceReleaseMerge(unsafe.Pointer)    {}
func raceReadRange(unsafe.Pointer, int)  {}
func raceWriteRange(unsafe.Pointer, int) {}
