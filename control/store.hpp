// The store: every Service, EndpointSlice, Endpoints and Pod the node knows, with where it
// came from. Control thread only (not thread-safe). Every change goes through apply() or
// remove(), which check the whole batch first and then change all of it or nothing.
#pragma once

#include <cstdint>
#include <map>
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

class store {
 public:
  explicit store(ipv4_prefix service_cidr) : service_cidr_(service_cidr) {}

  /// Adds or replaces objects. Services without a ClusterIP get one from the service CIDR
  /// (kept across updates). Refused whole, naming the object, when a ClusterIP is taken by
  /// another Service or the CIDR is exhausted.
  result<std::vector<change>> apply(std::vector<model::object> objects, source from);

  /// Removes the objects named (kind, namespace, name); the rest of each object is ignored.
  std::vector<change> remove(const std::vector<model::object>& objects);

  using key = std::tuple<std::string, std::string, std::string>;  // kind, ns, name
  const std::map<key, stored_object>& objects() const { return objects_; }

  /// Bumped on every change; lets the caller skip recompiling when nothing changed.
  uint64_t version() const { return version_; }

 private:
  result<void> assign_cluster_ip(model::service& svc, const std::map<key, stored_object>& view,
                                 const std::string& origin) const;

  ipv4_prefix service_cidr_;
  std::map<key, stored_object> objects_;
  uint64_t version_ = 0;
};

store::key key_of(const model::object& obj);

}  // namespace ferry::control
