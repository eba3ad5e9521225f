//go:build !linux

package uring

// iopool is built on epoll, eventfd and io_uring, which only Linux has: on
// any other system the build stops here, at this name.
var _ = iopool_builds_only_on_linux_it_needs_epoll_eventfd_and_io_uring
