//go:build linux

package iopool

import "github.com/iopool/iopool/internal/sys"

// withFaults gives the pool (each pool of a Group) the fault hook fs: every
// system call made on its behalf consults it, from New's eventfd on, and no
// other pool's calls do, so a test that injects faults can run in parallel.
func withFaults(fs *sys.Faults) PoolGroupOption {
	return eachPoolOption(func(o *options) error { o.faults = fs; return nil })
}

// failUringSetup is a fault seam on which io_uring_setup fails with errno
// (as a kernel that refuses io_uring does), for withFaults.
func failUringSetup(errno error) *sys.Faults {
	fs := new(sys.Faults)
	fs.Set(func(c sys.Call) error {
		if c == sys.CallUringSetup {
			return errno
		}
		return nil
	})
	return fs
}
