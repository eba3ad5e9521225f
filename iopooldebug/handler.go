//go:build linux

// Package iopooldebug serves a live view of iopool pools over HTTP: every
// live task of every pool, with what it waits on and where it was spawned,
// and each pool's counters, in the spirit of net/http/pprof's goroutine
// dump. It is a package of its own, as net/http/pprof is, so that a program
// using iopool links net/http only if it asks for this.
//
//	mux.Handle("/debug/iopool", iopooldebug.Handler(pool))
package iopooldebug

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/iopool/iopool"
)

// Handler returns a handler that lists, for each of pools, its name, its
// Stats and its live tasks (Pool.Tasks): name, state, what a waiting task
// waits on, where it was spawned, age and resume count. The page is plain
// text; with the query ?format=json it is JSON (see Pool and Task). Each
// request reads the pools afresh; it is safe while they run, and costs
// their loops one table each (see Pool.Tasks).
func Handler(pools ...*iopool.Pool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		snap := make([]Pool, len(pools))
		for i, p := range pools {
			snap[i] = snapshot(p)
		}
		if r.URL.Query().Get("format") == "json" {
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(struct {
				Pools []Pool `json:"pools"`
			}{snap})
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		writeText(w, snap)
	})
}

// Pool is one pool in the JSON page.
type Pool struct {
	Name  string       `json:"name"`
	Stats iopool.Stats `json:"stats"`
	Tasks []Task       `json:"tasks"`
}

// Task is one task in the JSON page (see iopool.TaskInfo).
type Task struct {
	Name      string `json:"name"`
	State     string `json:"state"`
	WaitingOn string `json:"waitingOn,omitempty"`
	SpawnedAt string `json:"spawnedAt"`
	Age       string `json:"age,omitempty"`      // with iopool.WithTaskTracking
	AgeNanos  int64  `json:"ageNanos,omitempty"` // with iopool.WithTaskTracking
	Polls     uint64 `json:"polls"`
}

func snapshot(p *iopool.Pool) Pool {
	infos := p.Tasks()
	sp := Pool{Name: p.Name(), Stats: p.Stats(), Tasks: make([]Task, len(infos))}
	for i, t := range infos {
		sp.Tasks[i] = Task{
			Name: t.Name, State: t.State.String(), WaitingOn: t.WaitingOn, SpawnedAt: t.SpawnedAt,
			AgeNanos: int64(t.Age), Polls: t.Polls,
		}
		if t.Age != 0 {
			sp.Tasks[i].Age = t.Age.Round(time.Millisecond).String()
		}
	}
	return sp
}

// writeText writes the page as text: per pool a header and its counters,
// then a paragraph per task, as a goroutine dump has.
func writeText(w io.Writer, pools []Pool) {
	for i, p := range pools {
		if i > 0 {
			fmt.Fprintln(w)
		}
		s := p.Stats
		fmt.Fprintf(w, "pool %q: %d tasks\n", p.Name, len(p.Tasks))
		fmt.Fprintf(w, "stats: cycles=%d sleeps=%d eventfd_writes=%d wakes=%d timers_fired=%d tasks_spawned=%d tasks_live=%d fds_registered=%d fds_go_polled=%d events=%d uring_enters=%d uring_submitted=%d uring_completed=%d\n",
			s.Cycles, s.Sleeps, s.EventfdWrites, s.Wakes, s.TimersFired, s.TasksSpawned, s.TasksLive,
			s.FdsRegistered, s.FdsGoPolled, s.Events, s.UringEnters, s.UringSubmitted, s.UringCompleted)
		for _, t := range p.Tasks {
			state := t.State
			if t.WaitingOn != "" {
				state += ": " + t.WaitingOn
			}
			age := ""
			if t.Age != "" {
				age = " age " + t.Age + ","
			}
			fmt.Fprintf(w, "\ntask %q [%s]%s polls %d\n\tspawned at %s\n", t.Name, state, age, t.Polls, t.SpawnedAt)
		}
	}
}
