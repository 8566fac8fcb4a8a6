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
#include "sctp.hpp"

namespace ferry::dp {
namespace {

constexpr uint8_t kTcpFin = RTE_TCP_FIN_FLAG, kTcpSyn = RTE_TCP_SYN_FLAG,
                  kTcpRst = RTE_TCP_RST_FLAG, kTcpAck = RTE_TCP_ACK_FLAG;
constexpr uint16_t kEthHdr = sizeof(rte_ether_hdr);

// icmp_error: an ICMP error about a flow (quote checked); icmp: other ICMP to a non-node
// address (echo to a service address, maybe answered). fragment: parse found an IPv4
// fragment (process_burst hands it to reassembly); taken: the reassembly table kept it, or
// dropped it and counted why.
enum class kind : uint8_t {
  dropped,
  arp,
  local,
  transit,
  dns,
  dns_tcp,
  icmp_error,
  icmp,
  fragment,
  taken
};

// What parsing learned about one packet; lives for one burst.
struct parsed {
  kind k;
  drop reason;
  bool local;  // addressed to the node (a masqueraded reply, or nothing of ours)
  uint8_t tcp_flags;
  bool crc_stale;        // SCTP: a port was rewritten, the CRC32c is to be summed again
  uint16_t sctp_chunks;  // SCTP: the chunk types of the packet (sctp::bit), for conntrack
  uint16_t l4_len;       // bytes of L4 header + payload
  uint16_t in_port;      // where it came in: the address ferry's own ICMP errors come from
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
bool refuse_new(const dataplane& dp, const snapshot* snap, const parsed& p, bool ports,
                drop& reason) {
  return refuse_new(dp, snap, p.key.src_ip, p.key.dst_ip, ports ? p.key.src_port : 1,
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

bool is_echo_request(const parsed& p) {
  if (p.l4_len < sizeof(rte_icmp_hdr)) return false;
  const auto* icmp = reinterpret_cast<const rte_icmp_hdr*>(p.l4);
  return icmp->icmp_type == RTE_IP_ICMP_ECHO_REQUEST && icmp->icmp_code == 0;
}

// Answers an echo request in place, from the address it was sent to (a node address, or a
// service address with [icmp] answer_service_echo), within the worker's echo rate.
void answer_echo(worker& w, rte_mbuf* m, const parsed& p) {
  if (!w.echo_bucket.take(w.dp->echo_rate, w.dp->tsc_hz, w.now)) {
    return free_drop(w, m, drop::icmp_echo_rate_limited);
  }
  rte_ipv4_hdr* ip = p.ip;
  auto* icmp = reinterpret_cast<rte_icmp_hdr*>(p.l4);
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
  send_ip(w, m, rte_be_to_cpu_32(ip->dst_addr));
}

void handle_local(worker& w, rte_mbuf* m, const parsed& p) {
  if (p.ip->next_proto_id == kProtoIcmp && is_echo_request(p)) return answer_echo(w, m, p);
  free_drop(w, m, drop::local_unhandled);
}

// ICMP to an address that is not the node's: a service address answers echo only when
// configured to (Kubernetes says ClusterIPs do not answer ping); anything else is not ours.
// The ICMP paths are rare: kept cold and out of line, so process_burst stays as compact as
// the TCP/UDP path needs.
[[gnu::cold, gnu::noinline]] void handle_icmp(worker& w, const snapshot* snap, rte_mbuf* m,
                                              const parsed& p) {
  if (!snap || !snap->is_service_address(p.key.dst_ip)) {
    return free_drop(w, m, drop::l4_unsupported);
  }
  if (!w.dp->answer_service_echo || !is_echo_request(p)) {
    return free_drop(w, m, drop::icmp_to_service);
  }
  answer_echo(w, m, p);
}

void handle_transit(worker& w, const snapshot* snap, rte_mbuf* m, parsed& p);
void to_dns_tcp(worker& w, rte_mbuf* m);

// Whether a DNS answer to src is over [dns] rate_limit (response rate limiting, as NSD's
// and Knot's RRL: a token bucket per source prefix, so that spoofed queries cannot make
// ferry reflect large answers at a victim). Exempt sources are neither limited nor charged
// (the list is short, usually empty).
bool dns_over_rate(worker& w, uint32_t src) {
  const dataplane& dp = *w.dp;
  return w.dns_limiter.enabled() && !dataplane::in(dp.dns_rrl_exempt, src) &&
         !w.dns_limiter.admit(src & dp.dns_rrl_mask, w.now);
}

// A DNS query over UDP to a DNS address: answered in place, from the snapshot's zone (or
// sent on to an upstream resolver when the name is outside it).
void handle_dns(worker& w, const snapshot* snap, rte_mbuf* m, parsed& p, uint16_t in_port) {
  auto* uh = reinterpret_cast<rte_udp_hdr*>(p.l4);
  const uint16_t udp_len = rte_be_to_cpu_16(uh->dgram_len);
  if (m->nb_segs != 1 || udp_len < sizeof(rte_udp_hdr) || udp_len > p.l4_len) {
    return free_drop(w, m, drop::dns_malformed);
  }
  const dataplane& dp = *w.dp;
  rte_ipv4_hdr* ip = p.ip;
  uint8_t* msg = p.l4 + sizeof(rte_udp_hdr);
  size_t len = udp_len - sizeof(rte_udp_hdr);
  if (dns_over_rate(w, p.key.src_ip)) [[unlikely]] {
    // Over the rate: dropped before any lookup, except every slip-th, which is answered
    // with TC and the question only (no bigger than the query), so a real client behind
    // the prefix retries over TCP, which a spoofed source cannot do.
    if (!dp.dns_rrl_slip || ++w.dns_over % dp.dns_rrl_slip || !(len = dns::slip(msg, len))) {
      return free_drop(w, m, drop::dns_rate_limited);
    }
    w.counters.dns_slipped.add();
  } else {
    // The answer leaves with a plain 20-byte IP header (below), whatever options came.
    const size_t cap = static_cast<uint8_t*>(m->buf_addr) + m->buf_len - msg;
    const size_t max_udp = dp.ports[in_port].mtu - sizeof(rte_ipv4_hdr) - sizeof(rte_udp_hdr);
    const service_port_entry* upstream = snap ? snap->dns_upstream.get() : nullptr;
    const bool forward = upstream && (dp.dns_forward_sources.empty() ||
                                      dataplane::in(dp.dns_forward_sources, p.key.src_ip));
    // A CNAME chain that leaves the zone needs an upstream's answer: the DNS thread waits for
    // it (dns_resolver.hpp), reached through the TAP port like TCP.
    const bool resolver = forward && dp.dns_tcp_port != dataplane::kNoPort;
    const dns::answer_result r =
        dns::answer(snap ? snap->dns.get() : nullptr, msg, len, cap, true, max_udp, forward,
                    resolver ? dns::chase::hand_off : dns::chase::stop);
    w.counters.dns[static_cast<size_t>(r.how)].add();
    if (r.how == dns::outcome::resolve) return to_dns_tcp(w, m);
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
    len = r.len;
  }
  // ferry originates the answer: the query's IP options (a source route, say) are not sent
  // back, which would let the asker steer where the answer goes.
  if (rte_ipv4_hdr_len(ip) > sizeof(rte_ipv4_hdr)) [[unlikely]] {
    auto* to = reinterpret_cast<uint8_t*>(ip + 1);
    std::memmove(to, uh, sizeof(rte_udp_hdr) + len);
    uh = reinterpret_cast<rte_udp_hdr*>(to);
    ip->version_ihl = RTE_IPV4_VHL_DEF;
  }
  const auto l4_len = static_cast<uint16_t>(sizeof(rte_udp_hdr) + len);
  m->data_len = static_cast<uint16_t>(kEthHdr + sizeof(rte_ipv4_hdr) + l4_len);
  m->pkt_len = m->data_len;
  const rte_be32_t client = ip->src_addr;
  ip->src_addr = ip->dst_addr;
  ip->dst_addr = client;
  ip->total_length = rte_cpu_to_be_16(sizeof(rte_ipv4_hdr) + l4_len);
  ip->time_to_live = 64;
  ip->hdr_checksum = 0;
  ip->hdr_checksum = csum(ip, sizeof(rte_ipv4_hdr));
  const rte_be16_t client_port = uh->src_port;
  uh->src_port = uh->dst_port;
  uh->dst_port = client_port;
  uh->dgram_len = rte_cpu_to_be_16(l4_len);
  uh->dgram_cksum = 0;
  uh->dgram_cksum = rte_ipv4_udptcp_cksum(ip, uh);
  send_ip(w, m, p.key.src_ip);
}

// Every ICMP error ferry originates: about the packet p as it arrived (its IP header and the
// first 8 bytes of its payload, RFC 792), from `from` (network order) back to its source.
// `rest` is the header's second word (frag needed: the next-hop MTU). It costs a token of
// `bucket` (each kind of error has its own rate); without one, `limited` is counted. The
// caller counts and frees the offending packet.
[[gnu::cold, gnu::noinline]] void send_icmp_error(worker& w, const parsed& p, uint8_t type,
                                                  uint8_t code, rte_be32_t rest, rte_be32_t from,
                                                  token_bucket& bucket, uint32_t rate, drop limited,
                                                  counter& sent) {
  dataplane& dp = *w.dp;
  if (!bucket.take(rate, dp.tsc_hz, w.now)) return w.counters.count(limited);
  rte_mbuf* r = rte_pktmbuf_alloc(dp.pool);
  if (!r) return w.counters.count(drop::mbuf_exhausted);
  uint16_t ihl = rte_ipv4_hdr_len(p.ip);
  uint16_t quote = ihl + std::min<uint16_t>(8, p.l4_len);
  uint16_t len = sizeof(rte_ipv4_hdr) + sizeof(rte_icmp_hdr) + quote;
  auto* eth = reinterpret_cast<rte_ether_hdr*>(rte_pktmbuf_append(r, kEthHdr + len));
  if (!eth) return free_drop(w, r, drop::mbuf_exhausted);
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(eth + 1);
  auto* icmp = reinterpret_cast<rte_icmp_hdr*>(ip + 1);
  std::memcpy(icmp + 1, p.ip, quote);
  std::memset(ip, 0, sizeof(*ip) + sizeof(*icmp));
  ip->version_ihl = RTE_IPV4_VHL_DEF;
  ip->total_length = rte_cpu_to_be_16(len);
  ip->time_to_live = 64;
  ip->next_proto_id = kProtoIcmp;
  ip->src_addr = from;
  ip->dst_addr = p.ip->src_addr;
  ip->hdr_checksum = csum(ip, sizeof(*ip));
  icmp->icmp_type = type;
  icmp->icmp_code = code;
  std::memcpy(&icmp->icmp_ident, &rest, 4);
  icmp->icmp_cksum = csum(icmp, sizeof(*icmp) + quote);
  sent.add();
  send_ip(w, r, p.key.src_ip);
}

// A service port without endpoints: answer ICMP port unreachable from the VIP (the
// client's socket then reports "connection refused"), rate limited per worker.
void reject(worker& w, rte_mbuf* m, const parsed& p) {
  w.counters.count(drop::no_endpoints);
  send_icmp_error(w, p, 3, 3, 0, p.ip->dst_addr, w.unreach_bucket, w.dp->icmp_rate,
                  drop::icmp_rate_limited, w.counters.icmp_unreach_sent);
  rte_pktmbuf_free(m);
}

// A packet ferry would forward with TTL 1 or 0: dropped, and its source told (time exceeded,
// from the address of the port it came in on, as a router does). Not for a frame sent to a
// link-layer broadcast or multicast address (RFC 1812 4.3.2.7); ICMP errors and fragments
// never get here (they are not forwarded this way), nor do martian sources (refused first).
[[gnu::cold, gnu::noinline]] void ttl_exceeded(worker& w, rte_mbuf* m, const parsed& p) {
  w.counters.count(drop::ip_ttl_exceeded);
  if (!rte_is_multicast_ether_addr(&rte_pktmbuf_mtod(m, rte_ether_hdr*)->dst_addr)) {
    send_icmp_error(w, p, 11, 0, 0, rte_cpu_to_be_32(w.dp->ports[p.in_port].addr), w.error_bucket,
                    w.dp->error_rate, drop::icmp_error_rate_limited,
                    w.counters.icmp_time_exceeded_sent);
  }
  rte_pktmbuf_free(m);
}

// Whether p (DF set) is larger than the MTU of the port towards dst; `mtu` gets that MTU.
// One compare for nearly every packet: only one over the smallest port MTU looks further.
// Packets without DF are left to send_ip.
bool too_big(const worker& w, const parsed& p, uint32_t dst, uint16_t& mtu) {
  const uint16_t total = rte_be_to_cpu_16(p.ip->total_length);
  if (total <= w.dp->min_mtu) [[likely]]
    return false;
  if (!(p.ip->fragment_offset & RTE_BE16(RTE_IPV4_HDR_DF_FLAG))) return false;
  const route_entry* r = w.dp->route(dst);
  if (!r) return false;  // send_ip counts no_route
  mtu = w.dp->ports[r->port].mtu;
  return total > mtu;
}

// DF set and too big for the way out: dropped, and the source told the next-hop MTU
// (fragmentation needed), quoting the packet as it sent it (called before any rewrite), from
// the address of the port it came in on. Path MTU discovery at the client then shrinks its
// packets for the service address.
[[gnu::cold, gnu::noinline]] void frag_needed(worker& w, rte_mbuf* m, const parsed& p,
                                              uint16_t mtu) {
  w.counters.count(drop::frag_needed);
  send_icmp_error(w, p, 3, 4, rte_cpu_to_be_32(mtu), rte_cpu_to_be_32(w.dp->ports[p.in_port].addr),
                  w.error_bucket, w.dp->error_rate, drop::icmp_error_rate_limited,
                  w.counters.icmp_frag_needed_sent);
  rte_pktmbuf_free(m);
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
  } else if (p.key.proto == kProtoSctp) {
    // No pseudo-header: only a port change touches the CRC32c, summed once after the last
    // rewrite (sctp_finish).
    if (port != new_port) p.crc_stale = true;
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

// SCTP: after a rewrite that changed a port, the CRC32c of the whole packet (every segment)
// again. parse checked the old one, so a corrupt packet is never made to look right.
void sctp_finish(rte_mbuf* m, parsed& p) {
  if (!p.crc_stale) return;
  const auto off = static_cast<uint32_t>(p.l4 - rte_pktmbuf_mtod(m, uint8_t*));
  sctp::store_crc(p.l4, sctp::crc32c(m, off, p.l4_len));
  p.crc_stale = false;
}

// An SCTP association's state after one of its packets, from its chunks (Linux conntrack's
// states, folded): ABORT or SHUTDOWN* either way -> SCTP_CLOSING; a COOKIE ACK -> established;
// while embryonic, DATA, SACK or HEARTBEAT* from the backend prove it has the association (an
// entry picked up mid-stream) -> established; a new INIT from the client on a closed entry
// reuses it (same ports, same backend). A spoofed INIT only ever gets an INIT ACK back, so its
// entry stays embryonic and counts against syn_max until it times out.
void sctp_track(worker& w, flow_entry& e, flow_dir dir, uint16_t chunks) {
  const flow_state s = e.state.load(std::memory_order_relaxed);
  flow_state next = s;
  if (chunks & sctp::kEnds) {
    next = flow_state::sctp_closing;
  } else if (s == flow_state::sctp_init && ((chunks & sctp::bit(sctp::cookie_ack)) ||
                                            (dir == flow_dir::reply && (chunks & sctp::kLive)))) {
    next = flow_state::sctp_established;
  } else if (s == flow_state::sctp_closing && dir == flow_dir::forward &&
             (chunks & sctp::bit(sctp::init))) {
    next = flow_state::sctp_init;
  }
  if (next != s) w.dp->ct->set_state(w.index, e, s, next);
}

// A flow's TCP state after one of its packets. RST (either way) -> RESET, FIN -> CLOSING.
// The handshake as Linux conntrack follows it: the backend's SYN-ACK -> SYN_RECV, the
// client's ACK -> ESTABLISHED (so a spoofed SYN, whose source never ACKs, stays embryonic
// and counts against syn_max until it times out); any other ACK from the backend ->
// ESTABLISHED (it only sends one on a connection it has). A new SYN from the client on a
// closed entry reuses it (same flow, same backend). A reset entry the backend goes on
// answering (ACK, no RST) comes back to ESTABLISHED: the RST may have been lost on its way
// to the backend, or a forged one may have guessed within the window.
// Blind RSTs: each direction's sequence end is tracked (conntrack::tcp_advance), and a RST
// counts only within [conntrack] tcp_rst_window of its sender's end; as Linux conntrack
// checks, a RST from the backend to the client's SYN (SYN_SENT, the backend's side not known
// yet) must acknowledge that SYN exactly.
// tcp_rst_fits() says whether a RST fits; the caller drops one that does not
// (tcp_rst_out_of_window) before anything else is done with it.
bool tcp_rst_fits(const worker& w, const flow_entry& e, flow_dir dir, const parsed& p) {
  const auto* th = reinterpret_cast<const rte_tcp_hdr*>(p.l4);
  if (dir == flow_dir::reply && !conntrack::tcp_end(e, dir) &&
      e.state.load(std::memory_order_relaxed) == flow_state::tcp_syn) {
    // The backend refuses the client's SYN: RFC 793 gives that RST seq 0 and the SYN's
    // seq + 1 as its ACK.
    const uint32_t syn_end = conntrack::tcp_end(e, flow_dir::forward);
    return (p.tcp_flags & kTcpAck) && (!syn_end || rte_be_to_cpu_32(th->recv_ack) == syn_end);
  }
  return w.dp->ct->tcp_rst_ok(e, dir, rte_be_to_cpu_32(th->sent_seq));
}

void tcp_track(worker& w, flow_entry& e, flow_dir dir, const parsed& p) {
  conntrack& ct = *w.dp->ct;
  const uint8_t flags = p.tcp_flags;
  const auto* th = reinterpret_cast<const rte_tcp_hdr*>(p.l4);
  const uint32_t seq = rte_be_to_cpu_32(th->sent_seq);
  const flow_state s = e.state.load(std::memory_order_relaxed);
  flow_state next = s;
  const uint8_t handshake = flags & (kTcpSyn | kTcpAck);
  if (flags & kTcpRst) {
    next = flow_state::tcp_reset;  // tcp_rst_fits() let it through
  } else {
    if (handshake == kTcpSyn && dir == flow_dir::forward &&
        (s == flow_state::tcp_syn || s == flow_state::tcp_closing || s == flow_state::tcp_reset)) {
      // A SYN (retransmitted, or reusing the port) restarts the client's side: its ISN.
      if (s == flow_state::tcp_syn) {
        conntrack::tcp_syn_seen(e, dir, seq + 1);
      } else {
        conntrack::tcp_restart(e, seq + 1);
      }
    } else if (handshake == (kTcpSyn | kTcpAck) && dir == flow_dir::reply &&
               s == flow_state::tcp_syn) {
      // The backend's ISN; its ACK names the SYN it answers, which settles the client's
      // side too (a SYN spoofed meanwhile does not get to move it).
      conntrack::tcp_syn_seen(e, dir, seq + 1);
      conntrack::tcp_syn_seen(e, flow_dir::forward, rte_be_to_cpu_32(th->recv_ack));
    } else {
      const uint32_t doff = (th->data_off >> 4) * 4u;
      ct.tcp_advance(e, dir, seq + (p.l4_len - doff) + !!(flags & kTcpSyn) + !!(flags & kTcpFin));
    }
    if (flags & kTcpFin) {
      if (s != flow_state::tcp_reset) next = flow_state::tcp_closing;
    } else if (dir == flow_dir::reply) {
      if (s == flow_state::tcp_syn && handshake == (kTcpSyn | kTcpAck)) {
        next = flow_state::tcp_syn_recv;
      } else if (handshake == kTcpAck && (embryonic_state(s) || s == flow_state::tcp_reset)) {
        next = flow_state::tcp_established;
      }
    } else if (s == flow_state::tcp_syn_recv && handshake == kTcpAck) {
      next = flow_state::tcp_established;  // the client's ACK ends the handshake
    } else if ((s == flow_state::tcp_closing || s == flow_state::tcp_reset) &&
               handshake == kTcpSyn) {
      next = flow_state::tcp_syn;  // the client reuses the port: same flow, same backend
    }
  }
  if (next != s) ct.set_state(w.index, e, s, next);
}

// Where a TCP packet's sender will be after it (seq + length + SYN + FIN), and where its ACK
// says the other side is (0 without ACK): the sequence ends a new entry starts from.
tcp_seq tcp_seq_of(const parsed& p, flow_dir dir) {
  const auto* th = reinterpret_cast<const rte_tcp_hdr*>(p.l4);
  const uint32_t doff = (th->data_off >> 4) * 4u;
  const uint32_t end = rte_be_to_cpu_32(th->sent_seq) + (p.l4_len - doff) +
                       !!(p.tcp_flags & kTcpSyn) + !!(p.tcp_flags & kTcpFin);
  const uint32_t ack = (p.tcp_flags & kTcpAck) ? rte_be_to_cpu_32(th->recv_ack) : 0;
  return dir == flow_dir::forward ? tcp_seq{end, ack} : tcp_seq{ack, end};
}

// Whether a flow entry already answers to backend -> peer:port (the reply key a new flow of p
// to nat's backend would have, the backend seeing peer:port as its client).
bool reply_key_taken(const worker& w, const parsed& p, const flow_nat& nat, uint32_t peer,
                     uint16_t port) {
  return w.dp->ct->contains({nat.backend_ip, peer, nat.backend_port, port, p.key.proto});
}

// A source port whose reply key (backend -> nat.snat_ip:port) is not in use, from this worker's
// slice of the ephemeral range (so two workers never race for one port), starting at a hash of the
// flow; 0 when the candidates tried are all taken (the slice is close to exhausted).
uint16_t pick_snat_port(const worker& w, const parsed& p, const flow_nat& nat) {
  constexpr uint32_t kFirst = 32768, kCount = 28232, kTries = 32;
  const uint32_t slice = kCount / w.dp->ct->workers();
  const uint32_t first = kFirst + w.index * slice;
  for (uint32_t i = 0; i < kTries; ++i) {
    auto port = static_cast<uint16_t>(first + (p.hash + i) % slice);
    if (!reply_key_taken(w, p, nat, nat.snat_ip, port)) return port;
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

// Payload signature filter: what the match callback needs about the packet.
struct filter_scan {
  const filter_set* fs;
  counter* hits;
  uint32_t dst;
  uint16_t dport;
  uint8_t proto;
  uint32_t service;
  bool drop;
};

int on_filter_match(unsigned id, unsigned long long /*from*/, unsigned long long to,
                    unsigned /*flags*/, void* ctx) {
  auto& c = *static_cast<filter_scan*>(ctx);
  const filter_rule_entry& r = c.fs->rules[id];
  // The database scans max_depth bytes; this rule looks at its own depth only. Matches come
  // in order of their end, and SINGLEMATCH reports a rule once: its first end decides.
  if (to > r.depth || !r.applies(c.dst, c.proto, c.dport, c.service)) return 0;
  c.hits[r.slot].add();
  if (!r.drop) return 0;
  c.drop = true;
  return 1;  // stop scanning: the packet is dropped whatever else matches
}

// True when a drop rule matches the packet's payload (forward direction only: the client's
// bytes; replies are not scanned). The L4 payload of the first segment is scanned, up to the
// largest depth of any rule; the packet's key is still the client's (before any rewrite).
[[gnu::noinline]] bool filter_drops(worker& w, const filter_set& fs, const rte_mbuf* m,
                                    const parsed& p, uint32_t service) {
  if (!fs.may_match(p.key.dst_ip, p.key.proto, p.key.dst_port, service)) return false;
  const uint32_t hdr = p.key.proto == kProtoTcp
                           ? (reinterpret_cast<const rte_tcp_hdr*>(p.l4)->data_off >> 4) * 4u
                       : p.key.proto == kProtoSctp ? uint32_t{sctp::kHeader}
                                                   : uint32_t{sizeof(rte_udp_hdr)};
  const uint8_t* payload = p.l4 + hdr;
  const auto* seg_end = rte_pktmbuf_mtod(m, const uint8_t*) + m->data_len;
  const uint8_t* l4_end = p.l4 + p.l4_len;
  const uint8_t* end = std::min(seg_end, l4_end);
  if (payload >= end) return false;
  const auto len = std::min<uint32_t>(static_cast<uint32_t>(end - payload), fs.max_depth);
  if (w.index >= fs.db->scratch.size()) return false;
  filter_scan ctx{&fs,  w.counters.filter_hits, p.key.dst_ip, p.key.dst_port, p.key.proto, service,
                  false};
  hs_scan(fs.db->db, reinterpret_cast<const char*>(payload), len, 0, fs.db->scratch[w.index],
          on_filter_match, &ctx);
  return ctx.drop;
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

// A backend answers a TCP connection that has no entry (ferryd restarted, or its SYN was
// let through statelessly under a SYN flood): an ACK without SYN, RST or FIN proves the
// connection is established on the backend, so the entry is made now, from the answer, and
// the flow keeps its backend from here on. Not for a SYN-ACK (a spoofed SYN gets one too),
// not when the backend serves more than one frontend (which one the client used is
// unknown), and never masqueraded: such an answer goes to a node address (handle_local).
void adopt_from_reply(worker& w, const snapshot* snap, const parsed& p,
                      const service_port_entry& s) {
  if (p.key.proto != kProtoTcp ||
      (p.tcp_flags & (kTcpAck | kTcpSyn | kTcpRst | kTcpFin)) != kTcpAck ||
      snap->shared_backends.find(service_key(p.key.src_ip, p.key.proto, p.key.src_port))) {
    return;
  }
  const flow_key fwd{p.key.dst_ip, s.vip, p.key.dst_port, s.port, p.key.proto};
  if (w.dp->ct->insert(w.ct, fwd, {p.key.src_ip, p.key.src_port}, s.id, flow_state::tcp_established,
                       w.now, tcp_seq_of(p, flow_dir::reply))) {
    w.counters.flows_created.add();
    w.counters.flows_picked_up.add();
  } else {
    w.counters.flows_table_full.add();
  }
}

void handle_transit(worker& w, const snapshot* snap, rte_mbuf* m, parsed& p) {
  conntrack& ct = *w.dp->ct;
  uint16_t mtu;

  flow_match hit = ct.lookup(p.key, p.hash, p.hint);
  if (hit.entry) {
    flow_entry& e = *hit.entry;
    if (p.ip->time_to_live <= 1) [[unlikely]]
      return ttl_exceeded(w, m, p);
    const uint32_t to = hit.dir == flow_dir::forward ? e.backend_ip
                        : e.snat_ip                  ? e.client_ip
                                                     : p.key.dst_ip;
    if (too_big(w, p, to, mtu)) [[unlikely]]
      return frag_needed(w, m, p, mtu);
    if (e.owner != w.index) w.counters.flows_foreign.add();
    if (p.key.proto == kProtoTcp && (p.tcp_flags & kTcpRst) && !tcp_rst_fits(w, e, hit.dir, p))
        [[unlikely]] {
      return free_drop(w, m, drop::tcp_rst_out_of_window);
    }
    if (hit.dir == flow_dir::forward) {
      if (snap && snap->filters && filter_drops(w, *snap->filters, m, p, e.service_id)) {
        return free_drop(w, m, drop::filter_drop);
      }
      rewrite(p, true, e.backend_ip, e.backend_port);
      if (e.snat_ip) rewrite(p, false, e.snat_ip, e.snat_port);
    } else {
      rewrite(p, false, e.vip, e.vport);
      if (e.snat_ip) rewrite(p, true, e.client_ip, e.client_port);
    }
    if (p.key.proto == kProtoTcp) tcp_track(w, e, hit.dir, p);
    if (p.key.proto == kProtoSctp) {
      sctp_finish(m, p);
      sctp_track(w, e, hit.dir, p.sctp_chunks);
    }
    ct.touch(e, w.now);
    count_service(w, e.service_id, m, false);
    set_ttl(p.ip, p.ip->time_to_live - 1);
    return send_ip(w, m, rte_be_to_cpu_32(p.ip->dst_addr));
  }

  if (drop why; refuse_new(*w.dp, snap, p, true, why)) return free_drop(w, m, why);
  if (!p.svc_known) p.svc = find_service(snap, p);
  if (p.svc) {
    const service_port_entry& s = *p.svc;
    if (!s.allows(p.key.src_ip)) return free_drop(w, m, drop::source_denied);
    if (p.ip->time_to_live <= 1) [[unlikely]]
      return ttl_exceeded(w, m, p);
    if (snap->filters && filter_drops(w, *snap->filters, m, p, s.id)) {
      return free_drop(w, m, drop::filter_drop);
    }
    // Per-source new-flow limit ([limits]); an established flow matched above, never here.
    if (w.limiter.enabled() && !w.limiter.admit(p.key.src_ip, w.now)) {
      return free_drop(w, m, drop::source_rate_limited);
    }
    if (!s.has_active) {
      return s.drop_empty ? free_drop(w, m, drop::no_local_endpoints) : reject(w, m, p);
    }
    const backend& b = s.affinity_timeout ? sticky_backend(w, s, p) : s.pick(p.hash);
    if (too_big(w, p, b.ip, mtu)) [[unlikely]]
      return frag_needed(w, m, p, mtu);
    flow_nat nat{b.ip, b.port};
    // External traffic under policy Cluster leaves with a node address when its backend is
    // on another node (so the answer comes back through this node); any flow whose client
    // and backend share an on-link subnet is masqueraded too (hairpin).
    const bool masquerade = masquerade_for(*w.dp, s, b, p.key.src_ip, nat.snat_ip);
    if (masquerade && !(nat.snat_port = pick_snat_port(w, p, nat))) {
      return free_drop(w, m, drop::snat_exhausted);
    }
    // TCP abuse: only a SYN (or a masqueraded mid-stream packet, which has no stateless way
    // through) makes an entry, and it starts embryonic (SYN_SENT), capped per worker. Other
    // TCP without an entry (ACKs after a restart, or a flood of them) goes by Maglev, the
    // backend the entry would have named, and makes none: the backend's answer does (see the
    // reply path below), which spoofed packets never get. A RST makes no entry either.
    const bool tcp = p.key.proto == kProtoTcp;
    const bool syn = tcp && (p.tcp_flags & (kTcpSyn | kTcpAck | kTcpRst)) == kTcpSyn;
    // SCTP the same way: an INIT opens an association (embryonic, capped with the SYNs); other
    // chunks without an entry go by Maglev; an ABORT or SHUTDOWN* makes no entry.
    const bool is_sctp = p.key.proto == kProtoSctp;
    const bool init = is_sctp && (p.sctp_chunks & sctp::bit(sctp::init));
    const bool handshake = tcp || is_sctp, opens = syn || init;
    const bool ends = tcp ? (p.tcp_flags & kTcpRst) != 0 : is_sctp && (p.sctp_chunks & sctp::kEnds);
    const flow_state state = tcp       ? flow_state::tcp_syn
                             : is_sctp ? flow_state::sctp_init
                                       : flow_state::udp;
    bool track = !handshake || opens || (masquerade && !ends);
    if (track && handshake && !ct.syn_admit(w.ct)) {
      // The worker's embryonic entries are at syn_max (a SYN flood): established entries
      // stay, and the SYN goes on statelessly; a masqueraded one cannot.
      if (masquerade) return free_drop(w, m, drop::syn_flood);
      w.counters.syn_stateless.add();
      track = false;
    } else if (handshake && !track && !ends) {
      w.counters.ack_stateless.add();
    }
    // The client reused its source port for another frontend of the same backend: the reply
    // key (backend -> client:port) is still another flow's, whose entry would take the new
    // flow's replies. As Linux conntrack resolves such a clash, the source port is remapped
    // and the client's address kept.
    if (track && !masquerade && reply_key_taken(w, p, nat, p.key.src_ip, p.key.src_port)) {
      nat.snat_ip = p.key.src_ip;
      if (!(nat.snat_port = pick_snat_port(w, p, nat))) {
        return free_drop(w, m, drop::snat_exhausted);
      }
      w.counters.port_remapped.add();
    }
    const bool translate_src = nat.snat_ip != 0;
    if (track && ct.insert(w.ct, p.key, nat, s.id, state, w.now,
                           tcp ? tcp_seq_of(p, flow_dir::forward) : tcp_seq{})) {
      w.counters.flows_created.add();
      if (masquerade) w.counters.snat_flows.add();
      if (handshake && !opens) w.counters.flows_picked_up.add();
    } else if (translate_src) {
      // Without an entry the reply could not be turned back: nothing to forward.
      return free_drop(w, m, drop::snat_failed);
    } else {
      if (track) w.counters.flows_table_full.add();
      w.counters.stateless_forward.add();
    }
    count_service(w, s.id, m, !handshake || opens);
    rewrite(p, true, b.ip, b.port);
    if (translate_src) rewrite(p, false, nat.snat_ip, nat.snat_port);
    sctp_finish(m, p);
    set_ttl(p.ip, p.ip->time_to_live - 1);
    return send_ip(w, m, b.ip);
  }
  if (p.local) return handle_local(w, m, p);

  // A backend's reply with no entry (table was full, or ferryd restarted): un-NAT it from
  // the backend table so the client still sees the service address.
  const service_port_entry* const* from =
      snap ? snap->backends.find(service_key(p.key.src_ip, p.key.proto, p.key.src_port)) : nullptr;
  if (from) {
    if (p.ip->time_to_live <= 1) [[unlikely]]
      return ttl_exceeded(w, m, p);
    if (too_big(w, p, p.key.dst_ip, mtu)) [[unlikely]]
      return frag_needed(w, m, p, mtu);
    w.counters.stateless_reply.add();
    adopt_from_reply(w, snap, p, **from);
    count_service(w, (*from)->id, m, false);
    rewrite(p, false, (*from)->vip, (*from)->port);
    sctp_finish(m, p);
    set_ttl(p.ip, p.ip->time_to_live - 1);
    return send_ip(w, m, p.key.dst_ip);
  }
  // An upstream resolver answering the DNS thread (it asks from a DNS address for the
  // ExternalName targets it resolves, dns_resolver.hpp): back through the TAP port.
  if (p.key.proto == kProtoUdp && snap && snap->dns_upstream &&
      w.dp->dns_tcp_port != dataplane::kNoPort && w.dp->is_dns(p.key.dst_ip) &&
      snap->dns_upstream->active(p.key.src_ip, p.key.src_port)) {
    return to_dns_tcp(w, m);
  }
  free_drop(w, m, drop::not_service);
}

// Rewrites an address and port (source or destination) of the packet an ICMP error quotes:
// its header checksum and, where the quote holds it, its L4 checksum follow (UDP: always,
// in the first 8 bytes; 0 stays 0. TCP: only when the quote reaches it). The quoted L4
// checksum covers the whole original segment, which the incremental update keeps right.
void rewrite_quoted(rte_ipv4_hdr* ip, uint8_t* l4, uint16_t l4_len, bool dst, uint32_t ip_host,
                    uint16_t port_host) {
  const uint32_t new_ip = rte_cpu_to_be_32(ip_host);
  const uint16_t new_port = rte_cpu_to_be_16(port_host);
  uint8_t* addr_at = reinterpret_cast<uint8_t*>(ip) + (dst ? 16 : 12);
  uint8_t* port_at = l4 + (dst ? 2 : 0);
  uint32_t addr;
  uint16_t port;
  std::memcpy(&addr, addr_at, 4);
  std::memcpy(&port, port_at, 2);
  ip->hdr_checksum = csum_update32(ip->hdr_checksum, addr, new_ip);
  // SCTP's CRC32c covers the whole packet, which a quote rarely holds: left as it is (as
  // Linux's NAT leaves it).
  const size_t check_at = ip->next_proto_id == kProtoTcp ? 16 : 6;
  if (ip->next_proto_id != kProtoSctp && l4_len >= check_at + 2) {
    uint16_t c;
    std::memcpy(&c, l4 + check_at, 2);
    if (ip->next_proto_id == kProtoTcp || c != 0) {
      c = csum_update16(csum_update32(c, addr, new_ip), port, new_port);
      if (ip->next_proto_id == kProtoUdp && c == 0) c = 0xffff;
      std::memcpy(l4 + check_at, &c, 2);
    }
  }
  std::memcpy(addr_at, &new_ip, 4);
  std::memcpy(port_at, &new_port, 2);
}

// Sets the outer source or destination address of a packet (its header checksum follows).
void set_address(rte_ipv4_hdr* ip, bool dst, uint32_t ip_host) {
  const uint32_t v = rte_cpu_to_be_32(ip_host);
  uint8_t* at = reinterpret_cast<uint8_t*>(ip) + (dst ? 16 : 12);
  uint32_t old;
  std::memcpy(&old, at, 4);
  ip->hdr_checksum = csum_update32(ip->hdr_checksum, old, v);
  std::memcpy(at, &v, 4);
}

// An ICMP error (destination unreachable, time exceeded, parameter problem) about a packet
// of a NATed flow, translated back like Linux's nf_nat_icmp_reply_translation: the quoted
// packet went the other way, so its reverse is the flow's key in the direction the error
// travels (parse checked the quote).
// - Reverse is the reply key: the error is about a client's packet as the backend got it
//   (client|snat -> backend), from the pod or a router towards it. The quote becomes what the
//   client sent (-> VIP:port, from client:port); the error goes to the client, and comes from
//   the VIP when the pod itself sent it (a router keeps its own address).
// - Reverse is the forward key: the error is about a reply as the client got it
//   (VIP -> client). The quote becomes what the backend sent (backend -> client|snat); the
//   error goes to the backend (from the node address the backend knows when masqueraded).
[[gnu::cold, gnu::noinline]] void handle_icmp_error(worker& w, rte_mbuf* m, parsed& p) {
  auto* icmp = reinterpret_cast<rte_icmp_hdr*>(p.l4);
  auto* in_ip = reinterpret_cast<rte_ipv4_hdr*>(icmp + 1);
  const uint16_t in_ihl = rte_ipv4_hdr_len(in_ip);
  uint8_t* in_l4 = reinterpret_cast<uint8_t*>(in_ip) + in_ihl;
  const auto in_l4_len = static_cast<uint16_t>(p.l4_len - sizeof(rte_icmp_hdr) - in_ihl);
  uint16_t ports[2];
  std::memcpy(ports, in_l4, 4);
  const flow_key k{rte_be_to_cpu_32(in_ip->dst_addr), rte_be_to_cpu_32(in_ip->src_addr),
                   rte_be_to_cpu_16(ports[1]), rte_be_to_cpu_16(ports[0]), in_ip->next_proto_id};
  const flow_match hit = w.dp->ct->lookup(k, conntrack::hash(k));
  if (!hit.entry) return free_drop(w, m, drop::icmp_no_flow);
  // Forwarded on, never answered with an error of ours.
  if (p.ip->time_to_live <= 1) return free_drop(w, m, drop::ip_ttl_exceeded);
  const flow_entry& e = *hit.entry;
  const uint32_t outer_src = p.key.src_ip;
  if (hit.dir == flow_dir::reply) {
    rewrite_quoted(in_ip, in_l4, in_l4_len, true, e.vip, e.vport);
    if (e.snat_ip) {
      rewrite_quoted(in_ip, in_l4, in_l4_len, false, e.client_ip, e.client_port);
      set_address(p.ip, true, e.client_ip);
    }
    if (outer_src == e.backend_ip) set_address(p.ip, false, e.vip);
  } else {
    rewrite_quoted(in_ip, in_l4, in_l4_len, false, e.backend_ip, e.backend_port);
    if (e.snat_ip) {
      rewrite_quoted(in_ip, in_l4, in_l4_len, true, e.snat_ip, e.snat_port);
      if (outer_src == e.client_ip) set_address(p.ip, false, e.snat_ip);
    }
    set_address(p.ip, true, e.backend_ip);
  }
  // The quote changed under the ICMP checksum, which covers the whole message: summed again
  // (a slow path; parse checked the old sum, so a corrupt error is not made to look right).
  icmp->icmp_cksum = 0;
  icmp->icmp_cksum = csum(icmp, p.l4_len);
  set_ttl(p.ip, p.ip->time_to_live - 1);
  w.counters.icmp_errors_translated.add();
  send_ip(w, m, rte_be_to_cpu_32(p.ip->dst_addr));
}

// ICMP, after the IP checks: an error about a flow becomes kind::icmp_error once its quote
// is known to be whole (an IPv4 header, at least 8 bytes of TCP/UDP after it, the whole
// message in the first segment under a right checksum); other ICMP to a node address is
// local; the rest is kind::icmp.
[[gnu::cold, gnu::noinline]] void parse_icmp(worker& w, const snapshot* snap, parsed& p,
                                             uint32_t in_first_seg) {
  if (refuse_new(*w.dp, snap, p, false, p.reason)) return;
  // Every handler reads the 8-byte header in place: it must be in the first segment.
  if (p.l4_len >= sizeof(rte_icmp_hdr) && in_first_seg < sizeof(rte_icmp_hdr)) {
    p.reason = drop::l4_truncated;
    return;
  }
  const uint8_t type = p.l4_len >= sizeof(rte_icmp_hdr) ? p.l4[0] : 0xff;
  // Destination unreachable, time exceeded, parameter problem.
  if (type != 3 && type != 11 && type != 12) {
    p.k = p.local ? kind::local : kind::icmp;
    return;
  }
  p.reason = drop::icmp_malformed;
  constexpr uint32_t kMinQuote = sizeof(rte_icmp_hdr) + sizeof(rte_ipv4_hdr) + 8;
  if (p.l4_len < kMinQuote || in_first_seg < p.l4_len || csum(p.l4, p.l4_len) != 0) return;
  const auto* in_ip = reinterpret_cast<const rte_ipv4_hdr*>(p.l4 + sizeof(rte_icmp_hdr));
  const uint16_t in_ihl = rte_ipv4_hdr_len(in_ip);
  if ((in_ip->version_ihl >> 4) != 4 || in_ihl < sizeof(rte_ipv4_hdr) ||
      p.l4_len < sizeof(rte_icmp_hdr) + in_ihl + 8u) {
    return;
  }
  // Never about an ICMP error (nor any ICMP: ferry tracks no ICMP flows), and a later
  // fragment quotes no ports.
  p.reason = drop::icmp_no_flow;
  if ((in_ip->next_proto_id != kProtoTcp && in_ip->next_proto_id != kProtoUdp &&
       in_ip->next_proto_id != kProtoSctp) ||
      (in_ip->fragment_offset & RTE_BE16(RTE_IPV4_HDR_OFFSET_MASK))) {
    return;
  }
  p.k = kind::icmp_error;
}

// Validates headers without reading past the first segment; fills p.
void parse(worker& w, const snapshot* snap, rte_mbuf* m, uint16_t in_port, parsed& p) {
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
    } else if (!refuse_new(*w.dp, snap, rte_be_to_cpu_32(ip->src_addr),
                           rte_be_to_cpu_32(ip->dst_addr), 1, 1, p.reason)) {
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
  p.crc_stale = false;
  p.sctp_chunks = 0;
  p.local = w.dp->is_local(p.key.dst_ip);
  p.in_port = in_port;
  if (p.key.proto == kProtoIcmp) return parse_icmp(w, snap, p, in_first_seg);
  if (p.local && p.key.proto != kProtoTcp && p.key.proto != kProtoUdp &&
      p.key.proto != kProtoSctp) {
    p.k = refuse_new(*w.dp, snap, p, false, p.reason) ? kind::dropped : kind::local;
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
  } else if (p.key.proto == kProtoSctp) {
    // The common header and the first chunk's header in the first segment; at least one
    // chunk, none shorter than its header; the CRC32c right (unless the NIC checked it), as
    // Linux conntrack checks it: a rewrite of the ports sums it again, which must not make a
    // corrupt packet look whole.
    if (p.l4_len < sctp::kHeader + sctp::kChunkHeader ||
        in_first_seg < sctp::kHeader + sctp::kChunkHeader) {
      p.reason = drop::l4_truncated;
      return;
    }
    if (!sctp::chunk_types(p.l4, std::min<uint32_t>(in_first_seg, p.l4_len), p.sctp_chunks)) {
      p.reason = drop::l4_bad_length;
      return;
    }
    if (!(ol & RTE_MBUF_F_RX_L4_CKSUM_GOOD) &&
        sctp::crc32c(m, kEthHdr + ihl, p.l4_len) != sctp::stored_crc(p.l4)) {
      p.reason = drop::l4_bad_checksum;
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
  if (p.key.dst_port == dns::kPort && p.key.proto != kProtoSctp && w.dp->is_dns(p.key.dst_ip)) {
    if (refuse_new(*w.dp, snap, p, true, p.reason)) return;
    p.k = p.key.proto == kProtoUdp ? kind::dns : kind::dns_tcp;
    return;
  }
  p.hash = conntrack::hash(p.key);
  p.k = kind::transit;
}

// A fragment parse found: into the reassembly table. When it completes a datagram, the whole
// datagram (chained mbufs: parse reads only the first segment, where the L4 header is, and
// checks lengths against pkt_len) replaces it in the burst and is parsed again.
void take_fragment(worker& w, const snapshot* snap, rte_mbuf*& m, uint16_t in_port, parsed& p) {
  rte_mbuf* whole = reassemble(w, m, p.ip, rte_ipv4_hdr_len(p.ip));
  if (!whole) {
    p.k = kind::taken;
    return;
  }
  m = whole;
  parse(w, snap, m, in_port, p);
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
    parse(w, snap, pkts[i], in_port, p[i]);
    if (p[i].k == kind::fragment) [[unlikely]]
      take_fragment(w, snap, pkts[i], in_port, p[i]);
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
      case kind::icmp_error:
        handle_icmp_error(w, pkts[j], p[j]);
        break;
      case kind::icmp:
        handle_icmp(w, snap, pkts[j], p[j]);
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
