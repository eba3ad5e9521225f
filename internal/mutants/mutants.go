//go:build linux

package main

// mutants is the list the exercise plants. Keep each snippet small and
// exact (tabs included): when the code moves, the run says which mutant and
// file to re-target here. pkgs and run name the tests expected to catch it,
// so that the exercise fits in CI; the table shows which one did.
var mutants = []mutant{
	{
		name: "lost-eventfd-write", what: "epollBackend.wake returns nil without writing the eventfd",
		file: "backend_epoll.go", old: "\treturn sys.EventfdSignal(b.faults, b.wakefd)\n", new: "\treturn nil\n",
		pkgs: []string{"."}, run: "^TestWakeFromAnotherGoroutineReachesSleepingLoop$|^TestTimerArmedFromAnotherGoroutineWakesSleepingLoop$",
	},
	{
		name: "lost-wake-state", what: "poolState.wake from Sleeping reports no eventfd write (fuzz/random only, not the table test)",
		file: "poolstate.go", old: "\tcase stateSleeping:\n\t\ts.state = stateWaking\n\t\treturn true\n", new: "\tcase stateSleeping:\n\t\ts.state = stateWaking\n\t\treturn false\n",
		pkgs: []string{"."}, run: "^TestPoolStateRandomSequences$|^FuzzPoolState$",
	},
	{
		name: "clearready-noop", what: "FdReady.ClearReady forgets nothing (a task spins in Socket.Read)",
		file: "fdready.go", old: "\tfr.reg.interests.clearReady(slot)\n", new: "",
		pkgs: []string{"."}, run: "^TestEAGAINStorm$",
	},
	{
		name: "ring-setup-error", what: "io_uring setup fails after io_uring_setup (not a kernel refusal): no test may skip",
		file: "internal/uring/ring.go", old: "\tif err := r.mapRings(); err != nil {\n", new: "\tif err := fmt.Errorf(\"uring: planted mmap failure\"); err != nil {\n",
		pkgs: []string{"./internal/uring", "./examples/ucopy"}, run: "^TestNopRoundTripAndNoLeak$|^TestCopies",
	},
	{
		name: "kernel-refuses-uring", what: "io_uring_setup answers EPERM (the kernel.io_uring_disabled sysctl, seccomp): a refusal, so every test needing a ring skips and none fails or hangs",
		file: "internal/uring/ring.go", old: "\tr := &Ring{fd: -1}\n", new: "\tif true {\n\t\treturn nil, os.NewSyscallError(\"io_uring_setup\", unix.EPERM)\n\t}\n\tr := &Ring{fd: -1}\n",
		pkgs: []string{".", "./internal/uring", "./examples/ucopy"}, run: ".", refusal: true,
	},
	{
		name: "ipv6-bind-wrong-address", what: "an IPv6 sockaddr one bit off ([::1] becomes [::2]): bind says EADDRNOTAVAIL, which must fail the IPv6 tests, not skip them",
		file: "sockaddr.go", old: "\tcopy(sa.Addr[:], ip.To16())\n", new: "\tcopy(sa.Addr[:], ip.To16())\n\tsa.Addr[15] ^= 3\n",
		pkgs: []string{"."}, run: "^TestNetListenerAcceptsFromGoroutines$|^TestPacketSocketEchoWithGoPeer$",
	},
	{
		name: "require-in-goroutine", what: "a test calls require inside a goroutine it started (issue 24 item 8: a failure there hangs the test)",
		file: "sockopt_test.go", old: "\t\t\tdialErr <- err // checked by the test's goroutine\n", new: "\t\t\trequire.NoError(t, err)\n\t\t\tdialErr <- err\n",
		pkgs: []string{"."}, run: "^TestNoRequireInOtherGoroutines$",
	},
	{
		name: "dial-no-nodelay", what: "a dialed TCP socket without TCP_NODELAY",
		file: "dial.go", old: "\t\tsetConnOptions(fd)\n", new: "",
		pkgs: []string{"."}, run: "^TestDialedTCPHasNoDelay$",
	},
	{
		name: "heap-down-larger-child", what: "timer heap down() picks the larger child",
		file: "timerqueue.go", old: "r < n && q.less(r, l) {", new: "r < n && q.less(l, r) {",
		pkgs: []string{"."}, run: "^FuzzTimerQueue$",
	},
	{
		name: "heap-pop-wrong-entry", what: "wakeExpired pops the last heap entry instead of the earliest",
		file: "timerqueue.go", old: "\t\te := q.heap[0]\n", new: "\t\te := q.heap[len(q.heap)-1]\n",
		pkgs: []string{"."}, run: "^FuzzTimerQueue$|^TestTimerQueue",
	},
	{
		name: "echo-steering-ignored", what: "examples/echo -steer does not ask the group listener to steer",
		file: "examples/echo/group.go", old: "iopool.GroupListenConfig{SteerByCPU: c.steer}", new: "iopool.GroupListenConfig{SteerByCPU: false && c.steer}",
		pkgs: []string{"./examples/echo"}, run: "^TestEchoGroupPinnedAndSteered$",
	},
	{
		name: "fdref-after-close", what: "fdRef.incref grants a reference after Close began",
		file: "fdref.go", old: "\t\tif old&refClosing != 0 {\n\t\t\treturn false\n\t\t}\n\t\tif r.state.CompareAndSwap(old, old+refOne) {", new: "\t\tif r.state.CompareAndSwap(old, old+refOne) {",
		pkgs: []string{"."}, run: "^TestFdRef|^TestNetConnCloseWakesWaiters$|Ownership|Closed",
	},
	{
		name: "short-read-everywhere", what: "a short read is trusted on every socket type, not only TCP",
		file: "fdio.go", old: "\tcase n < len(p) && s.read.tcp && how.g == nil:\n", new: "\tcase n < len(p) && how.g == nil:\n",
		pkgs: []string{"."}, run: "ShortRead",
	},
	{
		name: "batch-drops-result", what: "a Batch drops an operation's result",
		file: "uring_batch.go", old: "\te.res, e.op = res, nil\n", new: "\te.op = nil\n",
		pkgs: []string{"."}, run: "^TestUringBatch",
	},
	{
		name: "group-listen-no-reuseport", what: "Group.Listen without SO_REUSEPORT",
		file: "group_listen.go", old: "ListenConfig{ReusePort: true,", new: "ListenConfig{ReusePort: false,",
		pkgs: []string{"."}, run: "^TestGroupListen",
	},
	{
		name: "netconn-ignores-deadline", what: "NetConn.SetReadDeadline does not reach the socket",
		file: "netconn.go", old: "\treturn c.s.SetReadDeadline(t)\n", new: "\treturn nil\n",
		pkgs: []string{"."}, run: "^TestNetConnDeadlines$|Deadline",
	},
	{
		name: "go-polled-in-epoll", what: "a socket served through Go's poller stays in the pool's epoll set (its traffic wakes the loop)",
		file: "gopoll.go", old: "\tif err := fr.detach(); err != nil {\n", new: "\tif err := error(nil); err != nil {\n",
		pkgs: []string{"."}, run: "^TestNetConnTrafficDoesNotWakeTheLoop$",
	},
}
