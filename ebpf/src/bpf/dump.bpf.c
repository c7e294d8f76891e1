// SPDX-License-Identifier: GPL-2.0
/* The walk dump of a hash map: `bpf_for_each_map_elem` over the map copies
 * every entry into an mmapable array, entry i into slot i (the key at
 * offset 0, the value at the key's size rounded up to 8). User space loads
 * this object per dump with the map and the array in place of the two
 * placeholders below, runs `mapsync_dump` once with BPF_PROG_TEST_RUN and
 * reads the array through its mmap. Never attached.
 *
 * One walk without bucket locks or a copy_to_user per bucket: about twice
 * as fast per entry as BPF_MAP_LOOKUP_BATCH. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

/* Set at load time to the dumped map's key and value sizes. */
const volatile __u32 dump_key_size = 8;
const volatile __u32 dump_value_size = 8;

/* The largest key and value the copy handles (user space checks first). */
#define DUMP_KEY_MAX 64
#define DUMP_VALUE_MAX 1024

/* The map to dump (a HASH or LRU_HASH): replaced at load time. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u64);
	__type(value, __u64);
} dump_src SEC(".maps");

/* The records (value: key and value, each rounded up to 8 bytes):
 * replaced at load time by an array of the map's capacity. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u64[2]);
} dump_out SEC(".maps");

struct dump_walk {
	__u32 count;
};

/* Copies `size` bytes (a load-time constant), whole words while it can. */
static __always_inline void dump_copy(__u8 *to, const __u8 *from, __u32 size, __u32 max)
{
	__u32 words = size / 8, i;

	for (i = 0; i < words && i < max / 8; i++)
		((__u64 *)to)[i] = ((const __u64 *)from)[i];
	for (i = words * 8; i < size && i < max; i++)
		to[i] = from[i];
}

static long dump_one(struct bpf_map *map, const void *key, void *value, struct dump_walk *walk)
{
	__u32 slot = walk->count;
	__u8 *record = bpf_map_lookup_elem(&dump_out, &slot);

	if (!record) {
		/* more entries than the array holds (the map changed during
		 * the walk): counted past its end, which tells user space */
		walk->count = slot + 1;
		return 1;
	}
	dump_copy(record, key, dump_key_size, DUMP_KEY_MAX);
	dump_copy(record + ((dump_key_size + 7) & ~7U), value, dump_value_size, DUMP_VALUE_MAX);
	walk->count = slot + 1;
	return 0;
}

/* Returns how many entries it copied: more than the array holds means the
 * walk stopped short. */
SEC("raw_tp/sys_enter")
int mapsync_dump(void *ctx)
{
	struct dump_walk walk = { .count = 0 };

	bpf_for_each_map_elem(&dump_src, dump_one, &walk, 0);
	return walk.count;
}

char LICENSE[] SEC("license") = "GPL";
