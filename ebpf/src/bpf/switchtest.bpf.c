// SPDX-License-Identifier: GPL-2.0
/*
 * switchtest.bpf.c - the atomicity checker of mapsync's switch tests: XDP
 * programs, run with BPF_PROG_TEST_RUN, that walk keys 0..SWITCHTEST_KEYS-1
 * of a set and check that every entry carries the same tag.
 *
 * - `switchtest_check_set` reads the switchable map `switchtest_set` (slot 0
 *   looked up once, as mapsync.h asks) and also checks that the version read
 *   through mapsync_version() equals the tag;
 * - `switchtest_check_set_tc`: the same check from a tc (sched_cls) program;
 * - `switchtest_check_plain` reads the plain hash `switchtest_plain`.
 *
 * Results, in the array `switchtest_stats` (index: what):
 *   0 runs, 1 runs that saw entries with different tags, 2 runs whose
 *   version was not the entries' tag, 3 runs that missed a key.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
/* only the switch helpers: this object shares no ring with mapsync */
#define __MAPSYNC_NO_MAPS
#include "mapsync.h"

#define SWITCHTEST_KEYS 10000

/* One entry of the set: the tag of the apply that wrote it. */
struct switchtest_value {
	__u64 tag;
	__u64 payload;
};

struct switchtest_inner {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SWITCHTEST_KEYS);
	/* sizes, not types: clang 14 emits only a forward declaration of a
	 * struct the program reaches through pointers alone, and a map with a
	 * key type needs a value type */
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct switchtest_value));
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct switchtest_inner); /* last: a flexible array */
} switchtest_set SEC(".maps");

MAPSYNC_VERSION_MAP(switchtest_set);

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SWITCHTEST_KEYS);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct switchtest_value));
} switchtest_plain SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} switchtest_stats SEC(".maps");

static __always_inline void switchtest_count(__u32 what)
{
	__u64 *count = bpf_map_lookup_elem(&switchtest_stats, &what);

	if (count)
		__sync_fetch_and_add(count, 1);
}

/* What one walk carries from key to key (bpf_loop's context). */
struct switchtest_walk {
	void *set;
	__u64 first;
	int have_first;
	int mixed;
	int missing;
};

static long switchtest_visit(__u32 index, void *ctx)
{
	struct switchtest_walk *walk = ctx;
	__u32 key = index;
	struct switchtest_value *value = bpf_map_lookup_elem(walk->set, &key);

	if (!value) {
		walk->missing = 1;
		return 0;
	}
	if (!walk->have_first) {
		walk->first = value->tag;
		walk->have_first = 1;
	} else if (value->tag != walk->first) {
		walk->mixed = 1;
	}
	return 0;
}

/* Walks keys 0..SWITCHTEST_KEYS-1 of `set` through the one pointer given
 * (bpf_loop: a plain loop of 10,000 lookups is too long for the verifier);
 * returns the tag of the first entry and counts what was wrong. */
static __always_inline __u64 switchtest_walk(void *set)
{
	struct switchtest_walk walk = { .set = set };

	bpf_loop(SWITCHTEST_KEYS, switchtest_visit, &walk, 0);
	switchtest_count(0);
	if (walk.mixed)
		switchtest_count(1);
	if (walk.missing)
		switchtest_count(3);
	return walk.first;
}

SEC("xdp")
int switchtest_check_set(struct xdp_md *ctx)
{
	void *set = mapsync_active(&switchtest_set);
	__u64 tag;

	if (!set)
		return XDP_ABORTED;
	tag = switchtest_walk(set);
	if (mapsync_version(&switchtest_set_version, set) != tag)
		switchtest_count(2);
	return XDP_PASS;
}

/* The same check from a tc (sched_cls) program: the CO-RE read of the inner
 * map's id that mapsync_version() makes is accepted there too. */
SEC("classifier") /* aya 0.14 names tc programs so */
int switchtest_check_set_tc(struct __sk_buff *skb)
{
	void *set = mapsync_active(&switchtest_set);
	__u64 tag;

	if (!set)
		return 2; /* TC_ACT_SHOT */
	tag = switchtest_walk(set);
	if (mapsync_version(&switchtest_set_version, set) != tag)
		switchtest_count(2);
	return 0; /* TC_ACT_OK */
}

SEC("xdp")
int switchtest_check_plain(struct xdp_md *ctx)
{
	switchtest_walk(&switchtest_plain);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
