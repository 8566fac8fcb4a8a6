#include "store.hpp"

#include <set>

#include "ferry/hash.hpp"

namespace ferry::control {

const char* source_name(source s) {
  switch (s) {
    case source::file:
      return "file";
    case source::socket:
      return "socket";
    case source::api:
      return "api";
    case source::builtin:
      return "builtin";
  }
  return "?";
}

store::key key_of(const model::object& obj) {
  const auto& m = model::meta_of(obj);
  return {std::string(model::kind_name(obj)), m.ns, m.name};
}

namespace {

std::string describe(const store::key& k) {
  return std::get<0>(k) + " " + std::get<1>(k) + "/" + std::get<2>(k);
}

// ClusterIPs in use in a view of the store, with the Service that holds each.
std::map<uint32_t, store::key> cluster_ips(const std::map<store::key, stored_object>& view) {
  std::map<uint32_t, store::key> used;
  for (const auto& [k, so] : view) {
    if (const auto* svc = std::get_if<model::service>(&so.obj); svc && svc->cluster_ip) {
      used.emplace(*svc->cluster_ip, k);
    }
  }
  return used;
}

}  // namespace

result<void> store::assign_cluster_ip(model::service& svc, const std::map<key, stored_object>& view,
                                      const std::string& origin) const {
  if (svc.headless || svc.type == model::service_type::external_name || svc.cluster_ip) {
    return {};
  }
  // Keep the address an earlier version of this Service was given: a ClusterIP is fixed for
  // the Service's life.
  if (auto it = objects_.find(key{"Service", svc.meta.ns, svc.meta.name}); it != objects_.end()) {
    if (const auto* old = std::get_if<model::service>(&it->second.obj); old && old->cluster_ip) {
      svc.cluster_ip = old->cluster_ip;
      return {};
    }
  }
  // Otherwise a deterministic pick: hash of the name, then the next free address.
  auto used = cluster_ips(view);
  // Usable addresses: all but the network and broadcast address (a /31 or /32 has no such).
  const uint64_t span = uint64_t{1} << (32 - service_cidr_.len);
  const auto size = static_cast<uint32_t>(span > 2 ? span - 2 : span);
  const uint32_t base = (service_cidr_.addr & service_cidr_.mask()) + (span > 2 ? 1 : 0);
  uint32_t start = static_cast<uint32_t>(hash2(std::hash<std::string>{}(origin), 0, 7) % size);
  for (uint32_t i = 0; i < size; ++i) {
    uint32_t ip = base + (start + i) % size;
    if (!used.count(ip)) {
      svc.cluster_ip = ip;
      return {};
    }
  }
  return make_error("Service " + origin + ": spec.clusterIP: no free address left in " +
                    format_ipv4(service_cidr_.addr) + "/" + std::to_string(service_cidr_.len));
}

result<std::vector<change>> store::apply(std::vector<model::object> objects, source from) {
  // Work on a copy so that a refusal leaves the store exactly as it was.
  auto next = objects_;
  std::vector<change> changes;
  for (auto& obj : objects) {
    key k = key_of(obj);
    if (auto* svc = std::get_if<model::service>(&obj)) {
      std::string name = svc->meta.ns + "/" + svc->meta.name;
      next.erase(k);  // its own old address does not conflict with itself
      if (auto r = assign_cluster_ip(*svc, next, name); !r) return r.err();
      if (svc->cluster_ip) {
        auto used = cluster_ips(next);
        if (auto it = used.find(*svc->cluster_ip); it != used.end()) {
          return make_error("Service " + name +
                            ": spec.clusterIP: " + format_ipv4(*svc->cluster_ip) +
                            " is already allocated to " + describe(it->second));
        }
      }
      if (auto it = objects_.find(k); it != objects_.end()) next.emplace(k, it->second);
    }
    std::string action = "created";
    if (auto it = next.find(k); it != next.end()) {
      action = it->second.obj == obj ? "unchanged" : "configured";
    }
    next[k] = stored_object{std::move(obj), from};
    changes.push_back({std::get<0>(k), std::get<1>(k), std::get<2>(k), action});
  }
  objects_ = std::move(next);
  for (const auto& c : changes) {
    if (c.action != "unchanged") {
      ++version_;
      break;
    }
  }
  return changes;
}

std::vector<change> store::remove(const std::vector<model::object>& objects) {
  std::vector<change> changes;
  for (const auto& obj : objects) {
    key k = key_of(obj);
    bool found = objects_.erase(k) > 0;
    if (found) ++version_;
    changes.push_back(
        {std::get<0>(k), std::get<1>(k), std::get<2>(k), found ? "deleted" : "not found"});
  }
  return changes;
}

}  // namespace ferry::control
