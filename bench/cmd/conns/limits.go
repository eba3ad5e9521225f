//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// raiseLimits gives this process (and the client it starts, which inherits
// the limit) perProcess fds, and checks that the system has total more
// fds to give. Without raise it only lifts the soft limit to the hard one;
// with it, as root, it raises the hard limit and the sysctls fs.nr_open
// (the ceiling of any hard limit) and fs.file-max (the system's open
// files) when they are too low. restore puts the sysctls back.
func raiseLimits(perProcess, total int, raise, canShard bool, out io.Writer) (restore func(), err error) {
	var undo []func()
	restore = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	setSysctl := func(name string, want int) error {
		old, err := readSysctl(name)
		if err != nil {
			return err
		}
		if old >= want {
			return nil
		}
		if !raise || os.Geteuid() != 0 {
			return fmt.Errorf("%d connections need %s >= %d (it is %d): run as root with -raise-limits, or set it yourself", perProcess-256, name, want, old)
		}
		if err := writeSysctl(name, want); err != nil {
			return err
		}
		fmt.Fprintf(out, "limits: set %s=%d (was %d; restored at exit)\n", name, want, old)
		undo = append(undo, func() {
			if err := writeSysctl(name, old); err != nil {
				fmt.Fprintf(os.Stderr, "conns: restoring %s=%d: %v\n", name, old, err)
			}
		})
		return nil
	}

	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return restore, fmt.Errorf("getrlimit: %w", err)
	}
	need := uint64(perProcess)
	if rl.Max < need {
		if !raise {
			hint := ""
			if canShard {
				hint = fmt.Sprintf(", or split the server over fd tables (-shards %d)", (perProcess-256)/max(int(rl.Max)*3/4, 1)+1)
			}
			return restore, fmt.Errorf("%d connections need %d fds in one fd table; the RLIMIT_NOFILE hard limit is %d: raise it (ulimit -Hn), or run as root with -raise-limits%s", perProcess-256, need, rl.Max, hint)
		}
		if err := setSysctl("fs/nr_open", perProcess); err != nil {
			return restore, err
		}
		rl.Max = need
	}
	rl.Cur = rl.Max
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return restore, fmt.Errorf("raising RLIMIT_NOFILE to %d: %w (raising the hard limit needs CAP_SYS_RESOURCE)", rl.Max, err)
	}
	inUse, err := filesInUse()
	if err != nil {
		return restore, err
	}
	return restore, setSysctl("fs/file-max", inUse+total+65536)
}

func readSysctl(name string) (int, error) {
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func writeSysctl(name string, v int) error {
	return os.WriteFile("/proc/sys/"+name, []byte(strconv.Itoa(v)), 0o644)
}

// filesInUse is the system's count of open files (fs/file-nr, first field).
func filesInUse() (int, error) {
	b, err := os.ReadFile("/proc/sys/fs/file-nr")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("fs/file-nr: %q", b)
	}
	return strconv.Atoi(f[0])
}

// procKB reads a "Key:   123 kB" line of a /proc file, in kB (0 if absent).
func procKB(path, key string) uint64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseUint(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

// slabCacheNames are the kernel caches a TCP connection's objects come
// from: the socket, its inode, the file, the dentry, the epoll item.
var slabCacheNames = []string{"TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi"}

// slabCaches returns the bytes in use in each cache of slabCacheNames
// (active objects × object size), from /proc/slabinfo, which only root
// may read; empty otherwise.
func slabCaches() map[string]uint64 {
	m := map[string]uint64{}
	f, err := os.Open("/proc/slabinfo")
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 4 {
			continue
		}
		for _, name := range slabCacheNames {
			if fl[0] == name {
				active, _ := strconv.ParseUint(fl[1], 10, 64)
				size, _ := strconv.ParseUint(fl[3], 10, 64)
				m[name] = active * size
			}
		}
	}
	return m
}
