//go:build linux

package iopool

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

func TestTokenCodecRoundTrips(t *testing.T) {
	parallel(t)
	op := &fdRegistration{}
	token := tokenOf(unsafe.Pointer(op))
	require.Greater(t, token, tokenRing, "an address never collides with a reserved token")
	require.Same(t, op, (*fdRegistration)(pointerOf(token)))
}
