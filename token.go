//go:build linux

package iopool

import "unsafe"

// The epoll data of a registration is its token: a small reserved number for
// the pool's own fds, or the address of the registration's op for everything
// else. Op addresses are never this small.
const (
	tokenWake uint64 = 0 // the wake eventfd
	tokenRing uint64 = 1 // the io_uring fd; completions are drained at the top of each cycle
)

// The codec needs 64-bit pointers.
var _ [8 - unsafe.Sizeof(uintptr(0))]byte

// tokenOf returns the token of a pinned object.
func tokenOf(p unsafe.Pointer) uint64 {
	// Safe: p is a local pointer-sized word (64 bits, checked above); its
	// bits are copied out, and the pointer itself keeps no new meaning.
	// The caller keeps the object pinned and reachable while the kernel
	// holds the token.
	return *(*uint64)(unsafe.Pointer(&p))
}

// pointerOf turns a token back into the pointer it was made from. The bits
// are copied into an aligned word and read as a pointer, never converted
// through uintptr, which checkptr rejects under -race. It is valid only for a
// token of an object that is still pinned and reachable from the pool.
func pointerOf(token uint64) unsafe.Pointer {
	// Safe: token is an aligned local 64-bit word holding the bits tokenOf
	// copied from a pointer to an object that is still pinned (it never
	// moved) and reachable from the pool's fd table or to-delete list (it
	// was not freed): the loop decodes only tokens of such ops.
	return *(*unsafe.Pointer)(unsafe.Pointer(&token))
}
