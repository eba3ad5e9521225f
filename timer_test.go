//go:build linux

package iopool

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Seed scenario: a timer created on the pool is polled from another
// goroutine (not a task) and fires; the sleeping loop sleeps for it.
func TestTimerPolledFromAnotherGoroutine(t *testing.T) {
	p := newTestPool(t)
	tm := p.Driver().NewTimer()
	done := NewOneshot[time.Duration]()
	go func() {
		start := time.Now()
		BlockOn[time.Time](tm.Future(start.Add(20 * time.Millisecond)))
		_ = done.Send(time.Since(start))
	}()
	var got time.Duration
	require.NoError(t, p.Run(func(tk *Task) error {
		var err error
		got, err = done.Recv(tk)
		return err
	}))
	require.GreaterOrEqual(t, got, 20*time.Millisecond)
}

func TestSleepOrdersTasks(t *testing.T) {
	p := newTestPool(t)
	drv := p.Driver()
	var mu sync.Mutex
	var order []int
	require.NoError(t, p.Run(func(tk *Task) error {
		var hs []*Handle[struct{}]
		for _, ms := range []int{30, 10, 20, 0} {
			hs = append(hs, Spawn(drv, "sleeper", func(t *Task) (struct{}, error) {
				err := t.Sleep(time.Duration(ms) * time.Millisecond)
				mu.Lock()
				order = append(order, ms)
				mu.Unlock()
				return struct{}{}, err
			}))
		}
		for _, h := range hs {
			if _, err := h.Join(tk); err != nil {
				return err
			}
		}
		return nil
	}))
	require.Equal(t, []int{0, 10, 20, 30}, order)
}

func TestNegativeSleepIsReadyAtOnce(t *testing.T) {
	p := newTestPool(t)
	require.NoError(t, p.Run(func(tk *Task) error {
		start := time.Now()
		require.NoError(t, tk.Sleep(-time.Hour))
		require.NoError(t, tk.Sleep(0))
		require.Less(t, time.Since(start), 50*time.Millisecond)
		return nil
	}))
	require.Zero(t, p.Stats().Sleeps, "a ready sleep never blocks the loop")
}

// TestTimerSetDeadlineEarlierWakesSleepingLoop moves a waited-for timer
// earlier from another goroutine while the loop sleeps on the later one.
func TestTimerSetDeadlineEarlierWakesSleepingLoop(t *testing.T) {
	p := newTestPool(t)
	tm := p.Driver().NewTimer()
	require.NoError(t, p.Run(func(tk *Task) error {
		start := time.Now()
		go func() {
			time.Sleep(5 * time.Millisecond)
			tm.SetDeadline(time.Now())
		}()
		tm.SetDeadline(start.Add(time.Hour))
		_, err := Await[time.Time](tk, tm)
		require.Less(t, time.Since(start), time.Second)
		return err
	}))
}
