package iopool

import "github.com/iopool/iopool/internal/sys"

// withFaults gives the pool (each pool of a Group) the fault hook fs: every
// system call made on its behalf consults it, from New's eventfd on, and no
// other pool's calls do, so a test that injects faults can run in parallel.
func withFaults(fs *sys.Faults) Option {
	return func(o *options) error { o.faults = fs; return nil }
}
