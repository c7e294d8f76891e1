// SPDX-License-Identifier: GPL-2.0
/*
 * blocklist.bpf.c - the switch part of `mapsync demo`: an XDP program that
 * drops packets whose IPv4 source is in a blocklist held in a switchable map
 * (see "Switchable maps" in mapsync.h), and counts, per version of the
 * blocklist it saw, packets by source and verdict.
 *
 * The demo injects packets with BPF_PROG_TEST_RUN while mapsync applies new
 * blocklists; because the program reads the set and its version through the
 * one inner map pointer of its run, every counted verdict belongs to exactly
 * the version it is counted under.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#define __MAPSYNC_NO_MAPS
#include "mapsync.h"

#define BLOCKLIST_ETH_P_IP 0x0800
#define BLOCKLIST_MAX 1024

/* The blocklist's inner maps: IPv4 source (network order) -> reason. */
struct demo_block_inner {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BLOCKLIST_MAX);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct demo_block_inner);
} demo_blocklist SEC(".maps");

MAPSYNC_VERSION_MAP(demo_blocklist);

/* Key of `demo_verdicts`. */
struct demo_verdict_key {
	__u64 version;
	__u32 saddr;
	__u32 verdict; /* XDP_DROP or XDP_PASS */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct demo_verdict_key);
	__type(value, __u64);
} demo_verdicts SEC(".maps");

SEC("xdp")
int demo_block(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct demo_verdict_key key = {};
	__u64 one = 1, *count;
	void *set;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(BLOCKLIST_ETH_P_IP))
		return XDP_PASS;
	set = mapsync_active(&demo_blocklist);
	if (!set)
		return XDP_PASS;
	key.version = mapsync_version(&demo_blocklist_version, set);
	key.saddr = ip->saddr;
	key.verdict = bpf_map_lookup_elem(set, &key.saddr) ? XDP_DROP : XDP_PASS;
	count = bpf_map_lookup_elem(&demo_verdicts, &key);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&demo_verdicts, &key, &one, BPF_NOEXIST);
	return key.verdict;
}

char LICENSE[] SEC("license") = "GPL";
