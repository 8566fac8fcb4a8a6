// The store: every Service, EndpointSlice, Endpoints and Pod the node knows, with where it
// came from. Control thread only (not thread-safe). Every change goes through apply() or
// remove(), which check the whole batch first and then change all of it or nothing.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "ferry/net.hpp"
#include "ferry/result.hpp"
#include "model.hpp"

namespace ferry::control {

enum class source { file, socket, api, builtin };
const char* source_name(source s);

struct change {
  std::string kind, ns, name;
  std::string action;  // created, configured, unchanged, deleted, not found
};

struct stored_object {
  model::object obj;
  source from = source::file;
};

/// The address and port ranges Services draw from (the [services] config table).
struct service_ranges {
  ipv4_prefix service_cidr{0x0a600000, 12};
  uint16_t node_port_min = 30000, node_port_max = 32767;
  std::vector<ipv4_prefix> load_balancer_pool;
};

/// One address:port/protocol a Service takes traffic on (a NodePort has address 0), and the
/// manifest field it comes from, for messages.
struct frontend {
  uint64_t key;  // service_key(address, protocol, port)
  std::string field;
};
std::vector<frontend> frontends_of(const model::service& svc);

class store {
 public:
  explicit store(service_ranges ranges) : ranges_(std::move(ranges)) {}
  explicit store(ipv4_prefix service_cidr) : store(service_ranges{.service_cidr = service_cidr}) {}

  using key = std::tuple<std::string, std::string, std::string>;  // kind, ns, name

  /// What a change replaced, so it can be taken back (nullopt: the key was absent).
  using undo_log = std::vector<std::pair<key, std::optional<stored_object>>>;

  /// Adds or replaces objects. Services without a ClusterIP get one from the service CIDR,
  /// NodePort and LoadBalancer ports without a nodePort get one from the node port range,
  /// and LoadBalancers without an address get one from the pool (all kept across updates).
  /// Refused whole, naming the object, the field and the other owner, when a ClusterIP is
  /// outside the CIDR or taken, a nodePort is outside the range, two Services claim one
  /// address:port/protocol, or a range is exhausted. Costs O(batch x log(store)).
  result<std::vector<change>> apply(std::vector<model::object> objects, source from,
                                    undo_log* undo = nullptr);

  /// Removes the objects named (kind, namespace, name); the rest of each object is ignored.
  std::vector<change> remove(const std::vector<model::object>& objects, undo_log* undo = nullptr);
  std::vector<change> remove(const std::vector<key>& keys, undo_log* undo = nullptr);

  /// Puts back what an apply or remove replaced (newest first).
  void revert(undo_log undo);

  const std::map<key, stored_object>& objects() const { return objects_; }

  /// Names of the EndpointSlices (in ns) labelled for a Service, or nullptr if none.
  const std::set<std::string>* slices_of(const std::string& ns, const std::string& service) const {
    auto it = slices_.find({ns, service});
    return it == slices_.end() ? nullptr : &it->second;
  }

  /// Bumped on every change; lets the caller skip recompiling when nothing changed.
  uint64_t version() const { return version_; }

 private:
  // A deterministic pick for a Service: from a hash of its name, the next free value of
  // [first, first + size).
  static std::optional<uint32_t> allocate(const std::string& name, uint32_t first, uint32_t size,
                                          const std::function<bool(uint32_t)>& is_free);
  // A ClusterIP for a Service: the first address free in the store and in the batch
  // (`is_free`) from a hash of the name. `batch_taken`: service-range addresses the batch has
  // claimed that the store does not hold. O(1) when the range is full (counted); otherwise it
  // walks the store's taken addresses in order from the hash (a cheap step each), not the range.
  std::optional<uint32_t> allocate_cluster_ip(const std::string& name, uint32_t batch_taken,
                                              const std::function<bool(uint32_t)>& is_free) const;
  // Counts an address index entry in (delta 1) or out (-1) of addr_refs_.
  void ref_address(uint32_t ip, int delta);

  // Fills in what a Service leaves to the cluster (ClusterIP, nodePorts, load balancer
  // address), reusing what `before` had, and checks what it names against the ranges.
  result<void> settle_service(model::service& svc, const std::string& name,
                              const model::service* before,
                              const std::function<std::optional<key>(uint64_t)>& frontend_holder,
                              const std::function<bool(uint32_t)>& address_taken,
                              uint32_t batch_taken = 0) const;

  // Replaces (or with nullopt erases) one object, keeping the indexes in step.
  void put(const key& k, std::optional<stored_object> obj);

  service_ranges ranges_;
  std::map<key, stored_object> objects_;
  std::map<uint32_t, key> cluster_ips_;  // ClusterIP -> the Service holding it
  std::map<uint64_t, key> frontends_;    // every Service's frontend keys -> the Service
  // Addresses of the service range that cluster_ips_ or frontends_ name -> how many entries
  // name each; its size is how full the range is (a refusal at a full range is O(1)).
  std::map<uint32_t, uint32_t> addr_refs_;
  // (namespace, service) -> its EndpointSlices' names: a change resolves one Service
  // without walking every slice in the namespace.
  std::map<std::pair<std::string, std::string>, std::set<std::string>> slices_;
  uint64_t version_ = 0;
};

store::key key_of(const model::object& obj);

}  // namespace ferry::control
