// compile: turns the store into an immutable snapshot for the workers: one service_port_entry
// (backends + Maglev table) per (ClusterIP, protocol, port), plus the lookup tables.
// Control thread only. Entries whose backends did not change are reused from the previous
// snapshot, so one endpoint change rebuilds one Maglev table.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "ferry/result.hpp"
#include "ferry/snapshot.hpp"
#include "store.hpp"

namespace ferry::control {

/// Where each Service's endpoints come from, indexed once per compile so that resolving all
/// services costs O(objects), not O(services x objects).
class endpoint_index {
 public:
  explicit endpoint_index(const store& st);
  /// Only what one Service needs (range queries on the store: for single changes).
  endpoint_index(const store& st, const std::string& ns, const std::string& service);

  /// The endpoints of one Service port as kube-proxy would pick them: from the Service's
  /// EndpointSlices (ports joined by name and protocol), else its legacy Endpoints, else (a
  /// standalone node) ready Pods matching the selector. Ready endpoints get weight 1; serving
  /// but terminating ones weight 0 (drain); the rest are left out. Sorted, no duplicates.
  std::vector<backend> resolve(const model::service& svc, const model::service_port& port) const;

 private:
  using name = std::pair<std::string, std::string>;  // namespace, service
  std::map<name, std::vector<const model::endpoint_slice*>> slices_;
  std::map<name, const model::endpoints*> legacy_;
  std::map<std::string, std::vector<const model::pod*>> pods_;  // by namespace
};

/// One-off form of endpoint_index::resolve (builds the index: use the class in loops).
std::vector<backend> resolve_backends(const store& st, const model::service& svc,
                                      const model::service_port& port);

/// Which Services a change touched, so compile() redoes only those.
struct dirty_set {
  bool all = false;
  std::set<std::pair<std::string, std::string>> services;  // (namespace, name)
  std::set<std::string> namespaces;                        // every Service in these
};

class compiler {
 public:
  compiler(uint32_t maglev_max_size, uint32_t max_service_ports)
      : maglev_max_size_(maglev_max_size), max_service_ports_(max_service_ports) {}

  /// Builds the next snapshot, redoing the endpoints of the dirty Services only (all of
  /// them on the first compile). Fails (and changes nothing) when more service ports exist
  /// than the workers have counter slots for. The cost of a change is that of the Services
  /// it touches: unchanged service ports keep their entry and Maglev table, and the new
  /// snapshot shares every lookup-table shard the change did not touch.
  result<std::unique_ptr<snapshot>> compile(const store& st, const dirty_set& dirty);
  result<std::unique_ptr<snapshot>> compile(const store& st) {
    return compile(st, dirty_set{.all = true});
  }

 private:
  struct wanted {
    std::string name;
    uint32_t vip;
    uint16_t port;
    uint8_t proto;
    std::vector<backend> backends;
  };
  using service_ports = std::vector<std::pair<uint64_t, wanted>>;  // by service_key
  using service_name = std::pair<std::string, std::string>;
  using entry_ptr = std::shared_ptr<const service_port_entry>;

  service_ports ports_of(const model::service& svc, const endpoint_index& endpoints) const;
  void remove(uint64_t key, const service_name& owner);
  void upsert(uint64_t key, const wanted& w, const service_name& owner);
  void link_backends(uint64_t key, const service_port_entry& e, bool add);

  std::map<service_name, service_ports> by_service_;  // what the last compile resolved
  size_t total_ports_ = 0;
  uint32_t maglev_max_size_;
  uint32_t max_service_ports_;
  uint64_t generation_ = 0;  // of the last snapshot built; 0: none yet (the next compile is full)
  std::vector<uint32_t> free_ids_;  // counter slots of service ports that went away
  uint32_t next_id_ = 0;

  // The live service ports and who owns each, and for every backend the service ports it
  // serves (by service key; the lowest one is the one replies are un-NATed to).
  struct live {
    entry_ptr entry;
    service_name owner;
  };
  std::unordered_map<uint64_t, live> entries_;
  std::unordered_map<uint64_t, std::map<uint64_t, const service_port_entry*>> backend_users_;
  // Keys whose lookup-table value this compile changed: only their shards are copied.
  std::vector<uint64_t> touched_vips_, touched_backends_;
  sharded_map<entry_ptr> vips_;
  sharded_map<const service_port_entry*> backends_;
};

}  // namespace ferry::control
