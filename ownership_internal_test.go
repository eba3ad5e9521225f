//go:build linux

package iopool

// The pool's own fd numbers, for the tests that reuse them after Close.
func poolEpollFd(p *Pool) int { return p.be.epfd }
func poolWakeFd(p *Pool) int  { return p.be.wakefd }
