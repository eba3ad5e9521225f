//go:build linux

package iopool

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A CPU profile taken while two named tasks spin attributes samples to
// them through the labels pool and task.
func TestCPUProfileLabelsTasks(t *testing.T) {
	var buf bytes.Buffer
	if err := pprof.StartCPUProfile(&buf); err != nil {
		t.Skip("a CPU profile is already being taken (go test -cpuprofile?):", err)
	}
	runPool(t, func(tk *Task) error {
		// Each spinner burns 150 ms of CPU (not of wall time: on a loaded
		// machine it may get a fraction of a core), about 15 samples.
		spin := func(t *Task) (int, error) {
			n := 0
			for end := processCPU() + int64(150*time.Millisecond); processCPU() < end; {
				for range 1000 {
					n += len(strings.Repeat("x", 64))
				}
			}
			return n, nil
		}
		a := Spawn(tk.Driver(), "spinner-a", spin)
		b := Spawn(tk.Driver(), "spinner-b", spin)
		if _, err := a.Join(tk); err != nil {
			return err
		}
		_, err := b.Join(tk)
		return err
	}, WithName("profiled"))
	pprof.StopCPUProfile()

	labels, err := profileLabels(buf.Bytes())
	require.NoError(t, err)
	require.Positive(t, labels["pool=profiled,task=spinner-a"], "samples labeled for spinner-a; all: %v", labels)
	require.Positive(t, labels["pool=profiled,task=spinner-b"], "samples labeled for spinner-b; all: %v", labels)
}

// profileLabels decodes a pprof profile (gzipped protobuf, see
// github.com/google/pprof/proto/profile.proto) just enough to count samples
// per label set: Profile.sample = 2, Profile.string_table = 6,
// Sample.label = 3, Label.key = 1, Label.str = 2.
func profileLabels(gz []byte) (map[string]int, error) {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return nil, err
	}
	var strs []string
	var samples [][]byte
	err = protoFields(raw, func(field int, val []byte) {
		switch field {
		case 2:
			samples = append(samples, val)
		case 6:
			strs = append(strs, string(val))
		}
	})
	if err != nil {
		return nil, err
	}
	str := func(i uint64) string {
		if i < uint64(len(strs)) {
			return strs[i]
		}
		return "?"
	}
	counts := make(map[string]int)
	for _, s := range samples {
		var kv []string
		err := protoFields(s, func(field int, val []byte) {
			if field != 3 {
				return
			}
			var k, v uint64
			_ = protoFields(val, func(f int, x []byte) {
				n, _ := binary.Uvarint(x)
				switch f {
				case 1:
					k = n
				case 2:
					v = n
				}
			})
			kv = append(kv, str(k)+"="+str(v))
		})
		if err != nil {
			return nil, err
		}
		counts[strings.Join(kv, ",")]++
	}
	return counts, nil
}

// protoFields calls fn for each field of a protobuf message: for a varint
// field val holds the varint's bytes, for a length-delimited one its
// contents. Other wire types are skipped.
func protoFields(b []byte, fn func(field int, val []byte)) error {
	for len(b) > 0 {
		key, n := binary.Uvarint(b)
		if n <= 0 {
			return errors.New("bad field key")
		}
		b = b[n:]
		field, wire := int(key>>3), key&7
		switch wire {
		case 0:
			_, m := binary.Uvarint(b)
			if m <= 0 {
				return errors.New("bad varint")
			}
			fn(field, b[:m])
			b = b[m:]
		case 1:
			b = b[8:]
		case 2:
			l, m := binary.Uvarint(b)
			if m <= 0 || uint64(len(b)-m) < l {
				return errors.New("bad length")
			}
			fn(field, b[m:m+int(l)])
			b = b[m+int(l):]
		case 5:
			b = b[4:]
		default:
			return errors.New("unknown wire type")
		}
	}
	return nil
}

// A task that spins without suspending is reported with the pool, its
// name, how long it ran and where it had resumed; a task that suspends
// often is not.
func TestStallReportNamesTheSpinningTask(t *testing.T) {
	reports := NewChan[StallReport]()
	runPool(t, func(tk *Task) error {
		polite := Spawn(tk.Driver(), "polite", func(t *Task) (int, error) {
			for range 20 {
				if err := t.Sleep(time.Millisecond); err != nil {
					return 0, err
				}
			}
			return 0, nil
		})
		spinner := Spawn(tk.Driver(), "spinner", func(t *Task) (int, error) {
			if err := t.Yield(); err != nil {
				return 0, err
			}
			for end := time.Now().Add(250 * time.Millisecond); time.Now().Before(end); {
			}
			return 0, nil
		})
		if _, err := polite.Join(tk); err != nil {
			return err
		}
		_, err := spinner.Join(tk)
		return err
	}, WithName("stally"), WithStallReport(120*time.Millisecond, func(r StallReport) { _ = reports.Send(r) }))
	reports.Close()
	var got []StallReport
	for {
		r, ok, _ := reports.TryRecv()
		if !ok {
			break
		}
		got = append(got, r)
	}
	var spin *StallReport
	for i, r := range got {
		require.Equal(t, "stally", r.Pool)
		require.NotEqual(t, "polite", r.Task, "a task that suspends every millisecond does not stall")
		if r.Task == "spinner" && !r.Running {
			spin = &got[i]
		}
	}
	require.NotNil(t, spin, "the spinner is reported: %+v", got)
	require.GreaterOrEqual(t, spin.Duration, 250*time.Millisecond)
	require.Contains(t, spin.Resumed, "TestStallReportNamesTheSpinningTask", "resumed in the test's task function, after its Yield")
	require.Contains(t, spin.Resumed, "observe_profile_test.go:")
	require.Contains(t, spin.Stack, "iopool.(*Task).Yield")
	require.Contains(t, spin.SpawnedAt, "observe_profile_test.go:", "named as the task table names it")

	_, err := New(WithStallReport(0, nil))
	require.ErrorContains(t, err, "WithStallReport(0s): want a threshold > 0")
}

// A task that would never suspend is reported while it runs, by the
// watchdog: here the report is what stops it.
func TestStallReportWhileTheTaskStillRuns(t *testing.T) {
	var stop atomic.Bool
	reports := make(chan StallReport, 16)
	runPool(t, func(tk *Task) error {
		_, err := Spawn(tk.Driver(), "stuck", func(t *Task) (int, error) {
			for !stop.Load() {
			}
			return 0, nil
		}).Join(tk)
		return err
	}, WithStallReport(20*time.Millisecond, func(r StallReport) {
		reports <- r // before stop: the test closes reports once the task ends
		if r.Running {
			stop.Store(true)
		}
	}))
	close(reports)
	var running, ended int
	for r := range reports {
		if r.Task != "stuck" {
			continue // the root task, descheduled on a loaded machine
		}
		require.Equal(t, "pool", r.Pool, "an unnamed pool")
		require.Equal(t, "start of the task", r.Resumed)
		require.Contains(t, r.SpawnedAt, "observe_profile_test.go:")
		require.Greater(t, r.Duration, 20*time.Millisecond)
		if r.Running {
			running++
		} else {
			ended++
		}
	}
	require.Equal(t, 1, running, "reported once while it ran")
	require.Equal(t, 1, ended, "and once when it ended")
}
