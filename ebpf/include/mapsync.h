/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * mapsync.h - the change-record ABI of mapsync, and the *emit* helpers for
 * BPF programs that want their map writes mirrored by mapsync.
 *
 * This header is the one definition of the record layout; the Rust side
 * (`mapsync_ebpf::abi`) mirrors it with compile-time size checks.
 *
 * Use from a BPF program:
 *
 *     #include "vmlinux.h"            // or <linux/bpf.h> + <linux/types.h>
 *     #include <bpf/bpf_helpers.h>
 *     #include "mapsync.h"
 *
 *     struct { __uint(type, BPF_MAP_TYPE_HASH); ... } counts SEC(".maps");
 *
 *     long err = mapsync_update(&counts, &key, &value, BPF_ANY);
 *     ...
 *     mapsync_delete(&counts, &key);
 *
 * Both call the real helper first. Only when the helper succeeds do they
 * reserve a record in the shared ring buffer `mapsync_events`; a failed
 * reservation (ring full) increments the per-CPU counter `mapsync_drops`, so
 * user space knows exactly how many records were lost and resyncs.
 *
 * The three shared maps are pinned by name (LIBBPF_PIN_BY_NAME): load your
 * program with the pin root mapsync uses (`mapsync serve --pin-dir`, default
 * /sys/fs/bpf/mapsync; libbpf: `bpf_object_open_opts.pin_root_path`) and your
 * program and mapsync share one ring.
 */
#ifndef __MAPSYNC_H
#define __MAPSYNC_H

/* Version of the record layout below; bumped on any incompatible change. */
#define MAPSYNC_ABI_VERSION 1

/* Largest key and value (in bytes, as the bpf() syscall carries them: a
 * per-CPU value is ncpus * round_up(value_size, 8)) a record can carry.
 * Maps with larger keys or values are refused by `mapsync serve`. */
#define MAPSYNC_KEY_MAX 256
#define MAPSYNC_VALUE_MAX 4096
#define MAPSYNC_DATA_MAX (MAPSYNC_KEY_MAX + MAPSYNC_VALUE_MAX)

/* Default size of the shared ring buffer; user space may override it. */
#define MAPSYNC_RINGBUF_BYTES (4 * 1024 * 1024)

/* Most maps mapsync's syscall trace can watch at once. */
#define MAPSYNC_WATCHED_MAX 1024

/* What a record says happened to its key. */
enum mapsync_op {
	/* The key now holds the value in the record. */
	MAPSYNC_OP_PUT = 1,
	/* The key was removed. */
	MAPSYNC_OP_DELETE = 2,
	/* Something changed in the map but the record cannot say what (a batch
	 * call whose processed count is unknown): user space re-reads the map. */
	MAPSYNC_OP_RESYNC = 3,
};

/* Which capture source produced a record. */
enum mapsync_source {
	/* A BPF program through mapsync_update()/mapsync_delete(). */
	MAPSYNC_SOURCE_EMIT = 1,
	/* mapsync's tracepoints on the bpf() syscall. */
	MAPSYNC_SOURCE_TRACE = 2,
};

/* Fixed header of every record in `mapsync_events`; `key_size` bytes of key
 * and then `value_size` bytes of value follow it directly. 32 bytes. */
struct mapsync_record_header {
	/* Per-CPU sequence number, counted by every producer of this ring. */
	__u64 seq;
	/* bpf_ktime_get_ns() (CLOCK_MONOTONIC) taken after the write succeeded. */
	__u64 ts_ns;
	/* Kernel id of the map that was written. */
	__u32 map_id;
	/* CPU the record was produced on (the sequence number's CPU). */
	__u32 cpu;
	/* Bytes of key that follow the header. */
	__u16 key_size;
	/* Bytes of value that follow the key (0 for a delete). */
	__u16 value_size;
	/* enum mapsync_op */
	__u8 op;
	/* enum mapsync_source */
	__u8 source;
	/* Reserved, 0. */
	__u16 flags;
};

/* Value of mapsync's `mapsync_watched` hash (key: map id), written by user
 * space for each map the syscall trace watches. */
struct mapsync_watch {
	/* The map's key size. */
	__u32 key_size;
	/* Bytes of one value as the bpf() syscall carries it (per-CPU maps:
	 * ncpus * round_up(value_size, 8)). */
	__u32 value_size;
};

#ifndef __MAPSYNC_NO_MAPS

#ifndef LIBBPF_PIN_BY_NAME
#define LIBBPF_PIN_BY_NAME 1
#endif

/* The ring every producer writes change records into. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, MAPSYNC_RINGBUF_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mapsync_events SEC(".maps");

/* Per-CPU count of records lost because the ring was full. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mapsync_drops SEC(".maps");

/* Per-CPU sequence counter shared by all producers. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mapsync_seqs SEC(".maps");

/* CO-RE view of the kernel's struct bpf_map: only the id is read. */
struct bpf_map___mapsync {
	__u32 id;
} __attribute__((preserve_access_index));

/* Takes the next sequence number of this CPU. */
static __always_inline __u64 mapsync__next_seq(void)
{
	__u32 zero = 0;
	__u64 *seq = bpf_map_lookup_elem(&mapsync_seqs, &zero);

	if (!seq)
		return 0;
	return __sync_add_and_fetch(seq, 1);
}

/* Counts one lost record on this CPU. */
static __always_inline void mapsync__count_drop(void)
{
	__u32 zero = 0;
	__u64 *drops = bpf_map_lookup_elem(&mapsync_drops, &zero);

	if (drops)
		__sync_fetch_and_add(drops, 1);
}

/* Fills a record header. */
static __always_inline void mapsync__fill_header(struct mapsync_record_header *hdr, __u64 seq,
						 __u32 map_id, __u8 op, __u8 source,
						 __u32 key_size, __u32 value_size)
{
	hdr->seq = seq;
	hdr->ts_ns = bpf_ktime_get_ns();
	hdr->map_id = map_id;
	hdr->cpu = bpf_get_smp_processor_id();
	hdr->key_size = key_size;
	hdr->value_size = value_size;
	hdr->op = op;
	hdr->source = source;
	hdr->flags = 0;
}

/* Reserves and submits one emit record. `key_size` and `value_size` must be
 * compile-time constants (they are sizeof() in the macros below). */
static __always_inline void mapsync__emit(void *map, __u8 op, const void *key, __u32 key_size,
					  const void *value, __u32 value_size)
{
	__u64 seq = mapsync__next_seq();
	__u32 map_id = ((struct bpf_map___mapsync *)map)->id;
	struct mapsync_record_header *hdr;

	hdr = bpf_ringbuf_reserve(&mapsync_events, sizeof(*hdr) + key_size + value_size, 0);
	if (!hdr) {
		mapsync__count_drop();
		return;
	}
	mapsync__fill_header(hdr, seq, map_id, op, MAPSYNC_SOURCE_EMIT, key_size, value_size);
	__builtin_memcpy((__u8 *)(hdr + 1), key, key_size);
	if (value_size)
		__builtin_memcpy((__u8 *)(hdr + 1) + key_size, value, value_size);
	bpf_ringbuf_submit(hdr, 0);
}

/*
 * mapsync_update(map, key, value, flags): bpf_map_update_elem() that mapsync
 * sees. Returns the helper's result; a record is emitted only on success.
 * `key` and `value` must be pointers to complete types (the record sizes are
 * sizeof(*key) and sizeof(*value)).
 */
#define mapsync_update(map, key, value, flags)                                                   \
	({                                                                                       \
		long __mapsync_ret = bpf_map_update_elem((map), (key), (value), (flags));         \
		if (__mapsync_ret == 0)                                                          \
			mapsync__emit((void *)(map), MAPSYNC_OP_PUT, (key), sizeof(*(key)),      \
				      (value), sizeof(*(value)));                                \
		__mapsync_ret;                                                                   \
	})

/*
 * mapsync_delete(map, key): bpf_map_delete_elem() that mapsync sees. Returns
 * the helper's result; a record is emitted only when a key was removed.
 */
#define mapsync_delete(map, key)                                                                 \
	({                                                                                       \
		long __mapsync_ret = bpf_map_delete_elem((map), (key));                          \
		if (__mapsync_ret == 0)                                                          \
			mapsync__emit((void *)(map), MAPSYNC_OP_DELETE, (key), sizeof(*(key)),   \
				      (void *)0, 0);                                             \
		__mapsync_ret;                                                                   \
	})

#endif /* __MAPSYNC_NO_MAPS */

/*
 * ---- Switchable maps: a set that changes all at once ----
 *
 * A switchable map is an outer BPF_MAP_TYPE_ARRAY_OF_MAPS whose slot 0 points
 * at the *active* inner map. mapsync (`serve --switch NAME=PIN`, or
 * `--switch-create NAME=PIN:KIND:KEY:VALUE:MAX` to create the set) fills a
 * shadow inner map and points slot 0 at it in one update: a program sees the
 * old set or the new set, never a mix, as long as it looks the inner map up
 * ONCE per run and reads every key through that one pointer.
 *
 * The version of the set lives in a hash map pinned beside the outer map at
 * PIN + "_version": key = inner map id (__u32), value = version (__u64).
 * mapsync writes the shadow's entry before it switches, so the version read
 * for the inner map a program got from slot 0 is the version of exactly the
 * set it sees through that pointer.
 *
 *     struct my_inner {                       // the inner map template
 *             __uint(type, BPF_MAP_TYPE_HASH);
 *             __uint(max_entries, 1024);      // arrays: see the rules below
 *             __type(key, __u32);
 *             __type(value, struct my_rule);
 *     };
 *     struct {
 *             __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
 *             __uint(max_entries, 1);
 *             __type(key, __u32);
 *             __uint(pinning, LIBBPF_PIN_BY_NAME);  // reuse mapsync's pin
 *             __array(values, struct my_inner);     // last member
 *     } rules SEC(".maps");                   // pinned at <pin root>/rules
 *     MAPSYNC_VERSION_MAP(rules);             // <pin root>/rules_version
 *
 *     void *set = mapsync_active(&rules);
 *     if (!set)
 *             return XDP_PASS;
 *     __u64 version = mapsync_version(&rules_version, set);
 *     struct my_rule *rule = bpf_map_lookup_elem(set, &key);
 *
 * Verifier-facing rules:
 * - The outer map's definition needs an inner map template (`__array(values,
 *   ...)`): the verifier checks every lookup in the inner map against it.
 *   When the pinned outer map already exists (mapsync made it), the loader
 *   reuses it and the verifier uses the real map's template.
 * - Inner maps must match the template in type, key size, value size and
 *   flags; hash maps may differ in max_entries, arrays only if created with
 *   BPF_F_INNER_MAP (mapsync creates array sets with it; set
 *   `__uint(map_flags, BPF_F_INNER_MAP)` in an array template).
 * - Check the pointer mapsync_active() returns for NULL before use.
 * - mapsync_version() reads the inner map's id through CO-RE (struct
 *   bpf_map): verified in XDP and tc programs on Linux 6.18.
 * - Walking many keys in one run needs bpf_loop() (pass the inner map
 *   pointer in the loop's context): a plain loop of 10,000 lookups is
 *   refused by the verifier.
 * - Only non-sleepable programs are covered: the kernel waits for them (not
 *   for sleepable ones) before the switch returns and mapsync reuses the
 *   old inner map as the next shadow.
 */

#ifndef LIBBPF_PIN_BY_NAME
#define LIBBPF_PIN_BY_NAME 1
#endif

/* Slot of the outer map that holds the active inner map. */
#define MAPSYNC_ACTIVE_SLOT 0
/* Capacity of a version store mapsync creates. */
#define MAPSYNC_VERSION_ENTRIES 16

/* CO-RE view of the kernel's struct bpf_map for an inner map pointer. */
struct bpf_map___mapsync_inner {
	__u32 id;
} __attribute__((preserve_access_index));

/* Declares the version store of the switchable map `outer` as the map
 * `outer##_version`, pinned by name beside it. */
#define MAPSYNC_VERSION_MAP(outer)                                                               \
	struct {                                                                                 \
		__uint(type, BPF_MAP_TYPE_HASH);                                                 \
		__uint(max_entries, MAPSYNC_VERSION_ENTRIES);                                   \
		__type(key, __u32);                                                              \
		__type(value, __u64);                                                            \
		__uint(pinning, LIBBPF_PIN_BY_NAME);                                             \
	} outer##_version SEC(".maps")

/* The active inner map of the switchable map `outer` (NULL if slot 0 is
 * empty). Look it up once per run and use that pointer for every read. */
static __always_inline void *mapsync_active(void *outer)
{
	__u32 slot = MAPSYNC_ACTIVE_SLOT;

	return bpf_map_lookup_elem(outer, &slot);
}

/* The version of the set `inner` (a pointer mapsync_active() returned),
 * read from the version store `versions`; 0 if it has none. */
static __always_inline __u64 mapsync_version(void *versions, void *inner)
{
	__u32 id = ((struct bpf_map___mapsync_inner *)inner)->id;
	__u64 *version = bpf_map_lookup_elem(versions, &id);

	return version ? *version : 0;
}

#endif /* __MAPSYNC_H */
