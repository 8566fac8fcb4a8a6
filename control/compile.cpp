#include "compile.hpp"

#include <algorithm>
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
  const auto& objs = st.objects();
  for (auto it = objs.lower_bound({"EndpointSlice", ns, ""});
       it != objs.end() && std::get<0>(it->first) == "EndpointSlice" &&
       std::get<1>(it->first) == ns;
       ++it) {
    const auto* s = std::get_if<model::endpoint_slice>(&it->second.obj);
    if (s && s->ipv4 && s->service_name == service) slices_[{ns, service}].push_back(s);
  }
  if (auto it = objs.find({"Endpoints", ns, service}); it != objs.end()) {
    legacy_[{ns, service}] = std::get_if<model::endpoints>(&it->second.obj);
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

result<std::unique_ptr<snapshot>> compiler::compile(const store& st, const dirty_set& dirty) {
  // Resolve the Services that changed (all of them on a full compile).
  const bool full = dirty.all || !compiled_;
  std::map<service_name, service_ports> fresh;
  if (full) {
    const endpoint_index endpoints(st);
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
  size_t total = full ? 0 : total_ports_;
  for (const auto& [n, ports] : fresh) {
    if (!full) {
      if (auto old = by_service_.find(n); old != by_service_.end()) total -= old->second.size();
    }
    total += ports.size();
  }
  if (total > max_service_ports_) {
    return make_error("too many service ports: " + std::to_string(total) +
                      " (services.max_service_ports is " + std::to_string(max_service_ports_) +
                      ")");
  }
  if (full) by_service_.clear();
  for (auto& [n, ports] : fresh) {
    if (ports.empty()) {
      by_service_.erase(n);
    } else {
      by_service_[n] = std::move(ports);
    }
  }
  total_ports_ = total;
  compiled_ = true;

  std::map<uint64_t, const wanted*> want;
  for (const auto& [n, ports] : by_service_) {
    for (const auto& [key, w] : ports) want[key] = &w;
  }

  // Release the counter slots of service ports that are gone, then give new ones a slot.
  for (auto it = ids_.begin(); it != ids_.end();) {
    if (!want.count(it->first)) {
      free_ids_.push_back(it->second);
      previous_.erase(it->first);
      it = ids_.erase(it);
    } else {
      ++it;
    }
  }

  auto snap = std::make_unique<snapshot>();
  snap->generation = ++generation_;
  std::vector<std::pair<uint64_t, const service_port_entry*>> vips, backends;
  for (const auto& [key, wp] : want) {
    const wanted& w = *wp;
    auto prev = previous_.find(key);
    std::shared_ptr<const service_port_entry> entry;
    if (prev != previous_.end() && prev->second->name == w.name &&
        prev->second->backends.size() == w.backends.size() &&
        std::equal(w.backends.begin(), w.backends.end(), prev->second->backends.begin(),
                   [](const backend& a, const backend& b) {
                     return a.ip == b.ip && a.port == b.port && a.weight == b.weight;
                   })) {
      entry = prev->second;
    } else {
      auto e = std::make_shared<service_port_entry>();
      auto id = ids_.find(key);
      if (id != ids_.end()) {
        e->id = id->second;
      } else if (!free_ids_.empty()) {
        e->id = free_ids_.back();
        free_ids_.pop_back();
      } else {
        e->id = next_id_++;
      }
      ids_[key] = e->id;
      e->vip = w.vip;
      e->port = w.port;
      e->proto = w.proto;
      e->name = w.name;
      e->backends = w.backends;
      std::vector<maglev_backend> mb;
      for (const auto& b : e->backends) {
        mb.push_back({b.ip, b.port, b.weight});
        e->has_active |= b.weight > 0;
      }
      e->maglev = maglev_build(mb, maglev_table_size(mb.size(), maglev_max_size_));
      entry = std::move(e);
      previous_[key] = entry;
    }
    vips.emplace_back(key, entry.get());
    for (const auto& b : entry->backends) {
      backends.emplace_back(service_key(b.ip, entry->proto, b.port), entry.get());
    }
    snap->ports.push_back(std::move(entry));
  }
  snap->vips = flat_map<const service_port_entry*>::build(vips);
  snap->backends = flat_map<const service_port_entry*>::build(backends);
  return snap;
}

}  // namespace ferry::control
