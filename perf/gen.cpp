// ferry-perf gen: a DPDK traffic generator for ferryd, and for dpdk-testpmd on the same link
// so ferryd can be reported as a fraction of the machine's I/O ceiling.
//
//   gen port A (clients)  <-- memif (or any DPDK port) -->  DUT eth0  198.18.0.254/24
//   gen port B (backends) <-- memif (or any DPDK port) -->  DUT eth1  198.18.1.254/24
//
// gen plays every client (198.18.128.0/17, behind the gateway 198.18.0.1 on A) and every
// backend pod (198.18.1.1 .. 198.18.1.K, port 9376, on-link on B). It answers ARP for the
// gateway on A and for each backend on B, and learns the DUT's MACs by asking for
// 198.18.0.254 and 198.18.1.254 (the requests from each backend address also teach ferryd
// its neighbours before traffic starts). Services: TCP 198.19.0.10:80, UDP 198.19.0.20:53.
//
// A client packet goes out on A to the VIP; on B it must arrive DNATed: destination one of
// the backends, port 9376, source the client's ip:port unchanged, the flow on the backend
// it had before, checksums right. gen answers it there as the pod would (addresses and ports
// swapped; TCP: seq/ack advanced) and ferryd must un-NAT the answer back to A: source
// VIP:port, destination the original client ip:port. Anything else is a failure, counted by
// kind ("misdirected" sums the address kinds), never folded into a rate. With --target
// testpmd (io forwarding, no NAT) B expects the packet unchanged and reflects it the same way,
// so the same two-pass traffic shape crosses the DUT.
//
// Each client packet carries its send time (low 48 bits of the TSC) at the start of its
// payload and its flow id (TCP: the sequence number; UDP: payload bytes 6..9). Latency is
// client send -> answer back on A: two passes through the DUT plus gen's own turnaround on B
// (and, at full load, whatever queues in the rings). Payload bytes past the stamp are zero in
// every frame gen builds, so checksums are computed and verified over headers plus the first
// kCover payload bytes only.
//
// Cases (--case):
//   throughput  warm-up: one packet per flow (TCP: an ACK, which ferryd picks up mid-stream
//               as ESTABLISHED; UDP: a datagram), not measured. Then --runs windows of
//               --duration seconds at --rate (Mpps of client packets) or as fast as the link
//               takes them. "mpps" is packets through the DUT per second, both directions
//               summed (client->backend on B plus backend->client on A, in the window).
//   zero_loss   binary search on the offered client rate for the highest rate with no loss
//               and no failure over a --duration trial; with --rate, one trial at that rate.
//   synflood    (TCP) established flows at --rate while SYNs from spoofed sources hit the
//               same VIP at --flood times that rate (default 5): after the warm-up, --runs
//               windows without the flood, then --runs with it. Flood sources are random
//               ip:ports of 198.18.192.0/18 (the conn clients' half, unused by this case); B
//               answers each SYN with a SYN-ACK as a pod would, and A drops what comes back
//               (a spoofed source never ACKs). Stream packets alone make "mpps", "lost" and
//               latency; the flood is counted apart (flood_sent, flood_at_b, synacks_at_a).
//   conn        new TCP connections: SYN (A->B), SYN-ACK (B->A), ACK+request+FIN (A->B),
//               ACK+response+FIN (B->A), final ACK (A->B; completes the connection). Every
//               connection uses a fresh client ip:port, so every SYN is a new flow in
//               ferryd. Reports completed connections per second and failures; latency is
//               SYN sent -> response received.
//
// Rates and loss: with --rate, gen sends on a schedule and a frame the link refuses (the DUT's
// ring is full) is dropped and counted lost, as a NIC counts rx_missed. Without --rate, gen
// keeps a bounded number of frames in flight (gen::max_in_flight) and retries what the link
// refuses (backpressure): it measures what the DUT forwards without overrunning gen's own
// receive rings. "gen_idle" is the share of the send window gen had nothing to do: near 0
// means gen, not the DUT, set the pace, and the number is gen's ceiling. A paced run whose
// generator fell behind says so ("gen_limited") and never counts as zero-loss; nor does one
// where the DUT stopped answering for a second ("stalled").
//
// DNS (--proto dns | dns-nx): clients ask ferryd's DNS address (198.19.0.53) for a Service's
// name (dns) or for it with a pod's first search suffix (dns-nx: NXDOMAIN); ferryd answers on A
// itself, so nothing crosses to B. Each answer is checked: from the DNS address to the asking
// flow, the DNS ID the flow's, a response with the expected code, every checksum right.
// "mpps" is then answers per second (Mqps); latency is query sent -> answer back.
//
// Options:
//   --case throughput|zero_loss|conn|synflood   --target ferryd|testpmd   --proto
//   tcp|udp|dns|dns-nx
//   --flood X (synflood: SYNs per established client packet, default 5)
//   --frame 64|imix (64: 60 bytes + FCS; imix: 7:4:1 of 64/570/1518 bytes with FCS)
//   --flows N (default 1000000)  --backends K (default 16)  --rate MPPS (or Mconn/s for conn)
//   --duration S (default 5)  --runs R (default 3)  --precision F (zero_loss, default 0.02)
//   --a DEVARGS --b DEVARGS (default: memif clients of /run/ferry-perf/{a,b}.sock)
//   --lcore N (default 0)  --file-prefix P (default ferry-gen)  --no-huge  --zero-copy
//   (--zero-copy: memif zero-copy on gen's side; needs hugepages, adds --single-file-segments)
//   --steps FILE|-  run several cases over one connection: each line holds case options
//                   (--case --proto --frame --flows --rate --duration --runs --precision
//                   --flood)
//                   over the command line's, one JSON line per step. Reconnecting costs a
//                   second, and DPDK 22.11's memif server can crash when a client leaves
//                   (it unmaps the shared memory under a polling data path), so fewer
//                   disconnects make steadier runs.
//
// Single-threaded: one lcore polls both ports, generates, answers and checks.
#include "gen.hpp"

#include "stats.hpp"

// packet_builder.hpp's vector inserts trip GCC 12's false -Warray-bounds at -O3 (GCC PR
// 107986; the unit tests turn the same warnings off). Set before any include: GCC applies the
// state in force where the diagnostic points, which is inside libstdc++.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Warray-bounds"
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#pragma GCC diagnostic ignored "-Wstringop-overread"
#endif

#include <rte_arp.h>
#include <rte_byteorder.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_log.h>
#include <rte_mbuf.h>
#include <rte_memcpy.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "checksum.hpp"
#include "ferry/dns.hpp"
#include "ferry/hash.hpp"
#include "ferry/net.hpp"
#include "packet_builder.hpp"

namespace ferry::perf {
namespace {

using dp::csum;
using dp::csum_add;
using dp::csum_fold;
using nlohmann::json;

// ---- addresses (host order) -----------------------------------------------------------

constexpr uint32_t kGateway = 0xc6120001;     // 198.18.0.1: the clients' router, on A
constexpr uint32_t kNodeA = 0xc61200fe;       // 198.18.0.254: the DUT on A
constexpr uint32_t kNodeB = 0xc61201fe;       // 198.18.1.254: the DUT on B
constexpr uint32_t kClientNet = 0xc6128000;   // 198.18.128.0/17
constexpr uint32_t kBackendNet = 0xc6120100;  // 198.18.1.0: backends are .1 .. .K
constexpr uint32_t kTcpVip = 0xc613000a;      // 198.19.0.10:80
constexpr uint32_t kUdpVip = 0xc6130014;      // 198.19.0.20:53
constexpr uint16_t kTcpVport = 80, kUdpVport = 53, kBackendPort = 9376;
// dns: ferryd's DNS address, and the name asked (the UDP Service perf/linerate.sh creates); a miss
// asks it with the search suffix a pod's ndots:5 resolver tries first.
constexpr uint32_t kDnsIp = 0xc6130035;  // 198.19.0.53:53
constexpr const char* kDnsName = "dns.default.svc.cluster.local";
constexpr const char* kDnsSearch = ".default.svc.cluster.local";

constexpr uint16_t kBurst = 32;
constexpr uint16_t kTxCap = 4 * kBurst;  // frames waiting for the link, per port
constexpr uint16_t kEthLen = sizeof(rte_ether_hdr);
constexpr uint16_t kIpLen = sizeof(rte_ipv4_hdr);
constexpr uint16_t kL4At = kEthLen + kIpLen;
constexpr uint16_t kCover = 32;     // payload bytes that may be nonzero (stamps; see top)
constexpr uint16_t kConnData = 16;  // request and response payload of a conn-case exchange
constexpr uint64_t kStampMask = (uint64_t{1} << 48) - 1;
constexpr uint64_t kIsnSeed = 0x6665727279000101ULL;

constexpr uint8_t kFin = RTE_TCP_FIN_FLAG, kSyn = RTE_TCP_SYN_FLAG, kPsh = RTE_TCP_PSH_FLAG,
                  kAck = RTE_TCP_ACK_FLAG;

// Client identities, in two halves of 198.18.128.0/17 so connections never land on a stream
// flow's conntrack entry. Stream flow f: 198.18.128.0 + (f & 0x3fff), port 1024 + (f >> 14)
// (1M flows: 16384 addresses x 64 ports). Connection c: 198.18.192.0 + (c & 0x3fff), port
// 1024 + (c >> 14) % 64512, a billion tuples before one comes back.
constexpr uint32_t kConnNet = kClientNet + 0x4000;  // 198.18.192.0/18
constexpr uint64_t kMaxFlows = uint64_t{64512} << 14;
uint32_t flow_ip(uint64_t f) { return kClientNet + static_cast<uint32_t>(f & 0x3fff); }
uint16_t flow_port(uint64_t f) { return static_cast<uint16_t>(1024 + (f >> 14)); }
uint32_t conn_ip(uint64_t c) { return kConnNet + static_cast<uint32_t>(c & 0x3fff); }
uint16_t conn_port(uint64_t c) { return static_cast<uint16_t>(1024 + (c >> 14) % 64512); }
bool is_conn_client(uint32_t ip, uint16_t port) {
  return (ip & 0xffffc000) == kConnNet && port >= 1024;
}
/// The stream flow a client ip:port belongs to; `flows` when it is none of ours.
uint64_t flow_of(uint32_t ip, uint16_t port, uint64_t flows) {
  if ((ip & 0xffffc000) != kClientNet || port < 1024) return flows;
  uint64_t f = (uint64_t{port - 1024u} << 14) | (ip - kClientNet);
  return f < flows ? f : flows;
}
/// synflood: the spoofed sources are conn addresses (that case never runs alongside).
bool is_flood_peer(const rte_mbuf* m, bool at_b) {
  if (m->data_len < kL4At + sizeof(rte_tcp_hdr)) return false;
  const auto* ip = rte_pktmbuf_mtod_offset(m, const rte_ipv4_hdr*, kEthLen);
  const uint32_t peer = rte_be_to_cpu_32(at_b ? ip->src_addr : ip->dst_addr);
  return ip->next_proto_id == IPPROTO_TCP && (peer & 0xffffc000) == kConnNet;
}
/// The backend's initial sequence number for a connection: a function of the client ip:port,
/// so the client can tell an answer meant for another connection.
uint32_t backend_isn(uint32_t ip, uint16_t port) {
  return static_cast<uint32_t>(hash2(ip, port, kIsnSeed));
}

// ---- results ------------------------------------------------------------------------------

enum fail : uint8_t {
  kBadChecksum,
  kMalformed,         // not the IPv4 TCP/UDP frame expected (or an unknown EtherType)
  kWrongDestination,  // B: not a backend:9376 (testpmd: not the VIP); A: not a client
  kWrongSource,       // B: not a client; A: not VIP:port
  kWrongFlow,         // the stamp names another flow than the addresses: another client's
  kBackendChanged,    // a flow reached a different backend than before
  kWrongSequence,     // conn: seq/ack belong to another connection, or an unexpected step
  kWrongAnswer,       // dns: not a response to the query, or another response code
  kNumFails
};
constexpr const char* kFailNames[kNumFails] = {"bad_checksum",   "malformed",   "wrong_destination",
                                               "wrong_source",   "wrong_flow",  "backend_changed",
                                               "wrong_sequence", "wrong_answer"};
bool is_misdirect(int k) { return k >= kWrongDestination && k != kWrongAnswer; }

// Log-linear histogram of TSC cycles: exact below 64, then 32 buckets per power of two (3%).
struct histogram {
  static constexpr size_t kBuckets = 64 + 58 * 32;
  std::vector<uint64_t> n = std::vector<uint64_t>(kBuckets);
  uint64_t count = 0;

  static size_t index(uint64_t v) {
    if (v < 64) return v;
    int e = 63 - __builtin_clzll(v);
    return 64 + static_cast<size_t>(e - 6) * 32 + ((v >> (e - 5)) & 31);
  }
  static double middle(size_t i) {
    if (i < 64) return static_cast<double>(i);
    size_t e = (i - 64) / 32 + 6, m = (i - 64) % 32;
    return std::ldexp(32.0 + static_cast<double>(m) + 0.5, static_cast<int>(e) - 5);
  }
  void add(uint64_t v) {
    ++n[index(v)];
    ++count;
  }
  void merge(const histogram& o) {
    for (size_t i = 0; i < kBuckets; ++i) n[i] += o.n[i];
    count += o.count;
  }
  double quantile(double q) const {
    if (!count) return 0;
    auto want = static_cast<uint64_t>(std::ceil(q * static_cast<double>(count)));
    uint64_t seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      seen += n[i];
      if (seen >= want) return middle(i);
    }
    return middle(kBuckets - 1);
  }
};

// What one window (run or trial) saw. Stream cases count packets; conn counts connections in
// `offered`/`done` and packets in the rx counters.
struct tally {
  uint64_t offered = 0;                   // client packets (conn: connections) generated
  uint64_t rx_a = 0, rx_b = 0;            // IPv4 frames received from the DUT on A / on B
  uint64_t rx_bytes = 0;                  // their wire sizes (+4 bytes FCS each)
  uint64_t refused_a = 0, refused_b = 0;  // paced: frames the link would not take (lost)
  uint64_t dropped_a = 0, dropped_b = 0;  // frames that failed a check (not answered)
  uint64_t done = 0;                      // stream: good answers on A; conn: completed
  uint64_t alloc_failures = 0;
  double idle = 0;       // share of the window gen had nothing to do
  bool stalled = false;  // the DUT stopped answering: the window was cut short
  uint64_t fails[kNumFails] = {};
  uint64_t flood_sent = 0, flood_b = 0, flood_a = 0;  // synflood: SYNs out, at B, SYN-ACKs at A
  histogram latency;
  // At the end of the send window (the drain after it is not part of any rate).
  double window_s = 0;
  uint64_t window_rx = 0, window_bytes = 0, window_done = 0;

  uint64_t misdirected() const {
    uint64_t s = 0;
    for (int k = 0; k < kNumFails; ++k) s += is_misdirect(k) ? fails[k] : 0;
    return s;
  }
  uint64_t failures() const {
    uint64_t s = 0;
    for (uint64_t f : fails) s += f;
    return s;
  }
  uint64_t lost() const { return offered > done ? offered - done : 0; }
};

// ---- configuration ------------------------------------------------------------------------

enum class traffic { tcp, udp, conn, dns };

struct options {
  std::string mode = "throughput";
  std::string target = "ferryd";
  std::string dev_a = "net_memif0,role=client,socket=/run/ferry-perf/a.sock,socket-abstract=no";
  std::string dev_b = "net_memif1,role=client,socket=/run/ferry-perf/b.sock,socket-abstract=no";
  bool tcp = true;
  bool imix = false;
  int dns = 0;  // --proto dns: 1 (names that exist), dns-nx: 2 (ndots:5 misses); 0: not DNS
  uint64_t flows = 1000000;
  unsigned backends = 16;
  double rate = 0;  // Mpps of client packets (conn: M new connections/s); 0 = as fast as taken
  double duration = 5;
  int runs = 3;
  double precision = 0.02;
  double flood = 5;  // synflood: SYNs per established client packet
  std::string lcore = "0";
  std::string prefix = "ferry-gen";
  bool huge = true;
  bool zero_copy = false;
  std::string steps;  // file of case option lines, "-" for stdin
};

struct frame_template {
  uint16_t len = 0;  // without FCS
  std::array<uint8_t, RTE_ETHER_MAX_LEN> bytes{};
};

struct port_io {
  uint16_t id = 0;
  rte_ether_addr mac{}, peer{};
  bool peer_known = false;
  uint32_t node_ip = 0;  // the DUT's address on this side
  bool started = false;
  uint16_t n = 0;  // frames waiting in pend
  rte_mbuf* pend[kTxCap];
};

struct gen {
  options o;
  bool ferryd = true;
  uint64_t hz = 0;
  rte_mempool* pool = nullptr;
  port_io a, b;
  uint32_t vip = 0;
  uint16_t vport = 0;
  std::vector<uint64_t> sent_at;    // dns: when each flow's last query left (TSC)
  std::vector<uint8_t> backend_of;  // stream flows: 1 + backend index first seen, 0 = none
  uint64_t cursor = 0;              // next flow (stream) or connection id (conn)
  bool flooding = false;            // synflood: SYNs go with the stream (see generate)
  double flood_credit = 0;          // SYNs owed to the flood ratio
  uint64_t flood_cursor = 0;
  std::vector<frame_template> frames;
  std::vector<uint8_t> sizes;  // frame template per packet, cycled
  size_t size_cursor = 0;
  frame_template syn;
  // Unpaced, at most this many client frames (conn: connections) are in flight: fewer than
  // gen's memif rings hold (rsize, default 2^10), less 128 for the slots a zero-copy receiver
  // may leave unrefilled, so the DUT never finds gen's receive rings full and every loss is
  // the DUT's own. A larger ring (rsize=12 in --a/--b) rides out longer stalls of either side.
  uint64_t max_in_flight = UINT64_MAX;
};

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true); }

// ---- packets ----------------------------------------------------------------------------

dp::testing::mac to_mac(const rte_ether_addr& a) {
  dp::testing::mac m;
  std::memcpy(m.data(), a.addr_bytes, 6);
  return m;
}

/// One's-complement sum of the IPv4 pseudo header for an L4 segment of l4_len bytes.
uint64_t pseudo_sum(const rte_ipv4_hdr* ip, uint16_t l4_len) {
  uint64_t s = csum_add(&ip->src_addr, 8);
  return s + rte_cpu_to_be_16(ip->next_proto_id) + rte_cpu_to_be_16(l4_len);
}

/// Sum of the L4 bytes that can be nonzero: the header and the first kCover payload bytes.
uint64_t l4_sum(const uint8_t* l4, uint16_t l4_len, uint16_t hdr) {
  return csum_add(l4, std::min<uint16_t>(l4_len, hdr + kCover));
}

template <bool Tcp>
constexpr uint16_t l4_hdr() {
  return Tcp ? sizeof(rte_tcp_hdr) : sizeof(rte_udp_hdr);
}

template <bool Tcp>
void fill_checksums(rte_ipv4_hdr* ip, uint8_t* l4, uint16_t l4_len) {
  ip->hdr_checksum = 0;
  ip->hdr_checksum = csum(ip, kIpLen);
  if constexpr (Tcp) {
    auto* th = reinterpret_cast<rte_tcp_hdr*>(l4);
    th->cksum = 0;
    th->cksum = static_cast<uint16_t>(
        ~csum_fold(pseudo_sum(ip, l4_len) + l4_sum(l4, l4_len, l4_hdr<true>())));
  } else {
    auto* uh = reinterpret_cast<rte_udp_hdr*>(l4);
    uh->dgram_cksum = 0;
    auto c = static_cast<uint16_t>(
        ~csum_fold(pseudo_sum(ip, l4_len) + l4_sum(l4, l4_len, l4_hdr<false>())));
    uh->dgram_cksum = c ? c : 0xffff;
  }
}

// A received IPv4 TCP/UDP frame, located and checked.
struct pkt {
  rte_ipv4_hdr* ip;
  uint8_t* l4;
  uint8_t* payload;
  uint16_t l4_len, payload_len;
  uint32_t src, dst;
  uint16_t sport, dport;
};

/// Locates the headers of an IPv4 frame of the expected protocol and checks its checksums.
template <bool Tcp>
int view(rte_mbuf* m, pkt& p) {
  auto* d = rte_pktmbuf_mtod(m, uint8_t*);
  if (m->data_len < kL4At + l4_hdr<Tcp>()) return kMalformed;
  p.ip = reinterpret_cast<rte_ipv4_hdr*>(d + kEthLen);
  uint16_t total = rte_be_to_cpu_16(p.ip->total_length);
  if (p.ip->version_ihl != RTE_IPV4_VHL_DEF ||
      p.ip->next_proto_id != (Tcp ? kProtoTcp : kProtoUdp) || total < kIpLen + l4_hdr<Tcp>() ||
      kEthLen + total > m->data_len) {
    return kMalformed;
  }
  p.l4 = d + kL4At;
  p.l4_len = total - kIpLen;
  p.payload = p.l4 + l4_hdr<Tcp>();
  p.payload_len = p.l4_len - l4_hdr<Tcp>();
  p.src = rte_be_to_cpu_32(p.ip->src_addr);
  p.dst = rte_be_to_cpu_32(p.ip->dst_addr);
  const auto* ports = reinterpret_cast<const uint16_t*>(p.l4);
  p.sport = rte_be_to_cpu_16(ports[0]);
  p.dport = rte_be_to_cpu_16(ports[1]);
  if (csum_fold(csum_add(p.ip, kIpLen)) != 0xffff) return kBadChecksum;
  uint16_t cksum;
  std::memcpy(&cksum, p.l4 + (Tcp ? 16 : 6), 2);
  if ((Tcp || cksum != 0) &&
      csum_fold(pseudo_sum(p.ip, p.l4_len) + l4_sum(p.l4, p.l4_len, l4_hdr<Tcp>())) != 0xffff) {
    return kBadChecksum;  // the headers are located (the DNS check sums the whole payload)
  }
  return -1;
}

/// Sends the frame back where it came from, as its destination would answer: MACs, addresses
/// and ports swapped, a fresh TTL. Checksums are the caller's (after any other change).
void turn_around(const port_io& port, rte_mbuf* m, pkt& p) {
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  eth->dst_addr = eth->src_addr;
  eth->src_addr = port.mac;
  rte_be32_t src = p.ip->src_addr;
  p.ip->src_addr = p.ip->dst_addr;
  p.ip->dst_addr = src;
  auto* ports = reinterpret_cast<uint16_t*>(p.l4);
  std::swap(ports[0], ports[1]);
  p.ip->time_to_live = 64;
}

void write_stamp(uint8_t* payload, uint64_t tsc) { std::memcpy(payload, &tsc, 6); }
uint64_t read_stamp(const uint8_t* payload) {
  uint64_t v = 0;
  std::memcpy(&v, payload, 6);
  return v;
}

/// Resizes a single-segment TCP frame to carry `len` payload bytes (zeroed).
void set_tcp_payload(rte_mbuf* m, pkt& p, uint16_t len) {
  uint16_t want = kL4At + sizeof(rte_tcp_hdr) + len;
  if (m->data_len < want) {
    rte_pktmbuf_append(m, want - m->data_len);
  } else if (m->data_len > want) {
    rte_pktmbuf_trim(m, m->data_len - want);
  }
  std::memset(p.payload, 0, len);
  p.payload_len = len;
  p.l4_len = sizeof(rte_tcp_hdr) + len;
  p.ip->total_length = rte_cpu_to_be_16(kIpLen + p.l4_len);
}

rte_tcp_hdr* tcp_of(const pkt& p) { return reinterpret_cast<rte_tcp_hdr*>(p.l4); }

// ---- ARP --------------------------------------------------------------------------------

bool claims(const gen& g, const port_io& port, uint32_t ip) {
  if (&port == &g.a) return ip == kGateway;
  return ip > kBackendNet && ip <= kBackendNet + g.o.backends;
}

/// Learns the DUT's MAC from any ARP it sends from its address; turns a request for an
/// address gen plays into the reply (in place). True when m is to be sent back.
bool on_arp(gen& g, port_io& port, rte_mbuf* m) {
  if (m->data_len < kEthLen + sizeof(rte_arp_hdr)) return false;
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  auto* arp = reinterpret_cast<rte_arp_hdr*>(eth + 1);
  uint32_t sip = rte_be_to_cpu_32(arp->arp_data.arp_sip);
  uint32_t tip = rte_be_to_cpu_32(arp->arp_data.arp_tip);
  if (sip == port.node_ip) {
    port.peer = arp->arp_data.arp_sha;
    port.peer_known = true;
  }
  if (arp->arp_opcode != RTE_BE16(RTE_ARP_OP_REQUEST) || !claims(g, port, tip)) return false;
  eth->dst_addr = eth->src_addr;
  eth->src_addr = port.mac;
  arp->arp_opcode = RTE_BE16(RTE_ARP_OP_REPLY);
  arp->arp_data.arp_tha = arp->arp_data.arp_sha;
  arp->arp_data.arp_tip = arp->arp_data.arp_sip;
  arp->arp_data.arp_sha = port.mac;
  arp->arp_data.arp_sip = rte_cpu_to_be_32(tip);
  return true;
}

void send_frame(const gen& g, const port_io& port, const dp::testing::bytes& b) {
  rte_mbuf* m = rte_pktmbuf_alloc(g.pool);
  if (!m) return;
  auto* d = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, static_cast<uint16_t>(b.size())));
  std::memcpy(d, b.data(), b.size());
  if (rte_eth_tx_burst(port.id, 0, &m, 1) != 1) rte_pktmbuf_free(m);
}

void send_arp_request(const gen& g, const port_io& port, uint32_t from) {
  dp::testing::mac bcast{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, zero{};
  send_frame(g, port,
             dp::testing::arp(bcast, to_mac(port.mac), RTE_ARP_OP_REQUEST, to_mac(port.mac), from,
                              zero, port.node_ip));
}

// ---- the loop ---------------------------------------------------------------------------

/// Hands queued frames to the link. Paced: what it refuses is dropped and counted. Unpaced:
/// kept for the next try (backpressure).
void flush(port_io& port, bool paced, uint64_t& refused) {
  if (!port.n) return;
  uint16_t sent = rte_eth_tx_burst(port.id, 0, port.pend, port.n);
  if (sent == port.n) {
    port.n = 0;
  } else if (paced) {
    rte_pktmbuf_free_bulk(port.pend + sent, port.n - sent);
    refused += port.n - sent;
    port.n = 0;
  } else {
    std::memmove(port.pend, port.pend + sent, (port.n - sent) * sizeof(rte_mbuf*));
    port.n -= sent;
  }
}

// Backend side, stream traffic: check the DNAT, answer as the pod.
template <bool Tcp>
int backend_stream(gen& g, rte_mbuf* m) {
  pkt p;
  if (int f = view<Tcp>(m, p); f >= 0) return f;
  uint32_t backend = 0;
  if (g.ferryd) {
    if (p.dst <= kBackendNet || p.dst > kBackendNet + g.o.backends || p.dport != kBackendPort) {
      return kWrongDestination;
    }
    backend = p.dst - kBackendNet;
  } else if (p.dst != g.vip || p.dport != g.vport) {
    return kWrongDestination;
  }
  uint64_t flow = flow_of(p.src, p.sport, g.o.flows);
  if (flow == g.o.flows) return kWrongSource;
  uint32_t stamped;
  if constexpr (Tcp) {
    stamped = rte_be_to_cpu_32(tcp_of(p)->sent_seq);
  } else {
    if (p.payload_len < 10) return kMalformed;
    std::memcpy(&stamped, p.payload + 6, 4);
  }
  if (stamped != static_cast<uint32_t>(flow)) return kWrongFlow;
  if (backend) {
    uint8_t& seen = g.backend_of[flow];
    if (!seen) seen = static_cast<uint8_t>(backend);
    if (seen != backend) return kBackendChanged;
  }
  turn_around(g.b, m, p);
  if constexpr (Tcp) {
    rte_tcp_hdr* th = tcp_of(p);
    uint32_t seq = rte_be_to_cpu_32(th->sent_seq);
    th->sent_seq = th->recv_ack;
    th->recv_ack = rte_cpu_to_be_32(seq + p.payload_len);
  }
  fill_checksums<Tcp>(p.ip, p.l4, p.l4_len);
  return -1;
}

// Client side, DNS: the answer to this flow's query, from the DNS address, with the code
// expected (NOERROR for names that exist, NXDOMAIN for misses); checksums over all of it.
int client_dns(gen& g, rte_mbuf* m, uint64_t now, tally& t) {
  pkt p;
  if (int f = view<false>(m, p); f >= 0 && f != kBadChecksum) return f;
  // view() sums kCover payload bytes; an answer is all payload. The IP header's sum too.
  if (csum_fold(csum_add(p.ip, kIpLen)) != 0xffff ||
      csum_fold(pseudo_sum(p.ip, p.l4_len) + csum_add(p.l4, p.l4_len)) != 0xffff) {
    return kBadChecksum;
  }
  if (p.src != kDnsIp || p.sport != dns::kPort) return kWrongSource;
  uint64_t flow = flow_of(p.dst, p.dport, g.o.flows);
  if (flow == g.o.flows) return kWrongDestination;
  if (p.payload_len < dns::kHeaderSize) return kMalformed;
  const auto id = static_cast<uint16_t>(p.payload[0] << 8 | p.payload[1]);
  if (id != static_cast<uint16_t>(flow)) return kWrongFlow;
  const uint8_t rcode = p.payload[3] & 0xf, want = g.o.dns == 1 ? 0 : 3;
  if (!(p.payload[2] & 0x80) || rcode != want) return kWrongAnswer;
  t.latency.add(now - g.sent_at[flow]);
  return -1;
}

// Client side, stream traffic: check the un-NAT, record latency.
template <bool Tcp>
int client_stream(gen& g, rte_mbuf* m, uint64_t now, tally& t) {
  pkt p;
  if (int f = view<Tcp>(m, p); f >= 0) return f;
  if (p.src != g.vip || p.sport != g.vport) return kWrongSource;
  uint64_t flow = flow_of(p.dst, p.dport, g.o.flows);
  if (flow == g.o.flows) return kWrongDestination;
  uint32_t stamped;
  if constexpr (Tcp) {
    stamped = rte_be_to_cpu_32(tcp_of(p)->recv_ack) - p.payload_len;
  } else {
    if (p.payload_len < 10) return kMalformed;
    std::memcpy(&stamped, p.payload + 6, 4);
  }
  if (stamped != static_cast<uint32_t>(flow)) return kWrongFlow;
  t.latency.add((now - read_stamp(p.payload)) & kStampMask);
  return -1;
}

// Backend side, connections. Returns -1 with m turned into the pod's answer, -2 when the
// connection completed (m to be freed), or a failure.
int backend_conn(gen& g, rte_mbuf* m, tally& t) {
  pkt p;
  if (int f = view<true>(m, p); f >= 0) return f;
  if (g.ferryd
          ? (p.dst <= kBackendNet || p.dst > kBackendNet + g.o.backends || p.dport != kBackendPort)
          : (p.dst != g.vip || p.dport != g.vport)) {
    return kWrongDestination;
  }
  if (!is_conn_client(p.src, p.sport)) return kWrongSource;
  rte_tcp_hdr* th = tcp_of(p);
  uint32_t isn = backend_isn(p.src, p.sport);
  uint32_t seq = rte_be_to_cpu_32(th->sent_seq), ack = rte_be_to_cpu_32(th->recv_ack);
  uint8_t flags = th->tcp_flags;
  if (flags == kSyn && p.payload_len == 0) {
    th->tcp_flags = kSyn | kAck;
    th->sent_seq = rte_cpu_to_be_32(isn);
    th->recv_ack = rte_cpu_to_be_32(seq + 1);
  } else if (flags == (kAck | kPsh | kFin) && p.payload_len == kConnData && ack == isn + 1) {
    // The request and the client's FIN: answer with the response and our FIN.
    th->sent_seq = rte_cpu_to_be_32(isn + 1);
    th->recv_ack = rte_cpu_to_be_32(seq + kConnData + 1);
    std::memset(p.payload, 0, kConnData);
  } else if (flags == kAck && p.payload_len == 0 && ack == isn + kConnData + 2) {
    ++t.done;  // the client acknowledged our FIN: the connection is complete
    return -2;
  } else {
    return kWrongSequence;
  }
  turn_around(g.b, m, p);
  fill_checksums<true>(p.ip, p.l4, p.l4_len);
  return -1;
}

// Client side, connections. Returns -1 with m turned into the client's next segment.
int client_conn(gen& g, rte_mbuf* m, uint64_t now, tally& t) {
  pkt p;
  if (int f = view<true>(m, p); f >= 0) return f;
  if (p.src != g.vip || p.sport != g.vport) return kWrongSource;
  if (!is_conn_client(p.dst, p.dport)) return kWrongDestination;
  rte_tcp_hdr* th = tcp_of(p);
  uint32_t isn_b = backend_isn(p.dst, p.dport);
  uint32_t seq = rte_be_to_cpu_32(th->sent_seq), ack = rte_be_to_cpu_32(th->recv_ack);
  if (th->tcp_flags == (kSyn | kAck) && p.payload_len == 0 && seq == isn_b) {
    // ACK the SYN-ACK, send the request and close our side in one segment.
    th->tcp_flags = kAck | kPsh | kFin;
    th->sent_seq = th->recv_ack;
    th->recv_ack = rte_cpu_to_be_32(isn_b + 1);
    set_tcp_payload(m, p, kConnData);
  } else if (th->tcp_flags == (kAck | kPsh | kFin) && p.payload_len == kConnData &&
             seq == isn_b + 1) {
    // Our ISN was the TSC at the SYN: ack = isn + request + FIN + 1.
    uint32_t isn = ack - (kConnData + 2);
    t.latency.add(static_cast<uint32_t>(now) - isn);
    th->tcp_flags = kAck;
    th->sent_seq = rte_cpu_to_be_32(ack);
    th->recv_ack = rte_cpu_to_be_32(isn_b + kConnData + 2);
    set_tcp_payload(m, p, 0);
  } else {
    return kWrongSequence;
  }
  turn_around(g.a, m, p);
  fill_checksums<true>(p.ip, p.l4, p.l4_len);
  return -1;
}

void count_rx(tally& t, uint64_t& side, const rte_mbuf* m) {
  ++side;
  t.rx_bytes += m->pkt_len + 4u;
}

/// Answers what arrived on B; returns how many frames that was.
template <traffic T>
uint16_t poll_backend(gen& g, tally& t, bool paced) {
  constexpr bool kTcp = T != traffic::udp;
  port_io& b = g.b;
  if (b.n > kTxCap - kBurst) return 0;  // backpressure: answer nothing until the link takes some
  rte_mbuf* pkts[kBurst];
  uint16_t n = rte_eth_rx_burst(b.id, 0, pkts, kBurst);
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = pkts[i];
    auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
    if (eth->ether_type == RTE_BE16(RTE_ETHER_TYPE_ARP)) {
      if (on_arp(g, b, m)) {
        b.pend[b.n++] = m;
      } else {
        rte_pktmbuf_free(m);
      }
      continue;
    }
    if (T == traffic::tcp && g.flooding && eth->ether_type == RTE_BE16(RTE_ETHER_TYPE_IPV4) &&
        is_flood_peer(m, true)) {
      // A flood SYN reached a backend: the pod's SYN-ACK goes back (not a stream packet).
      ++t.flood_b;
      pkt p;
      if (view<true>(m, p) >= 0 || tcp_of(p)->tcp_flags != kSyn) {
        rte_pktmbuf_free(m);
        continue;
      }
      turn_around(b, m, p);
      rte_tcp_hdr* th = tcp_of(p);
      th->recv_ack = rte_cpu_to_be_32(rte_be_to_cpu_32(th->sent_seq) + 1);
      th->sent_seq = rte_cpu_to_be_32(backend_isn(p.dst, p.dport));
      th->tcp_flags = kSyn | kAck;
      fill_checksums<true>(p.ip, p.l4, p.l4_len);
      b.pend[b.n++] = m;
      continue;
    }
    count_rx(t, t.rx_b, m);
    int verdict = kMalformed;
    if (eth->ether_type == RTE_BE16(RTE_ETHER_TYPE_IPV4)) {
      if constexpr (T == traffic::conn) {
        verdict = backend_conn(g, m, t);
      } else if constexpr (T == traffic::dns) {
        verdict = kWrongDestination;  // ferryd answers DNS itself: nothing goes to a backend
      } else {
        verdict = backend_stream<kTcp>(g, m);
      }
    }
    if (verdict == -1) {
      b.pend[b.n++] = m;
      continue;
    }
    if (verdict >= 0) {
      ++t.fails[verdict];
      ++t.dropped_b;
    }
    rte_pktmbuf_free(m);
  }
  if (paced) flush(b, true, t.refused_b);
  return n;
}

/// Checks (and in the conn case answers) what arrived on A; returns how many frames.
template <traffic T>
uint16_t poll_client(gen& g, tally& t, uint64_t now) {
  constexpr bool kTcp = T != traffic::udp;
  port_io& a = g.a;
  if (a.n > kTxCap - kBurst) return 0;
  rte_mbuf* pkts[kBurst];
  rte_mbuf* done[kBurst];
  uint16_t n = rte_eth_rx_burst(a.id, 0, pkts, kBurst), n_done = 0;
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = pkts[i];
    auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
    if (eth->ether_type == RTE_BE16(RTE_ETHER_TYPE_ARP)) {
      if (on_arp(g, a, m)) {
        a.pend[a.n++] = m;
      } else {
        done[n_done++] = m;
      }
      continue;
    }
    if (T == traffic::tcp && g.flooding && eth->ether_type == RTE_BE16(RTE_ETHER_TYPE_IPV4) &&
        is_flood_peer(m, false)) {
      ++t.flood_a;  // a SYN-ACK for a spoofed source: nobody answers it
      done[n_done++] = m;
      continue;
    }
    count_rx(t, t.rx_a, m);
    int verdict;
    if (eth->ether_type != RTE_BE16(RTE_ETHER_TYPE_IPV4)) {
      verdict = kMalformed;
    } else if constexpr (T == traffic::conn) {
      verdict = client_conn(g, m, now, t);
      if (verdict == -1) {
        a.pend[a.n++] = m;
        continue;
      }
    } else if constexpr (T == traffic::dns) {
      verdict = client_dns(g, m, now, t);
      if (verdict == -1) ++t.done;
    } else {
      verdict = client_stream<kTcp>(g, m, now, t);
      if (verdict == -1) ++t.done;
    }
    if (verdict >= 0) {
      ++t.fails[verdict];
      ++t.dropped_a;
    }
    done[n_done++] = m;
  }
  if (n_done) rte_pktmbuf_free_bulk(done, n_done);
  return n;
}

// synflood: the SYNs owed for n stream packets, as far as A's TX buffer has room (the rest
// stay owed), each from a fresh random source.
void generate_flood(gen& g, tally& t, uint16_t n) {
  g.flood_credit += n * g.o.flood;
  auto k = static_cast<uint16_t>(std::min<double>(g.flood_credit, kTxCap - g.a.n));
  rte_mbuf* ms[kTxCap];
  if (!k || rte_pktmbuf_alloc_bulk(g.pool, ms, k) != 0) return;
  for (uint16_t i = 0; i < k; ++i) {
    rte_mbuf* m = ms[i];
    auto* d = rte_pktmbuf_mtod(m, uint8_t*);
    rte_memcpy(d, g.syn.bytes.data(), g.syn.len);
    m->data_len = m->pkt_len = g.syn.len;
    auto* ip = reinterpret_cast<rte_ipv4_hdr*>(d + kEthLen);
    uint8_t* l4 = d + kL4At;
    const uint64_t r = mix64(++g.flood_cursor);
    ip->src_addr = rte_cpu_to_be_32(kConnNet + static_cast<uint32_t>(r & 0x3fff));
    reinterpret_cast<uint16_t*>(l4)[0] =
        rte_cpu_to_be_16(static_cast<uint16_t>(1024 + (r >> 14) % 64512));
    reinterpret_cast<rte_tcp_hdr*>(l4)->sent_seq = rte_cpu_to_be_32(static_cast<uint32_t>(r >> 32));
    fill_checksums<true>(ip, l4, sizeof(rte_tcp_hdr));
    g.a.pend[g.a.n++] = m;
  }
  g.flood_credit -= k;
  t.flood_sent += k;
}

template <traffic T>
void generate(gen& g, tally& t, uint16_t n, uint64_t now) {
  rte_mbuf* ms[kBurst];
  if (rte_pktmbuf_alloc_bulk(g.pool, ms, n) != 0) {
    ++t.alloc_failures;
    return;
  }
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = ms[i];
    auto* d = rte_pktmbuf_mtod(m, uint8_t*);
    const frame_template& f = T == traffic::conn ? g.syn : g.frames[g.sizes[g.size_cursor]];
    if constexpr (T != traffic::conn) {
      if (++g.size_cursor == g.sizes.size()) g.size_cursor = 0;
    }
    rte_memcpy(d, f.bytes.data(), f.len);
    m->data_len = m->pkt_len = f.len;
    auto* ip = reinterpret_cast<rte_ipv4_hdr*>(d + kEthLen);
    uint8_t* l4 = d + kL4At;
    auto* ports = reinterpret_cast<uint16_t*>(l4);
    uint64_t id = g.cursor;
    if constexpr (T == traffic::dns) {
      if (++g.cursor == g.o.flows) g.cursor = 0;
      ip->src_addr = rte_cpu_to_be_32(flow_ip(id));
      ports[0] = rte_cpu_to_be_16(flow_port(id));
      uint8_t* query = l4 + sizeof(rte_udp_hdr);  // the DNS ID carries the flow
      query[0] = static_cast<uint8_t>(id >> 8);
      query[1] = static_cast<uint8_t>(id);
      g.sent_at[id] = now;
      const auto l4_len = static_cast<uint16_t>(f.len - kL4At);
      ip->hdr_checksum = 0;
      ip->hdr_checksum = csum(ip, kIpLen);
      auto* uh = reinterpret_cast<rte_udp_hdr*>(l4);
      uh->dgram_cksum = 0;
      auto c = static_cast<uint16_t>(~csum_fold(pseudo_sum(ip, l4_len) + csum_add(l4, l4_len)));
      uh->dgram_cksum = c ? c : 0xffff;
    } else if constexpr (T == traffic::conn) {
      ++g.cursor;
      ip->src_addr = rte_cpu_to_be_32(conn_ip(id));
      ports[0] = rte_cpu_to_be_16(conn_port(id));
      reinterpret_cast<rte_tcp_hdr*>(l4)->sent_seq =
          rte_cpu_to_be_32(static_cast<uint32_t>(now));  // the ISN times the connection
      fill_checksums<true>(ip, l4, sizeof(rte_tcp_hdr));
    } else {
      constexpr bool kTcp = T == traffic::tcp;
      if (++g.cursor == g.o.flows) g.cursor = 0;
      ip->src_addr = rte_cpu_to_be_32(flow_ip(id));
      ports[0] = rte_cpu_to_be_16(flow_port(id));
      uint8_t* payload = l4 + l4_hdr<kTcp>();
      write_stamp(payload, now);
      auto flow32 = static_cast<uint32_t>(id);
      if constexpr (kTcp) {
        reinterpret_cast<rte_tcp_hdr*>(l4)->sent_seq = rte_cpu_to_be_32(flow32);
      } else {
        std::memcpy(payload + 6, &flow32, 4);
      }
      fill_checksums<kTcp>(ip, l4, static_cast<uint16_t>(f.len - kL4At));
    }
    g.a.pend[g.a.n++] = m;
  }
  t.offered += n;
  if constexpr (T == traffic::tcp) {
    if (g.flooding) generate_flood(g, t, n);
  }
}

struct phase {
  double pps = 0;            // offered client packets (conn: connections) per second; 0 = max
  double seconds = 0;        // send window
  uint64_t max_offered = 0;  // stop sending after this many (0: no limit)
};

template <traffic T>
tally run_phase(gen& g, const phase& ph) {
  tally t;
  const bool paced = ph.pps > 0;
  const double per_cycle = ph.pps / static_cast<double>(g.hz);
  const uint64_t t0 = rte_rdtsc();
  const uint64_t t_end = ph.seconds > 0
                             ? t0 + static_cast<uint64_t>(ph.seconds * static_cast<double>(g.hz))
                             : UINT64_MAX;
  const uint64_t drain = g.hz / 2;  // in-flight frames get this long to come back
  uint64_t drain_end = 0, idle_cycles = 0, last = t0, last_settled = 0, progress = t0;
  bool was_idle = false;
  for (;;) {
    uint64_t now = rte_rdtsc();
    if (was_idle) idle_cycles += now - last;
    last = now;
    // Frames whose fate is known: answered, refused, or dropped by a check. (A stream
    // frame dropped on A is in rx_a already; a connection counts once, when it completes.)
    uint64_t settled = T == traffic::conn
                           ? t.done + t.refused_a + t.refused_b + t.dropped_a + t.dropped_b
                           : t.rx_a + t.refused_a + t.refused_b + t.dropped_b;
    if (settled != last_settled) {
      last_settled = settled;
      progress = now;
    }
    // Nothing came back for a second with frames in flight: the DUT is not forwarding.
    t.stalled |= settled < t.offered && now - progress > g.hz;
    bool sending = now < t_end && (!ph.max_offered || t.offered < ph.max_offered) && !t.stalled &&
                   !g_stop.load(std::memory_order_relaxed);
    if (!sending && !drain_end) {
      drain_end = now + drain;
      t.window_s = static_cast<double>(now - t0) / static_cast<double>(g.hz);
      t.window_rx = t.rx_a + t.rx_b;
      t.window_bytes = t.rx_bytes;
      t.window_done = t.done;
      t.idle = static_cast<double>(idle_cycles) / static_cast<double>(now - t0);
    }
    uint32_t work = poll_backend<T>(g, t, paced) + poll_client<T>(g, t, now);
    if (sending) {
      uint64_t budget = kBurst;
      if (paced) {
        auto due = static_cast<uint64_t>(static_cast<double>(now - t0) * per_cycle);
        budget = due > t.offered ? std::min<uint64_t>(kBurst, due - t.offered) : 0;
      } else {
        uint64_t in_flight = t.offered - std::min(t.offered, settled);
        budget = in_flight < g.max_in_flight
                     ? std::min<uint64_t>(kBurst, g.max_in_flight - in_flight)
                     : 0;
      }
      if (ph.max_offered) budget = std::min(budget, ph.max_offered - t.offered);
      // Leave a burst of room for what the client side answers (conn follow-ups, ARP).
      if (budget && g.a.n <= kTxCap - 2 * kBurst) {
        generate<T>(g, t, static_cast<uint16_t>(budget), now);
        work += static_cast<uint32_t>(budget);
      }
    }
    was_idle = work == 0;
    flush(g.a, paced, t.refused_a);
    if (!paced) flush(g.b, false, t.refused_b);
    if (!sending && (settled >= t.offered || now > drain_end)) break;
  }
  // Whatever the link never took is lost.
  for (port_io* p : {&g.a, &g.b}) {
    rte_pktmbuf_free_bulk(p->pend, p->n);
    (p == &g.a ? t.refused_a : t.refused_b) += p->n;
    p->n = 0;
  }
  return t;
}

// ---- reporting ----------------------------------------------------------------------------

double mpps(const tally& t) { return t.window_s > 0 ? t.window_rx / t.window_s / 1e6 : 0; }
double gbps(const tally& t) { return t.window_s > 0 ? t.window_bytes * 8 / t.window_s / 1e9 : 0; }
double offered_rate(const tally& t) { return t.window_s > 0 ? t.offered / t.window_s / 1e6 : 0; }

/// A paced window whose generator fell more than 1% short of the asked rate.
bool gen_limited(const tally& t, double pps) {
  return pps > 0 && static_cast<double>(t.offered) < 0.99 * pps * t.window_s;
}

bool zero_loss(const tally& t, double pps) {
  return t.lost() == 0 && t.failures() == 0 && !gen_limited(t, pps) && !t.stalled;
}

json base_json(const gen& g, const char* case_name) {
  const options& o = g.o;
  json j = {{"bench", "gen"}, {"case", case_name}, {"target", o.target}};
  if (std::string(case_name) == "conn") {
    j["proto"] = "tcp";
  } else {
    j["flows"] = o.flows;
    j["frame"] = o.imix ? "imix" : "64";
    j["proto"] = o.dns ? (o.dns == 1 ? "dns" : "dns-nx") : o.tcp ? "tcp" : "udp";
  }
  j["backends"] = g.ferryd ? o.backends : 0;
  return j;
}

/// Sums of the windows; `also` adds its failures only (the warm-up's).
void add_totals(json& j, const std::vector<tally>& ts, bool conn, const tally* also = nullptr) {
  tally sum;
  if (also) std::copy(std::begin(also->fails), std::end(also->fails), sum.fails);
  for (const auto& t : ts) {
    sum.offered += t.offered;
    sum.rx_a += t.rx_a;
    sum.rx_b += t.rx_b;
    sum.done += t.done;
    sum.refused_a += t.refused_a;
    sum.refused_b += t.refused_b;
    sum.alloc_failures += t.alloc_failures;
    for (int k = 0; k < kNumFails; ++k) sum.fails[k] += t.fails[k];
    sum.latency.merge(t.latency);
  }
  if (conn) {
    j["connections"] = sum.offered;
    j["completed"] = sum.done;
    j["failed"] = sum.offered - std::min(sum.offered, sum.done);
  } else {
    j["sent"] = sum.offered;
    j["received"] = sum.rx_a;
    j["lost"] = sum.offered - std::min(sum.offered, sum.rx_a);
  }
  j["received_b"] = sum.rx_b;
  j["refused"] = sum.refused_a + sum.refused_b;
  j["misdirected"] = sum.misdirected();
  j["bad_checksum"] = sum.fails[kBadChecksum];
  json f = json::object();
  for (int k = 0; k < kNumFails; ++k) {
    if (sum.fails[k]) f[kFailNames[k]] = sum.fails[k];
  }
  j["failures"] = f;
  if (sum.alloc_failures) j["mbuf_alloc_failures"] = sum.alloc_failures;
  double us = 1e6 / static_cast<double>(rte_get_tsc_hz());
  j["latency_us"] = {{"p50", sum.latency.quantile(0.5) * us},
                     {"p99", sum.latency.quantile(0.99) * us},
                     {"p999", sum.latency.quantile(0.999) * us}};
  double idle = 0;
  bool stalled = false;
  for (const auto& t : ts) {
    idle += t.idle / static_cast<double>(ts.size());
    stalled |= t.stalled;
  }
  j["gen_idle"] = idle;
  if (stalled || (also && also->stalled)) {
    j["stalled"] = true;
    std::cerr << "gen: the DUT stopped answering for a second; that window was cut short\n";
  }
}

json trial_json(const tally& t, double pps) {
  return {{"rate", pps > 0 ? json(pps / 1e6) : json("max")},
          {"offered_mpps", offered_rate(t)},
          {"mpps", mpps(t)},
          {"sent", t.offered},
          {"lost", t.lost()},
          {"failures", t.failures()},
          {"gen_limited", gen_limited(t, pps)},
          {"stalled", t.stalled},
          {"zero_loss", zero_loss(t, pps)}};
}

// ---- cases --------------------------------------------------------------------------------

template <traffic T>
tally warm_up(gen& g) {
  // One packet per flow, at the pace the link takes them, so every flow exists in ferryd
  // before anything is measured (TCP: picked up mid-stream as ESTABLISHED).
  return run_phase<T>(g, {0, 0, g.o.flows});
}

template <traffic T>
int case_throughput(gen& g) {
  json j = base_json(g, "throughput");
  tally w = warm_up<T>(g);
  std::vector<tally> runs;
  std::vector<double> rates, bits, offered;
  for (int r = 0; r < g.o.runs && !g_stop.load(); ++r) {
    runs.push_back(run_phase<T>(g, {g.o.rate * 1e6, g.o.duration, 0}));
    rates.push_back(mpps(runs.back()));
    bits.push_back(gbps(runs.back()));
    offered.push_back(offered_rate(runs.back()));
  }
  j["rate"] = g.o.rate > 0 ? json(g.o.rate) : json("max");
  j["runs"] = runs.size();
  j["duration_s"] = g.o.duration;
  j["mpps"] = to_json(summarize(rates));
  j["gbps"] = to_json(summarize(bits));
  j["offered_mpps"] = summarize(offered).median;
  add_totals(j, runs, false, &w);  // the warm-up's failures count; its packets do not
  j["warmup"] = {{"sent", w.offered}, {"lost", w.lost()}, {"failures", w.failures()}};
  bool limited = false;
  for (const auto& t : runs) limited |= gen_limited(t, g.o.rate * 1e6);
  j["gen_limited"] = limited;
  std::cout << j.dump() << std::endl;
  return 0;
}

// Established flows at --rate, without and then with a SYN flood of --flood times that rate.
int case_synflood(gen& g) {
  json j = base_json(g, "synflood");
  tally w = warm_up<traffic::tcp>(g);
  j["rate"] = g.o.rate > 0 ? json(g.o.rate) : json("max");
  j["flood_ratio"] = g.o.flood;
  j["runs"] = g.o.runs;
  j["duration_s"] = g.o.duration;
  j["warmup"] = {{"sent", w.offered}, {"lost", w.lost()}, {"failures", w.failures()}};
  std::vector<tally> all;
  for (bool flood : {false, true}) {
    g.flooding = flood;
    g.flood_credit = 0;
    std::vector<tally> runs;
    std::vector<double> rates, loss;
    for (int r = 0; r < g.o.runs && !g_stop.load(); ++r) {
      runs.push_back(run_phase<traffic::tcp>(g, {g.o.rate * 1e6, g.o.duration, 0}));
      const tally& t = runs.back();
      rates.push_back(mpps(t));
      loss.push_back(t.offered ? static_cast<double>(t.lost()) / static_cast<double>(t.offered)
                               : 0);
    }
    json part;
    part["mpps"] = to_json(summarize(rates));
    part["loss"] = to_json(summarize(loss));
    add_totals(part, runs, false);
    if (flood) {
      uint64_t sent = 0, at_b = 0, at_a = 0;
      double secs = 0;
      for (const auto& t : runs) {
        sent += t.flood_sent;
        at_b += t.flood_b;
        at_a += t.flood_a;
        secs += t.window_s;
      }
      part["flood_sent"] = sent;
      part["flood_mpps"] = secs > 0 ? static_cast<double>(sent) / secs / 1e6 : 0;
      part["flood_at_b"] = at_b;
      part["synacks_at_a"] = at_a;
    }
    bool limited = false;
    for (const auto& t : runs) limited |= gen_limited(t, g.o.rate * 1e6);
    part["gen_limited"] = limited;
    j[flood ? "flood" : "baseline"] = part;
    all.insert(all.end(), runs.begin(), runs.end());
  }
  g.flooding = false;
  // The summary's checks read these at the top level, over both halves.
  add_totals(j, all, false, &w);
  j["mpps"] = j["flood"]["mpps"];
  std::cout << j.dump() << std::endl;
  return 0;
}

template <traffic T>
int case_zero_loss(gen& g) {
  json j = base_json(g, "zero_loss");
  tally w = warm_up<T>(g);
  json trials = json::array();
  tally best, last, failed;  // failed: failures of every trial, summed
  double best_pps = 0;
  auto record = [&](const tally& t, double pps) {
    trials.push_back(trial_json(t, pps));
    for (int k = 0; k < kNumFails; ++k) failed.fails[k] += t.fails[k];
    last = t;
  };
  auto trial = [&](double pps) {
    tally t = run_phase<T>(g, {pps, g.o.duration, 0});
    record(t, pps);
    if (zero_loss(t, pps) && pps > best_pps) {
      best = t;
      best_pps = pps;
    }
    return zero_loss(t, pps);
  };
  if (g.o.rate > 0) {
    trial(g.o.rate * 1e6);
  } else {
    // The ceiling: as fast as the link takes them, as an offered client rate.
    tally top = run_phase<T>(g, {0, g.o.duration, 0});
    record(top, 0);
    double hi = offered_rate(top) * 1e6, lo = 0, stop = hi * g.o.precision;
    if (!trial(hi)) {
      while (hi - lo > stop && !g_stop.load()) {
        double mid = (lo + hi) / 2;
        (trial(mid) ? lo : hi) = mid;
      }
    }
  }
  // The passing trial at the best rate (a single check shows its trial, pass or fail).
  const tally& shown = g.o.rate > 0 ? last : best;
  j["rate"] = g.o.rate > 0 ? json(g.o.rate) : json("search");
  j["duration_s"] = g.o.duration;
  j["zero_loss"] = best_pps > 0;
  j["offered_mpps"] = offered_rate(shown);
  j["mpps"] = to_json(summarize({mpps(shown)}));
  j["gbps"] = gbps(shown);
  j["runs"] = 1;
  add_totals(j, {shown}, false);
  // Failures anywhere (warm-up, any trial) are reported, not only the shown trial's.
  for (int k = 0; k < kNumFails; ++k) failed.fails[k] += w.fails[k];
  json f = json::object();
  for (int k = 0; k < kNumFails; ++k) {
    if (failed.fails[k]) f[kFailNames[k]] = failed.fails[k];
  }
  j["failures"] = f;
  j["misdirected"] = failed.misdirected();
  j["bad_checksum"] = failed.fails[kBadChecksum];
  j["trials"] = trials;
  std::cout << j.dump() << std::endl;
  return 0;
}

int case_conn(gen& g) {
  json j = base_json(g, "conn");
  std::vector<tally> runs;
  std::vector<double> cps, rates;
  for (int r = 0; r < g.o.runs && !g_stop.load(); ++r) {
    runs.push_back(run_phase<traffic::conn>(g, {g.o.rate * 1e6, g.o.duration, 0}));
    const tally& t = runs.back();
    cps.push_back(t.window_s > 0 ? t.window_done / t.window_s : 0);
    rates.push_back(mpps(t));
  }
  j["rate"] = g.o.rate > 0 ? json(g.o.rate) : json("max");
  j["runs"] = runs.size();
  j["duration_s"] = g.o.duration;
  j["conn_per_s"] = to_json(summarize(cps));
  j["mpps"] = to_json(summarize(rates));
  add_totals(j, runs, true);
  std::cout << j.dump() << std::endl;
  return 0;
}

// ---- setup --------------------------------------------------------------------------------

void build_frames(gen& g) {
  using namespace dp::testing;
  g.frames.clear();
  mac dst = to_mac(g.a.peer), src = to_mac(g.a.mac);
  std::vector<uint16_t> wire =
      g.o.imix ? std::vector<uint16_t>{64, 570, 1518} : std::vector<uint16_t>{64};
  if (g.o.dns) {
    // One query: ID (patched per packet), RD, one question; padded to the 60-byte minimum.
    std::string name = std::string(kDnsName) + (g.o.dns == 2 ? kDnsSearch : "");
    std::string q("\0\0\1\0\0\1\0\0\0\0\0\0", 12);
    for (size_t at = 0; at < name.size();) {
      size_t dot = std::min(name.find('.', at), name.size());
      q.push_back(static_cast<char>(dot - at));
      q.append(name, at, dot - at);
      at = dot + 1;
    }
    q.append("\0\0\1\0\1", 5);
    bytes b = udp(dst, src, 0, 0, kDnsIp, dns::kPort, q);
    frame_template f;
    f.len = static_cast<uint16_t>(std::max<size_t>(b.size(), 60));
    std::memcpy(f.bytes.data(), b.data(), b.size());
    g.frames = {f};
    g.sizes = {0};
    return;
  }
  for (uint16_t w : wire) {
    uint16_t len = w - 4;  // no FCS on the link
    uint16_t payload = len - kL4At - (g.o.tcp ? sizeof(rte_tcp_hdr) : sizeof(rte_udp_hdr));
    bytes b = g.o.tcp ? tcp(dst, src, 0, 0, g.vip, g.vport, kAck | kPsh, std::string(payload, '\0'))
                      : udp(dst, src, 0, 0, g.vip, g.vport, std::string(payload, '\0'));
    frame_template f;
    f.len = len;
    std::memcpy(f.bytes.data(), b.data(), b.size());
    g.frames.push_back(f);
  }
  // IMIX 7:4:1, interleaved so every burst sees a mix.
  g.sizes =
      g.o.imix ? std::vector<uint8_t>{0, 1, 0, 0, 1, 0, 2, 0, 1, 0, 0, 1} : std::vector<uint8_t>{0};
  bytes s = tcp(dst, src, 0, 0, g.vip, g.vport, kSyn);
  s.resize(60, 0);  // minimum Ethernet frame: 6 bytes of padding after the IP packet
  g.syn.len = static_cast<uint16_t>(s.size());
  std::memcpy(g.syn.bytes.data(), s.data(), s.size());
}

bool start_port(gen& g, port_io& p, const std::string& devargs) {
  std::string name = devargs.substr(0, devargs.find(','));
  if (rte_eth_dev_get_port_by_name(name.c_str(), &p.id) != 0) {
    std::cerr << "gen: no DPDK port " << name << " (from " << devargs << ")\n";
    return false;
  }
  rte_eth_conf conf{};
  uint16_t rxd = 1024, txd = 1024;
  if (rte_eth_dev_configure(p.id, 1, 1, &conf) != 0 ||
      rte_eth_dev_adjust_nb_rx_tx_desc(p.id, &rxd, &txd) != 0 ||
      rte_eth_rx_queue_setup(p.id, 0, rxd, rte_eth_dev_socket_id(p.id), nullptr, g.pool) != 0 ||
      rte_eth_tx_queue_setup(p.id, 0, txd, rte_eth_dev_socket_id(p.id), nullptr) != 0) {
    std::cerr << "gen: cannot set up " << devargs << "\n";
    return false;
  }
  // A memif client cannot start before its server listens: retry for a while, quietly.
  rte_log_set_level_pattern("pmd.net.memif*", RTE_LOG_EMERG);
  int rc = -1;
  for (int i = 0; i < 100 && rc != 0 && !g_stop.load(); ++i) {
    if ((rc = rte_eth_dev_start(p.id)) != 0) rte_delay_us_sleep(100000);
  }
  rte_log_set_level_pattern("pmd.net.memif*", RTE_LOG_ERR);
  if (rc != 0) {
    std::cerr << "gen: cannot start " << devargs << " (is the server up?)\n";
    return false;
  }
  p.started = true;
  rte_eth_macaddr_get(p.id, &p.mac);
  return true;
}

/// Waits for the link. A memif server refuses a client that connects before its port is
/// started (the socket exists from probe time), and the client never retries on its own:
/// reconnect every second.
bool wait_link(const port_io& p, const char* side) {
  for (int i = 0; i < 300 && !g_stop.load(); ++i) {
    rte_eth_link link{};
    if (rte_eth_link_get_nowait(p.id, &link) == 0 && link.link_status) return true;
    if (i % 10 == 9) {
      rte_log_set_level_pattern("pmd.net.memif*", RTE_LOG_EMERG);
      rte_eth_dev_stop(p.id);
      rte_eth_dev_start(p.id);
      rte_log_set_level_pattern("pmd.net.memif*", RTE_LOG_ERR);
    }
    rte_delay_us_sleep(100000);
  }
  std::cerr << "gen: port " << side << " has no link\n";
  return false;
}

/// Learns the DUT's MACs (and teaches ferryd the gateway and every backend).
bool resolve(gen& g) {
  tally ignored;
  auto poll = [&](uint64_t cycles) {
    for (uint64_t until = rte_rdtsc() + cycles; rte_rdtsc() < until;) {
      poll_backend<traffic::tcp>(g, ignored, true);
      poll_client<traffic::tcp>(g, ignored, rte_rdtsc());
      flush(g.a, true, ignored.refused_a);
    }
  };
  // A memif client hands the server its receive buffers on its first receive call; until
  // then the server's transmits fail. Poll before asking anything.
  poll(g.hz / 100);
  for (int i = 0; i < 50 && !(g.a.peer_known && g.b.peer_known); ++i) {
    send_arp_request(g, g.a, kGateway);
    for (unsigned k = 1; k <= g.o.backends; ++k) send_arp_request(g, g.b, kBackendNet + k);
    poll(g.hz / 10);
  }
  if (!g.a.peer_known || !g.b.peer_known) {
    std::cerr << "gen: no ARP answer from " << format_ipv4(kNodeA) << " on A or "
              << format_ipv4(kNodeB) << " on B: is ferryd up with those addresses?\n";
    return false;
  }
  return true;
}

int usage() {
  std::cerr
      << "usage: ferry-perf gen [--case throughput|zero_loss|conn|synflood]\n"
         "         [--target ferryd|testpmd] [--flood X]\n"
         "         [--proto tcp|udp|dns|dns-nx] [--frame 64|imix] [--flows N] [--backends K]\n"
         "         [--rate MPPS] [--duration S] [--runs R] [--precision F]\n"
         "         [--a DEVARGS] [--b DEVARGS] [--lcore N] [--file-prefix P] [--no-huge]\n"
         "         [--zero-copy] [--steps FILE|-]   (see perf/gen.cpp)\n";
  return 2;
}

bool parse(int argc, char** argv, options& o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    bool has = i + 1 < argc;
    if (a == "--no-huge") {
      o.huge = false;
    } else if (a == "--zero-copy") {
      o.zero_copy = true;
    } else if (!has) {
      return false;
    } else if (a == "--case") {
      o.mode = argv[++i];
    } else if (a == "--target") {
      o.target = argv[++i];
    } else if (a == "--proto") {
      std::string v = argv[++i];
      if (v != "tcp" && v != "udp" && v != "dns" && v != "dns-nx") return false;
      o.tcp = v == "tcp";
      o.dns = v == "dns" ? 1 : v == "dns-nx" ? 2 : 0;
    } else if (a == "--frame") {
      std::string v = argv[++i];
      if (v != "64" && v != "imix") return false;
      o.imix = v == "imix";
    } else if (a == "--flows") {
      o.flows = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--backends") {
      o.backends = static_cast<unsigned>(std::atoi(argv[++i]));
    } else if (a == "--rate") {
      std::string v = argv[++i];
      o.rate = v == "max" ? 0 : std::atof(v.c_str());
    } else if (a == "--duration") {
      o.duration = std::atof(argv[++i]);
    } else if (a == "--runs") {
      o.runs = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--precision") {
      o.precision = std::atof(argv[++i]);
    } else if (a == "--flood") {
      o.flood = std::atof(argv[++i]);
    } else if (a == "--a") {
      o.dev_a = argv[++i];
    } else if (a == "--b") {
      o.dev_b = argv[++i];
    } else if (a == "--lcore") {
      o.lcore = argv[++i];
    } else if (a == "--file-prefix") {
      o.prefix = argv[++i];
    } else if (a == "--steps") {
      o.steps = argv[++i];
    } else {
      return false;
    }
  }
  return (o.mode == "throughput" || o.mode == "zero_loss" || o.mode == "conn" ||
          o.mode == "synflood") &&
         o.flood >= 0 && (o.target == "ferryd" || o.target == "testpmd") && o.flows >= 1 &&
         o.flows <= kMaxFlows && o.backends >= 1 && o.backends <= 253 && o.duration > 0 &&
         o.precision > 0 && o.rate >= 0;
}

template <traffic T>
int run_case(gen& g) {
  if (g.o.mode == "zero_loss") return case_zero_loss<T>(g);
  return case_throughput<T>(g);
}

/// Runs one case with `step`'s case options over the ports, addresses and target already set.
int run_step(gen& g, const options& step) {
  g.o.mode = step.mode;
  g.o.tcp = step.tcp;
  g.o.dns = step.dns;
  g.o.imix = step.imix;
  g.o.flows = step.flows;
  g.o.rate = step.rate;
  g.o.duration = step.duration;
  g.o.runs = step.runs;
  g.o.precision = step.precision;
  g.o.flood = step.flood;
  if (g.o.mode == "synflood") g.o.tcp = true;
  bool tcp = g.o.tcp || g.o.mode == "conn";
  g.vip = tcp ? kTcpVip : kUdpVip;
  g.vport = tcp ? kTcpVport : kUdpVport;
  g.cursor = 0;
  g.size_cursor = 0;
  build_frames(g);
  if (g.o.mode == "conn") {
    g.backend_of.clear();
    // Start somewhere else than the last run did: its closed connections may still be in
    // ferryd's table (tcp_closing_timeout), and a SYN on one is not a new flow.
    g.cursor = rte_rdtsc() % kMaxFlows;
    return case_conn(g);
  }
  g.backend_of.assign(g.o.flows, 0);
  if (g.o.mode == "synflood") return case_synflood(g);
  if (g.o.dns) {
    g.sent_at.assign(g.o.flows, 0);
    return run_case<traffic::dns>(g);
  }
  return tcp ? run_case<traffic::tcp>(g) : run_case<traffic::udp>(g);
}

/// The steps to run: the command line's case, or one per line of --steps (each line: case
/// options over the command line's; port, EAL and --target options there are ignored).
bool load_steps(const options& base, std::vector<options>& steps) {
  if (base.steps.empty()) {
    steps.push_back(base);
    return true;
  }
  std::ifstream file;
  if (base.steps != "-") file.open(base.steps);
  std::istream& in = base.steps == "-" ? std::cin : file;
  if (!in) {
    std::cerr << "gen: cannot read " << base.steps << "\n";
    return false;
  }
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    std::istringstream words(line.substr(0, line.find('#')));
    std::vector<std::string> args{"gen"};
    for (std::string w; words >> w;) args.push_back(w);
    if (args.size() == 1) continue;
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    options o = base;
    if (!parse(static_cast<int>(argv.size()), argv.data(), o)) {
      std::cerr << "gen: " << base.steps << ":" << n << ": bad step \"" << line << "\"\n";
      return false;
    }
    steps.push_back(o);
  }
  return true;
}

}  // namespace

int gen_main(int argc, char** argv) {
  gen g;
  std::vector<options> steps;
  if (!parse(argc, argv, g.o)) return usage();
  if (!load_steps(g.o, steps)) return 2;
  options& o = g.o;
  if (o.zero_copy) {
    for (std::string* d : {&o.dev_a, &o.dev_b}) {
      if (d->find("zero-copy=") == std::string::npos) *d += ",zero-copy=yes";
    }
  }
  std::vector<std::string> args{"ferry-perf-gen", "-l",     o.lcore,       "--no-pci",
                                "--file-prefix",  o.prefix, "--vdev",      o.dev_a,
                                "--vdev",         o.dev_b,  "--log-level", "*:error",
                                "--no-telemetry"};
  if (!o.huge) args.insert(args.end(), {"--no-huge", "-m", "512"});
  if (o.zero_copy) args.push_back("--single-file-segments");
  std::vector<char*> eal;
  for (auto& a : args) eal.push_back(a.data());
  if (rte_eal_init(static_cast<int>(eal.size()), eal.data()) < 0) {
    std::cerr << "gen: EAL init failed (hugepages set up? perf/hugepages.sh, or --no-huge)\n";
    return 1;
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  g.hz = rte_get_tsc_hz();
  g.ferryd = o.target == "ferryd";
  for (const std::string* d : {&o.dev_a, &o.dev_b}) {
    size_t at = d->find("rsize=");
    int log2 = at == std::string::npos ? 10 : std::atoi(d->c_str() + at + 6);
    g.max_in_flight =
        std::min<uint64_t>(g.max_in_flight, (uint64_t{1} << std::clamp(log2, 8, 14)) - 128);
  }
  g.max_in_flight = std::max<uint64_t>(g.max_in_flight, kBurst);
  g.a.node_ip = kNodeA;
  g.b.node_ip = kNodeB;
  int rc = 1;
  g.pool = rte_pktmbuf_pool_create("gen_mbufs", 16383, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                   static_cast<int>(rte_socket_id()));
  if (!g.pool) {
    std::cerr << "gen: cannot allocate mbufs: " << rte_strerror(rte_errno) << "\n";
  } else if (start_port(g, g.a, o.dev_a) && start_port(g, g.b, o.dev_b) && wait_link(g.a, "A") &&
             wait_link(g.b, "B")) {
    if (!g.ferryd) {
      // io forwarding passes frames unchanged: any MAC will do, and nobody answers ARP.
      g.a.peer = {{0x02, 0, 0, 0, 0, 0xfe}};
    }
    if (!g.ferryd || resolve(g)) {
      rc = 0;
      for (const options& step : steps) {
        if (g_stop.load()) break;
        rc |= run_step(g, step);
      }
    }
  }
  for (const port_io* p : {&g.a, &g.b}) {
    if (!p->started) continue;
    rte_eth_dev_stop(p->id);
    rte_eth_dev_close(p->id);
  }
  rte_mempool_free(g.pool);
  rte_eal_cleanup();
  return rc;
}

}  // namespace ferry::perf
