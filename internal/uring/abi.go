//go:build linux

// Package uring is a minimal io_uring ring: setup, the shared SQ and CQ
// mappings, submission and completion. It is driven by one goroutine at a
// time (the pool's loop); it keeps no Go pointers in kernel memory.
//
// The ABI facts come from include/uapi/linux/io_uring.h.
package uring

import "unsafe"

// SQE is struct io_uring_sqe, include/uapi/linux/io_uring.h (64 bytes):
//
//	__u8 opcode; __u8 flags; __u16 ioprio; __s32 fd;
//	union { __u64 off; __u64 addr2; ... };
//	union { __u64 addr; __u64 splice_off_in; ... };
//	__u32 len;
//	union { __kernel_rwf_t rw_flags; __u32 fsync_flags; __u16 poll_events;
//	        __u32 poll32_events; __u32 timeout_flags; __u32 accept_flags;
//	        __u32 cancel_flags; __u32 open_flags; __u32 statx_flags;
//	        __u32 msg_flags; ... };
//	__u64 user_data;
//	union { __u16 buf_index; __u16 buf_group; };
//	__u16 personality;
//	union { __s32 splice_fd_in; __u32 file_index; ... };
//	union { struct { __u64 addr3; __u64 __pad2[1]; }; __u8 cmd[0]; };
type SQE struct {
	Opcode      uint8
	Flags       uint8
	Ioprio      uint16
	Fd          int32
	Off         uint64 // off / addr2
	Addr        uint64 // addr / splice_off_in
	Len         uint32
	OpFlags     uint32 // rw_flags, fsync_flags, timeout_flags, open_flags, ...
	UserData    uint64
	BufIndex    uint16 // buf_index / buf_group
	Personality uint16
	FileIndex   int32 // splice_fd_in / file_index
	Addr3       uint64
	_           uint64
}

// CQE is struct io_uring_cqe (16 bytes, without CQE32):
//
//	__u64 user_data; __s32 res; __u32 flags;
type CQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

var (
	_ [64 - unsafe.Sizeof(SQE{})]byte
	_ [unsafe.Sizeof(SQE{}) - 64]byte
	_ [16 - unsafe.Sizeof(CQE{})]byte
	_ [unsafe.Sizeof(CQE{}) - 16]byte
)

// SQRingOffsets is struct io_sqring_offsets.
type SQRingOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	UserAddr                                                        uint64
}

// CQRingOffsets is struct io_cqring_offsets.
type CQRingOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, Cqes, Flags, Resv1 uint32
	UserAddr                                                        uint64
}

// Params is struct io_uring_params (120 bytes).
type Params struct {
	SQEntries, CQEntries, Flags, SQThreadCPU, SQThreadIdle, Features, WQFd uint32
	Resv                                                                   [3]uint32
	SQOff                                                                  SQRingOffsets
	CQOff                                                                  CQRingOffsets
}

var (
	_ [120 - unsafe.Sizeof(Params{})]byte
	_ [unsafe.Sizeof(Params{}) - 120]byte
)

// Opcodes (enum io_uring_op).
const (
	OpNop           uint8 = 0
	OpReadv         uint8 = 1
	OpWritev        uint8 = 2
	OpFsync         uint8 = 3
	OpReadFixed     uint8 = 4
	OpWriteFixed    uint8 = 5
	OpPollAdd       uint8 = 6
	OpPollRemove    uint8 = 7
	OpSyncFileRange uint8 = 8
	OpSendmsg       uint8 = 9
	OpRecvmsg       uint8 = 10
	OpTimeout       uint8 = 11
	OpTimeoutRemove uint8 = 12
	OpAccept        uint8 = 13
	OpAsyncCancel   uint8 = 14
	OpLinkTimeout   uint8 = 15
	OpConnect       uint8 = 16
	OpFallocate     uint8 = 17
	OpOpenat        uint8 = 18
	OpClose         uint8 = 19
	OpFilesUpdate   uint8 = 20
	OpStatx         uint8 = 21
	OpRead          uint8 = 22
	OpWrite         uint8 = 23
	OpFadvise       uint8 = 24
	OpMadvise       uint8 = 25
	OpSend          uint8 = 26
	OpRecv          uint8 = 27
	OpOpenat2       uint8 = 28
	OpSocket        uint8 = 45
	OpSendZC        uint8 = 47
	OpSendmsgZC     uint8 = 48
	OpReadMultishot uint8 = 49
)

// Opcode-specific flags that make an SQE multishot (several CQEs).
const (
	PollAddMulti     uint32 = 1 << 0 // IORING_POLL_ADD_MULTI, in len
	AcceptMultishot  uint16 = 1 << 0 // IORING_ACCEPT_MULTISHOT, in ioprio
	RecvMultishot    uint16 = 1 << 1 // IORING_RECV_MULTISHOT, in ioprio
	TimeoutMultishot uint32 = 1 << 6 // IORING_TIMEOUT_MULTISHOT, in timeout_flags
)

// CQE flags.
const (
	// CQEFMore is IORING_CQE_F_MORE: more completions for the same SQE
	// follow; the one without it is the final one.
	CQEFMore uint32 = 1 << 1
)

// Setup flags (io_uring_params.flags).
const (
	SetupClamp        uint32 = 1 << 4
	SetupRDisabled    uint32 = 1 << 6
	SetupSubmitAll    uint32 = 1 << 7
	SetupCoopTaskrun  uint32 = 1 << 8
	SetupTaskrunFlag  uint32 = 1 << 9
	SetupSingleIssuer uint32 = 1 << 12
	SetupDeferTaskrun uint32 = 1 << 13
)

// Features (io_uring_params.features).
const (
	FeatSingleMmap uint32 = 1 << 0
	FeatNoDrop     uint32 = 1 << 1
)

// io_uring_enter flags, SQ ring flags, SQE flags and mmap offsets.
const (
	EnterGetevents uint32 = 1 << 0

	SQNeedWakeup uint32 = 1 << 0
	SQCQOverflow uint32 = 1 << 1
	SQTaskrun    uint32 = 1 << 2

	SqeFixedFile      uint8 = 1 << 0
	SqeIoDrain        uint8 = 1 << 1
	SqeIoLink         uint8 = 1 << 2
	SqeIoHardlink     uint8 = 1 << 3
	SqeAsync          uint8 = 1 << 4
	SqeCQESkipSuccess uint8 = 1 << 6

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000

	registerProbe   = 8
	registerEnable  = 12
	opSupported     = 1 << 0
	probeOpsEntries = 256
)
