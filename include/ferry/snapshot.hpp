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

#include "ferry/flat_map.hpp"
#include "ferry/maglev.hpp"

namespace ferry {

struct backend {
  uint32_t ip = 0;  // host order
  uint16_t port = 0;
  uint16_t weight = 1;  // 0: draining, gets no new flows
};

/// One (virtual IP, protocol, port) and the backends behind it.
struct service_port_entry {
  uint32_t id = 0;  // stable slot in the per-worker service counters
  uint32_t vip = 0;
  uint16_t port = 0;
  uint8_t proto = 0;
  std::string name;               // "namespace/service:port-name" for stats
  std::vector<backend> backends;  // every endpoint, draining ones included
  std::vector<uint16_t> maglev;   // indices into backends; size is a prime
  bool has_active = false;        // some backend has weight > 0

  /// Backend for a flow hash; only valid when has_active.
  const backend& pick(uint64_t hash) const { return backends[maglev[hash % maglev.size()]]; }
};

/// Key of the VIP and backend tables: address, port and protocol in one word.
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
