#include "ferryd_views.hpp"

#include <rte_lcore.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <optional>
#include <set>

#include "socket_server.hpp"

#ifndef FERRY_VERSION
#define FERRY_VERSION "unknown"
#endif

namespace ferry::views {

std::string addr_port(uint32_t ip, uint16_t port) {
  return format_ipv4(ip) + ":" + std::to_string(port);
}

dp::service_totals service_counts(const worker_list& workers, service_baselines& base,
                                  const service_port_entry& e) {
  dp::service_totals now = dp::collect_service(workers, e.id);
  std::string owner = e.name + "@" + addr_port(e.vip, e.port) + "/" + proto_name(e.proto);
  auto [it, fresh] = base.by_id.try_emplace(e.id, owner, dp::service_totals{});
  if (!fresh && it->second.first != owner) it->second = {owner, now};
  const auto& b = it->second.second;
  return {now.packets - b.packets, now.bytes - b.bytes, now.new_flows - b.new_flows};
}

void busy_sampler::tick(const worker_list& workers) {
  const auto now = std::chrono::steady_clock::now();
  if (now - last_ < std::chrono::seconds(1) && prev_.size() == workers.size()) return;
  last_ = now;
  ratio_.resize(workers.size(), 0.0);
  const bool first = prev_.size() != workers.size();
  prev_.resize(workers.size(), {0, 0});
  for (size_t i = 0; i < workers.size(); ++i) {
    const uint64_t busy = workers[i]->counters.busy_cycles.get();
    const uint64_t poll = workers[i]->counters.poll_cycles.get();
    if (!first && poll > prev_[i].second) {
      ratio_[i] =
          static_cast<double>(busy - prev_[i].first) / static_cast<double>(poll - prev_[i].second);
    }
    prev_[i] = {busy, poll};
  }
}

namespace {

// "IP" or "IP:PORT" (port 1-65535); nullopt when malformed.
std::optional<std::pair<uint32_t, uint16_t>> parse_addr_port(const std::string& text) {
  const auto colon = text.find(':');
  auto ip = parse_ipv4(text.substr(0, colon));
  if (!ip) return std::nullopt;
  if (colon == std::string::npos) return std::pair(*ip, uint16_t{0});
  const std::string port = text.substr(colon + 1);
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](unsigned char c) { return std::isdigit(c); })) {
    return std::nullopt;
  }
  const unsigned long n = std::stoul(port);
  if (n == 0 || n > 65535) return std::nullopt;
  return std::pair(*ip, static_cast<uint16_t>(n));
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The filters of `get flows` and `flush`; an error names the filter that is wrong.
std::optional<std::string> parse_filter(const snapshot* snap, const json& req, dp::flow_filter& f) {
  auto text = [&](const char* name, std::string& out) -> std::optional<std::string> {
    if (!req.contains(name) || req[name].is_null()) return std::nullopt;
    if (!req[name].is_string()) {
      return std::string("bad filter \"") + name + "\": " + control::describe_value(req[name]) +
             " is not a string";
    }
    out = req[name].get<std::string>();
    return std::nullopt;
  };
  auto bad = [](const char* name, const std::string& value, const char* expected) {
    return std::string("bad filter \"") + name + "\": \"" + value + "\" is not " + expected;
  };
  std::string v;
  if (auto e = text("protocol", v)) return e;
  if (!v.empty()) {
    auto proto = parse_proto(lower(v));
    if (!proto) return bad("protocol", v, "tcp, udp or sctp");
    f.proto = *proto;
  }
  v.clear();
  if (auto e = text("state", v)) return e;
  if (!v.empty()) {
    for (auto s : {dp::flow_state::tcp_syn, dp::flow_state::tcp_syn_recv,
                   dp::flow_state::tcp_established, dp::flow_state::tcp_closing,
                   dp::flow_state::tcp_reset, dp::flow_state::udp, dp::flow_state::sctp_init,
                   dp::flow_state::sctp_established, dp::flow_state::sctp_closing}) {
      if (lower(v) == lower(dp::flow_state_name(s))) f.state = s;
    }
    if (!f.state)
      return bad("state", v,
                 "one of syn_sent, syn_recv, established, closing, reset, udp, sctp_init, "
                 "sctp_established, sctp_closing");
  }
  for (const char* name : {"backend", "client"}) {
    v.clear();
    if (auto e = text(name, v)) return e;
    if (v.empty()) continue;
    auto ap = parse_addr_port(v);
    if (!ap) return bad(name, v, "IP or IP:PORT");
    if (name[0] == 'b') {
      f.backend_ip = ap->first;
      f.backend_port = ap->second;
    } else {
      f.client_ip = ap->first;
      f.client_port = ap->second;
    }
  }
  v.clear();
  if (auto e = text("service", v)) return e;
  if (!v.empty()) {
    if (v.find('/') != std::string::npos) {
      // NS/NAME (every port) or NS/NAME:PORT-NAME: the service ports of that name.
      const bool one_port = v.find(':', v.find('/')) != std::string::npos;
      f.service_ids.emplace();
      if (snap) {
        for (const auto* e : snap->ports()) {
          if (e->name == v || (!one_port && e->name.rfind(v + ":", 0) == 0)) {
            f.service_ids->push_back(e->id);
          }
        }
      }
      if (f.service_ids->empty()) return "bad filter \"service\": no service \"" + v + "\"";
    } else {
      auto ap = parse_addr_port(v);
      if (!ap) return bad("service", v, "NS/NAME, VIP or VIP:PORT");
      f.vip = ap->first;
      f.vport = ap->second;
    }
  }
  return std::nullopt;
}

std::map<uint32_t, std::string> service_names(const snapshot* snap) {
  std::map<uint32_t, std::string> out;
  if (!snap) return out;
  for (const auto* e : snap->ports()) out[e->id] = e->name;
  if (snap->dns_upstream) out[snap->dns_upstream->id] = snap->dns_upstream->name;
  return out;
}

json flow_item(const dp::flow_view& f, const std::map<uint32_t, std::string>& names) {
  json item = {{"protocol", proto_name(f.proto)},
               {"client", addr_port(f.client_ip, f.client_port)},
               {"service", addr_port(f.vip, f.vport)},
               {"backend", addr_port(f.backend_ip, f.backend_port)},
               {"state", f.state},
               {"idle_seconds", f.idle_seconds},
               {"age_seconds", f.age_seconds},
               {"lcore", f.worker},
               {"masquerade", f.snat_ip ? addr_port(f.snat_ip, f.snat_port) : ""}};
  if (auto it = names.find(f.service_id); it != names.end()) item["service_name"] = it->second;
  return item;
}

std::string mac_text(const rte_ether_addr& m) {
  char buf[RTE_ETHER_ADDR_FMT_SIZE];
  rte_ether_format_addr(buf, sizeof(buf), &m);
  return lower(buf);
}

std::string prefix_text(uint32_t net, uint32_t mask) {
  return format_ipv4(net) + "/" + std::to_string(std::popcount(mask));
}

}  // namespace

json flows(const dp::dataplane& d, const json& req) {
  const snapshot* snap = d.snap.load(std::memory_order_acquire);
  dp::flow_filter f;
  if (auto e = parse_filter(snap, req, f)) return {{"error", *e}};
  // By reference: value() would copy the client's value, a recursion per level of nesting.
  static const json kDefaultLimit = 100;
  const auto it = req.find("limit");
  const json& limit = it != req.end() ? *it : kDefaultLimit;
  if (!limit.is_number_unsigned() && !(limit.is_number_integer() && limit.get<int64_t>() >= 0)) {
    return {
        {"error", "bad filter \"limit\": " + control::describe_value(limit) + " is not a count"}};
  }
  uint64_t active = 0, matched = 0;
  const auto names = service_names(snap);
  json items = json::array();
  for (const auto& fv : dp::list_flows(d, f, limit.get<size_t>(), active, matched)) {
    items.push_back(flow_item(fv, names));
  }
  return {{"items", items}, {"total", active}, {"matched", matched}};
}

json flush(dp::dataplane& d, const json& req) {
  // A limit would flush an arbitrary subset: refused rather than ignored.
  if (req.contains("limit")) return {{"error", "bad filter \"limit\": flush takes no limit"}};
  dp::flow_filter f;
  if (auto e = parse_filter(d.snap.load(std::memory_order_acquire), req, f)) {
    return {{"error", *e}};
  }
  return {{"flushed", dp::flush_flows(d, f)}};  // node logs it as a change
}

json neighbors(const dp::dataplane& d) {
  json items = json::array();
  for (const auto& n : dp::list_neighbors(d)) {
    const bool known = std::string_view(n.state) != "incomplete";
    items.push_back({{"address", format_ipv4(n.ip)},
                     {"mac", known ? mac_text(n.mac) : ""},
                     {"port", n.port < d.ports.size() ? d.ports[n.port].name : ""},
                     {"state", n.state},
                     {"age_seconds", n.age_seconds}});
  }
  return {{"items", items}};
}

json routes(const dp::dataplane& d, const node_config& cfg) {
  json items = json::array();
  for (const auto& r : d.routes) {
    bool connected = false;
    if (!r.via && r.port < cfg.ports.size()) {
      const auto& a = cfg.ports[r.port].address;
      connected = a.mask() == r.mask && (a.addr & a.mask()) == r.net;
    }
    items.push_back({{"destination", prefix_text(r.net, r.mask)},
                     {"via", r.via ? format_ipv4(r.via) : ""},
                     {"port", r.port < d.ports.size() ? d.ports[r.port].name : ""},
                     {"kind", connected ? "connected" : "static"}});
  }
  return {{"items", items}};
}

json trace(const dp::dataplane& d, const json& req) {
  auto field = [&](const char* name) -> std::string {
    return req.contains(name) && req[name].is_string() ? req[name].get<std::string>() : "";
  };
  const std::string proto_text = lower(field("protocol").empty() ? "tcp" : field("protocol"));
  const auto parsed_proto = parse_proto(proto_text);
  if (!parsed_proto) return {{"error", "bad request: \"protocol\" must be tcp, udp or sctp"}};
  const uint8_t proto = *parsed_proto;
  auto src = parse_addr_port(field("source"));
  auto dst = parse_addr_port(field("destination"));
  if (!src || !src->second) {
    return {{"error", "bad request: \"source\" must be IP:PORT, got \"" + field("source") + "\""}};
  }
  if (!dst || !dst->second) {
    return {{"error",
             "bad request: \"destination\" must be IP:PORT, got \"" + field("destination") + "\""}};
  }
  const auto t = dp::trace(d, proto, src->first, src->second, dst->first, dst->second);
  const char* match = "none";
  switch (t.match) {
    case dp::trace_result::match_kind::none:
      break;
    case dp::trace_result::match_kind::service:
      match = t.service && t.service->external ? "external_ip" : "cluster_ip";
      break;
    case dp::trace_result::match_kind::node_port:
      match = "node_port";
      break;
    case dp::trace_result::match_kind::dns:
      match = "dns";
      break;
    case dp::trace_result::match_kind::node_address:
      match = "node_address";
      break;
    case dp::trace_result::match_kind::backend_reply:
      break;  // none: the reason says it is a backend's reply
  }
  json service = nullptr;
  if (t.service) {
    const std::string& n = t.service->name;
    const auto slash = n.find('/'), colon = n.find(':', slash == std::string::npos ? 0 : slash);
    service = {
        {"namespace", slash == std::string::npos ? "" : n.substr(0, slash)},
        {"name", n.substr(slash == std::string::npos ? 0 : slash + 1,
                          colon == std::string::npos ? std::string::npos : colon - slash - 1)},
        {"port_name", colon == std::string::npos ? "" : n.substr(colon + 1)},
        {"vip", format_ipv4(t.service->vip)},
        {"port", t.service->port},
        {"protocol", proto_name(t.service->proto)}};
  }
  const auto names = service_names(d.snap.load(std::memory_order_acquire));
  std::string backend;
  if (t.chosen) {
    backend = addr_port(t.chosen->ip, t.chosen->port);
  } else if (t.flow) {
    backend = addr_port(t.flow->backend_ip, t.flow->backend_port);
  }
  const std::string nat_src = t.src_port_chosen_later ? format_ipv4(t.nat_src_ip) + ":*"
                                                      : addr_port(t.nat_src_ip, t.nat_src_port);
  return {{"protocol", proto_text},
          {"source", field("source")},
          {"destination", field("destination")},
          {"match", match},
          {"service", service},
          {"flow", t.flow ? flow_item(*t.flow, names) : json(nullptr)},
          {"reply", t.reply},
          {"decision", t.decision},
          {"backend", backend},
          // Only a forwarded packet is translated.
          {"nat",
           std::string_view(t.verdict) == "forward"
               ? json{{"destination", addr_port(t.nat_dst_ip, t.nat_dst_port)}, {"source", nat_src}}
               : json(nullptr)},
          {"maglev",
           t.maglev ? json{{"table_size", t.maglev_size}, {"slot", t.maglev_slot}} : json(nullptr)},
          {"verdict", t.verdict},
          {"reason", t.reason}};
}

json describe(const dp::dataplane& d, const worker_list& workers, service_baselines& base,
              const json& req) {
  std::vector<uint32_t> ids;
  for (const auto& id : req.value("ids", json::array())) {
    if (id.is_number_unsigned()) ids.push_back(id.get<uint32_t>());
  }
  const auto flows = dp::count_backend_flows(d, ids);
  json out = json::object();
  const snapshot* snap = d.snap.load(std::memory_order_acquire);
  if (!snap) return out;
  for (const auto* e : snap->ports()) {
    if (std::find(ids.begin(), ids.end(), e->id) == ids.end()) continue;
    const auto c = service_counts(workers, base, *e);
    json active = json::object();
    for (const auto& [b, n] : flows.at(e->id)) active[addr_port(b.first, b.second)] = n;
    out[std::to_string(e->id)] = {
        {"counters", {{"packets", c.packets}, {"bytes", c.bytes}, {"new_flows", c.new_flows}}},
        {"active_flows", active}};
  }
  return out;
}

json status(const dp::dataplane& d, const worker_list& workers, const busy_sampler& busy,
            const status_inputs& in) {
  const snapshot* snap = d.snap.load(std::memory_order_acquire);
  json snapshot_json = {{"generation", in.generation},
                        {"published_unix_ns", in.published_ns},
                        {"services", 0},
                        {"service_ports", 0}};
  if (snap) {
    std::set<std::string> services;
    size_t ports = 0;
    for (const auto* e : snap->ports()) {
      ++ports;
      services.insert(e->name.substr(0, e->name.find(':')));
    }
    snapshot_json["services"] = services.size();
    snapshot_json["service_ports"] = ports;
  }
  json lcores = json::array();
  lcores.push_back({{"role", "control"}, {"lcore", rte_get_main_lcore()}});
  for (size_t i = 0; i < workers.size(); ++i) {
    const auto& c = workers[i]->counters;
    uint64_t rx = 0, tx = 0;
    for (const auto& p : c.port_rx) rx += p.get();
    for (const auto& p : c.port_tx) tx += p.get();
    lcores.push_back({{"role", "worker"},
                      {"worker", i},
                      {"lcore", workers[i]->lcore},
                      {"busy_ratio", busy.ratio(i)},
                      {"rx_packets", rx},
                      {"tx_packets", tx}});
  }
  json ports = json::array();
  for (size_t i = 0; i < d.ports.size(); ++i) {
    const auto& p = d.ports[i];
    const auto link = dp::port_link(p);
    const bool configured = i < in.cfg.ports.size();
    const auto& a = configured ? in.cfg.ports[i].address : ipv4_prefix{};
    ports.push_back(
        {{"name", p.name},
         {"device", configured ? in.cfg.ports[i].device : "tap (DNS over TCP)"},
         {"port_id", p.port_id},
         {"mac", mac_text(p.mac)},
         {"address", configured ? format_ipv4(a.addr) + "/" + std::to_string(a.len) : ""},
         {"link_up", link.up},
         {"speed_mbps", link.speed_mbps},
         {"rx_queues", p.rx_queues},
         {"tx_queues", p.tx_queues}});
  }
  json sources = json::array();
  std::string manifests;
  for (const auto& m : in.cfg.manifests) manifests += (manifests.empty() ? "" : ",") + m;
  if (!in.cfg.manifests.empty()) {
    sources.push_back({{"kind", "files"},
                       {"name", manifests},
                       {"objects", in.ctl.objects_from(control::source::file)},
                       {"healthy", true},
                       {"detail", ""}});
  }
  sources.push_back({{"kind", "socket"},
                     {"name", "ferryctl"},
                     {"objects", in.ctl.objects_from(control::source::socket)},
                     {"healthy", true},
                     {"detail", in.cfg.socket_path}});
  if (!in.cfg.builtin_manifests.empty()) {
    sources.push_back({{"kind", "builtin"},
                       {"name", "built-in manifests"},
                       {"objects", in.ctl.objects_from(control::source::builtin)},
                       {"healthy", true},
                       {"detail", ""}});
  }
  if (in.api) {
    bool synced = true, connected = true;
    uint64_t errors = 0;
    std::string last_error;
    for (const auto& r : in.api->status()) {
      synced &= r.synced;
      connected &= r.connected;
      errors += r.errors;
      if (!r.last_error.empty()) last_error = r.kind + ": " + r.last_error;
    }
    std::string detail = std::string(synced ? "synced" : "syncing") +
                         (connected ? "" : "; not connected") + "; " + std::to_string(errors) +
                         " errors" + (last_error.empty() ? "" : "; last: " + last_error);
    sources.push_back({{"kind", "kubernetes"},
                       {"name", in.api->creds().server},
                       {"objects", in.ctl.objects_from(control::source::api)},
                       {"healthy", synced && connected},
                       {"detail", detail}});
  }
  json dns = nullptr;
  if (in.cfg.dns.enabled()) {
    json addrs = json::array();
    for (uint32_t a : in.cfg.dns.addresses) addrs.push_back(format_ipv4(a));
    dns = {{"addresses", addrs}, {"zone", in.cfg.dns.zone}, {"tcp", in.dns_tcp}};
  }
  const double uptime =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - in.started).count();
  return {{"version", FERRY_VERSION},
          {"node", in.cfg.node_name},
          {"pid", getpid()},
          {"config", in.cfg.source},
          {"started_unix", in.started_unix},
          {"uptime_seconds", uptime},
          {"log_level", control::log_level()},  // the names `ferryctl log-level` takes
          {"snapshot", snapshot_json},
          {"lcores", lcores},
          {"ports", ports},
          {"sources", sources},
          {"dns", dns},
          {"metrics", in.cfg.metrics.address}};
}

}  // namespace ferry::views
