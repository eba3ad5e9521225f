//go:build linux

package iopool_test

import (
	"fmt"
	"time"

	"github.com/iopool/iopool"
)

func ExamplePool_Run() {
	p, err := iopool.New()
	if err != nil {
		panic(err)
	}
	defer p.Close()
	err = p.Run(func(t *iopool.Task) error {
		if err := t.Sleep(time.Millisecond); err != nil {
			return err
		}
		fmt.Println("slept on the pool")
		return nil
	})
	fmt.Println("Run returned", err)
	// Output:
	// slept on the pool
	// Run returned <nil>
}

func ExampleSpawn() {
	p, _ := iopool.New()
	defer p.Close()
	drv := p.Driver()
	_ = p.Run(func(t *iopool.Task) error {
		var hs []*iopool.Handle[int]
		for i := 1; i <= 3; i++ {
			hs = append(hs, iopool.Spawn(drv, "square", func(t *iopool.Task) (int, error) {
				return i * i, t.Sleep(time.Duration(i) * time.Millisecond)
			}))
		}
		sum := 0
		for _, h := range hs {
			v, err := h.Join(t)
			if err != nil {
				return err
			}
			sum += v
		}
		fmt.Println("sum of squares:", sum)
		return nil
	})
	// Output: sum of squares: 14
}

func ExampleTimer() {
	p, _ := iopool.New()
	defer p.Close()
	tm := p.Driver().NewTimer()
	_ = p.Run(func(t *iopool.Task) error {
		start := time.Now()
		// Arm for later, then move the deadline earlier.
		tm.SetDeadline(start.Add(time.Hour))
		tm.SetDeadline(start.Add(2 * time.Millisecond))
		if _, err := iopool.Await[time.Time](t, tm); err != nil {
			return err
		}
		fmt.Println("fired early:", time.Since(start) < time.Second)
		return nil
	})
	// Output: fired early: true
}

func ExampleChan() {
	p, _ := iopool.New()
	defer p.Close()
	ch := iopool.NewChan[string]()
	go func() {
		// A plain goroutine feeds the pool without blocking it.
		for _, w := range []string{"one", "two", "three"} {
			_ = ch.Send(w)
		}
		ch.Close()
	}()
	_ = p.Run(func(t *iopool.Task) error {
		for {
			w, err := ch.Recv(t)
			if err == iopool.ErrChannelClosed {
				return nil
			}
			fmt.Println(w)
		}
	})
	// Output:
	// one
	// two
	// three
}

func ExampleOneshot() {
	p, _ := iopool.New()
	defer p.Close()
	reply := iopool.NewOneshot[int]()
	go func() {
		_ = p.Run(func(t *iopool.Task) error {
			return reply.Send(6 * 7)
		})
	}()
	v, err := reply.Wait() // a plain goroutine blocks; the pool does not
	fmt.Println(v, err)
	// Output: 42 <nil>
}
