//go:build linux

package iopool

import (
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// Regression: a Chan drained after a burst kept the burst's backing array
// for its whole life (38 MiB after a million 32-byte values). The array is
// given back once drained, and while mostly drained.
func TestRegressionDrainedChanGivesMemoryBack(t *testing.T) {
	const burst = 50_000
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	type value [32]byte
	ch := NewChan[value]()
	before := heap()
	for range burst {
		require.NoError(t, ch.Send(value{1}))
	}
	require.Greater(t, cap(ch.buf), burst-1)
	// Mostly drained: the rest moves to a smaller array.
	for range burst - burst/8 {
		_, ok, err := ch.TryRecv()
		require.True(t, ok)
		require.NoError(t, err)
	}
	require.LessOrEqual(t, cap(ch.buf), burst/2, "a mostly drained channel keeps the burst's array")
	for range burst / 8 {
		_, ok, _ := ch.TryRecv()
		require.True(t, ok)
	}
	require.Equal(t, 0, ch.Len())
	require.LessOrEqual(t, cap(ch.buf), chanKeepCap, "a drained channel keeps the burst's array")
	after := heap()
	require.Less(t, int64(after)-int64(before), int64(burst*32/4), "heap %d bytes before, %d after draining", before, after)
	runtime.KeepAlive(ch)

	// Small traffic keeps its array: no allocation per value.
	require.NoError(t, ch.Send(value{}))
	_, _, _ = ch.TryRecv()
	allocs := testing.AllocsPerRun(100, func() {
		for range 100 {
			_ = ch.Send(value{})
		}
		for range 100 {
			_, _, _ = ch.TryRecv()
		}
	})
	require.Zero(t, allocs)
}
