//go:build linux && race

package sys

import (
	"runtime"
	"unsafe"
)

// What Read and Write tell the race detector, as unix.Read and unix.Write
// do: the bytes the kernel wrote or read, and an order between a write
// and the read that sees its data (ioSync).
const raceEnabled = true

var ioSync int64

func raceAcquire(addr unsafe.Pointer)             { runtime.RaceAcquire(addr) }
func raceReleaseMerge(addr unsafe.Pointer)        { runtime.RaceReleaseMerge(addr) }
func raceReadRange(addr unsafe.Pointer, len int)  { runtime.RaceReadRange(addr, len) }
func raceWriteRange(addr unsafe.Pointer, len int) { runtime.RaceWriteRange(addr, len) }
