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

const model::service* as_service(const stored_object* so) {
  return so ? std::get_if<model::service>(&so->obj) : nullptr;
}

}  // namespace

std::optional<uint32_t> store::allocate(const std::string& name,
                                        const std::function<bool(uint32_t)>& is_free) const {
  // Usable addresses: all but the network and broadcast address (a /31 or /32 has no such).
  const uint64_t span = uint64_t{1} << (32 - service_cidr_.len);
  const auto size = static_cast<uint32_t>(span > 2 ? span - 2 : span);
  const uint32_t base = (service_cidr_.addr & service_cidr_.mask()) + (span > 2 ? 1 : 0);
  const auto start = static_cast<uint32_t>(hash2(std::hash<std::string>{}(name), 0, 7) % size);
  for (uint32_t i = 0; i < size; ++i) {
    uint32_t ip = base + (start + i) % size;
    if (is_free(ip)) return ip;
  }
  return std::nullopt;
}

void store::put(const key& k, std::optional<stored_object> obj) {
  auto it = objects_.find(k);
  const stored_object* old = it == objects_.end() ? nullptr : &it->second;
  if (const auto* svc = as_service(old); svc && svc->cluster_ip) {
    auto ip = cluster_ips_.find(*svc->cluster_ip);
    if (ip != cluster_ips_.end() && ip->second == k) cluster_ips_.erase(ip);
  }
  if (const auto* s = old ? std::get_if<model::endpoint_slice>(&old->obj) : nullptr) {
    auto names = slices_.find({s->meta.ns, s->service_name});
    if (names != slices_.end()) {
      names->second.erase(s->meta.name);
      if (names->second.empty()) slices_.erase(names);
    }
  }
  if (!obj) {
    if (it != objects_.end()) objects_.erase(it);
    return;
  }
  if (const auto* svc = as_service(&*obj); svc && svc->cluster_ip)
    cluster_ips_[*svc->cluster_ip] = k;
  if (const auto* s = std::get_if<model::endpoint_slice>(&obj->obj))
    slices_[{s->meta.ns, s->service_name}].insert(s->meta.name);
  objects_.insert_or_assign(k, std::move(*obj));
}

result<std::vector<change>> store::apply(std::vector<model::object> objects, source from,
                                         undo_log* undo) {
  // The batch is checked against the store plus what it has staged so far, and only then
  // committed, so a refusal leaves the store exactly as it was.
  std::map<key, stored_object> staged;
  std::map<uint32_t, key> claimed;  // ClusterIPs taken by staged Services
  auto current = [&](const key& k) -> const stored_object* {
    if (auto s = staged.find(k); s != staged.end()) return &s->second;
    auto o = objects_.find(k);
    return o == objects_.end() ? nullptr : &o->second;
  };
  // Who holds ip once the batch is in: a staged claim, else the store's holder unless the
  // batch moves that Service elsewhere.
  auto holder = [&](uint32_t ip) -> std::optional<key> {
    if (auto c = claimed.find(ip); c != claimed.end()) return c->second;
    if (auto u = cluster_ips_.find(ip); u != cluster_ips_.end()) {
      const auto* now = as_service(current(u->second));
      if (now && now->cluster_ip == ip) return u->second;
    }
    return std::nullopt;
  };

  std::vector<change> changes;
  for (auto& obj : objects) {
    key k = key_of(obj);
    if (auto* svc = std::get_if<model::service>(&obj)) {
      std::string name = svc->meta.ns + "/" + svc->meta.name;
      const auto* before = as_service(current(k));
      if (!svc->cluster_ip && !svc->headless && svc->type != model::service_type::external_name) {
        if (before && before->cluster_ip) {
          svc->cluster_ip = before->cluster_ip;  // fixed for the Service's life
        } else if (auto ip = allocate(name, [&](uint32_t a) { return !holder(a); })) {
          svc->cluster_ip = *ip;
        } else {
          return make_error("Service " + name + ": spec.clusterIP: no free address left in " +
                            format_ipv4(service_cidr_.addr) + "/" +
                            std::to_string(service_cidr_.len));
        }
      }
      if (before && before->cluster_ip) claimed.erase(*before->cluster_ip);
      if (svc->cluster_ip) {
        if (auto other = holder(*svc->cluster_ip); other && *other != k) {
          return make_error("Service " + name +
                            ": spec.clusterIP: " + format_ipv4(*svc->cluster_ip) +
                            " is already allocated to " + describe(*other));
        }
        claimed[*svc->cluster_ip] = k;
      }
    }
    const stored_object* before = current(k);
    std::string action = !before ? "created" : before->obj == obj ? "unchanged" : "configured";
    staged.insert_or_assign(k, stored_object{std::move(obj), from});
    changes.push_back({std::get<0>(k), std::get<1>(k), std::get<2>(k), action});
  }

  bool changed = false;
  for (const auto& c : changes) changed |= c.action != "unchanged";
  if (changed) ++version_;
  for (auto& [k, so] : staged) {
    if (undo) {
      auto it = objects_.find(k);
      undo->emplace_back(
          k, it == objects_.end() ? std::nullopt : std::optional<stored_object>(it->second));
    }
    put(k, std::move(so));
  }
  return changes;
}

std::vector<change> store::remove(const std::vector<model::object>& objects, undo_log* undo) {
  std::vector<change> changes;
  for (const auto& obj : objects) {
    key k = key_of(obj);
    auto it = objects_.find(k);
    bool found = it != objects_.end();
    if (found) {
      if (undo) undo->emplace_back(k, it->second);
      put(k, std::nullopt);
      ++version_;
    }
    changes.push_back(
        {std::get<0>(k), std::get<1>(k), std::get<2>(k), found ? "deleted" : "not found"});
  }
  return changes;
}

void store::revert(undo_log undo) {
  for (auto it = undo.rbegin(); it != undo.rend(); ++it) put(it->first, std::move(it->second));
  ++version_;
}

}  // namespace ferry::control
