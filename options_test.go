package iopool

import (
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
