// SPDX-License-Identifier: GPL-2.0
/*
 * typed.bpf.c - maps whose keys and values carry BTF, for mapsync's typed
 * (decoded) output and its tests. No programs: loading the object creates
 * the maps with their BTF key and value types, which is all the tests need.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

enum typed_verdict {
	TYPED_PASS = 0,
	TYPED_DROP = 1,
	TYPED_REDIRECT = 2,
};

/* Key of `typed_flows`. */
struct typed_flow_key {
	__u32 addr;
	__u16 port;
	__u16 proto;
};

/* Value of `typed_flows`. */
struct typed_flow_value {
	__u64 packets;
	char name[16];
	enum typed_verdict verdict;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct typed_flow_key);
	__type(value, struct typed_flow_value);
} typed_flows SEC(".maps");

enum typed_sign {
	TYPED_NEGATIVE = -1,
	TYPED_ZERO = 0,
};

typedef __u16 typed_port_t;

/* Every BTF shape the decoder handles, in one value. */
struct typed_shape {
	__s32 delta;
	__u8 flags : 3;
	__u8 level : 5;
	_Bool up;
	typed_port_t ports[2];
	char label[4];
	union {
		__u32 word;
		__u8 bytes[4];
	} raw;
	struct {
		__u16 lo;
		__u16 hi;
	};
	const volatile __s64 offset;
	enum typed_sign sign;
	__u32 grid[2][2];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct typed_shape);
} typed_shapes SEC(".maps");

/* A per-CPU counter with BTF. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} typed_cpu_counts SEC(".maps");

/* A per-CPU value that is 8 bytes but not an integer. */
struct typed_pair {
	__u32 first;
	__u32 second;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct typed_pair);
} typed_cpu_pairs SEC(".maps");

char LICENSE[] SEC("license") = "GPL";
