//go:build linux

package iopool

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// No error repeats the package's prefix ("iopool: x: iopool: closed").
func TestRegressionNoDoubledErrorPrefix(t *testing.T) {
	parallel(t)
	err := wrapError(wrapError(ErrClosed, "pool %d", 1), "group pool %d", 2)
	require.Equal(t, "iopool: group pool 2: pool 1: closed", err.Error())
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, err, net.ErrClosed)

	g := newTestGroup(t, 2)
	require.NoError(t, g.Close())
	_, err = g.Listen("tcp", "127.0.0.1:0")
	require.Error(t, err)
	require.Equal(t, 1, strings.Count(err.Error(), "iopool:"), err.Error())
	require.True(t, errors.Is(err, ErrClosed), err.Error())
}
