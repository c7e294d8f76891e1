// SPDX-License-Identifier: GPL-2.0
/*
 * demo.bpf.c - mapsync's demo writer: an XDP program that counts packets and
 * bytes per IPv4 source address in the hash map `demo_pkts`, writing every
 * new count through mapsync_update() so that mapsync sees it.
 *
 * `mapsync demo` and the tests drive it with BPF_PROG_TEST_RUN; it never needs
 * to be attached to an interface.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "mapsync.h"

#define DEMO_ETH_P_IP 0x0800

/* Value of `demo_pkts`: what one source address sent. */
struct demo_counts {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32); /* IPv4 source address, network byte order */
	__type(value, struct demo_counts);
} demo_pkts SEC(".maps");

SEC("xdp")
int demo_count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct demo_counts next = {};
	struct demo_counts *prev;
	__u32 saddr;

	if ((void *)(ip + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(DEMO_ETH_P_IP))
		return XDP_PASS;

	saddr = ip->saddr;
	prev = bpf_map_lookup_elem(&demo_pkts, &saddr);
	if (prev)
		next = *prev;
	next.packets += 1;
	next.bytes += data_end - data;
	mapsync_update(&demo_pkts, &saddr, &next, BPF_ANY);
	return XDP_PASS;
}

/* Removes the entry of the packet's source address: lets tests drive the
 * delete path through mapsync_delete(). */
SEC("xdp")
int demo_forget(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__u32 saddr;

	if ((void *)(ip + 1) > data_end)
		return XDP_PASS;
	saddr = ip->saddr;
	mapsync_delete(&demo_pkts, &saddr);
	return XDP_PASS;
}

/* Increments the packet count of the packet's source *in place*, through
 * the lookup pointer: no helper call and no record. Only polling sees it. */
SEC("xdp")
int demo_bump(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct demo_counts *counts;
	__u32 saddr;

	if ((void *)(ip + 1) > data_end)
		return XDP_PASS;
	saddr = ip->saddr;
	counts = bpf_map_lookup_elem(&demo_pkts, &saddr);
	if (counts)
		__sync_fetch_and_add(&counts->packets, 1);
	return XDP_PASS;
}

/* Per-CPU hit counter, bumped in place by `demo_cpu_hit`. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} demo_cpu_hits SEC(".maps");

/* Counts one hit in slot 0 on the CPU it runs on (test-run it on a chosen
 * CPU). Never attached. */
SEC("raw_tp/sys_enter")
int demo_cpu_hit(void *ctx)
{
	__u32 slot = 0;
	__u64 *hits = bpf_map_lookup_elem(&demo_cpu_hits, &slot);

	if (hits)
		*hits += 1;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
