package iopool

import (
	"runtime"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The token codec: the 64 data bits of an epoll event, through x/sys's
// EpollEvent, whose layout differs per architecture (12 bytes with the data
// unaligned at offset 4 on amd64, where the kernel packs the struct; 16 with
// the data at 8 elsewhere).
func TestTokenCodecLayoutForThisArch(t *testing.T) {
	parallel(t)
	size, dataOff := uintptr(16), uintptr(8)
	if runtime.GOARCH == "amd64" {
		size, dataOff = 12, 4
	}
	var ev unix.EpollEvent
	t.Logf("GOARCH=%s: EpollEvent is %d bytes, data at offset %d", runtime.GOARCH, unsafe.Sizeof(ev), unsafe.Offsetof(ev.Fd))
	require.Equal(t, size, unsafe.Sizeof(ev), "struct epoll_event size on %s", runtime.GOARCH)
	require.Equal(t, dataOff, unsafe.Offsetof(ev.Fd), "epoll data offset on %s", runtime.GOARCH)
	require.Equal(t, dataOff+4, unsafe.Offsetof(ev.Pad))
}

func TestTokenCodecRoundTrips(t *testing.T) {
	parallel(t)
	for _, data := range []uint64{tokenWake, tokenRing, 2, 1<<32 - 1, 1 << 32, 0xdead_beef_0000_1234, 1<<63 | 7, ^uint64(0)} {
		var ev unix.EpollEvent
		ev.Events = unix.EPOLLIN
		setEventData(&ev, data)
		require.Equal(t, data, eventData(&ev), "%#x", data)
		require.Equal(t, uint32(unix.EPOLLIN), ev.Events, "the data must not spill into the events")
	}
	op := &fdOp{}
	token := tokenOf(unsafe.Pointer(op))
	require.Greater(t, token, tokenRing, "an address never collides with a reserved token")
	require.Same(t, op, (*fdOp)(pointerOf(token)))
}

// The kernel hands the token back unchanged: an eventfd registered with an
// op's address as its data comes back from epoll_wait with that address, on
// this architecture's real layout.
func TestTokenCodecThroughTheKernel(t *testing.T) {
	parallel(t)
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	require.NoError(t, err)
	defer unix.Close(epfd)
	efd, err := unix.Eventfd(1, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	require.NoError(t, err)
	defer unix.Close(efd)

	op := &fdOp{}
	var pin runtime.Pinner
	pin.Pin(op) // the kernel holds the address
	defer pin.Unpin()
	token := tokenOf(unsafe.Pointer(op))
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setEventData(&ev, token)
	require.NoError(t, unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &ev))

	events := make([]unix.EpollEvent, 4)
	n, err := unix.EpollWait(epfd, events, 1000)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, token, eventData(&events[0]))
	require.Same(t, op, (*fdOp)(pointerOf(eventData(&events[0]))))
}
