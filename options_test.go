//go:build linux

package iopool

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNewRejectsBadOptions(t *testing.T) {
	for _, n := range []int{0, -1, maxEventBuffer + 1} {
		_, err := New(WithEventBuffer(n))
		require.ErrorContains(t, err, "WithEventBuffer")
	}
	_, err := New(nil)
	require.Error(t, err)
}

// NewGroup applies each option once per pool, and WithName once to the
// group (it used to apply every option to a probe first, to peek at them).
func TestNewGroupAppliesEachOptionOncePerPool(t *testing.T) {
	applied := 0
	count := eachPoolOption(func(*options) error { applied++; return nil })
	g := newTestGroup(t, 3, count, WithName("srv"))
	require.Equal(t, 3, applied)
	for i := range g.Len() {
		require.Equal(t, fmt.Sprintf("srv-%d", i), g.Pool(i).Name())
	}
	_, err := NewGroup(2, WithEventBuffer(0))
	require.ErrorContains(t, err, "NewGroup: pool 0")
	require.ErrorContains(t, err, "WithEventBuffer(0)")
}
