#include "compile.hpp"

#include <algorithm>
#include <optional>
#include <set>

namespace ferry::control {
namespace {

bool selector_matches(const model::labels& selector, const model::labels& labels) {
  if (selector.empty()) return false;
  for (const auto& [k, v] : selector) {
    auto it = labels.find(k);
    if (it == labels.end() || it->second != v) return false;
  }
  return true;
}

void add_group(const model::endpoint_group& g, const model::service_port& port,
               std::vector<backend>& out) {
  // kube-proxy joins a Service port to an endpoint port by name (and protocol).
  const model::endpoint_port* ep = nullptr;
  for (const auto& p : g.ports) {
    if (p.name == port.name && p.protocol == port.protocol) ep = &p;
  }
  if (!ep) return;
  for (const auto& e : g.endpoints) {
    if (e.addresses.empty()) continue;
    if (e.ready) {
      out.push_back({e.addresses[0], ep->port, 1});
    } else if (e.serving && e.terminating) {
      out.push_back({e.addresses[0], ep->port, 0});
    }
  }
}

}  // namespace

endpoint_index::endpoint_index(const store& st) {
  for (const auto& [k, so] : st.objects()) {
    if (const auto* s = std::get_if<model::endpoint_slice>(&so.obj)) {
      if (s->ipv4) slices_[{s->meta.ns, s->service_name}].push_back(s);
    } else if (const auto* e = std::get_if<model::endpoints>(&so.obj)) {
      legacy_[{e->meta.ns, e->meta.name}] = e;
    } else if (const auto* p = std::get_if<model::pod>(&so.obj)) {
      pods_[p->meta.ns].push_back(p);
    }
  }
}

endpoint_index::endpoint_index(const store& st, const std::string& ns, const std::string& service) {
  // Index lookups only, so one Service costs O(its objects x log(store)); Pods are read only
  // when the Service has no endpoint objects at all.
  const auto& objs = st.objects();
  if (const auto* names = st.slices_of(ns, service)) {
    for (const auto& n : *names) {
      auto it = objs.find({"EndpointSlice", ns, n});
      const auto* s =
          it == objs.end() ? nullptr : std::get_if<model::endpoint_slice>(&it->second.obj);
      if (s && s->ipv4) slices_[{ns, service}].push_back(s);
    }
    if (!slices_.empty()) return;
  }
  if (auto it = objs.find({"Endpoints", ns, service}); it != objs.end()) {
    legacy_[{ns, service}] = std::get_if<model::endpoints>(&it->second.obj);
    return;
  }
  for (auto it = objs.lower_bound({"Pod", ns, ""});
       it != objs.end() && std::get<0>(it->first) == "Pod" && std::get<1>(it->first) == ns; ++it) {
    pods_[ns].push_back(std::get_if<model::pod>(&it->second.obj));
  }
}

std::vector<backend> resolve_backends(const store& st, const model::service& svc,
                                      const model::service_port& port) {
  return endpoint_index(st).resolve(svc, port);
}

std::vector<backend> endpoint_index::resolve(const model::service& svc,
                                             const model::service_port& port) const {
  std::vector<backend> out;
  const name key{svc.meta.ns, svc.meta.name};
  if (auto s = slices_.find(key); s != slices_.end()) {
    for (const auto* slice : s->second) add_group(slice->group, port, out);
  } else if (auto e = legacy_.find(key); e != legacy_.end()) {
    for (const auto& g : e->second->subsets) add_group(g, port, out);
  } else if (auto pods = pods_.find(svc.meta.ns); pods != pods_.end()) {
    // No endpoint objects at all: act as the endpoints controller would on a standalone
    // node, from the Pods the selector matches.
    for (const auto* p : pods->second) {
      if (!p->ip || !p->ready || !selector_matches(svc.selector, p->meta.label_map)) continue;
      uint16_t target = port.port;
      if (const auto* n = std::get_if<uint16_t>(&port.target_port); n && *n) target = *n;
      if (const auto* pname = std::get_if<std::string>(&port.target_port)) {
        target = 0;
        for (const auto& cp : p->ports) {
          if (cp.name == *pname && cp.protocol == port.protocol) target = cp.port;
        }
        if (!target) continue;
      }
      out.push_back({*p->ip, target, 1});
    }
  }
  std::sort(out.begin(), out.end(), [](const backend& a, const backend& b) {
    return std::tie(a.ip, a.port, b.weight) < std::tie(b.ip, b.port, a.weight);
  });
  // Duplicates (an address in two slices): keep the first, which is the ready one.
  out.erase(std::unique(out.begin(), out.end(),
                        [](const backend& a, const backend& b) {
                          return a.ip == b.ip && a.port == b.port;
                        }),
            out.end());
  return out;
}

compiler::service_ports compiler::ports_of(const model::service& svc,
                                           const endpoint_index& endpoints) const {
  service_ports out;
  if (!svc.cluster_ip || svc.headless || svc.type == model::service_type::external_name) {
    return out;
  }
  for (const auto& p : svc.ports) {
    std::string name = svc.meta.ns + "/" + svc.meta.name + (p.name.empty() ? "" : ":" + p.name);
    out.emplace_back(
        service_key(*svc.cluster_ip, p.protocol, p.port),
        wanted{std::move(name), *svc.cluster_ip, p.port, p.protocol, endpoints.resolve(svc, p)});
  }
  return out;
}

namespace {

bool same_backends(const std::vector<backend>& a, const std::vector<backend>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](const backend& x, const backend& y) {
    return x.ip == y.ip && x.port == y.port && x.weight == y.weight;
  });
}

}  // namespace

void compiler::link_backends(uint64_t key, const service_port_entry& e, bool add) {
  for (const auto& b : e.backends) {
    uint64_t bkey = service_key(b.ip, e.proto, b.port);
    touched_backends_.push_back(bkey);
    if (add) {
      backend_users_[bkey][key] = &e;
    } else if (auto it = backend_users_.find(bkey); it != backend_users_.end()) {
      it->second.erase(key);
      if (it->second.empty()) backend_users_.erase(it);
    }
  }
}

void compiler::remove(uint64_t key, const service_name& owner) {
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.owner != owner) return;
  link_backends(key, *it->second.entry, false);
  free_ids_.push_back(it->second.entry->id);
  entries_.erase(it);
  touched_vips_.push_back(key);
}

void compiler::upsert(uint64_t key, const wanted& w, const service_name& owner) {
  live& slot = entries_[key];
  slot.owner = owner;
  const service_port_entry* old = slot.entry.get();
  if (old && old->name == w.name && same_backends(old->backends, w.backends)) return;

  auto e = std::make_shared<service_port_entry>();
  if (old) {
    e->id = old->id;
    link_backends(key, *old, false);
  } else if (!free_ids_.empty()) {
    e->id = free_ids_.back();
    free_ids_.pop_back();
  } else {
    e->id = next_id_++;
  }
  e->vip = w.vip;
  e->port = w.port;
  e->proto = w.proto;
  e->name = w.name;
  e->backends = w.backends;
  std::vector<maglev_backend> mb;
  mb.reserve(e->backends.size());
  for (const auto& b : e->backends) {
    mb.push_back({b.ip, b.port, b.weight});
    e->has_active |= b.weight > 0;
  }
  e->maglev = maglev_build(mb, maglev_table_size(mb.size(), maglev_max_size_));
  link_backends(key, *e, true);
  slot.entry = std::move(e);
  touched_vips_.push_back(key);
}

namespace {

// Copies each shard that holds a touched key once, sets or erases those keys in the copy
// (value_of returns nullopt for "gone") and swaps it in; untouched shards stay shared.
template <typename V, typename F>
void patch(sharded_map<V>& table, std::vector<uint64_t>& keys, F value_of) {
  std::sort(keys.begin(), keys.end(), [](uint64_t a, uint64_t b) {
    return std::pair(sharded_map<V>::shard_of(a), a) < std::pair(sharded_map<V>::shard_of(b), b);
  });
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  for (size_t i = 0; i < keys.size();) {
    size_t s = sharded_map<V>::shard_of(keys[i]);
    auto copy = std::make_shared<flat_map<V>>(table.at(s));
    for (; i < keys.size() && sharded_map<V>::shard_of(keys[i]) == s; ++i) {
      if (auto v = value_of(keys[i])) {
        copy->insert_or_assign(keys[i], std::move(*v));
      } else {
        copy->erase(keys[i]);
      }
    }
    table.set(s, std::move(copy));
  }
  keys.clear();
}

}  // namespace

result<std::unique_ptr<snapshot>> compiler::compile(const store& st, const dirty_set& dirty) {
  // Resolve the Services that changed (all of them, and every one resolved before, on a
  // full compile).
  const bool full = dirty.all || generation_ == 0;
  std::map<service_name, service_ports> fresh;
  if (full) {
    const endpoint_index endpoints(st);
    for (const auto& [n, ports] : by_service_) fresh[n];
    for (const auto& [k, so] : st.objects()) {
      if (const auto* svc = std::get_if<model::service>(&so.obj)) {
        fresh[{svc->meta.ns, svc->meta.name}] = ports_of(*svc, endpoints);
      }
    }
  } else {
    std::set<service_name> names = dirty.services;
    for (const auto& ns : dirty.namespaces) {
      for (auto it = st.objects().lower_bound({"Service", ns, ""});
           it != st.objects().end() && std::get<0>(it->first) == "Service" &&
           std::get<1>(it->first) == ns;
           ++it) {
        names.insert({ns, std::get<2>(it->first)});
      }
    }
    for (const auto& n : names) {
      auto it = st.objects().find({"Service", n.first, n.second});
      const auto* svc =
          it == st.objects().end() ? nullptr : std::get_if<model::service>(&it->second.obj);
      fresh[n] = svc ? ports_of(*svc, endpoint_index(st, n.first, n.second)) : service_ports{};
    }
  }

  // Slots are reused densely, so ids stay below the number of live service ports.
  size_t total = total_ports_;
  for (const auto& [n, ports] : fresh) {
    if (auto old = by_service_.find(n); old != by_service_.end()) total -= old->second.size();
    total += ports.size();
  }
  if (total > max_service_ports_) {
    return make_error("too many service ports: " + std::to_string(total) +
                      " (services.max_service_ports is " + std::to_string(max_service_ports_) +
                      ")");
  }
  total_ports_ = total;

  // Service ports that went away first (a ClusterIP may move between Services in one
  // change), then the new and changed ones.
  for (const auto& [n, ports] : fresh) {
    auto old = by_service_.find(n);
    if (old == by_service_.end()) continue;
    for (const auto& was : old->second) {
      const uint64_t key = was.first;
      bool kept =
          std::any_of(ports.begin(), ports.end(), [&](const auto& p) { return p.first == key; });
      if (!kept) remove(key, n);
    }
  }
  for (auto& [n, ports] : fresh) {
    for (const auto& [key, w] : ports) upsert(key, w, n);
    if (ports.empty()) {
      by_service_.erase(n);
    } else {
      by_service_[n] = std::move(ports);
    }
  }

  // Patch the touched shards; the snapshot shares the rest with the previous one.
  patch(vips_, touched_vips_, [&](uint64_t key) -> std::optional<entry_ptr> {
    auto it = entries_.find(key);
    if (it == entries_.end()) return std::nullopt;
    return it->second.entry;
  });
  patch(backends_, touched_backends_,
        [&](uint64_t bkey) -> std::optional<const service_port_entry*> {
          auto it = backend_users_.find(bkey);
          if (it == backend_users_.end()) return std::nullopt;
          return it->second.begin()->second;
        });

  auto snap = std::make_unique<snapshot>();
  snap->generation = ++generation_;
  snap->vips = vips_;
  snap->backends = backends_;
  return snap;
}

}  // namespace ferry::control
