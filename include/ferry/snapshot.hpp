// The service table as workers see it: an immutable snapshot built by the control thread
// (control/compile.cpp) and published through an RCU-protected pointer (control/publish).
//
// Thread-safety: after publication nothing in a snapshot is ever written. Workers read it
// between two quiescent-state reports; the control thread frees it only after a QSBR grace
// period. Per-service-port parts are shared (shared_ptr) between consecutive snapshots, so
// one endpoint change rebuilds one service port; workers never touch the reference counts.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ferry/dns.hpp"
#include "ferry/filter.hpp"
#include "ferry/flat_map.hpp"
#include "ferry/maglev.hpp"
#include "ferry/net.hpp"

namespace ferry {

struct backend {
  uint32_t ip = 0;  // host order
  uint16_t port = 0;
  uint16_t weight = 1;  // 0: draining, gets no new flows
  bool local = false;   // on this node (its endpoint's nodeName is the node's name)
  // The weight before an operator's override (`ferryctl weight`), for display.
  uint16_t configured_weight = 1;

  bool operator==(const backend&) const = default;
};

/// One frontend of a Service port: (ClusterIP, externalIP or load balancer address,
/// protocol, port), or a NodePort (vip 0, on every node address), and the backends behind it.
struct service_port_entry {
  uint32_t id = 0;  // stable slot in the per-worker service counters
  uint32_t vip = 0;
  uint16_t port = 0;
  uint8_t proto = 0;
  bool external = false;          // NodePort, LB or externalIP: externalTrafficPolicy applies
  bool snat_remote = false;       // external with policy Cluster: SNAT to a backend off this node
  bool drop_empty = false;        // no backend for the policy, but the Service has endpoints:
                                  // drop (kube-proxy's "no local endpoints"); else reject
  bool announce = false;          // an LB address from the node's pool: answered for by ARP
  uint32_t affinity_timeout = 0;  // seconds; 0: no sessionAffinity
  uint64_t affinity_key = 0;      // the Service port (shared by all its frontends)
  std::vector<ipv4_prefix> source_ranges;  // LB frontends: allowed clients (empty: any)
  std::string name;                        // "namespace/service:port-name" for stats
  std::vector<backend> backends;           // sorted by (ip, port); draining ones included
  std::vector<uint16_t> maglev;            // indices into backends; size is a prime
  bool has_active = false;                 // some backend has weight > 0

  /// Backend for a flow hash; only valid when has_active.
  const backend& pick(uint64_t hash) const { return backends[maglev[hash % maglev.size()]]; }
  /// The backend at ip:port if it still takes new flows (affinity checks), else nullptr.
  const backend* active(uint32_t ip, uint16_t port) const {
    auto it = std::lower_bound(backends.begin(), backends.end(), std::pair(ip, port),
                               [](const backend& b, std::pair<uint32_t, uint16_t> k) {
                                 return std::pair(b.ip, b.port) < k;
                               });
    return it != backends.end() && it->ip == ip && it->port == port && it->weight ? &*it : nullptr;
  }
  bool allows(uint32_t client) const {
    if (source_ranges.empty()) return true;
    for (const auto& r : source_ranges) {
      if (r.contains(client)) return true;
    }
    return false;
  }
};

/// Key of the VIP and backend tables: address, port and protocol in one word. NodePorts are
/// keyed with address 0.
constexpr uint64_t service_key(uint32_t ip, uint8_t proto, uint16_t port) {
  return (uint64_t{ip} << 32) | (uint64_t{port} << 8) | proto;
}

struct snapshot {
  uint64_t generation = 0;
  /// (VIP, proto, port) -> service port. Owns the entries.
  sharded_map<std::shared_ptr<const service_port_entry>> vips;
  /// (backend address, proto, backend port) -> a service port it serves; lets a worker
  /// un-NAT a reply that has no connection entry (table full, or after a restart). Points
  /// into vips of the same snapshot.
  sharded_map<const service_port_entry*> backends;
  /// Backends (same key) that serve more than one frontend, ClusterIP or external: a reply
  /// without an entry cannot tell which one its client used, so it makes no entry.
  sharded_map<bool> shared_backends;
  /// Load balancer addresses of the node's pool, sorted: ferry answers ARP for them on the
  /// port whose subnet holds them.
  std::shared_ptr<const std::vector<uint32_t>> announced;
  /// Every service address (ClusterIPs, externalIPs, LB addresses), sorted: what ICMP to a
  /// service is told apart by.
  std::shared_ptr<const std::vector<uint32_t>> addresses;
  /// The cluster DNS zone ([dns]); nullptr when DNS is off.
  std::shared_ptr<const dns::zone> dns;
  /// [dns] upstreams as one UDP frontend: queries for names outside the zones are DNATed
  /// to one of them (and SNATed to the node) like a Service's traffic; nullptr: none.
  std::shared_ptr<const service_port_entry> dns_upstream;
  /// Payload signature rules ([[filter]], `ferryctl filter`); nullptr: none (the workers'
  /// only cost is this pointer's test).
  std::shared_ptr<const filter_set> filters;

  bool is_service_address(uint32_t ip) const {
    return addresses && std::binary_search(addresses->begin(), addresses->end(), ip);
  }
  bool announces(uint32_t ip) const {
    return announced && std::binary_search(announced->begin(), announced->end(), ip);
  }

  /// Every service port in key order (control thread: stats and tests; O(n log n)).
  std::vector<const service_port_entry*> ports() const {
    std::vector<std::pair<uint64_t, const service_port_entry*>> all;
    for (size_t i = 0; i < vips.kShards; ++i) {
      vips.at(i).for_each([&](uint64_t k, const auto& e) { all.emplace_back(k, e.get()); });
    }
    std::sort(all.begin(), all.end());
    std::vector<const service_port_entry*> out;
    for (const auto& [k, e] : all) out.push_back(e);
    return out;
  }
};

}  // namespace ferry
