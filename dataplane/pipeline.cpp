// The per-packet path. No allocation (except an mbuf for a reply we originate), no locks,
// no exceptions, no logging: every outcome is a TX batch entry or a counted drop.
#include <rte_arp.h>
#include <rte_byteorder.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_prefetch.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include <algorithm>
#include <cstring>

#include "checksum.hpp"
#include "dataplane.hpp"
#include "decide.hpp"
#include "fragments.hpp"

namespace ferry::dp {
namespace {

constexpr uint8_t kTcpFin = RTE_TCP_FIN_FLAG, kTcpSyn = RTE_TCP_SYN_FLAG,
                  kTcpRst = RTE_TCP_RST_FLAG, kTcpAck = RTE_TCP_ACK_FLAG;
constexpr uint16_t kEthHdr = sizeof(rte_ether_hdr);

// fragment: parse found an IPv4 fragment (process_burst hands it to reassembly); taken: the
// reassembly table kept it, or dropped it and counted why.
enum class kind : uint8_t { dropped, arp, local, transit, dns, dns_tcp, fragment, taken };

// What parsing learned about one packet; lives for one burst.
struct parsed {
  kind k;
  drop reason;
  bool local;  // addressed to the node (a masqueraded reply, or nothing of ours)
  uint8_t tcp_flags;
  uint16_t l4_len;  // bytes of L4 header + payload
  rte_ipv4_hdr* ip;
  uint8_t* l4;
  flow_key key;
  uint64_t hash;
  uint64_t hint;  // the connection table's first candidate slot (prepare -> lookup)
  // Filled ahead of the verdict for a flow that is certainly new (see prepare()).
  bool svc_known;
  const service_port_entry* svc;
};

// What the RX offload flags say against a packet (0 when nothing): a VLAN tag the NIC
// stripped (the port is untagged: such a frame is not for it), or a checksum the NIC found
// wrong. IP_CKSUM_NONE and L4_CKSUM_NONE (BAD | GOOD) mean the data is intact.
bool flagged_bad(uint64_t ol, drop& reason) {
  if (ol & RTE_MBUF_F_RX_VLAN_STRIPPED) {
    reason = drop::vlan_unsupported;
  } else if ((ol & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_BAD) {
    reason = drop::ip_bad_checksum;
  } else if ((ol & RTE_MBUF_F_RX_L4_CKSUM_MASK) == RTE_MBUF_F_RX_L4_CKSUM_BAD) {
    reason = drop::l4_bad_checksum;
  } else {
    return false;
  }
  return true;
}

// The IPv4 header checksum holds (the one's-complement sum of the whole header, options
// too, is all ones). Three loads of a line parse has just read, summed with end-around
// carries (add-with-carry), and no data-dependent branch (csum_fold's loop mispredicts as
// the sums vary from packet to packet, which would cost more than the sum).
bool ip_header_sum_ok(const rte_ipv4_hdr* ip, uint16_t ihl) {
  const auto* b = reinterpret_cast<const uint8_t*>(ip);
  uint64_t w0, w1;
  uint32_t w2;
  std::memcpy(&w0, b, 8);
  std::memcpy(&w1, b + 8, 8);
  std::memcpy(&w2, b + 16, 4);
  uint64_t s = w0 + w1;
  s += s < w1;
  s += w2;
  s += s < w2;
  if (ihl > sizeof(rte_ipv4_hdr)) [[unlikely]] {
    for (uint16_t i = sizeof(rte_ipv4_hdr); i < ihl; i += 4) {
      uint32_t v;
      std::memcpy(&v, b + i, 4);
      s += v;
      s += s < v;
    }
  }
  const auto hi = static_cast<uint32_t>(s >> 32);
  uint32_t t = static_cast<uint32_t>(s) + hi;
  t += t < hi;
  t = (t & 0xffff) + (t >> 16);
  t = (t & 0xffff) + (t >> 16);
  return t == 0xffff;
}

// The new-flow checks (decide.hpp) on a parsed packet.
bool refuse_new(const dataplane& dp, const parsed& p, bool ports, drop& reason) {
  return refuse_new(dp, p.key.src_ip, p.key.dst_ip, ports ? p.key.src_port : 1,
                    ports ? p.key.dst_port : 1, reason);
}

void free_drop(worker& w, rte_mbuf* m, drop reason) {
  w.counters.count(reason);
  rte_pktmbuf_free(m);
}

void flush_port(worker& w, uint16_t port) {
  tx_batch& b = w.tx[port];
  if (!b.n) return;
  uint16_t sent = rte_eth_tx_burst(w.dp->ports[port].port_id, w.queue, b.pkts, b.n);
  w.counters.port_tx[port].add(sent);
  for (uint16_t i = sent; i < b.n; ++i) free_drop(w, b.pkts[i], drop::tx_full);
  b.n = 0;
}

void enqueue(worker& w, uint16_t port, rte_mbuf* m) {
  tx_batch& b = w.tx[port];
  b.pkts[b.n++] = m;
  if (b.n == kTxBatch) flush_port(w, port);
}

void send_arp_request(worker& w, uint16_t port, uint32_t target) {
  const port_info& p = w.dp->ports[port];
  rte_mbuf* m = rte_pktmbuf_alloc(w.dp->pool);
  if (!m) {
    w.counters.count(drop::mbuf_exhausted);
    return;
  }
  auto* eth = reinterpret_cast<rte_ether_hdr*>(
      rte_pktmbuf_append(m, sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr)));
  if (!eth) return free_drop(w, m, drop::mbuf_exhausted);
  std::memset(&eth->dst_addr, 0xff, RTE_ETHER_ADDR_LEN);
  eth->src_addr = p.mac;
  eth->ether_type = RTE_BE16(RTE_ETHER_TYPE_ARP);
  auto* arp = reinterpret_cast<rte_arp_hdr*>(eth + 1);
  arp->arp_hardware = RTE_BE16(RTE_ARP_HRD_ETHER);
  arp->arp_protocol = RTE_BE16(RTE_ETHER_TYPE_IPV4);
  arp->arp_hlen = RTE_ETHER_ADDR_LEN;
  arp->arp_plen = 4;
  arp->arp_opcode = RTE_BE16(RTE_ARP_OP_REQUEST);
  arp->arp_data.arp_sha = p.mac;
  arp->arp_data.arp_sip = rte_cpu_to_be_32(p.addr);
  std::memset(&arp->arp_data.arp_tha, 0, RTE_ETHER_ADDR_LEN);
  arp->arp_data.arp_tip = rte_cpu_to_be_32(target);
  w.counters.arp_requests_sent.add();
  enqueue(w, port, m);
}

void send_ip(worker& w, rte_mbuf* m, uint32_t dst);

// A datagram without DF that does not fit the egress port's MTU leaves in fragments that do
// (rte_ipv4_fragment_packet: each fragment is a new header mbuf chained to indirect mbufs on
// the datagram's data, which is freed when the last fragment is sent). The IP ID is kept.
// Each fragment then takes send_ip's way (route, neighbor) as any packet does.
void send_fragmented(worker& w, rte_mbuf* m, uint32_t dst, uint16_t mtu) {
  dataplane& dp = *w.dp;
  // [fragments] off, or an MTU below what every IPv4 host must take (576: 552-byte pieces
  // after a header of up to 60 bytes: 512, which bounds how many fragments one datagram makes).
  if (!dp.frag_indirect || mtu < 576) return free_drop(w, m, drop::mtu_exceeded);
  constexpr uint16_t kMaxOut = 65535 / 512 + 1;
  rte_mbuf* out[kMaxOut];
  rte_pktmbuf_adj(m, kEthHdr);
  const int32_t n = rte_ipv4_fragment_packet(m, out, kMaxOut, mtu, dp.pool, dp.frag_indirect);
  rte_pktmbuf_free(m);  // the fragments hold their own references to its data
  if (n <= 0) {
    w.counters.count(drop::frag_egress_failed);
    return;
  }
  w.counters.frag_fragmented.add();
  w.counters.frag_sent.add(static_cast<uint64_t>(n));
  for (int32_t i = 0; i < n; ++i) {
    rte_mbuf* f = out[i];
    auto* ip = rte_pktmbuf_mtod(f, rte_ipv4_hdr*);
    ip->hdr_checksum = 0;  // rte_ip_frag leaves it to us
    ip->hdr_checksum = csum(ip, rte_ipv4_hdr_len(ip));
    if (!rte_pktmbuf_prepend(f, kEthHdr)) {  // a direct mbuf with the pool's headroom
      free_drop(w, f, drop::frag_egress_failed);
      continue;
    }
    send_ip(w, f, dst);
  }
}

// Queues an IPv4 packet (headers final) towards dst: route, neighbor, MACs. While the next
// hop is unresolved the packet is parked (up to hold_tsc) and an ARP request goes out.
void send_ip(worker& w, rte_mbuf* m, uint32_t dst) {
  dataplane& dp = *w.dp;
  const route_entry* r = dp.route(dst);
  if (!r) return free_drop(w, m, drop::no_route);
  if (m->pkt_len > uint32_t{kEthHdr} + dp.ports[r->port].mtu) [[unlikely]] {
    const auto* ip = rte_pktmbuf_mtod_offset(m, const rte_ipv4_hdr*, kEthHdr);
    if (ip->fragment_offset & RTE_BE16(RTE_IPV4_HDR_DF_FLAG)) {
      return free_drop(w, m, drop::mtu_exceeded);
    }
    return send_fragmented(w, m, dst, dp.ports[r->port].mtu);
  }
  uint32_t next_hop = r->via ? r->via : dst;
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  eth->src_addr = dp.ports[r->port].mac;
  eth->ether_type = RTE_BE16(RTE_ETHER_TYPE_IPV4);
  neighbor_table::entry* ne = dp.neighbors->get(r->port, next_hop, true);
  if (ne && dp.neighbors->resolve(*ne, w.now, eth->dst_addr)) return enqueue(w, r->port, m);
  if (!ne || w.n_held == kHoldSize) return free_drop(w, m, drop::neighbor_hold_full);
  if (neighbor_table::should_request(*ne, w.now, dp.arp_retry_tsc)) {
    send_arp_request(w, r->port, next_hop);
  }
  w.held[w.n_held++] = {m, w.now + dp.hold_tsc, next_hop, r->port};
  w.counters.neighbor_held.add();
}

// The snapshot's pool load balancer addresses (what MetalLB's layer-2 mode does for a
// cluster) and the DNS addresses are answered for on the port whose subnet holds them.
bool announced_on(const worker& w, const snapshot* snap, uint32_t ip, uint16_t port) {
  if (!w.dp->is_dns(ip) && !(snap && snap->announces(ip))) return false;
  const route_entry* r = w.dp->route(ip);
  return r && !r->via && r->port == port;
}

void handle_arp(worker& w, const snapshot* snap, rte_mbuf* m, uint16_t in_port) {
  if (m->data_len < kEthHdr + sizeof(rte_arp_hdr)) return free_drop(w, m, drop::arp_malformed);
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  auto* arp = reinterpret_cast<rte_arp_hdr*>(eth + 1);
  if (arp->arp_hardware != RTE_BE16(RTE_ARP_HRD_ETHER) ||
      arp->arp_protocol != RTE_BE16(RTE_ETHER_TYPE_IPV4) || arp->arp_hlen != RTE_ETHER_ADDR_LEN ||
      arp->arp_plen != 4) {
    return free_drop(w, m, drop::arp_malformed);
  }
  const port_info& p = w.dp->ports[in_port];
  uint32_t sip = rte_be_to_cpu_32(arp->arp_data.arp_sip);
  uint32_t tip = rte_be_to_cpu_32(arp->arp_data.arp_tip);
  bool for_us = tip == p.addr || (tip && announced_on(w, snap, tip, in_port));
  // Learn the sender when it talks to us; refresh (never create) from other ARP traffic.
  if (sip != 0) {
    if (auto* e = w.dp->neighbors->get(in_port, sip, for_us)) {
      neighbor_table::learn(*e, arp->arp_data.arp_sha, w.now);
    }
  }
  if (!for_us) return free_drop(w, m, drop::arp_not_ours);
  if (arp->arp_opcode != RTE_BE16(RTE_ARP_OP_REQUEST)) {
    rte_pktmbuf_free(m);  // a reply to us: learnt above
    return;
  }
  arp->arp_opcode = RTE_BE16(RTE_ARP_OP_REPLY);
  arp->arp_data.arp_tha = arp->arp_data.arp_sha;
  arp->arp_data.arp_tip = arp->arp_data.arp_sip;
  arp->arp_data.arp_sha = p.mac;
  arp->arp_data.arp_sip = rte_cpu_to_be_32(tip);
  eth->dst_addr = eth->src_addr;
  eth->src_addr = p.mac;
  w.counters.arp_replies_sent.add();
  enqueue(w, in_port, m);
}

// Sets the TTL (keeping the header checksum right through RFC 1624). TTL and protocol share
// one 16-bit word of the checksum; build the new word in a register and store it whole (a
// byte store followed by a word load of the same bytes stalls store forwarding).
void set_ttl(rte_ipv4_hdr* ip, uint8_t ttl) {
  uint16_t old_word, new_word;
  std::memcpy(&old_word, &ip->time_to_live, 2);
  const uint8_t bytes[2] = {ttl, ip->next_proto_id};
  std::memcpy(&new_word, bytes, 2);
  std::memcpy(&ip->time_to_live, &new_word, 2);
  ip->hdr_checksum = csum_update16(ip->hdr_checksum, old_word, new_word);
}

void handle_local(worker& w, rte_mbuf* m, const parsed& p) {
  rte_ipv4_hdr* ip = p.ip;
  if (ip->next_proto_id == kProtoIcmp && p.l4_len >= sizeof(rte_icmp_hdr)) {
    auto* icmp = reinterpret_cast<rte_icmp_hdr*>(p.l4);
    if (icmp->icmp_type == RTE_IP_ICMP_ECHO_REQUEST && icmp->icmp_code == 0) {
      uint16_t old_word, new_word;
      std::memcpy(&old_word, icmp, 2);
      icmp->icmp_type = RTE_IP_ICMP_ECHO_REPLY;
      std::memcpy(&new_word, icmp, 2);
      icmp->icmp_cksum = csum_update16(icmp->icmp_cksum, old_word, new_word);
      rte_be32_t src = ip->src_addr;  // the header sum does not depend on their order
      ip->src_addr = ip->dst_addr;
      ip->dst_addr = src;
      set_ttl(ip, 64);
      w.counters.icmp_echo_replies.add();
      return send_ip(w, m, rte_be_to_cpu_32(ip->dst_addr));
    }
  }
  free_drop(w, m, drop::local_unhandled);
}

void handle_transit(worker& w, const snapshot* snap, rte_mbuf* m, parsed& p);

// A DNS query over UDP to a DNS address: answered in place, from the snapshot's zone (or
// sent on to an upstream resolver when the name is outside it).
void handle_dns(worker& w, const snapshot* snap, rte_mbuf* m, parsed& p, uint16_t in_port) {
  auto* uh = reinterpret_cast<rte_udp_hdr*>(p.l4);
  const uint16_t udp_len = rte_be_to_cpu_16(uh->dgram_len);
  if (m->nb_segs != 1 || udp_len < sizeof(rte_udp_hdr) || udp_len > p.l4_len) {
    return free_drop(w, m, drop::dns_malformed);
  }
  rte_ipv4_hdr* ip = p.ip;
  const uint16_t ihl = rte_ipv4_hdr_len(ip);
  uint8_t* msg = p.l4 + sizeof(rte_udp_hdr);
  const size_t cap = static_cast<uint8_t*>(m->buf_addr) + m->buf_len - msg;
  const size_t max_udp = w.dp->ports[in_port].mtu - ihl - sizeof(rte_udp_hdr);
  const service_port_entry* upstream = snap ? snap->dns_upstream.get() : nullptr;
  const dns::answer_result r =
      dns::answer(snap ? snap->dns.get() : nullptr, msg, udp_len - sizeof(rte_udp_hdr), cap, true,
                  max_udp, upstream != nullptr);
  w.counters.dns[static_cast<size_t>(r.how)].add();
  if (r.how == dns::outcome::forward) {
    // Not ours: on to an upstream resolver, tracked and translated like a Service's flow.
    p.hash = conntrack::hash(p.key);
    p.hint = 0;
    p.svc = upstream;
    p.svc_known = true;
    return handle_transit(w, snap, m, p);
  }
  if (!r.len) return free_drop(w, m, drop::dns_not_query);
  if (r.truncated) w.counters.dns_truncated.add();
  const auto l4_len = static_cast<uint16_t>(sizeof(rte_udp_hdr) + r.len);
  m->data_len = static_cast<uint16_t>(kEthHdr + ihl + l4_len);
  m->pkt_len = m->data_len;
  const rte_be32_t client = ip->src_addr;
  ip->src_addr = ip->dst_addr;
  ip->dst_addr = client;
  ip->total_length = rte_cpu_to_be_16(ihl + l4_len);
  ip->time_to_live = 64;
  ip->hdr_checksum = 0;
  ip->hdr_checksum = csum(ip, ihl);
  const rte_be16_t client_port = uh->src_port;
  uh->src_port = uh->dst_port;
  uh->dst_port = client_port;
  uh->dgram_len = rte_cpu_to_be_16(l4_len);
  uh->dgram_cksum = 0;
  uh->dgram_cksum = rte_ipv4_udptcp_cksum(ip, uh);
  send_ip(w, m, p.key.src_ip);
}

// A service port without endpoints: answer ICMP port unreachable from the VIP (the
// client's socket then reports "connection refused"), rate limited per worker.
void reject(worker& w, rte_mbuf* m, const parsed& p) {
  dataplane& dp = *w.dp;
  w.counters.count(drop::no_endpoints);
  // Token bucket: one token per 1/rate seconds, at most `rate` banked.
  if (dp.icmp_rate) {
    uint64_t per_token = dp.tsc_hz / dp.icmp_rate;
    uint64_t earned = (w.now - w.icmp_refill) / per_token;
    if (earned) {
      w.icmp_tokens = std::min<uint64_t>(dp.icmp_rate, w.icmp_tokens + earned);
      w.icmp_refill += earned * per_token;
    }
  }
  if (!w.icmp_tokens) return free_drop(w, m, drop::icmp_rate_limited);
  rte_mbuf* r = rte_pktmbuf_alloc(dp.pool);
  if (!r) return free_drop(w, m, drop::mbuf_exhausted);
  --w.icmp_tokens;

  // Quote the offending IP header and the first 8 bytes of its payload (RFC 792).
  uint16_t ihl = rte_ipv4_hdr_len(p.ip);
  uint16_t quote = ihl + std::min<uint16_t>(8, p.l4_len);
  uint16_t len = sizeof(rte_ipv4_hdr) + sizeof(rte_icmp_hdr) + quote;
  auto* eth = reinterpret_cast<rte_ether_hdr*>(rte_pktmbuf_append(r, kEthHdr + len));
  if (!eth) {
    rte_pktmbuf_free(r);
    return free_drop(w, m, drop::mbuf_exhausted);
  }
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(eth + 1);
  auto* icmp = reinterpret_cast<rte_icmp_hdr*>(ip + 1);
  std::memcpy(icmp + 1, p.ip, quote);
  std::memset(ip, 0, sizeof(*ip) + sizeof(*icmp));
  ip->version_ihl = RTE_IPV4_VHL_DEF;
  ip->total_length = rte_cpu_to_be_16(len);
  ip->time_to_live = 64;
  ip->next_proto_id = kProtoIcmp;
  ip->src_addr = p.ip->dst_addr;
  ip->dst_addr = p.ip->src_addr;
  ip->hdr_checksum = csum(ip, sizeof(*ip));
  icmp->icmp_type = 3;  // destination unreachable
  icmp->icmp_code = 3;  // port unreachable
  icmp->icmp_cksum = csum(icmp, sizeof(*icmp) + quote);
  rte_pktmbuf_free(m);
  w.counters.icmp_unreach_sent.add();
  send_ip(w, r, p.key.src_ip);
}

// Rewrites one address and port (source or destination) with incremental checksums.
void rewrite(parsed& p, bool dst, uint32_t ip_host, uint16_t port_host) {
  rte_ipv4_hdr* ip = p.ip;
  uint32_t new_ip = rte_cpu_to_be_32(ip_host);
  uint16_t new_port = rte_cpu_to_be_16(port_host);
  // TCP and UDP both start with the source and destination ports.
  uint8_t* addr_at = reinterpret_cast<uint8_t*>(ip) + (dst ? 16 : 12);
  uint8_t* port_at = p.l4 + (dst ? 2 : 0);
  uint32_t addr;
  uint16_t port;
  std::memcpy(&addr, addr_at, 4);
  std::memcpy(&port, port_at, 2);
  ip->hdr_checksum = csum_update32(ip->hdr_checksum, addr, new_ip);
  if (p.key.proto == kProtoTcp) {
    auto* th = reinterpret_cast<rte_tcp_hdr*>(p.l4);
    th->cksum = csum_update16(csum_update32(th->cksum, addr, new_ip), port, new_port);
  } else {
    auto* uh = reinterpret_cast<rte_udp_hdr*>(p.l4);
    if (uh->dgram_cksum != 0) {  // 0: the sender did not checksum, and neither do we
      uint16_t c = csum_update16(csum_update32(uh->dgram_cksum, addr, new_ip), port, new_port);
      uh->dgram_cksum = c ? c : 0xffff;
    }
  }
  std::memcpy(addr_at, &new_ip, 4);
  std::memcpy(port_at, &new_port, 2);
}

void tcp_track(flow_entry& e, flow_dir dir, uint8_t flags) {
  flow_state s = e.state.load(std::memory_order_relaxed);
  flow_state next = s;
  if (flags & (kTcpRst | kTcpFin)) {
    next = flow_state::tcp_closing;
  } else if (s == flow_state::tcp_syn && dir == flow_dir::reply) {
    next = flow_state::tcp_established;  // the backend answered
  } else if (s == flow_state::tcp_closing && dir == flow_dir::forward &&
             (flags & (kTcpSyn | kTcpAck)) == kTcpSyn) {
    next = flow_state::tcp_syn;  // the client reuses the port: same flow, same backend
  }
  if (next != s) e.state.store(next, std::memory_order_relaxed);
}

// A source port whose reply key (backend -> node:port) is not in use, from this worker's slice
// of the ephemeral range (so two workers never race for one port), starting at a hash of the
// flow; 0 when the candidates tried are all taken (the slice is close to exhausted).
uint16_t pick_snat_port(const worker& w, const parsed& p, const flow_nat& nat) {
  constexpr uint32_t kFirst = 32768, kCount = 28232, kTries = 32;
  const uint32_t slice = kCount / w.dp->ct->workers();
  const uint32_t first = kFirst + w.index * slice;
  for (uint32_t i = 0; i < kTries; ++i) {
    auto port = static_cast<uint16_t>(first + (p.hash + i) % slice);
    flow_key reply{nat.backend_ip, nat.snat_ip, nat.backend_port, port, p.key.proto};
    if (!w.dp->ct->lookup(reply, conntrack::hash(reply)).entry) return port;
  }
  return 0;
}

// sessionAffinity: ClientIP. The backend this client last got from the service port, while it
// is still active; else Maglev on the client address alone, so every worker makes the same
// first pick for a client even before the table has heard of it.
const backend& sticky_backend(worker& w, const service_port_entry& s, const parsed& p) {
  affinity_table& t = *w.dp->affinity;
  const uint64_t k = affinity_key(s, p.key.src_ip);
  const uint16_t now = w.dp->affinity_now(w.now);
  const uint16_t timeout = affinity_ticks(s);
  uint32_t ip = 0;
  uint16_t port = 0;
  const backend* b = nullptr;
  if (t.find(k, now, timeout, ip, port) && (b = s.active(ip, port))) {
    w.counters.affinity_reused.add();
  } else {
    b = &s.pick(k);
  }
  t.remember(k, b->ip, b->port, now);
  return *b;
}

void count_service(worker& w, uint32_t id, const rte_mbuf* m, bool new_flow) {
  service_counters& c = w.services[id];
  c.packets.add();
  c.bytes.add(m->pkt_len);
  if (new_flow) c.new_flows.add();
}

const service_port_entry* find_service(const snapshot* snap, const parsed& p) {
  return dp::find_service(snap, p.key.dst_ip, p.key.proto, p.key.dst_port, p.local);
}

// Stage 2 for one packet, once its bucket is (likely) in cache: prefetch the flow entries it
// may match. For a flow that is certainly new, also find its service and backend now and
// prefetch what inserting it will write: the reply key's bucket and the next free entry.
void prepare(worker& w, const snapshot* snap, parsed& p, size_t& inserts_ahead) {
  const conntrack& ct = *w.dp->ct;
  if (ct.prefetch_entries(p.hash, p.hint)) return;
  p.svc = find_service(snap, p);
  p.svc_known = true;
  if (!p.svc || !p.svc->has_active) return;
  const backend& b = p.svc->pick(p.hash);
  ct.prefetch(conntrack::hash({b.ip, p.key.src_ip, b.port, p.key.src_port, p.key.proto}));
  ct.prefetch_free(w.ct, inserts_ahead++);
}

// DNS over TCP: the kernel's TCP stack behind the TAP port does the protocol, and the DNS
// TCP thread answers on its socket there (dns_tcp.hpp).
void to_dns_tcp(worker& w, rte_mbuf* m) {
  const uint16_t port = w.dp->dns_tcp_port;
  if (port == dataplane::kNoPort) return free_drop(w, m, drop::dns_tcp_no_server);
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  eth->dst_addr = w.dp->ports[port].mac;
  w.counters.dns_tcp.add();
  enqueue(w, port, m);
}

// The kernel's TCP segments for DNS clients: routed out like any packet ferry sends.
void from_dns_tcp(worker& w, rte_mbuf* m) {
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  if (m->data_len < kEthHdr + sizeof(rte_ipv4_hdr) ||
      eth->ether_type != RTE_BE16(RTE_ETHER_TYPE_IPV4)) {
    return free_drop(w, m, drop::eth_unsupported);
  }
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(eth + 1);
  if (!w.dp->is_dns(rte_be_to_cpu_32(ip->src_addr))) return free_drop(w, m, drop::not_service);
  w.counters.dns_tcp.add();
  send_ip(w, m, rte_be_to_cpu_32(ip->dst_addr));
}

void handle_transit(worker& w, const snapshot* snap, rte_mbuf* m, parsed& p) {
  conntrack& ct = *w.dp->ct;
  if (p.ip->time_to_live <= 1) return free_drop(w, m, drop::ip_ttl_exceeded);

  flow_match hit = ct.lookup(p.key, p.hash, p.hint);
  if (hit.entry) {
    flow_entry& e = *hit.entry;
    if (e.owner != w.index) w.counters.flows_foreign.add();
    if (hit.dir == flow_dir::forward) {
      rewrite(p, true, e.backend_ip, e.backend_port);
      if (e.snat_ip) rewrite(p, false, e.snat_ip, e.snat_port);
    } else {
      rewrite(p, false, e.vip, e.vport);
      if (e.snat_ip) rewrite(p, true, e.client_ip, e.client_port);
    }
    if (p.key.proto == kProtoTcp) tcp_track(e, hit.dir, p.tcp_flags);
    ct.touch(e, w.now);
    count_service(w, e.service_id, m, false);
    set_ttl(p.ip, p.ip->time_to_live - 1);
    return send_ip(w, m, rte_be_to_cpu_32(p.ip->dst_addr));
  }

  if (drop why; refuse_new(*w.dp, p, true, why)) return free_drop(w, m, why);
  if (!p.svc_known) p.svc = find_service(snap, p);
  if (p.svc) {
    const service_port_entry& s = *p.svc;
    if (!s.allows(p.key.src_ip)) return free_drop(w, m, drop::source_denied);
    if (!s.has_active) {
      return s.drop_empty ? free_drop(w, m, drop::no_local_endpoints) : reject(w, m, p);
    }
    const backend& b = s.affinity_timeout ? sticky_backend(w, s, p) : s.pick(p.hash);
    flow_nat nat{b.ip, b.port};
    // External traffic under policy Cluster leaves with a node address when its backend is
    // on another node (so the answer comes back through this node); any flow whose client
    // and backend share an on-link subnet is masqueraded too (hairpin).
    const bool masquerade = masquerade_for(*w.dp, s, b, p.key.src_ip, nat.snat_ip);
    if (masquerade && !(nat.snat_port = pick_snat_port(w, p, nat))) {
      return free_drop(w, m, drop::snat_exhausted);
    }
    flow_state state = flow_state::udp;
    if (p.key.proto == kProtoTcp) {
      bool syn = (p.tcp_flags & (kTcpSyn | kTcpAck)) == kTcpSyn;
      state = syn ? flow_state::tcp_syn : flow_state::tcp_established;
    }
    // A RST for an unknown flow is forwarded but makes no entry.
    bool track = !(p.tcp_flags & kTcpRst);
    if (track && ct.insert(w.ct, p.key, nat, s.id, state, w.now)) {
      w.counters.flows_created.add();
      if (masquerade) w.counters.snat_flows.add();
      if (state == flow_state::tcp_established) w.counters.flows_picked_up.add();
    } else if (masquerade) {
      // Without an entry the reply could not be turned back: nothing to forward.
      return free_drop(w, m, drop::snat_failed);
    } else {
      if (track) w.counters.flows_table_full.add();
      w.counters.stateless_forward.add();
    }
    count_service(w, s.id, m, true);
    rewrite(p, true, b.ip, b.port);
    if (masquerade) rewrite(p, false, nat.snat_ip, nat.snat_port);
    set_ttl(p.ip, p.ip->time_to_live - 1);
    return send_ip(w, m, b.ip);
  }
  if (p.local) return handle_local(w, m, p);

  // A backend's reply with no entry (table was full, or ferryd restarted): un-NAT it from
  // the backend table so the client still sees the service address.
  const service_port_entry* const* from =
      snap ? snap->backends.find(service_key(p.key.src_ip, p.key.proto, p.key.src_port)) : nullptr;
  if (from) {
    w.counters.stateless_reply.add();
    count_service(w, (*from)->id, m, false);
    rewrite(p, false, (*from)->vip, (*from)->port);
    set_ttl(p.ip, p.ip->time_to_live - 1);
    return send_ip(w, m, p.key.dst_ip);
  }
  free_drop(w, m, drop::not_service);
}

// Validates headers without reading past the first segment; fills p.
void parse(worker& w, rte_mbuf* m, uint16_t in_port, parsed& p) {
  p.k = kind::dropped;
  if (m->data_len < kEthHdr) {
    p.reason = drop::eth_truncated;
    return;
  }
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  if (rte_is_same_ether_addr(&eth->src_addr, &w.dp->ports[in_port].mac)) {
    p.reason = drop::own_source_mac;
    return;
  }
  // One test of the RX offload flags; their meaning is looked at only when one is set.
  const uint64_t ol = m->ol_flags;
  constexpr uint64_t kRxSuspect =
      RTE_MBUF_F_RX_VLAN_STRIPPED | RTE_MBUF_F_RX_IP_CKSUM_BAD | RTE_MBUF_F_RX_L4_CKSUM_BAD;
  if ((ol & kRxSuspect) && flagged_bad(ol, p.reason)) [[unlikely]] {
    return;
  }
  if (eth->ether_type == RTE_BE16(RTE_ETHER_TYPE_ARP)) {
    p.k = kind::arp;
    return;
  }
  if (eth->ether_type != RTE_BE16(RTE_ETHER_TYPE_IPV4)) {
    const bool tagged = eth->ether_type == RTE_BE16(RTE_ETHER_TYPE_VLAN) ||
                        eth->ether_type == RTE_BE16(RTE_ETHER_TYPE_QINQ);
    p.reason = tagged ? drop::vlan_unsupported : drop::eth_unsupported;
    return;
  }
  if (m->data_len < kEthHdr + sizeof(rte_ipv4_hdr)) {
    p.reason = drop::ip_truncated;
    return;
  }
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(eth + 1);
  if ((ip->version_ihl >> 4) != 4) {
    p.reason = drop::ip_bad_version;
    return;
  }
  uint16_t ihl = rte_ipv4_hdr_len(ip);
  if (ihl < sizeof(rte_ipv4_hdr) || kEthHdr + ihl > m->data_len) {
    p.reason = drop::ip_bad_ihl;
    return;
  }
  // A corrupt header is not forwarded. The NIC's verdict when it gave one (BAD was handled
  // above); otherwise the sum here, over a header already in cache.
  if (!(ol & RTE_MBUF_F_RX_IP_CKSUM_GOOD) && !ip_header_sum_ok(ip, ihl)) {
    p.reason = drop::ip_bad_checksum;
    return;
  }
  uint16_t total = rte_be_to_cpu_16(ip->total_length);
  if (total < ihl || kEthHdr + uint32_t{total} > m->pkt_len) {
    p.reason = drop::ip_bad_length;
    return;
  }
  // Ethernet padding after a short IP packet is not part of it.
  if (m->pkt_len > kEthHdr + uint32_t{total} && m->nb_segs == 1) {
    rte_pktmbuf_trim(m, static_cast<uint16_t>(m->pkt_len - kEthHdr - total));
  }
  // Any fragment (MF set or a nonzero offset): later fragments have no ports to translate,
  // so fragments are reassembled first (process_burst), then the whole datagram is parsed
  // again. Without a reassembly table ([fragments] enabled = false) they are dropped.
  if (ip->fragment_offset & RTE_BE16(RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK))
      [[unlikely]] {
    if (!w.frag.tbl) {
      p.reason = drop::ip_fragment;
    } else if (!refuse_new(*w.dp, rte_be_to_cpu_32(ip->src_addr), rte_be_to_cpu_32(ip->dst_addr), 1,
                           1, p.reason)) {
      p.ip = ip;
      p.k = kind::fragment;
    }
    return;
  }
  p.ip = ip;
  p.l4 = reinterpret_cast<uint8_t*>(ip) + ihl;
  p.l4_len = total - ihl;
  uint32_t in_first_seg = m->data_len - kEthHdr - ihl;
  p.key.src_ip = rte_be_to_cpu_32(ip->src_addr);
  p.key.dst_ip = rte_be_to_cpu_32(ip->dst_addr);
  p.key.proto = ip->next_proto_id;
  p.tcp_flags = 0;
  p.local = w.dp->is_local(p.key.dst_ip);
  if (p.local && p.key.proto != kProtoTcp && p.key.proto != kProtoUdp) {
    p.k = refuse_new(*w.dp, p, false, p.reason) ? kind::dropped : kind::local;
    return;
  }
  if (p.key.proto == kProtoTcp) {
    auto* th = reinterpret_cast<rte_tcp_hdr*>(p.l4);
    if (p.l4_len < sizeof(rte_tcp_hdr) || in_first_seg < sizeof(rte_tcp_hdr)) {
      p.reason = drop::l4_truncated;
      return;
    }
    const uint32_t doff = (th->data_off >> 4) * 4u;
    if (doff < sizeof(rte_tcp_hdr) || doff > p.l4_len) {
      p.reason = doff < sizeof(rte_tcp_hdr) ? drop::l4_bad_length : drop::l4_truncated;
      return;
    }
    p.tcp_flags = th->tcp_flags;
  } else if (p.key.proto == kProtoUdp) {
    if (p.l4_len < sizeof(rte_udp_hdr) || in_first_seg < sizeof(rte_udp_hdr)) {
      p.reason = drop::l4_truncated;
      return;
    }
    // A UDP length below its header or past the IP payload (shorter is allowed: the rest
    // is padding the receiver ignores, as Linux does).
    const uint16_t ulen = rte_be_to_cpu_16(reinterpret_cast<rte_udp_hdr*>(p.l4)->dgram_len);
    if (ulen < sizeof(rte_udp_hdr) || ulen > p.l4_len) {
      p.reason = drop::l4_bad_length;
      return;
    }
  } else {
    p.reason = drop::l4_unsupported;
    return;
  }
  const auto* ports = reinterpret_cast<const uint16_t*>(p.l4);
  p.key.src_port = rte_be_to_cpu_16(ports[0]);
  p.key.dst_port = rte_be_to_cpu_16(ports[1]);
  // The DNS addresses take port 53 before any Service does.
  if (p.key.dst_port == dns::kPort && w.dp->is_dns(p.key.dst_ip)) {
    if (refuse_new(*w.dp, p, true, p.reason)) return;
    p.k = p.key.proto == kProtoUdp ? kind::dns : kind::dns_tcp;
    return;
  }
  p.hash = conntrack::hash(p.key);
  p.k = kind::transit;
}

// A fragment parse found: into the reassembly table. When it completes a datagram, the whole
// datagram (chained mbufs: parse reads only the first segment, where the L4 header is, and
// checks lengths against pkt_len) replaces it in the burst and is parsed again.
void take_fragment(worker& w, rte_mbuf*& m, uint16_t in_port, parsed& p) {
  rte_mbuf* whole = reassemble(w, m, p.ip, rte_ipv4_hdr_len(p.ip));
  if (!whole) {
    p.k = kind::taken;
    return;
  }
  m = whole;
  parse(w, m, in_port, p);
  if (p.k == kind::fragment) {  // cannot be: rte_ip_frag clears MF and the offset
    p.k = kind::dropped;
    p.reason = drop::frag_malformed;
  }
}

}  // namespace

void process_burst(worker& w, const snapshot* snap, rte_mbuf** pkts, uint16_t n, uint16_t in_port) {
  parsed p[kBurst];
  w.counters.port_rx[in_port].add(n);
  if (in_port == w.dp->dns_tcp_port) {
    for (uint16_t i = 0; i < n; ++i) from_dns_tcp(w, pkts[i]);
    return;
  }
  // Software pipelining across the burst (VPP lb node style), so the two dependent memory
  // accesses of a flow lookup overlap between packets instead of stalling one by one.
  // Stage 1: parse everything and prefetch each flow's index bucket.
  const conntrack& ct = *w.dp->ct;
  for (uint16_t i = 0; i < n; ++i) {
    if (i + 1 < n) rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 1], void*));
    parse(w, pkts[i], in_port, p[i]);
    if (p[i].k == kind::fragment) [[unlikely]]
      take_fragment(w, pkts[i], in_port, p[i]);
    p[i].svc_known = false;
    p[i].hint = 0;
    if (p[i].k == kind::transit) ct.prefetch(p[i].hash);
  }
  // Stages 2 and 3 roll together: packet i is prepared kAhead packets before its verdict,
  // which gives the entries prefetched in stage 2 time to arrive.
  constexpr uint16_t kAhead = 8;
  size_t inserts_ahead = 0;
  for (uint16_t i = 0; i < n + kAhead; ++i) {
    if (i < n && p[i].k == kind::transit) prepare(w, snap, p[i], inserts_ahead);
    if (i < kAhead) continue;
    uint16_t j = i - kAhead;
    switch (p[j].k) {
      case kind::dropped:
        free_drop(w, pkts[j], p[j].reason);
        break;
      case kind::arp:
        handle_arp(w, snap, pkts[j], in_port);
        break;
      case kind::local:
        handle_local(w, pkts[j], p[j]);
        break;
      case kind::transit:
        handle_transit(w, snap, pkts[j], p[j]);
        break;
      case kind::dns:
        handle_dns(w, snap, pkts[j], p[j], in_port);
        break;
      case kind::dns_tcp:
        to_dns_tcp(w, pkts[j]);
        break;
      case kind::fragment:  // take_fragment turned it into another kind
      case kind::taken:
        break;
    }
  }
}

void service_held(worker& w) {
  uint16_t kept = 0;
  for (uint16_t i = 0; i < w.n_held; ++i) {
    held_packet& h = w.held[i];
    auto* eth = rte_pktmbuf_mtod(h.m, rte_ether_hdr*);
    neighbor_table::entry* ne = w.dp->neighbors->get(h.port, h.next_hop, false);
    if (ne && w.dp->neighbors->resolve(*ne, w.now, eth->dst_addr)) {
      enqueue(w, h.port, h.m);
    } else if (w.now > h.deadline) {
      free_drop(w, h.m, drop::neighbor_timeout);
    } else {
      w.held[kept++] = h;
    }
  }
  w.n_held = kept;
}

void flush_tx(worker& w) {
  for (uint16_t port = 0; port < w.dp->ports.size(); ++port) flush_port(w, port);
}

}  // namespace ferry::dp
