// The payload signature filter as workers see it: one Hyperscan block-mode database of every
// rule's pattern (expression id = rule index), the rules' scope, action and depth, and one
// scratch per worker. Built by the control thread (control/filter.cpp) and published inside
// the snapshot, so it is freed after the same QSBR grace period; never written after that.
#pragma once

#include <hs.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

namespace ferry {

/// A compiled database and one scratch per worker (hs_alloc_scratch/hs_clone_scratch by the
/// control thread; a worker uses only scratch[its index]). Shared by consecutive filter sets
/// while the rules' patterns stay the same (a scope re-resolved after a Service change).
struct filter_db {
  hs_database_t* db = nullptr;
  std::vector<hs_scratch_t*> scratch;

  filter_db() = default;
  filter_db(const filter_db&) = delete;
  filter_db& operator=(const filter_db&) = delete;
  ~filter_db() {
    for (hs_scratch_t* s : scratch) hs_free_scratch(s);
    hs_free_database(db);
  }
};

struct filter_rule_entry {
  uint32_t slot = 0;   // index of its hit counter in every worker's filter_hits
  uint32_t depth = 0;  // a match must end within this many payload bytes
  bool drop = false;   // else count only
  bool by_service = false;
  uint8_t proto = 0;                  // 0: any
  uint16_t port = 0;                  // destination port as the client sent it; 0: any
  uint32_t vip = 0;                   // destination address as the client sent it; 0: any
  std::vector<uint32_t> service_ids;  // by_service: its frontends' ids, sorted

  bool applies(uint32_t dst, uint8_t pr, uint16_t dport, uint32_t svc) const {
    return (!proto || proto == pr) && (!port || port == dport) && (!vip || vip == dst) &&
           (!by_service || std::binary_search(service_ids.begin(), service_ids.end(), svc));
  }
};

struct filter_set {
  std::shared_ptr<const filter_db> db;
  std::vector<filter_rule_entry> rules;  // index = Hyperscan expression id
  uint32_t max_depth = 0;                // bytes scanned: the largest depth of any rule
  // Prefilter so that traffic no rule can apply to is not scanned: protocols (bit 0 TCP,
  // bit 1 UDP) some rule without a vip/port/service scope covers, and the keys the scoped
  // rules name (sorted).
  uint8_t wide_protos = 0;
  std::vector<uint32_t> vips, service_ids;
  std::vector<uint16_t> ports;

  static uint8_t proto_bit(uint8_t proto) { return proto == 6 ? 1 : proto == 17 ? 2 : 0; }

  /// Whether some rule may apply to a packet to dst:dport/proto of service frontend svc.
  bool may_match(uint32_t dst, uint8_t proto, uint16_t dport, uint32_t svc) const {
    if (wide_protos & proto_bit(proto)) return true;
    return (!ports.empty() && std::binary_search(ports.begin(), ports.end(), dport)) ||
           (!vips.empty() && std::binary_search(vips.begin(), vips.end(), dst)) ||
           (!service_ids.empty() &&
            std::binary_search(service_ids.begin(), service_ids.end(), svc));
  }
};

}  // namespace ferry
