#include "dns_zone.hpp"

#include <algorithm>
#include <set>

#include "compile.hpp"

namespace ferry::control {
namespace {

constexpr uint32_t kRefresh = 7200, kRetry = 1800, kExpire = 86400;  // as CoreDNS's SOA
constexpr std::string_view kSchemaVersion = "1.1.0";

void put16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v));
}
void put32(std::string& out, uint32_t v) {
  put16(out, static_cast<uint16_t>(v >> 16));
  put16(out, static_cast<uint16_t>(v));
}

// A resource record: owner (wire bytes, or the pointer to the question), type, IN, TTL, data.
std::string rr(std::string_view owner, uint16_t type, uint32_t ttl, std::string_view rdata) {
  std::string out(owner);
  put16(out, type);
  put16(out, dns::kClassIn);
  put32(out, ttl);
  put16(out, static_cast<uint16_t>(rdata.size()));
  out.append(rdata);
  return out;
}
constexpr std::string_view kToQuestion("\xC0\x0C", 2);

std::string a_rdata(uint32_t ip) {
  std::string out;
  put32(out, ip);
  return out;
}

// The parent of a wire name (drop the first label); empty for the root.
std::string_view parent(std::string_view wire) {
  if (wire.size() <= 1) return {};
  return wire.substr(1 + static_cast<uint8_t>(wire[0]));
}

std::string dashed(uint32_t ip) {
  std::string s = format_ipv4(ip);
  std::replace(s.begin(), s.end(), '.', '-');
  return s;
}

std::string lower_proto(uint8_t proto) {
  std::string s = proto_name(proto);
  std::transform(s.begin(), s.end(), s.begin(), [](char c) { return c | 0x20; });
  return s;
}

}  // namespace

std::string dns_wire(std::string_view dotted) {
  if (!dotted.empty() && dotted.back() == '.') dotted.remove_suffix(1);
  std::string out;
  size_t start = 0;
  while (!dotted.empty()) {
    size_t dot = dotted.find('.', start);
    std::string_view label =
        dotted.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty() || label.size() > 63) return {};
    out.push_back(static_cast<char>(label.size()));
    for (char c : label) out.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c | 0x20) : c);
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  out.push_back('\0');
  return out.size() > dns::kMaxName ? std::string{} : out;
}

std::string dns_text(std::string_view wire) {
  std::string out;
  for (size_t at = 0; at < wire.size() && wire[at];) {
    const auto l = static_cast<uint8_t>(wire[at]);
    if (!out.empty()) out.push_back('.');
    out.append(wire.substr(at + 1, l));
    at += 1u + l;
  }
  return out;
}

std::string dns_reverse(uint32_t ip) {
  return dns_wire(std::to_string(ip & 0xff) + "." + std::to_string((ip >> 8) & 0xff) + "." +
                  std::to_string((ip >> 16) & 0xff) + "." + std::to_string(ip >> 24) +
                  ".in-addr.arpa");
}

dns_zone_builder::dns_zone_builder(const dns_config& cfg, ipv4_prefix service_cidr)
    : cfg_(cfg), zone_wire_(dns_wire(cfg.zone)) {
  origins_.push_back(zone_wire_);
  // The reverse zone of the service CIDR, widened to whole octets (10.96.0.0/12: 10.in-addr.arpa).
  std::string rev = "in-addr.arpa";
  for (int octet = 0; octet < service_cidr.len / 8; ++octet) {
    rev = std::to_string((service_cidr.addr >> (24 - 8 * octet)) & 0xff) + "." + rev;
  }
  origins_.push_back(dns_wire(rev));
  add_apex();
}

void dns_zone_builder::touch(const std::string& wire) {
  touched_.emplace_back(dns::name_hash(wire), wire);
}

void dns_zone_builder::add(const owner& o, const std::string& wire, record r) {
  names_[wire].records[o].push_back(std::move(r));
  owned_[o].emplace_back(wire, false);
  touch(wire);
  // Every name between this one and its zone's origin exists too.
  for (const auto& origin : origins_) {
    if (wire.size() <= origin.size() || !wire.ends_with(origin)) continue;
    for (std::string_view up = parent(wire); up.size() > origin.size(); up = parent(up)) {
      claim(o, std::string(up));
    }
    break;
  }
}

void dns_zone_builder::claim(const owner& o, const std::string& wire) {
  name_state& n = names_[wire];
  if (n.records.empty() && !n.claims) touch(wire);  // a name comes into existence
  ++n.claims;
  owned_[o].emplace_back(wire, true);
}

void dns_zone_builder::remove_owner(const owner& o) {
  auto it = owned_.find(o);
  if (it == owned_.end()) return;
  for (const auto& [wire, is_claim] : it->second) {
    auto n = names_.find(wire);
    if (n == names_.end()) continue;
    if (is_claim) {
      --n->second.claims;
    } else if (n->second.records.erase(o)) {
      touch(wire);  // its records changed
    }
    if (n->second.records.empty() && !n->second.claims) {
      touch(wire);  // it no longer exists
      names_.erase(n);
    }
  }
  owned_.erase(it);
}

void dns_zone_builder::add_apex() {
  const owner apex{"", ""};
  const std::string ns_name = dns_wire("ns.dns." + cfg_.zone);
  for (const auto& origin : origins_) {
    add(apex, origin, {dns::kTypeNs, ns_name});
  }
  for (uint32_t ip : cfg_.addresses) add(apex, ns_name, {dns::kTypeA, a_rdata(ip)});
  std::string txt(1, static_cast<char>(kSchemaVersion.size()));
  txt.append(kSchemaVersion);
  add(apex, dns_wire("dns-version." + cfg_.zone), {dns::kTypeTxt, txt});
}

void dns_zone_builder::clear() {
  std::vector<owner> all;
  for (const auto& [o, names] : owned_) {
    if (!o.first.empty()) all.push_back(o);
  }
  for (const auto& o : all) remove_owner(o);
}

void dns_zone_builder::update(const model::service* svc, const std::string& ns,
                              const std::string& name, const endpoint_index& endpoints) {
  const owner o{ns, name};
  remove_owner(o);
  if (!svc) return;
  const std::string fqdn_text = name + "." + ns + ".svc." + cfg_.zone;
  const std::string fqdn = dns_wire(fqdn_text);
  if (fqdn.empty()) return;  // too long for DNS: the Service simply has no name

  if (svc->type == model::service_type::external_name) {
    if (std::string target = dns_wire(svc->external_name); !target.empty()) {
      add(o, fqdn, {dns::kTypeCname, target});
    }
    return;
  }
  // SRV records of named ports: the target name, port and address of each endpoint.
  struct srv_target {
    std::string name;
    uint16_t port;
    uint32_t ip;
  };
  auto add_srv = [&](const model::service_port& p, const std::vector<srv_target>& targets) {
    const std::string srv =
        dns_wire("_" + p.name + "._" + lower_proto(p.protocol) + "." + fqdn_text);
    if (srv.empty() || targets.empty()) return;
    const auto weight = static_cast<uint16_t>(std::max<size_t>(1, 100 / targets.size()));
    for (const auto& t : targets) {
      std::string rdata;
      put16(rdata, 0);  // priority
      put16(rdata, weight);
      put16(rdata, t.port);
      rdata.append(t.name);
      add(o, srv, {dns::kTypeSrv, std::move(rdata), t.name, t.ip});
    }
  };

  if (svc->cluster_ip && !svc->headless) {
    const uint32_t ip = *svc->cluster_ip;
    add(o, fqdn, {dns::kTypeA, a_rdata(ip)});
    add(o, dns_reverse(ip), {dns::kTypePtr, fqdn});
    for (const auto& p : svc->ports) {
      if (!p.name.empty()) add_srv(p, {{fqdn, p.port, ip}});
    }
    return;
  }
  if (!svc->headless) return;
  // Headless: the ready endpoints themselves, each under its hostname or its dashed address.
  std::map<uint32_t, std::string> host_of;  // address -> <host>.<fqdn> (wire)
  for (const auto& h : endpoints.hosts(*svc)) {
    if (!h.ready || host_of.count(h.ip)) continue;
    std::string host =
        dns_wire((h.hostname.empty() ? dashed(h.ip) : std::string(h.hostname)) + "." + fqdn_text);
    if (host.empty()) continue;
    add(o, fqdn, {dns::kTypeA, a_rdata(h.ip)});
    add(o, host, {dns::kTypeA, a_rdata(h.ip)});
    add(o, dns_reverse(h.ip), {dns::kTypePtr, host});
    host_of.emplace(h.ip, std::move(host));
  }
  for (const auto& p : svc->ports) {
    if (p.name.empty()) continue;
    std::vector<srv_target> targets;
    for (const auto& e : endpoints.resolve(*svc, p)) {
      auto h = host_of.find(e.ip);
      if (e.ready && h != host_of.end()) targets.push_back({h->second, e.port, e.ip});
    }
    add_srv(p, targets);
  }
}

std::shared_ptr<const dns::name_entry> dns_zone_builder::entry_of(const std::string& wire,
                                                                  const name_state& n) const {
  auto e = std::make_shared<dns::name_entry>();
  e->name = wire;
  // Records by type, each set once whoever contributed it (two headless Services may share
  // an endpoint), in a stable order.
  std::map<uint16_t, std::set<std::string>> by_type;
  std::set<std::pair<std::string, uint32_t>> extra;
  for (const auto& [o, records] : n.records) {
    for (const auto& r : records) {
      by_type[r.type].insert(r.rdata);
      if (!r.extra_owner.empty()) extra.emplace(r.extra_owner, r.extra_ip);
    }
  }
  // A CNAME stands alone at its name (RFC 1034 3.6.2).
  if (auto cname = by_type.find(dns::kTypeCname); cname != by_type.end()) {
    by_type = {{dns::kTypeCname, {*cname->second.begin()}}};
  }
  for (const auto& [type, rdatas] : by_type) {
    dns::rrset s;
    s.type = type;
    for (const auto& rdata : rdatas) {
      s.wire += rr(kToQuestion, type, cfg_.ttl, rdata);
      ++s.count;
    }
    e->sets.push_back(std::move(s));
  }
  for (const auto& [name, ip] : extra) {
    e->extra += rr(name, dns::kTypeA, cfg_.ttl, a_rdata(ip));
    ++e->extra_count;
  }
  return e;
}

std::shared_ptr<const dns::zone> dns_zone_builder::build(uint32_t serial) {
  auto z = std::make_shared<dns::zone>();
  const std::string mname = dns_wire("ns.dns." + cfg_.zone);
  const std::string rname = dns_wire("hostmaster." + cfg_.zone);
  std::string soa = mname + rname;
  put32(soa, serial);
  put32(soa, kRefresh);
  put32(soa, kRetry);
  put32(soa, kExpire);
  put32(soa, cfg_.ttl);  // negative answers are cached this long
  for (const auto& origin : origins_) {
    dns::authority a{origin, rr(origin, dns::kTypeSoa, cfg_.ttl, soa)};
    if (origin == zone_wire_) {
      a.mname_labels = mname.substr(0, mname.size() - origin.size());
      a.rname_labels = rname.substr(0, rname.size() - origin.size());
      put32(a.soa_fixed, cfg_.ttl);
      a.soa_fixed += soa.substr(mname.size() + rname.size());
    }
    z->authorities.push_back(std::move(a));
  }
  // The apex entries carry the SOA: redo them when the serial moves.
  if (serial != serial_) {
    for (const auto& origin : origins_) touch(origin);
    serial_ = serial;
  }

  std::vector<uint64_t> keys;
  // A vector, sorted once here (a hash map of the 40k names of a full build would leave
  // every later build walking its empty buckets).
  std::sort(touched_.begin(), touched_.end());
  touched_.erase(std::unique(touched_.begin(), touched_.end()), touched_.end());
  for (const auto& [hash, wire] : touched_) keys.push_back(hash);
  patch_shards(
      table_, keys, [&](uint64_t hash) -> std::optional<std::shared_ptr<const dns::name_entry>> {
        const std::string& wire =
            std::lower_bound(touched_.begin(), touched_.end(), std::pair(hash, std::string()))
                ->second;
        auto it = names_.find(wire);
        if (it == names_.end()) return std::nullopt;
        auto e = entry_of(wire, it->second);
        if (std::find(origins_.begin(), origins_.end(), wire) != origins_.end()) {
          auto with_soa = std::make_shared<dns::name_entry>(*e);
          dns::rrset s{dns::kTypeSoa, 1, rr(kToQuestion, dns::kTypeSoa, cfg_.ttl, soa)};
          with_soa->sets.insert(with_soa->sets.begin(), std::move(s));
          return with_soa;
        }
        return e;
      });
  touched_.clear();
  touched_.shrink_to_fit();
  z->names = table_;
  return z;
}

}  // namespace ferry::control
