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
               std::vector<endpoint_ref>& out) {
  // kube-proxy joins a Service port to an endpoint port by name (and protocol).
  const model::endpoint_port* ep = nullptr;
  for (const auto& p : g.ports) {
    if (p.name == port.name && p.protocol == port.protocol) ep = &p;
  }
  if (!ep) return;
  for (const auto& e : g.endpoints) {
    if (e.addresses.empty()) continue;
    out.push_back({e.addresses[0], ep->port, e.ready, e.serving, e.terminating, e.node_name,
                   e.for_zones, e.for_nodes});
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
  return select_backends(endpoint_index(st).resolve(svc, port), {}, false);
}

namespace {

enum class topology_mode { none, same_node, same_zone };

bool hinted(std::span<const std::string> hints, std::string_view name) {
  return !name.empty() && std::find(hints.begin(), hints.end(), name) != hints.end();
}

topology_mode topology_mode_of(const std::vector<endpoint_ref>& endpoints, const topology& here) {
  bool any_ready = false, all_node = true, for_node = false, all_zone = true, for_zone = false;
  for (const auto& e : endpoints) {
    if (!e.ready) continue;
    any_ready = true;
    all_node &= !e.for_nodes.empty();
    for_node |= hinted(e.for_nodes, here.node);
    all_zone &= !e.for_zones.empty();
    for_zone |= hinted(e.for_zones, here.zone);
  }
  if (!any_ready) return topology_mode::none;
  if (all_node && for_node) return topology_mode::same_node;
  if (all_zone && for_zone) return topology_mode::same_zone;
  return topology_mode::none;
}

}  // namespace

std::vector<backend> select_backends(const std::vector<endpoint_ref>& endpoints,
                                     const topology& here, bool local_only) {
  auto is_local = [&](const endpoint_ref& e) { return !e.node.empty() && e.node == here.node; };
  const auto mode = local_only ? topology_mode::none : topology_mode_of(endpoints, here);
  auto in_scope = [&](const endpoint_ref& e) {
    switch (mode) {
      case topology_mode::same_node:
        return hinted(e.for_nodes, here.node);
      case topology_mode::same_zone:
        return hinted(e.for_zones, here.zone);
      case topology_mode::none:
        break;
    }
    return !local_only || is_local(e);
  };
  bool any_ready = false;
  for (const auto& e : endpoints) any_ready |= e.ready && in_scope(e);
  std::vector<backend> out;
  for (const auto& e : endpoints) {
    if (local_only && !is_local(e)) continue;
    if (e.ready) {
      if (in_scope(e)) out.push_back({e.ip, e.port, 1, is_local(e)});
    } else if (e.serving && e.terminating) {
      out.push_back({e.ip, e.port, static_cast<uint16_t>(any_ready ? 0 : 1), is_local(e)});
    }
  }
  return out;
}

std::vector<endpoint_ref> endpoint_index::resolve(const model::service& svc,
                                                  const model::service_port& port) const {
  std::vector<endpoint_ref> out;
  const name key{svc.meta.ns, svc.meta.name};
  if (auto s = slices_.find(key); s != slices_.end()) {
    for (const auto* slice : s->second) add_group(slice->group, port, out);
  } else if (auto e = legacy_.find(key); e != legacy_.end()) {
    for (const auto& g : e->second->subsets) add_group(g, port, out);
  } else if (auto pods = pods_.find(svc.meta.ns); pods != pods_.end()) {
    // No endpoint objects at all: act as the endpoints controller would on a standalone
    // node, from the Pods the selector matches.
    for (const auto* p : pods->second) {
      if (!p->ip || !selector_matches(svc.selector, p->meta.label_map)) continue;
      uint16_t target = port.port;
      if (const auto* n = std::get_if<uint16_t>(&port.target_port); n && *n) target = *n;
      if (const auto* pname = std::get_if<std::string>(&port.target_port)) {
        target = 0;
        for (const auto& cp : p->ports) {
          if (cp.name == *pname && cp.protocol == port.protocol) target = cp.port;
        }
        if (!target) continue;
      }
      // publishNotReadyAddresses: the endpoints controller calls every pod ready.
      const bool ready = p->ready || svc.publish_not_ready;
      out.push_back(
          {*p->ip, target, ready && !p->terminating, ready, p->terminating, p->node_name});
    }
  }
  std::sort(out.begin(), out.end(), [](const endpoint_ref& a, const endpoint_ref& b) {
    return std::tie(a.ip, a.port, b.ready) < std::tie(b.ip, b.port, a.ready);
  });
  // Duplicates (an address in two slices): keep the first, which is a ready one if any.
  out.erase(std::unique(out.begin(), out.end(),
                        [](const endpoint_ref& a, const endpoint_ref& b) {
                          return a.ip == b.ip && a.port == b.port;
                        }),
            out.end());
  return out;
}

std::vector<host_ref> endpoint_index::hosts(const model::service& svc) const {
  std::vector<host_ref> out;
  const name key{svc.meta.ns, svc.meta.name};
  auto add = [&](const model::endpoint_group& g) {
    for (const auto& e : g.endpoints) {
      for (uint32_t ip : e.addresses) out.push_back({ip, e.ready, e.hostname});
    }
  };
  if (auto s = slices_.find(key); s != slices_.end()) {
    for (const auto* slice : s->second) add(slice->group);
  } else if (auto e = legacy_.find(key); e != legacy_.end()) {
    for (const auto& g : e->second->subsets) add(g);
  } else if (auto pods = pods_.find(svc.meta.ns); pods != pods_.end()) {
    for (const auto* p : pods->second) {
      if (!p->ip || !selector_matches(svc.selector, p->meta.label_map)) continue;
      const bool ready = (p->ready || svc.publish_not_ready) && !p->terminating;
      out.push_back(
          {*p->ip, ready, p->subdomain == svc.meta.name ? std::string_view(p->hostname) : ""});
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const host_ref& a, const host_ref& b) {
    return std::tie(a.ip, b.ready) < std::tie(b.ip, a.ready);
  });
  return out;
}

compiler::service_ports compiler::ports_of(const model::service& svc,
                                           const endpoint_index& endpoints) const {
  service_ports out;
  if (!svc.forwarded()) return out;
  const bool internal_local = svc.internal_policy == model::traffic_policy::local;
  const bool external_local = svc.external_policy == model::traffic_policy::local;
  const bool node_ports =
      svc.type == model::service_type::node_port || svc.type == model::service_type::load_balancer;
  const auto lb =
      svc.type == model::service_type::load_balancer ? svc.lb_addresses() : std::vector<uint32_t>{};
  for (const auto& p : svc.ports) {
    const auto refs = endpoints.resolve(svc, p);
    bool usable = false;  // kube-proxy's "has endpoints": some ready or serving one
    for (const auto& e : refs) usable |= e.ready || (e.serving && e.terminating);

    wanted base;
    base.port = p.port;
    base.proto = p.protocol;
    base.name = svc.meta.ns + "/" + svc.meta.name + (p.name.empty() ? "" : ":" + p.name);
    base.affinity_timeout = svc.affinity_client_ip ? svc.affinity_timeout : 0;
    base.affinity_key = service_key(*svc.cluster_ip, p.protocol, p.port);
    const service_name owner{svc.meta.ns, svc.meta.name};
    auto with_backends = [&](wanted w, bool local_only) {
      w.backends = select_backends(refs, {node_name_, zone_}, local_only);
      for (auto& b : w.backends) {
        b.configured_weight = b.weight;
        b.weight = effective_weight(owner, b);
      }
      w.drop_empty = usable && w.backends.empty();
      return w;
    };
    auto add = [&](uint32_t vip, uint16_t port, const wanted& w) {
      out.emplace_back(service_key(vip, p.protocol, port), w);
      out.back().second.vip = vip;
      out.back().second.port = port;
    };
    add(*svc.cluster_ip, p.port, with_backends(base, internal_local));

    wanted ext = base;
    ext.external = true;
    ext.snat_remote = !external_local;
    ext = with_backends(std::move(ext), external_local);
    for (uint32_t ip : svc.external_ips) add(ip, p.port, ext);
    if (node_ports && p.node_port) add(0, p.node_port, ext);
    if (!lb.empty()) {
      ext.source_ranges = svc.source_ranges;  // they restrict the load balancer's addresses only
      for (uint32_t ip : lb) {
        ext.announce = std::any_of(pool_.begin(), pool_.end(),
                                   [&](const ipv4_prefix& r) { return r.contains(ip); });
        add(ip, p.port, ext);
      }
    }
  }
  return out;
}

namespace {

// Everything of an entry but its id and Maglev table (which follow from the backends).
bool same_frontend(const service_port_entry& a, const service_port_entry& b) {
  return a.vip == b.vip && a.port == b.port && a.proto == b.proto && a.external == b.external &&
         a.snat_remote == b.snat_remote && a.drop_empty == b.drop_empty &&
         a.announce == b.announce && a.affinity_timeout == b.affinity_timeout &&
         a.affinity_key == b.affinity_key && a.source_ranges == b.source_ranges &&
         a.name == b.name && a.backends == b.backends;
}

// Counts one more (or one less) frontend using an address; the address leaves at zero.
void count_user(std::map<uint32_t, uint32_t>& users, uint32_t ip, bool add) {
  if (add) {
    ++users[ip];
  } else if (auto it = users.find(ip); it != users.end() && --it->second == 0) {
    users.erase(it);
  }
}

}  // namespace

void compiler::link(uint64_t key, const service_port_entry& e, bool add) {
  if (e.vip) {  // the service addresses (NodePorts are on the node's own)
    count_user(addresses_, e.vip, add);
    addresses_changed_ = true;
  }
  // External frontends count towards the announced addresses. Every frontend goes into
  // backend_users_, but only ClusterIP ones are un-NATed to from the backend table, since
  // replies without a flow entry are un-NATed to a ClusterIP (external frontends have no
  // single address to give back: a NodePort is on every node address); a backend with more
  // than one user is marked shared (no entry is made from its replies).
  if (e.external && e.announce) {
    count_user(announced_, e.vip, add);
    announced_changed_ = true;
  }
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

void compiler::note_backend_changes(const service_port_entry* old, const service_port_entry& e) {
  // Both lists are sorted by (ip, port): one merge pass. Weights do not matter here.
  static const std::vector<backend> kNone;
  const auto& before = old ? old->backends : kNone;
  auto at = [](const backend& b) { return std::pair(b.ip, b.port); };
  size_t i = 0, j = 0;
  while (i < before.size() || j < e.backends.size()) {
    if (j == e.backends.size() || (i < before.size() && at(before[i]) < at(e.backends[j]))) {
      backend_changes_.removed.push_back(
          {e.vip, e.port, e.proto, before[i].ip, before[i].port, e.name});
      ++i;
    } else if (i == before.size() || at(e.backends[j]) < at(before[i])) {
      backend_changes_.added.push_back(
          {e.vip, e.port, e.proto, e.backends[j].ip, e.backends[j].port, e.name});
      ++j;
    } else {
      ++i, ++j;
    }
  }
}

void compiler::remove(uint64_t key, const service_name& owner) {
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.owner != owner) return;
  const service_port_entry& old = *it->second.entry;
  for (const auto& b : old.backends) {
    backend_changes_.removed.push_back({old.vip, old.port, old.proto, b.ip, b.port, old.name});
  }
  link(key, old, false);
  free_ids_.push_back(old.id);
  entries_.erase(it);
  touched_vips_.push_back(key);
}

void compiler::upsert(uint64_t key, const wanted& w, const service_name& owner) {
  live& slot = entries_[key];
  slot.owner = owner;
  const service_port_entry* old = slot.entry.get();
  if (old && same_frontend(*old, w)) return;

  auto e = std::make_shared<service_port_entry>(w);
  if (old) {
    e->id = old->id;
    link(key, *old, false);
  } else if (!free_ids_.empty()) {
    e->id = free_ids_.back();
    free_ids_.pop_back();
  } else {
    e->id = next_id_++;
  }
  note_backend_changes(old, *e);
  std::vector<maglev_backend> mb;
  mb.reserve(e->backends.size());
  for (const auto& b : e->backends) {
    mb.push_back({b.ip, b.port, b.weight});
    e->has_active |= b.weight > 0;
  }
  e->maglev = maglev_build(mb, maglev_table_size(mb.size(), maglev_max_size_));
  link(key, *e, true);
  slot.entry = std::move(e);
  touched_vips_.push_back(key);
}

void compiler::set_weight(const service_name& svc, uint32_t ip, std::optional<uint16_t> weight) {
  if (weight) {
    weights_[svc][ip] = *weight;
    return;
  }
  auto it = weights_.find(svc);
  if (it == weights_.end()) return;
  it->second.erase(ip);
  if (it->second.empty()) weights_.erase(it);
}

std::optional<uint16_t> compiler::weight_override(const service_name& svc, uint32_t ip) const {
  auto it = weights_.find(svc);
  if (it == weights_.end()) return std::nullopt;
  auto w = it->second.find(ip);
  if (w == it->second.end()) return std::nullopt;
  return w->second;
}

uint16_t compiler::effective_weight(const service_name& svc, const backend& b) const {
  if (!b.weight) return 0;
  auto w = weight_override(svc, b.ip);
  return w ? *w : b.weight;
}

std::vector<std::shared_ptr<const service_port_entry>> compiler::entries_of(
    const service_name& svc) const {
  std::vector<std::shared_ptr<const service_port_entry>> out;
  auto it = by_service_.find(svc);
  if (it == by_service_.end()) return out;
  for (uint64_t key : it->second) {
    if (auto e = entries_.find(key); e != entries_.end()) out.push_back(e->second.entry);
  }
  return out;
}

void compiler::enable_dns(const dns_config& cfg, ipv4_prefix service_cidr) {
  dns_ = std::make_unique<dns_zone_builder>(cfg, service_cidr);
  if (cfg.upstreams.empty()) return;
  auto e = std::make_shared<service_port_entry>();
  e->id = next_id_++;  // a counter slot of its own, for the whole life of the node
  e->vip = cfg.addresses.front();
  e->port = dns::kPort;
  e->proto = 17;
  e->external = true;
  e->snat_remote = true;  // from the node's address, so the answer comes back through it
  e->name = "dns/upstream";
  std::vector<maglev_backend> mb;
  for (const auto& [ip, port] : cfg.upstreams) e->backends.push_back({ip, port, 1, false});
  std::sort(e->backends.begin(), e->backends.end(), [](const backend& a, const backend& b) {
    return std::tie(a.ip, a.port) < std::tie(b.ip, b.port);
  });
  for (const auto& b : e->backends) mb.push_back({b.ip, b.port, b.weight});
  e->has_active = true;
  e->maglev = maglev_build(mb, maglev_table_size(mb.size(), maglev_max_size_));
  dns_upstream_ = std::move(e);
}

result<std::unique_ptr<snapshot>> compiler::compile(const store& st, const dirty_set& dirty) {
  // Resolve the Services that changed (all of them, and every one resolved before, on a
  // full compile).
  // This node's zone decides topology hints everywhere: a new zone redoes every Service.
  std::string zone;
  if (auto it = st.objects().find({"Node", "", node_name_}); it != st.objects().end()) {
    zone = std::get<model::node>(it->second.obj).zone;
  }
  const bool full = dirty.all || generation_ == 0 || zone != zone_;
  backend_changes_ = {};
  zone_ = std::move(zone);
  std::map<service_name, service_ports> fresh;
  if (full) {
    const endpoint_index endpoints(st);
    for (const auto& [n, ports] : by_service_) fresh[n];
    if (dns_) dns_->clear();
    for (const auto& [k, so] : st.objects()) {
      if (const auto* svc = std::get_if<model::service>(&so.obj)) {
        fresh[{svc->meta.ns, svc->meta.name}] = ports_of(*svc, endpoints);
        if (dns_) dns_->update(svc, svc->meta.ns, svc->meta.name, endpoints);
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
      const endpoint_index endpoints(st, n.first, n.second);
      fresh[n] = svc ? ports_of(*svc, endpoints) : service_ports{};
      if (dns_) dns_->update(svc, n.first, n.second, endpoints);
    }
  }

  // Slots are reused densely, so ids stay below the number of live service ports.
  size_t total = total_ports_;
  for (const auto& [n, ports] : fresh) {
    if (auto old = by_service_.find(n); old != by_service_.end()) total -= old->second.size();
    total += ports.size();
  }
  // The DNS upstream frontend holds one counter slot for good.
  if (total + (dns_upstream_ ? 1 : 0) > max_service_ports_) {
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
    for (const uint64_t key : old->second) {
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
      auto& keys = by_service_[n];
      keys.clear();
      for (const auto& [key, w] : ports) keys.push_back(key);
    }
  }

  // Patch the touched shards; the snapshot shares the rest with the previous one.
  patch_shards(vips_, touched_vips_, [&](uint64_t key) -> std::optional<entry_ptr> {
    auto it = entries_.find(key);
    if (it == entries_.end()) return std::nullopt;
    return it->second.entry;
  });
  std::vector<uint64_t> touched_shared = touched_backends_;
  patch_shards(backends_, touched_backends_,
               [&](uint64_t bkey) -> std::optional<const service_port_entry*> {
                 auto it = backend_users_.find(bkey);
                 if (it == backend_users_.end()) return std::nullopt;
                 for (const auto& [k, e] : it->second) {
                   if (!e->external) return e;  // the lowest ClusterIP frontend
                 }
                 return std::nullopt;
               });
  patch_shards(shared_backends_, touched_shared, [&](uint64_t bkey) -> std::optional<bool> {
    auto it = backend_users_.find(bkey);
    if (it == backend_users_.end() || it->second.size() < 2) return std::nullopt;
    return true;
  });

  if (announced_changed_ || !announced_list_) {
    auto list = std::make_shared<std::vector<uint32_t>>();
    for (const auto& [ip, n] : announced_) list->push_back(ip);
    announced_list_ = std::move(list);
    announced_changed_ = false;
  }

  if (addresses_changed_ || !address_list_) {
    auto list = std::make_shared<std::vector<uint32_t>>();
    for (const auto& [ip, n] : addresses_) list->push_back(ip);
    address_list_ = std::move(list);
    addresses_changed_ = false;
  }

  auto snap = std::make_unique<snapshot>();
  snap->generation = ++generation_;
  snap->vips = vips_;
  snap->backends = backends_;
  snap->shared_backends = shared_backends_;
  snap->announced = announced_list_;
  snap->addresses = address_list_;
  if (dns_) snap->dns = dns_->build(static_cast<uint32_t>(snap->generation));
  snap->dns_upstream = dns_upstream_;
  return snap;
}

}  // namespace ferry::control
