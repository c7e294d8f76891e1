// SPDX-License-Identifier: GPL-2.0
/*
 * trace.bpf.c - mapsync's *syscall trace* capture source.
 *
 * sys_enter_bpf remembers, per thread, every map-write command on a watched
 * map (the fd is resolved to the map id through the task's fd table);
 * sys_exit_bpf drops failed calls and turns successful ones into change
 * records in the shared ring `mapsync_events`, copying keys and values from
 * the caller's memory. Batch commands produce one record per processed element.
 * Calls made by the one thread named in `mapsync_quiet` (mapsync's own writer)
 * are not traced.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "mapsync.h"

/* Layout of the syscalls/sys_enter_bpf tracepoint (see its `format`). */
struct mapsync_enter_args {
	__u64 common;
	__s32 syscall_nr;
	__u32 pad;
	__u64 cmd;
	__u64 uattr;
	__u64 size;
};

/* Layout of the syscalls/sys_exit_bpf tracepoint. */
struct mapsync_exit_args {
	__u64 common;
	__s32 syscall_nr;
	__u32 pad;
	__s64 ret;
};

/* A map-write call between its enter and its exit. */
struct mapsync_call {
	__u64 uattr;
	__u64 keys;
	__u64 values;
	__u32 cmd;
	__u32 map_id;
	__u32 count_in;
	__u32 pad;
};

/* One record being assembled before bpf_ringbuf_output(). */
struct mapsync_scratch {
	struct mapsync_record_header hdr;
	__u8 data[MAPSYNC_DATA_MAX];
};

/* State of one batch call walked by bpf_loop(). */
struct mapsync_batch {
	__u64 keys;
	__u64 values;
	__u32 key_size;
	__u32 value_size;
	__u32 map_id;
	__u32 op;
};

/* Offsets in union bpf_attr of the fields read here. */
#define ATTR_ELEM_MAP_FD 0
#define ATTR_ELEM_KEY 8
#define ATTR_ELEM_VALUE 16
#define ATTR_BATCH_KEYS 16
#define ATTR_BATCH_VALUES 24
#define ATTR_BATCH_COUNT 32
#define ATTR_BATCH_MAP_FD 36

/* Maps the trace watches: map id -> sizes. Written by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAPSYNC_WATCHED_MAX);
	__type(key, __u32);
	__type(value, struct mapsync_watch);
} mapsync_watched SEC(".maps");

/* Calls in flight, by pid_tgid. LRU: a thread killed inside bpf() never
 * reaches sys_exit, and its entry must not hold a slot forever. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct mapsync_call);
} mapsync_calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mapsync_scratch);
} mapsync_scratch SEC(".maps");

/* The one thread whose bpf() calls the trace ignores: mapsync's own ingest
 * thread, which publishes its writes itself (as source Api, one revision per
 * request) and must not hear them again, nor a Txn's undone intermediate
 * states. The thread is named by its id in its own pid namespace, checked
 * with bpf_get_ns_current_pid_tgid() against that namespace's nsfs device and
 * inode. tid 0: nobody. Written by user space; private to each loaded trace
 * object (not pinned: a new instance starts with its own). */
struct mapsync_quiet {
	__u64 ns_dev;
	__u64 ns_ino;
	__u32 tid;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mapsync_quiet);
} mapsync_quiet SEC(".maps");

/* Whether the current thread is the quieted one. */
static __always_inline int is_quiet_thread(void)
{
	__u32 zero = 0;
	struct mapsync_quiet *quiet = bpf_map_lookup_elem(&mapsync_quiet, &zero);
	struct bpf_pidns_info ns = {};

	if (!quiet || !quiet->tid)
		return 0;
	if (bpf_get_ns_current_pid_tgid(quiet->ns_dev, quiet->ns_ino, &ns, sizeof(ns)))
		return 0;
	return ns.pid == quiet->tid;
}

static __always_inline int is_map_write(__u32 cmd)
{
	switch (cmd) {
	case BPF_MAP_UPDATE_ELEM:
	case BPF_MAP_DELETE_ELEM:
	case BPF_MAP_LOOKUP_AND_DELETE_ELEM:
	case BPF_MAP_UPDATE_BATCH:
	case BPF_MAP_DELETE_BATCH:
	case BPF_MAP_LOOKUP_AND_DELETE_BATCH:
		return 1;
	default:
		return 0;
	}
}

static __always_inline int is_batch(__u32 cmd)
{
	return cmd == BPF_MAP_UPDATE_BATCH || cmd == BPF_MAP_DELETE_BATCH ||
	       cmd == BPF_MAP_LOOKUP_AND_DELETE_BATCH;
}

/* The id of the map behind `fd` in the current task, or 0. */
static __always_inline __u32 map_id_of_fd(__u32 fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *file = NULL;
	struct bpf_map *map;

	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return 0;
	map = BPF_CORE_READ(file, private_data);
	if (!map)
		return 0;
	return BPF_CORE_READ(map, id);
}

/* Copies a key (and value) from user memory into one record and outputs it. */
static __always_inline void emit_from_user(__u32 map_id, __u32 op, __u64 ukey, __u32 key_size,
					   __u64 uvalue, __u32 value_size)
{
	__u32 zero = 0;
	__u64 seq = mapsync__next_seq();
	struct mapsync_scratch *rec = bpf_map_lookup_elem(&mapsync_scratch, &zero);

	if (!rec)
		return;
	if (key_size > MAPSYNC_KEY_MAX || value_size > MAPSYNC_VALUE_MAX) {
		/* user space refuses such maps; say something changed anyway */
		op = MAPSYNC_OP_RESYNC;
		key_size = 0;
		value_size = 0;
	}
	if (key_size && bpf_probe_read_user(rec->data, key_size, (void *)ukey))
		op = MAPSYNC_OP_RESYNC;
	if (op == MAPSYNC_OP_PUT && value_size &&
	    bpf_probe_read_user(rec->data + key_size, value_size, (void *)uvalue))
		op = MAPSYNC_OP_RESYNC;
	if (op != MAPSYNC_OP_PUT)
		value_size = 0;
	if (op == MAPSYNC_OP_RESYNC)
		key_size = 0;
	mapsync__fill_header(&rec->hdr, seq, map_id, op, MAPSYNC_SOURCE_TRACE, key_size,
			     value_size);
	if (bpf_ringbuf_output(&mapsync_events, rec,
			       sizeof(rec->hdr) + (key_size & (MAPSYNC_KEY_MAX * 2 - 1)) +
				       (value_size & (MAPSYNC_VALUE_MAX * 2 - 1)),
			       0))
		mapsync__count_drop();
}

static long emit_batch_element(__u32 i, void *ctx)
{
	struct mapsync_batch *b = ctx;

	emit_from_user(b->map_id, b->op, b->keys + (__u64)i * b->key_size, b->key_size,
		       b->values + (__u64)i * b->value_size, b->value_size);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_bpf")
int mapsync_sys_enter_bpf(struct mapsync_enter_args *args)
{
	struct mapsync_call call = {};
	__u64 tid = bpf_get_current_pid_tgid();
	__u32 cmd = args->cmd;
	__u32 fd = 0;

	if (!is_map_write(cmd))
		return 0;
	call.cmd = cmd;
	call.uattr = args->uattr;
	if (is_batch(cmd)) {
		bpf_probe_read_user(&fd, sizeof(fd), (void *)(call.uattr + ATTR_BATCH_MAP_FD));
		bpf_probe_read_user(&call.keys, sizeof(call.keys),
				    (void *)(call.uattr + ATTR_BATCH_KEYS));
		bpf_probe_read_user(&call.values, sizeof(call.values),
				    (void *)(call.uattr + ATTR_BATCH_VALUES));
		bpf_probe_read_user(&call.count_in, sizeof(call.count_in),
				    (void *)(call.uattr + ATTR_BATCH_COUNT));
	} else {
		bpf_probe_read_user(&fd, sizeof(fd), (void *)(call.uattr + ATTR_ELEM_MAP_FD));
		bpf_probe_read_user(&call.keys, sizeof(call.keys),
				    (void *)(call.uattr + ATTR_ELEM_KEY));
		bpf_probe_read_user(&call.values, sizeof(call.values),
				    (void *)(call.uattr + ATTR_ELEM_VALUE));
	}
	call.map_id = map_id_of_fd(fd);
	if (!call.map_id || !bpf_map_lookup_elem(&mapsync_watched, &call.map_id))
		return 0;
	if (is_quiet_thread())
		return 0;
	bpf_map_update_elem(&mapsync_calls, &tid, &call, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_bpf")
int mapsync_sys_exit_bpf(struct mapsync_exit_args *args)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct mapsync_call *inflight = bpf_map_lookup_elem(&mapsync_calls, &tid);
	struct mapsync_watch *watch;
	struct mapsync_batch batch = {};
	struct mapsync_call call;
	__u32 count_out = 0;
	__s64 ret = args->ret;

	if (!inflight)
		return 0;
	call = *inflight;
	bpf_map_delete_elem(&mapsync_calls, &tid);
	watch = bpf_map_lookup_elem(&mapsync_watched, &call.map_id);
	if (!watch)
		return 0;

	switch (call.cmd) {
	case BPF_MAP_UPDATE_ELEM:
		if (ret == 0)
			emit_from_user(call.map_id, MAPSYNC_OP_PUT, call.keys, watch->key_size,
				       call.values, watch->value_size);
		return 0;
	case BPF_MAP_DELETE_ELEM:
	case BPF_MAP_LOOKUP_AND_DELETE_ELEM:
		if (ret == 0)
			emit_from_user(call.map_id, MAPSYNC_OP_DELETE, call.keys, watch->key_size,
				       0, 0);
		return 0;
	}

	/* Batch: the kernel writes back how many elements it processed, also when
	 * it stops on an error; an early error leaves the count untouched. */
	if (bpf_probe_read_user(&count_out, sizeof(count_out),
				(void *)(call.uattr + ATTR_BATCH_COUNT))) {
		emit_from_user(call.map_id, MAPSYNC_OP_RESYNC, 0, 0, 0, 0);
		return 0;
	}
	if (ret != 0 && count_out >= call.count_in) {
		if (call.count_in)
			emit_from_user(call.map_id, MAPSYNC_OP_RESYNC, 0, 0, 0, 0);
		return 0;
	}
	batch.keys = call.keys;
	batch.values = call.values;
	batch.key_size = watch->key_size;
	batch.value_size = watch->value_size;
	batch.map_id = call.map_id;
	batch.op = call.cmd == BPF_MAP_UPDATE_BATCH ? MAPSYNC_OP_PUT : MAPSYNC_OP_DELETE;
	bpf_loop(count_out, emit_batch_element, &batch, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
