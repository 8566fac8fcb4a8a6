// rte_ip_frag_table_del_expired_entries is marked experimental in DPDK 22.11 (present since 20.05).
#define ALLOW_EXPERIMENTAL_API

#include "fragments.hpp"

#include <rte_byteorder.h>
#include <rte_errno.h>
#include <rte_ip.h>
#include <rte_lcore.h>
#include <rte_malloc.h>

#include <algorithm>
#include <cstring>

#include "checksum.hpp"

namespace ferry::dp {
namespace {

constexpr uint16_t kEthHdr = sizeof(rte_ether_hdr);
// One call of rte_ipv4_frag_reassemble_packet puts at most a stale datagram and a failed one
// on the death row (kMaxFragments + 1 mbufs each): the row (RTE_IP_FRAG_DEATH_ROW_MBUF_LEN)
// is freed early when less than that is left, so it can never overflow (DPDK does not check).
constexpr uint32_t kDeathRowFlushAt = RTE_IP_FRAG_DEATH_ROW_MBUF_LEN - 2 * (kMaxFragments + 1);

// rte_ip_frag's key: source and destination address, IP ID.
struct datagram_key {
  uint64_t addrs;
  uint16_t id;
  bool operator==(const datagram_key&) const = default;
};

datagram_key key_of(const rte_ipv4_hdr* ip) {
  datagram_key k;
  std::memcpy(&k.addrs, &ip->src_addr, 8);
  k.id = ip->packet_id;
  return k;
}

bool is_middle(const rte_ipv4_hdr* ip) {
  const uint16_t fo = rte_be_to_cpu_16(ip->fragment_offset);
  return (fo & RTE_IPV4_HDR_MF_FLAG) && (fo & RTE_IPV4_HDR_OFFSET_MASK);
}

// The held-fragments figure (a counter the control thread reads) moves both ways.
void held_add(worker& w, int64_t n) { w.counters.frag_held.add(static_cast<uint64_t>(n)); }

void count(worker& w, drop reason, uint64_t n) {
  w.counters.drops[static_cast<size_t>(reason)].add(n);
}

rte_mbuf* refuse(worker& w, rte_mbuf* m, drop reason) {
  count(w, reason, 1);
  rte_pktmbuf_free(m);
  return nullptr;
}

// What a reassembly call put on the death row (entries [from, cnt)), and why. rte_ip_frag
// frees, in one call: datagrams of other keys found past their timeout (reusing their slot),
// our own datagram's old fragments when its entry had timed out (our fragment then starts it
// anew), or our datagram with our fragment on an error: alone when no entry could be had
// (table full); with the others when our fragment made the datagram invalid: a middle
// fragment past the kMaxFragments - 2 middle slots (too many), else a duplicate first or last
// fragment, more bytes than the datagram's length, or pieces that do not join end to end
// (overlap or repetition: rte_ip_frag cannot tell them apart). An entry is one mbuf chain;
// the heads' IPv4 headers are intact (only chained tails lose theirs).
void account_freed(worker& w, uint32_t from, const rte_mbuf* ours, const datagram_key& key,
                   bool ours_middle) {
  const rte_ip_frag_death_row& dr = w.frag.dr;
  uint32_t others = 0, same = 0, middles = 0;
  bool ours_freed = false;
  for (uint32_t i = from; i < dr.cnt; ++i) {
    const rte_mbuf* e = dr.row[i];
    const uint32_t segs = e->nb_segs;
    held_add(w, -int64_t{segs});
    const auto* h = rte_pktmbuf_mtod_offset(e, const rte_ipv4_hdr*, e->l2_len);
    if (!(key_of(h) == key)) {
      others += segs;
      continue;
    }
    same += segs;
    for (const rte_mbuf* s = e; s; s = s->next) ours_freed |= s == ours;
    if (e != ours && segs == 1 && is_middle(h)) ++middles;
  }
  if (others) count(w, drop::frag_timeout, others);
  if (!same) return;
  drop why = drop::frag_overlap;
  if (!ours_freed) {
    why = drop::frag_timeout;
  } else if (same == 1) {
    why = drop::frag_table_full;
  } else if (ours_middle && middles == kMaxFragments - 2) {
    why = drop::frag_too_many;
  }
  count(w, why, same);
}

}  // namespace

frag_state::~frag_state() {
  if (dr.cnt) rte_ip_frag_free_death_row(&dr, 0);
  if (tbl) rte_ip_frag_table_destroy(tbl);  // frees the fragments it holds
}

std::string setup_fragments(dataplane& dp, const fragments_config& cfg, const char* name) {
  dp.frag_enabled = cfg.enabled;
  if (!cfg.enabled) return {};
  dp.frag_max_datagrams = cfg.max_datagrams;
  dp.frag_max_size = cfg.max_size;
  dp.frag_max_held = cfg.max_held;
  dp.frag_timeout_tsc = dp.tsc_hz / 1000 * cfg.timeout_ms;
  // Indirect mbufs (no data room) only point into the datagram being fragmented; they live
  // until the device has sent the fragment.
  dp.frag_indirect = rte_pktmbuf_pool_create(name, 8191, 64, 0, 0, SOCKET_ID_ANY);
  if (!dp.frag_indirect) {
    return std::string("cannot allocate the indirect mbuf pool for fragmentation: ") +
           rte_strerror(rte_errno);
  }
  return {};
}

void release_fragments(dataplane& dp) {
  rte_mempool_free(dp.frag_indirect);
  dp.frag_indirect = nullptr;
}

bool init_worker_fragments(worker& w, int socket) {
  const dataplane& dp = *w.dp;
  if (!dp.frag_enabled) return true;
  // Buckets of 4, two candidate buckets per key: twice as many slots as datagrams.
  constexpr uint32_t kBucketEntries = 4;
  const uint32_t buckets = std::max<uint32_t>(1, rte_align32pow2(dp.frag_max_datagrams) / 4);
  w.frag.tbl = rte_ip_frag_table_create(buckets, kBucketEntries, dp.frag_max_datagrams,
                                        dp.frag_timeout_tsc, socket);
  return w.frag.tbl != nullptr;
}

rte_mbuf* reassemble(worker& w, rte_mbuf* m, rte_ipv4_hdr* ip, uint16_t ihl) {
  const dataplane& dp = *w.dp;
  w.counters.frag_received.add();
  const uint16_t fo = rte_be_to_cpu_16(ip->fragment_offset);
  const uint32_t offset = (fo & RTE_IPV4_HDR_OFFSET_MASK) * RTE_IPV4_HDR_OFFSET_UNITS;
  const bool more = fo & RTE_IPV4_HDR_MF_FLAG;
  const uint32_t len = rte_be_to_cpu_16(ip->total_length) - ihl;
  // Every fragment but the last carries a multiple of 8 bytes (RFC 791); none is empty.
  if (!len || (more && len % RTE_IPV4_HDR_OFFSET_UNITS)) return refuse(w, m, drop::frag_malformed);
  // The datagram this would make is longer than allowed (max_size <= 65535, the IPv4 limit).
  if (ihl + offset + len > dp.frag_max_size) return refuse(w, m, drop::frag_oversized);
  // Held fragments are mbufs from the pool normal traffic needs: at most max_held of them.
  if (w.counters.frag_held.get() + m->nb_segs > dp.frag_max_held) {
    return refuse(w, m, drop::frag_no_room);
  }
  // What the error accounting needs from our header: the call may strip it.
  const datagram_key key = key_of(ip);
  const bool middle = more && offset;
  m->l2_len = kEthHdr;
  m->l3_len = ihl;
  held_add(w, m->nb_segs);
  frag_state& f = w.frag;
  const uint32_t before = f.dr.cnt;
  rte_mbuf* whole = rte_ipv4_frag_reassemble_packet(f.tbl, &f.dr, m, w.now, ip);
  if (f.dr.cnt != before) [[unlikely]] {
    account_freed(w, before, m, key, middle);
    if (f.dr.cnt > kDeathRowFlushAt) rte_ip_frag_free_death_row(&f.dr, 0);
  }
  if (!whole) return nullptr;
  held_add(w, -int64_t{whole->nb_segs});
  w.counters.frag_reassembled.add();
  // rte_ip_frag leaves the header checksum 0; the NIC's verdicts were about the fragment.
  auto* wip = rte_pktmbuf_mtod_offset(whole, rte_ipv4_hdr*, kEthHdr);
  wip->hdr_checksum = 0;
  wip->hdr_checksum = csum(wip, whole->l3_len);
  whole->ol_flags &= ~(RTE_MBUF_F_RX_IP_CKSUM_MASK | RTE_MBUF_F_RX_L4_CKSUM_MASK);
  return whole;
}

void expire_fragments(worker& w) {
  frag_state& f = w.frag;
  if (w.counters.frag_held.get()) {
    const uint32_t before = f.dr.cnt;
    rte_ip_frag_table_del_expired_entries(f.tbl, &f.dr, w.now);
    uint64_t segs = 0;
    for (uint32_t i = before; i < f.dr.cnt; ++i) segs += f.dr.row[i]->nb_segs;
    if (segs) {
      held_add(w, -static_cast<int64_t>(segs));
      count(w, drop::frag_timeout, segs);
    }
  }
  if (f.dr.cnt) rte_ip_frag_free_death_row(&f.dr, 3);
}

}  // namespace ferry::dp
