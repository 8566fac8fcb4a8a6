#include "store.hpp"

#include <algorithm>
#include <set>

#include "ferry/hash.hpp"
#include "ferry/snapshot.hpp"

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

std::vector<frontend> frontends_of(const model::service& svc) {
  std::vector<frontend> out;
  if (!svc.forwarded()) return out;
  auto each_port = [&](uint32_t ip, const std::string& field) {
    for (const auto& p : svc.ports) out.push_back({service_key(ip, p.protocol, p.port), field});
  };
  each_port(*svc.cluster_ip, "spec.clusterIP");
  for (size_t i = 0; i < svc.external_ips.size(); ++i) {
    each_port(svc.external_ips[i], "spec.externalIPs[" + std::to_string(i) + "]");
  }
  if (svc.type == model::service_type::load_balancer) {
    for (uint32_t ip : svc.lb_addresses()) each_port(ip, "status.loadBalancer.ingress");
  }
  if (svc.type == model::service_type::node_port ||
      svc.type == model::service_type::load_balancer) {
    for (size_t i = 0; i < svc.ports.size(); ++i) {
      const auto& p = svc.ports[i];
      if (p.node_port) {
        out.push_back({service_key(0, p.protocol, p.node_port),
                       "spec.ports[" + std::to_string(i) + "].nodePort"});
      }
    }
  }
  return out;
}

namespace {

std::string frontend_text(uint64_t key) {
  auto ip = static_cast<uint32_t>(key >> 32);
  auto port = std::to_string((key >> 8) & 0xffff);
  const char* proto = proto_name(key & 0xff);
  return ip ? format_ipv4(ip) + ":" + port + "/" + proto : "node port " + port + "/" + proto;
}

std::string range_text(const ipv4_prefix& p) {
  return format_ipv4(p.addr & p.mask()) + "/" + std::to_string(p.len);
}

// The addresses of a prefix that can be handed out: all but the network and broadcast
// address (a /31 or /32 has no such).
std::pair<uint32_t, uint32_t> usable(const ipv4_prefix& p) {
  const uint64_t span = uint64_t{1} << (32 - p.len);
  return {(p.addr & p.mask()) + (span > 2 ? 1 : 0),
          static_cast<uint32_t>(span > 2 ? span - 2 : span)};
}

}  // namespace

std::optional<uint32_t> store::allocate(const std::string& name, uint32_t first, uint32_t size,
                                        const std::function<bool(uint32_t)>& is_free) {
  if (size == 0) return std::nullopt;
  const auto start = static_cast<uint32_t>(hash2(std::hash<std::string>{}(name), 0, 7) % size);
  for (uint32_t i = 0; i < size; ++i) {
    uint32_t v = first + (start + i) % size;
    if (is_free(v)) return v;
  }
  return std::nullopt;
}

std::optional<uint32_t> store::allocate_cluster_ip(
    const std::string& name, uint32_t batch_taken,
    const std::function<bool(uint32_t)>& is_free) const {
  auto [first, size] = usable(ranges_.service_cidr);
  if (size == 0 || uint64_t{addr_refs_.size()} + batch_taken >= size) return std::nullopt;
  // From the name's hash, skip each run of addresses the store holds by walking addr_refs_
  // in order (no per-address lookups), and check the gaps against the batch.
  const auto start = static_cast<uint32_t>(hash2(std::hash<std::string>{}(name), 0, 7) % size);
  uint32_t offset = start;
  auto it = addr_refs_.lower_bound(first + offset);
  for (uint32_t visited = 0; visited < size; ++visited) {
    const uint32_t a = first + offset;
    if (it != addr_refs_.end() && it->first == a) {
      ++it;
    } else if (is_free(a)) {
      return a;
    }
    if (++offset == size) {
      offset = 0;
      it = addr_refs_.lower_bound(first);
    }
  }
  return std::nullopt;
}

void store::ref_address(uint32_t ip, int delta) {
  auto [first, size] = usable(ranges_.service_cidr);
  if (ip - first >= size) return;  // outside the range: not counted
  if (delta > 0) {
    ++addr_refs_[ip];
  } else if (auto it = addr_refs_.find(ip); it != addr_refs_.end() && --it->second == 0) {
    addr_refs_.erase(it);
  }
}

result<void> store::settle_service(
    model::service& svc, const std::string& name, const model::service* before,
    const std::function<std::optional<key>(uint64_t)>& frontend_holder,
    const std::function<bool(uint32_t)>& address_taken, uint32_t batch_taken) const {
  using model::service_type;
  auto refuse = [&](const std::string& field, const std::string& why) {
    return make_error("Service " + name + ": " + field + ": " + why);
  };
  if (!svc.cluster_ip && !svc.headless && svc.type != service_type::external_name) {
    if (before && before->cluster_ip) {
      svc.cluster_ip = before->cluster_ip;  // fixed for the Service's life
    } else if (auto ip = allocate_cluster_ip(name, batch_taken,
                                             [&](uint32_t a) { return !address_taken(a); })) {
      svc.cluster_ip = *ip;
    } else {
      return refuse("spec.clusterIP",
                    "no free address left in " + range_text(ranges_.service_cidr));
    }
  } else if (svc.cluster_ip && !ranges_.service_cidr.contains(*svc.cluster_ip)) {
    return refuse("spec.clusterIP", format_ipv4(*svc.cluster_ip) + " is not in the service range " +
                                        range_text(ranges_.service_cidr) +
                                        " ([services] service_cidr)");
  }

  const std::string range =
      std::to_string(ranges_.node_port_min) + "-" + std::to_string(ranges_.node_port_max);
  // A nodePort number belongs to one Service, whatever the protocol (as the API server's
  // allocator has it); one Service may use it for TCP, UDP and SCTP. Explicit ones are
  // checked and reserved first, then the missing ones allocated around them.
  const key self{"Service", svc.meta.ns, svc.meta.name};
  auto other_holder = [&](uint16_t v) -> std::optional<key> {
    for (uint8_t proto : {kProtoTcp, kProtoUdp, kProtoSctp}) {
      if (auto h = frontend_holder(service_key(0, proto, v)); h && *h != self) return h;
    }
    return std::nullopt;
  };
  std::set<uint16_t> taken_here;
  for (size_t i = 0; i < svc.ports.size(); ++i) {
    const auto& p = svc.ports[i];
    if (!p.node_port) continue;
    const std::string field = "spec.ports[" + std::to_string(i) + "].nodePort";
    if (p.node_port < ranges_.node_port_min || p.node_port > ranges_.node_port_max) {
      return refuse(field, std::to_string(p.node_port) + " is outside the node port range " +
                               range + " ([services] node_port_range)");
    }
    if (auto h = other_holder(p.node_port)) {
      return refuse(field, frontend_text(service_key(0, p.protocol, p.node_port)) +
                               " is already used by " + describe(*h));
    }
    taken_here.insert(p.node_port);
  }
  for (size_t i = 0; i < svc.ports.size() && svc.has_node_ports(); ++i) {
    auto& p = svc.ports[i];
    if (p.node_port) continue;
    for (const auto& b : before ? before->ports : std::vector<model::service_port>{}) {
      if (b.port == p.port && b.protocol == p.protocol && !taken_here.count(b.node_port)) {
        p.node_port = b.node_port;
      }
    }
    if (!p.node_port) {
      auto free = [&](uint32_t v) {
        auto port = static_cast<uint16_t>(v);
        return !taken_here.count(port) && !other_holder(port) &&
               !frontend_holder(service_key(0, p.protocol, port));
      };
      auto v =
          allocate(name + ":" + std::to_string(p.port) + "/" + proto_name(p.protocol),
                   ranges_.node_port_min, ranges_.node_port_max - ranges_.node_port_min + 1u, free);
      if (!v) {
        return refuse("spec.ports[" + std::to_string(i) + "].nodePort",
                      "no free port left in the node port range " + range);
      }
      p.node_port = static_cast<uint16_t>(*v);
    }
    taken_here.insert(p.node_port);
  }

  svc.lb_allocated = false;
  if (svc.type == service_type::load_balancer && svc.lb_ingress.empty() && !svc.load_balancer_ip) {
    if (before && before->lb_allocated && !before->lb_ingress.empty()) {
      svc.lb_ingress = before->lb_ingress;
      svc.lb_allocated = true;
    }
    for (const auto& pool : ranges_.load_balancer_pool) {
      if (svc.lb_allocated) break;
      auto [first, size] = usable(pool);
      // Not an address the Service already uses itself either.
      auto free = [&](uint32_t a) {
        return !address_taken(a) && a != svc.cluster_ip &&
               std::find(svc.external_ips.begin(), svc.external_ips.end(), a) ==
                   svc.external_ips.end();
      };
      if (auto ip = allocate(name, first, size, free)) {
        svc.lb_ingress = {*ip};
        svc.lb_allocated = true;
      }
    }
    // With no pool, or the pool used up, the Service waits with no address (kubectl shows
    // <pending>), as it would in a cluster without a load balancer controller.
  }
  return {};
}

void store::put(const key& k, std::optional<stored_object> obj) {
  auto it = objects_.find(k);
  const stored_object* old = it == objects_.end() ? nullptr : &it->second;
  if (const auto* svc = as_service(old); svc && svc->cluster_ip) {
    auto ip = cluster_ips_.find(*svc->cluster_ip);
    if (ip != cluster_ips_.end() && ip->second == k) {
      cluster_ips_.erase(ip);
      ref_address(*svc->cluster_ip, -1);
    }
  }
  if (const auto* svc = as_service(old)) {
    for (const auto& f : frontends_of(*svc)) {
      auto it2 = frontends_.find(f.key);
      if (it2 != frontends_.end() && it2->second == k) {
        frontends_.erase(it2);
        ref_address(static_cast<uint32_t>(f.key >> 32), -1);
      }
    }
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
  // An index entry that changes holder (a batch moving an address) is counted once.
  if (const auto* svc = as_service(&*obj); svc && svc->cluster_ip) {
    if (cluster_ips_.insert_or_assign(*svc->cluster_ip, k).second) {
      ref_address(*svc->cluster_ip, 1);
    }
  }
  if (const auto* svc = as_service(&*obj)) {
    for (const auto& f : frontends_of(*svc)) {
      if (frontends_.insert_or_assign(f.key, k).second) {
        ref_address(static_cast<uint32_t>(f.key >> 32), 1);
      }
    }
  }
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

  // The same for frontends (address:port/protocol, NodePorts with address 0).
  std::map<uint64_t, key> claimed_frontends;
  auto frontend_holder = [&](uint64_t f) -> std::optional<key> {
    if (auto c = claimed_frontends.find(f); c != claimed_frontends.end()) return c->second;
    if (auto u = frontends_.find(f); u != frontends_.end()) {
      const auto* now = as_service(current(u->second));
      if (now) {
        for (const auto& mine : frontends_of(*now)) {
          if (mine.key == f) return u->second;
        }
      }
    }
    return std::nullopt;
  };
  // Any address a Service takes traffic on (ClusterIP, externalIP or load balancer address).
  auto address_taken = [&](uint32_t ip) {
    if (holder(ip)) return true;
    for (auto* m : {&claimed_frontends, &frontends_}) {
      auto it = m->lower_bound(uint64_t{ip} << 32);
      if (it != m->end() && (it->first >> 32) == ip) return true;
    }
    return false;
  };

  // Service-range addresses the batch claims that the store does not hold: with addr_refs_,
  // how full the range is (an address the batch frees is not counted back: conservative).
  std::set<uint32_t> batch_taken;
  const auto range = usable(ranges_.service_cidr);  // (first, size)
  auto claim_address = [&](uint32_t ip) {
    if (ip - range.first < range.second && !addr_refs_.count(ip)) batch_taken.insert(ip);
  };

  std::vector<change> changes;
  for (auto& obj : objects) {
    key k = key_of(obj);
    if (auto* svc = std::get_if<model::service>(&obj)) {
      std::string name = svc->meta.ns + "/" + svc->meta.name;
      const auto* before = as_service(current(k));
      if (auto r = settle_service(*svc, name, before, frontend_holder, address_taken,
                                  static_cast<uint32_t>(batch_taken.size()));
          !r) {
        return r.err();
      }
      if (before && before->cluster_ip) claimed.erase(*before->cluster_ip);
      if (before) {
        for (const auto& f : frontends_of(*before)) {
          if (auto c = claimed_frontends.find(f.key);
              c != claimed_frontends.end() && c->second == k)
            claimed_frontends.erase(c);
        }
      }
      if (svc->cluster_ip) {
        if (auto other = holder(*svc->cluster_ip); other && *other != k) {
          return make_error("Service " + name +
                            ": spec.clusterIP: " + format_ipv4(*svc->cluster_ip) +
                            " is already allocated to " + describe(*other));
        }
        claimed[*svc->cluster_ip] = k;
        claim_address(*svc->cluster_ip);
      }
      std::map<uint64_t, std::string> mine;
      for (const auto& f : frontends_of(*svc)) {
        if (auto [it, fresh] = mine.emplace(f.key, f.field); !fresh) {
          return make_error("Service " + name + ": " + f.field + ": " + frontend_text(f.key) +
                            " is also used by " + it->second + " of the same Service");
        }
        if (auto other = frontend_holder(f.key); other && *other != k) {
          return make_error("Service " + name + ": " + f.field + ": " + frontend_text(f.key) +
                            " is already used by " + describe(*other));
        }
      }
      for (const auto& [f, field] : mine) {
        claimed_frontends[f] = k;
        claim_address(static_cast<uint32_t>(f >> 32));
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
  std::vector<key> keys;
  for (const auto& obj : objects) keys.push_back(key_of(obj));
  return remove(keys, undo);
}

std::vector<change> store::remove(const std::vector<key>& keys, undo_log* undo) {
  std::vector<change> changes;
  for (const auto& k : keys) {
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
