// SPDX-License-Identifier: GPL-2.0
/* NetTrust's eBPF enforcement (the "ebpf" firewall backend, nettrust_core/firewall/ebpf.py).
 *
 * Maps (pinned by the loader, shared by every program and kept across restarts):
 *   allow4/allow6   LRU hash, destination -> struct grant (CLOCK_MONOTONIC deadline, 0: never)
 *   pair4/pair6     LRU hash, client . destination -> struct grant (gateway, per client)
 *   static4/static6 LPM trie of networks always reachable (reachable.*, upstreams)
 *   local4/local6   hash of this machine's own addresses (XDP: traffic to the gateway passes)
 *   conf            array[1]: resolver uid, flags
 *   stats           per-CPU array of counters, indexed by enum stat (read summed over CPUs)
 * A grant whose deadline has passed is absent: the program deletes it when it meets it.
 *
 * Programs: cgroup/connect4, connect6, sendmsg4, sendmsg6 (host: return 0 = EPERM) and
 * xdp (gateway, on client-facing interfaces: XDP_DROP for new flows without a live grant;
 * established flows known to conntrack pass through bpf_xdp_ct_lookup).
 *
 * Built twice: nettrust.bpf.o, and nettrust-noct.bpf.o with -DNO_CONNTRACK for kernels without
 * the conntrack kfunc.  Build: clang -O2 -g -target bpf -I/usr/include/$(multiarch) -c; llvm-strip -g (keeps BTF).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct in6_key { __u32 a[4]; };
struct pair4_key { __u32 client; __u32 dest; };
struct pair6_key { struct in6_key client; struct in6_key dest; };
struct lpm4_key { __u32 prefixlen; __u32 addr; };
struct lpm6_key { __u32 prefixlen; __u32 addr[4]; };

/* The value userspace writes (ebpf.py: GRANT = struct.Struct("=QII")). */
struct grant {
    __u64 deadline;   /* bpf_ktime_get_ns() after which the grant is gone; 0: permanent */
    __u32 timeout;    /* the timeout it was written with, ms (for listings) */
    __u32 instance;   /* firewall.instances index of the writer */
};

struct conf {
    __u32 resolver_uid;   /* its sockets may reach port 53/853 anywhere; NO_UID: nobody */
    __u32 flags;          /* CONF_* */
};
#define NO_UID 0xffffffffu
#define CONF_CONNTRACK 1u  /* XDP: flows conntrack knows pass after their grant expired */
#define CONF_AUDIT     2u  /* count what would be refused, refuse nothing */
#define CONF_DHCP      4u  /* cgroup: a DHCP client's broadcast / DHCPv6 multicast passes */

enum stat {
    ST_PASS_ALLOWED, ST_PASS_PAIR, ST_PASS_STATIC, ST_PASS_LOCAL, ST_PASS_DNS,
    ST_PASS_LOOPBACK, ST_PASS_NONIP, ST_PASS_CONNTRACK, ST_PASS_CONTROL,
    ST_DROP_NO_GRANT, ST_EXPIRED_DELETED, ST_DROP_MALFORMED, ST_AUDIT_WOULD_DROP,
    ST_MAX,
};

#ifndef MAP_SIZE
#define MAP_SIZE 65536   /* the loader sets ebpf.map_size before load */
#endif

struct { __uint(type, BPF_MAP_TYPE_LRU_HASH); __uint(max_entries, MAP_SIZE);
         __type(key, __u32); __type(value, struct grant); } allow4 SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LRU_HASH); __uint(max_entries, MAP_SIZE);
         __type(key, struct in6_key); __type(value, struct grant); } allow6 SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LRU_HASH); __uint(max_entries, MAP_SIZE);
         __type(key, struct pair4_key); __type(value, struct grant); } pair4 SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LRU_HASH); __uint(max_entries, MAP_SIZE);
         __type(key, struct pair6_key); __type(value, struct grant); } pair6 SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LPM_TRIE); __uint(max_entries, 1024);
         __uint(map_flags, BPF_F_NO_PREALLOC);
         __type(key, struct lpm4_key); __type(value, __u8); } static4 SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LPM_TRIE); __uint(max_entries, 1024);
         __uint(map_flags, BPF_F_NO_PREALLOC);
         __type(key, struct lpm6_key); __type(value, __u8); } static6 SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 256);
         __type(key, __u32); __type(value, __u8); } local4 SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 256);
         __type(key, struct in6_key); __type(value, __u8); } local6 SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1);
         __type(key, __u32); __type(value, struct conf); } conf SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, ST_MAX);
         __type(key, __u32); __type(value, __u64); } stats SEC(".maps");

static __always_inline void count(__u32 what)
{
    __u64 *n = bpf_map_lookup_elem(&stats, &what);
    if (n)
        *n += 1;
}

static __always_inline struct conf *config(void)
{
    __u32 zero = 0;
    return bpf_map_lookup_elem(&conf, &zero);
}

/* 1: live grant; 0: none; -1: expired (deleted now). */
static __always_inline int live(void *map, void *key)
{
    struct grant *g = bpf_map_lookup_elem(map, key);
    if (!g)
        return 0;
    if (g->deadline == 0 || g->deadline > bpf_ktime_get_ns())
        return 1;
    bpf_map_delete_elem(map, key);
    count(ST_EXPIRED_DELETED);
    return -1;
}

static __always_inline int static4_has(__u32 addr)
{
    struct lpm4_key k = { .prefixlen = 32, .addr = addr };
    return bpf_map_lookup_elem(&static4, &k) != 0;
}

static __always_inline int static6_has(const __u32 *addr)
{
    struct lpm6_key k = { .prefixlen = 128 };
    k.addr[0] = addr[0]; k.addr[1] = addr[1]; k.addr[2] = addr[2]; k.addr[3] = addr[3];
    return bpf_map_lookup_elem(&static6, &k) != 0;
}

/* -- host: cgroup sock_addr hooks ------------------------------------------------------- */

/* 1: let the syscall proceed; 0: EPERM. */
static __always_inline int refuse(struct conf *c)
{
    count(ST_DROP_NO_GRANT);
    if (c && (c->flags & CONF_AUDIT)) {
        count(ST_AUDIT_WOULD_DROP);
        return 1;
    }
    return 0;
}

static __always_inline int resolver_dns(struct conf *c, __u32 port)
{
    if (!c || c->resolver_uid == NO_UID)
        return 0;
    if (port != bpf_htons(53) && port != bpf_htons(853))
        return 0;
    return (__u32)bpf_get_current_uid_gid() == c->resolver_uid;
}

static __always_inline int check4(struct bpf_sock_addr *ctx, __u32 ip)
{
    struct conf *c = config();
    if ((bpf_ntohl(ip) >> 24) == 127) {
        count(ST_PASS_LOOPBACK);
        return 1;
    }
    if (resolver_dns(c, ctx->user_port)) {
        count(ST_PASS_DNS);
        return 1;
    }
    if (c && (c->flags & CONF_DHCP) && ip == 0xffffffff && ctx->user_port == bpf_htons(67)) {
        count(ST_PASS_CONTROL);           /* a DHCP client's broadcast */
        return 1;
    }
    if (static4_has(ip)) {
        count(ST_PASS_STATIC);
        return 1;
    }
    int r = live(&allow4, &ip);
    if (r > 0) {
        count(ST_PASS_ALLOWED);
        return 1;
    }
    return refuse(c);
}

static __always_inline int check6(struct bpf_sock_addr *ctx)
{
    struct in6_key k;
    k.a[0] = ctx->user_ip6[0]; k.a[1] = ctx->user_ip6[1];
    k.a[2] = ctx->user_ip6[2]; k.a[3] = ctx->user_ip6[3];
    if (k.a[0] == 0 && k.a[1] == 0 && k.a[2] == bpf_htonl(0xffff))
        return check4(ctx, k.a[3]);           /* v4-mapped: an IPv4 destination */
    struct conf *c = config();
    if (k.a[0] == 0 && k.a[1] == 0 && k.a[2] == 0 && k.a[3] == bpf_htonl(1)) {
        count(ST_PASS_LOOPBACK);
        return 1;
    }
    if (resolver_dns(c, ctx->user_port)) {
        count(ST_PASS_DNS);
        return 1;
    }
    if (c && (c->flags & CONF_DHCP) && ctx->user_port == bpf_htons(547) &&
        k.a[0] == bpf_htonl(0xff020000) && k.a[1] == 0 && k.a[2] == 0 &&
        k.a[3] == bpf_htonl(0x00010002)) {
        count(ST_PASS_CONTROL);           /* DHCPv6 to All_DHCP_Relay_Agents_and_Servers */
        return 1;
    }
    if (static6_has(k.a)) {
        count(ST_PASS_STATIC);
        return 1;
    }
    int r = live(&allow6, &k);
    if (r > 0) {
        count(ST_PASS_ALLOWED);
        return 1;
    }
    return refuse(c);
}

SEC("cgroup/connect4")
int nt_connect4(struct bpf_sock_addr *ctx) { return check4(ctx, ctx->user_ip4); }

SEC("cgroup/sendmsg4")
int nt_sendmsg4(struct bpf_sock_addr *ctx) { return check4(ctx, ctx->user_ip4); }

SEC("cgroup/connect6")
int nt_connect6(struct bpf_sock_addr *ctx) { return check6(ctx); }

SEC("cgroup/sendmsg6")
int nt_sendmsg6(struct bpf_sock_addr *ctx) { return check6(ctx); }

/* -- gateway: XDP on client-facing interfaces ------------------------------------------- */

struct nf_conn { __u64 _opaque; };   /* libbpf 1.1 rejects a forward declaration here */
struct bpf_ct_opts { __s32 netns_id; __s32 error; __u8 l4proto; __u8 dir; __u8 reserved[2]; };
#ifndef NO_CONNTRACK
extern struct nf_conn *bpf_xdp_ct_lookup(struct xdp_md *, struct bpf_sock_tuple *, __u32,
                                         struct bpf_ct_opts *, __u32) __ksym;
extern void bpf_ct_release(struct nf_conn *) __ksym;
#endif

static __always_inline int ct_known(struct xdp_md *ctx, struct bpf_sock_tuple *t, __u32 sz,
                                    __u8 proto)
{
#ifdef NO_CONNTRACK
    return 0;      /* the kernel lacks the kfunc (before 5.18): the loader fell back to this */
#else
    struct bpf_ct_opts o = { .netns_id = -1, .l4proto = proto };   /* -1: the packet's netns */
    struct nf_conn *ct = bpf_xdp_ct_lookup(ctx, t, sz, &o, sizeof(o));
    if (!ct)
        return 0;
    bpf_ct_release(ct);
    return 1;
#endif
}

static __always_inline int xdp_refuse(struct conf *c)
{
    count(ST_DROP_NO_GRANT);
    if (c && (c->flags & CONF_AUDIT)) {
        count(ST_AUDIT_WOULD_DROP);
        return XDP_PASS;
    }
    return XDP_DROP;
}

/* Ports a client needs before any grant: DNS/DoT to the gateway is "local"; DHCP here. */
static __always_inline int control_port(__u8 proto, __u16 dport)
{
    return proto == IPPROTO_UDP && (dport == bpf_htons(67) || dport == bpf_htons(547));
}

static __always_inline int xdp4(struct xdp_md *ctx, void *l3, void *end)
{
    struct iphdr *ip = l3;
    if ((void *)(ip + 1) > end || ip->ihl != 5) {
        /* IP options are rare from clients; a variable header offset needs CAP_PERFMON */
        if ((void *)(ip + 1) <= end && ip->ihl > 5)
            goto checked;
        count(ST_DROP_MALFORMED);
        return XDP_DROP;
    }
checked:;
    __u32 d = ip->daddr, s = ip->saddr;
    if (bpf_map_lookup_elem(&local4, &d) || d == 0xffffffff ||
        (bpf_ntohl(d) >> 28) == 0xe) {
        count(ST_PASS_LOCAL);
        return XDP_PASS;
    }
    struct udphdr *l4 = (void *)(ip + 1);    /* sport/dport sit at the same place in TCP */
    int have_l4 = ip->ihl == 5 && (void *)(l4 + 1) <= end && !(ip->frag_off & bpf_htons(0x1fff))
                  && (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP);
    if (have_l4 && control_port(ip->protocol, l4->dest)) {
        count(ST_PASS_CONTROL);
        return XDP_PASS;
    }
    if (static4_has(d)) {
        count(ST_PASS_STATIC);
        return XDP_PASS;
    }
    if (live(&allow4, &d) > 0) {
        count(ST_PASS_ALLOWED);
        return XDP_PASS;
    }
    struct pair4_key pk = { .client = s, .dest = d };
    if (live(&pair4, &pk) > 0) {
        count(ST_PASS_PAIR);
        return XDP_PASS;
    }
    struct conf *c = config();
    if (have_l4 && c && (c->flags & CONF_CONNTRACK)) {
        struct bpf_sock_tuple t = {};
        t.ipv4.saddr = s; t.ipv4.daddr = d;
        t.ipv4.sport = l4->source; t.ipv4.dport = l4->dest;
        if (ct_known(ctx, &t, sizeof(t.ipv4), ip->protocol)) {
            count(ST_PASS_CONNTRACK);
            return XDP_PASS;
        }
    }
    return xdp_refuse(c);
}

static __always_inline int xdp6(struct xdp_md *ctx, void *l3, void *end)
{
    struct ipv6hdr *ip = l3;
    if ((void *)(ip + 1) > end) {
        count(ST_DROP_MALFORMED);
        return XDP_DROP;
    }
    struct in6_key d, s;
    __builtin_memcpy(&d, &ip->daddr, 16);
    __builtin_memcpy(&s, &ip->saddr, 16);
    if (bpf_map_lookup_elem(&local6, &d) || (bpf_ntohl(d.a[0]) >> 24) == 0xff ||
        (bpf_ntohl(d.a[0]) & 0xffc00000) == 0xfe800000) {   /* multicast, link-local */
        count(ST_PASS_LOCAL);
        return XDP_PASS;
    }
    struct udphdr *l4 = (void *)(ip + 1);
    int have_l4 = (void *)(l4 + 1) <= end &&
                  (ip->nexthdr == IPPROTO_TCP || ip->nexthdr == IPPROTO_UDP);
    if (ip->nexthdr == IPPROTO_ICMPV6) {
        struct icmp6hdr *ic = (void *)(ip + 1);
        if ((void *)(ic + 1) <= end && ic->icmp6_type >= 133 && ic->icmp6_type <= 137) {
            count(ST_PASS_CONTROL);
            return XDP_PASS;
        }
    }
    if (have_l4 && control_port(ip->nexthdr, l4->dest)) {
        count(ST_PASS_CONTROL);
        return XDP_PASS;
    }
    if (static6_has(d.a)) {
        count(ST_PASS_STATIC);
        return XDP_PASS;
    }
    if (live(&allow6, &d) > 0) {
        count(ST_PASS_ALLOWED);
        return XDP_PASS;
    }
    struct pair6_key pk = { .client = s, .dest = d };
    if (live(&pair6, &pk) > 0) {
        count(ST_PASS_PAIR);
        return XDP_PASS;
    }
    struct conf *c = config();
    if (have_l4 && c && (c->flags & CONF_CONNTRACK)) {
        struct bpf_sock_tuple t = {};
        __builtin_memcpy(t.ipv6.saddr, &s, 16);
        __builtin_memcpy(t.ipv6.daddr, &d, 16);
        t.ipv6.sport = l4->source; t.ipv6.dport = l4->dest;
        if (ct_known(ctx, &t, sizeof(t.ipv6), ip->nexthdr)) {
            count(ST_PASS_CONNTRACK);
            return XDP_PASS;
        }
    }
    return xdp_refuse(c);
}

SEC("xdp")
int nt_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end) {
        count(ST_DROP_MALFORMED);
        return XDP_DROP;
    }
    if (eth->h_proto == bpf_htons(ETH_P_IP))
        return xdp4(ctx, eth + 1, end);
    if (eth->h_proto == bpf_htons(ETH_P_IPV6))
        return xdp6(ctx, eth + 1, end);
    count(ST_PASS_NONIP);     /* ARP, LLDP, VLAN-tagged frames go on to the stack */
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
