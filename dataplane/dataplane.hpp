// The dataplane: ports, routes, the connection and neighbor tables, the published snapshot,
// and one `worker` per worker lcore.
//
// Thread-safety: `dataplane` is built at start by the main lcore and then read-only, except
// for `snap` (written by the control thread with release, read by workers with acquire,
// old values freed after a QSBR grace period), `stop`, and the internally synchronised
// conntrack and neighbor tables. Each `worker` is touched only by its own lcore, except
// its counters, which the control thread reads.
#pragma once

#include <rte_ether.h>
#include <rte_ip_frag.h>
#include <rte_mbuf.h>
#include <rte_rcu_qsbr.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "affinity.hpp"
#include "conntrack.hpp"
#include "ferry/config.hpp"
#include "ferry/counters.hpp"
#include "ferry/snapshot.hpp"
#include "neighbor.hpp"
#include "source_limit.hpp"

namespace ferry::dp {

constexpr uint16_t kBurst = 32;
constexpr uint16_t kTxBatch = 64;
constexpr uint16_t kHoldSize = 256;

struct port_info {
  std::string name;
  uint16_t port_id = 0;  // DPDK port id
  rte_ether_addr mac{};
  uint32_t addr = 0;    // host order
  uint16_t mtu = 1500;  // largest IP packet the port sends
  uint16_t rx_queues = 1;
  uint16_t tx_queues = 1;
};

struct route_entry {
  uint32_t net = 0, mask = 0;
  uint32_t via = 0;   // 0: on-link
  uint16_t port = 0;  // index into dataplane::ports
};

struct dataplane {
  std::vector<port_info> ports;     // config order; "port index" everywhere means this index
  std::vector<route_entry> routes;  // longest prefix first; connected subnets included
  std::unique_ptr<conntrack> ct;
  std::unique_ptr<neighbor_table> neighbors;
  std::unique_ptr<affinity_table> affinity;
  std::atomic<const snapshot*> snap{nullptr};
  rte_rcu_qsbr* qsbr = nullptr;
  rte_mempool* pool = nullptr;
  uint64_t tsc_hz = 0;
  uint64_t hold_tsc = 0;       // how long a packet waits for ARP
  uint64_t arp_retry_tsc = 0;  // at most one request per next hop per interval
  uint32_t icmp_rate = 0;      // no-endpoint answers per second per worker
  limits_config limits;        // [limits]: per-source new-flow limit (source_limit.hpp)
  unsigned n_workers = 1;      // for the per-worker share of the source limit
  // [icmp]: echo replies and originated errors per second per worker; whether a
  // service address answers ping.
  uint32_t echo_rate = 0;
  uint32_t error_rate = 0;
  bool answer_service_echo = false;
  uint16_t min_mtu = 0xffff;  // smallest port MTU: below it no packet needs the MTU check
  uint32_t idle_sleep_us = 0;
  uint32_t max_service_ports = 0;
  uint32_t filter_max_rules = 4096;     // [limits]: per-worker filter hit counter slots
  std::vector<uint32_t> dns_addresses;  // [dns] addresses: answered on port 53
  // [dns] response rate limiting (worker::dns_limiter, keyed by source & dns_rrl_mask): of
  // the answers over the rate, every dns_rrl_slip-th goes out with TC (0: none); exempt
  // sources are neither limited nor counted. forward_sources: who may use the upstreams
  // (empty: anyone).
  uint32_t dns_rrl_rate = 0;  // answers per second per source prefix (0: off)
  uint32_t dns_rrl_mask = 0xffffff00;
  uint32_t dns_rrl_slip = 0;
  std::vector<ipv4_prefix> dns_rrl_exempt, dns_forward_sources;
  // DNS over TCP goes to the kernel through this port (dns_tcp.hpp); kNoPort: none.
  static constexpr uint16_t kNoPort = 0xffff;
  uint16_t dns_tcp_port = kNoPort;
  // [dns] external_ttl_max / external_cache_size: the DNS thread's resolver of ExternalName
  // targets outside the zone (dns_resolver.hpp).
  uint32_t dns_external_ttl_max = 60;
  uint32_t dns_external_cache = 1024;
  // [fragments]. frag_indirect: the indirect mbufs that egress
  // fragmentation attaches to a datagram's data; null when fragments are off.
  bool frag_enabled = false;
  uint32_t frag_max_datagrams = 0, frag_max_size = 0, frag_max_held = 0;
  uint64_t frag_timeout_tsc = 0;
  rte_mempool* frag_indirect = nullptr;
  std::atomic<bool> stop{false};

  const route_entry* route(uint32_t dst) const {
    for (const auto& r : routes) {
      if ((dst & r.mask) == r.net) return &r;
    }
    return nullptr;
  }
  bool is_dns(uint32_t ip) const {
    for (uint32_t a : dns_addresses) {
      if (a == ip) return true;
    }
    return false;
  }
  static bool in(const std::vector<ipv4_prefix>& prefixes, uint32_t ip) {
    for (const auto& p : prefixes) {
      if (p.contains(ip)) return true;
    }
    return false;
  }
  bool is_local(uint32_t ip) const {
    for (const auto& p : ports) {
      if (p.addr == ip) return true;
    }
    return false;
  }
  /// Affinity time now, in affinity_table ticks.
  uint16_t affinity_now(uint64_t tsc) const {
    return static_cast<uint16_t>(tsc / (tsc_hz * affinity_table::kTickSeconds));
  }
};

/// Builds routes: connected subnets of the ports, then the configured static routes, sorted
/// longest prefix first. Port names must exist (config checking guarantees it).
std::vector<route_entry> build_routes(const node_config& cfg);

struct tx_batch {
  uint16_t n = 0;
  rte_mbuf* pkts[kTxBatch];
};

struct held_packet {
  rte_mbuf* m;
  uint64_t deadline;
  uint32_t next_hop;
  uint16_t port;
};

/// A per-worker token bucket for the ICMP ferry sends: one token per 1/rate seconds, at most
/// `rate` banked (rate 0: never any token).
struct token_bucket {
  uint64_t tokens = 0;
  uint64_t refill = 0;  // TSC up to which tokens have been credited

  void start(uint32_t rate, uint64_t now) {
    tokens = rate;
    refill = now;
  }
  /// Takes a token if one is there.
  bool take(uint32_t rate, uint64_t tsc_hz, uint64_t now) {
    if (rate) {
      const uint64_t per_token = tsc_hz / rate;
      if (const uint64_t earned = (now - refill) / per_token) {
        tokens = std::min<uint64_t>(rate, tokens + earned);
        refill += earned * per_token;
      }
    }
    if (!tokens) return false;
    --tokens;
    return true;
  }
};

/// A worker's IPv4 reassembly state (fragments.hpp): its own rte_ip_frag table (no locks),
/// the death row DPDK frees fragments onto, and what is held in the table.
struct frag_state {
  rte_ip_frag_tbl* tbl = nullptr;
  rte_ip_frag_death_row dr{};
  frag_state() = default;
  frag_state(const frag_state&) = delete;
  frag_state& operator=(const frag_state&) = delete;
  ~frag_state();  // frees what the table and the death row hold
};

struct alignas(64) worker {
  worker_counters counters;
  unsigned index = 0;  // 0..workers-1
  unsigned lcore = 0;
  uint16_t queue = 0;  // RX/TX queue pair on every port
  dataplane* dp = nullptr;
  conntrack_worker ct;
  source_limiter limiter;       // [limits] new_flows_per_source
  source_limiter dns_limiter;   // [dns] rate_limit, per source prefix
  uint32_t dns_over = 0;        // answers over dns_limiter's rate so far (for the slip)
  uint64_t now = 0;             // TSC at the start of the current burst
  token_bucket unreach_bucket;  // no-endpoint answers ([services] icmp_unreachable_rate)
  token_bucket echo_bucket;     // echo replies ([icmp] echo_rate)
  token_bucket error_bucket;    // time exceeded + frag needed ([icmp] error_rate)
  uint16_t n_held = 0;
  tx_batch tx[kMaxPorts];
  held_packet held[kHoldSize];
  std::unique_ptr<service_counters[]> services;
  std::unique_ptr<counter[]> filter_hits;  // dp->filter_max_rules entries
  frag_state frag;
};

/// Sets up worker i (counters, conntrack share, QSBR thread id = i).
void init_worker(worker& w, dataplane& dp, unsigned index, unsigned lcore);

/// The packet path: handles a received burst from port index in_port. Each packet ends in
/// a TX batch, parked for ARP, or freed with a drop counted.
void process_burst(worker& w, const snapshot* snap, rte_mbuf** pkts, uint16_t n, uint16_t in_port);

/// Sends parked packets whose next hop resolved; drops those that waited too long.
void service_held(worker& w);

/// Hands every TX batch to its device queue; counts what the device refused.
void flush_tx(worker& w);

/// The worker lcore's loop (rte_eal_remote_launch entry point; arg is a worker*).
int worker_main(void* arg);

}  // namespace ferry::dp
