#include "node.hpp"

#include <malloc.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "config.hpp"
#include "ferry/net.hpp"
#include "socket_server.hpp"

namespace ferry::control {

namespace fs = std::filesystem;
using nlohmann::json;

result<std::vector<document>> read_documents(const std::string& path) {
  std::error_code ec;
  std::vector<std::string> files;
  if (fs::is_directory(path, ec)) {
    for (const auto& e : fs::directory_iterator(path, ec)) {
      auto ext = e.path().extension().string();
      if (e.is_regular_file() && (ext == ".yaml" || ext == ".yml" || ext == ".json")) {
        files.push_back(e.path().string());
      }
    }
    if (ec) return make_error(path + ": cannot list directory: " + ec.message());
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }
  std::vector<document> docs;
  for (const auto& f : files) {
    std::ifstream in(f);
    if (!in) return make_error(f + ": cannot read manifest: " + std::strerror(errno));
    std::stringstream buf;
    buf << in.rdbuf();
    docs.push_back({f, buf.str()});
  }
  return docs;
}

node::node(const node_config& cfg, publish_fn publish, unsigned workers)
    : cfg_(cfg),
      publish_(std::move(publish)),
      store_(service_ranges{cfg.service_cidr, cfg.node_port_min, cfg.node_port_max,
                            cfg.load_balancer_pool}),
      compiler_(cfg.maglev_max_size, cfg.max_service_ports, cfg.node_name, cfg.load_balancer_pool) {
  if (cfg.dns.enabled()) compiler_.enable_dns(cfg.dns, cfg.service_cidr);
  workers_ = workers;
}

namespace {

// The Services whose endpoints an object bears on.
void touch(const model::object& obj, const std::string& node_name, dirty_set& d) {
  std::visit(
      [&](const auto& o) {
        using T = std::decay_t<decltype(o)>;
        if constexpr (std::is_same_v<T, model::service> || std::is_same_v<T, model::endpoints>) {
          d.services.insert({o.meta.ns, o.meta.name});
        } else if constexpr (std::is_same_v<T, model::endpoint_slice>) {
          d.services.insert({o.meta.ns, o.service_name});
        } else if constexpr (std::is_same_v<T, model::pod>) {
          d.namespaces.insert(o.meta.ns);  // any selector in its namespace may match
        } else if constexpr (std::is_same_v<T, model::node>) {
          d.all |= o.meta.name == node_name;  // this node's zone bears on every Service
        }
      },
      obj);
}

}  // namespace

dirty_set node::dirty_from(const store::undo_log& undo) const {
  dirty_set d;
  for (const auto& [key, before] : undo) {
    auto now = store_.objects().find(key);
    const bool present = now != store_.objects().end();
    if (before && present && before->obj == now->second.obj) continue;  // unchanged
    if (before) touch(before->obj, cfg_.node_name, d);
    if (present) touch(now->second.obj, cfg_.node_name, d);
  }
  return d;
}

result<void> node::recompile(const dirty_set& dirty) {
  // Nothing bears on any Service (every object unchanged): keep the snapshot as it is.
  if (!dirty.all && dirty.services.empty() && dirty.namespaces.empty() && compiled_) return {};
  compiled_ = true;
  auto snap = compiler_.compile(store_, dirty);
  if (!snap) return snap.err();
  // A Service a rule is scoped to changed: its frontends (ids) may have too.
  if (filter_scope_dirty(dirty)) {
    std::vector<filter_rule_config> rules;
    std::vector<uint32_t> slots;
    for (const auto& f : filters_) {
      rules.push_back(f.rule);
      slots.push_back(f.slot);
    }
    filter_set_ = build_filter_set(filter_db_, rules, slots, compiler_);
  }
  (*snap)->filters = filter_set_;
  size_t ports = (*snap)->vips.size();
  publish_(std::move(*snap));
  spdlog::debug("published snapshot: {} service ports", ports);
  track_backend_changes(compiler_.take_backend_changes());
  return {};
}

void node::track_backend_changes(backend_changes changes) {
  if (!backend_flush_) return;
  // publish_ returned after the old snapshot's grace period: no worker can start a flow to
  // a removed backend any more, so a flush from here on is final.
  // Came back (to the same frontend, even one deleted and created again): its flows are its
  // own again, nothing to flush.
  for (const auto& b : changes.added) pending_.erase({b.vip, b.vport, b.proto, b.ip, b.port});
  std::vector<backend_change> now;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(cfg_.conntrack.removed_backend_grace);
  for (auto& b : changes.removed) {
    // kube-proxy deletes a removed endpoint's UDP conntrack entries at once: a UDP client
    // keeps its 5-tuple for good and would otherwise never reach a live backend.
    if (b.proto == kProtoUdp || cfg_.conntrack.removed_backend_grace == 0) {
      now.push_back(std::move(b));
      continue;
    }
    // Already waiting: its first removal's deadline stands.
    pending_.try_emplace({b.vip, b.vport, b.proto, b.ip, b.port},
                         pending_flush{deadline, std::move(b)});
  }
  if (!now.empty()) flush_backends(now, true);
}

uint64_t node::tick(std::chrono::steady_clock::time_point now) {
  std::vector<backend_change> due;
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.deadline <= now) {
      due.push_back(std::move(it->second.backend));
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  return due.empty() ? 0 : flush_backends(due, false);
}

uint64_t node::flush_backends(const std::vector<backend_change>& gone, bool at_once) {
  if (!backend_flush_) return 0;
  const uint64_t n = backend_flush_(gone);
  // One line per batch: a deleted Service with hundreds of endpoints is one change.
  std::string what =
      "flush " + std::to_string(n) + " flows of " + std::to_string(gone.size()) +
      " removed backend" + (gone.size() == 1 ? "" : "s") +
      (at_once ? " (at once):"
               : " (grace " + std::to_string(cfg_.conntrack.removed_backend_grace) + " s over):");
  constexpr size_t kNamed = 5;
  for (size_t i = 0; i < gone.size() && i < kNamed; ++i) {
    what += " " + gone[i].name + " " + format_ipv4(gone[i].ip) + ":" + std::to_string(gone[i].port);
  }
  if (gone.size() > kNamed) what += " and " + std::to_string(gone.size() - kNamed) + " more";
  log_change(what, "removed-backend grace");
  return n;
}

namespace {

result<std::vector<model::object>> parse_all(const std::vector<document>& docs) {
  std::vector<model::object> all;
  for (const auto& d : docs) {
    auto objs = model::parse_manifests(d.text, d.origin);
    if (!objs) return objs.err();
    for (auto& o : *objs) all.push_back(std::move(o));
  }
  return all;
}

}  // namespace

result<std::vector<change>> node::apply(const std::vector<document>& docs, source from) {
  size_t bytes = 0;
  for (const auto& d : docs) bytes += d.text.size();
  auto r = [&]() -> result<std::vector<change>> {
    auto objs = parse_all(docs);
    if (!objs) return objs.err();
    return apply(std::move(*objs), from);
  }();
  // Decoding a large text leaves many megabytes of freed parser nodes in malloc's arenas;
  // hand them back to the system so the daemon's size reflects what it keeps.
  if (bytes > (1u << 20)) malloc_trim(0);
  return r;
}

result<void> node::check_not_api(const std::vector<store::key>& keys) const {
  for (const auto& k : keys) {
    auto it = store_.objects().find(k);
    if (it != store_.objects().end() && it->second.from == source::api) {
      const auto& [kind, ns, name] = k;
      return make_error(kind + " " + (ns.empty() ? "" : ns + "/") + name +
                        " is held by the Kubernetes API source; change it there");
    }
  }
  return {};
}

result<std::vector<change>> node::apply(std::vector<model::object> objects, source from) {
  if (from != source::api) {
    std::vector<store::key> keys;
    for (const auto& o : objects) keys.push_back(key_of(o));
    if (auto r = check_not_api(keys); !r) return r.err();
  }
  store::undo_log undo;
  auto changes = store_.apply(std::move(objects), from, &undo);
  if (!changes) return changes;
  if (auto r = recompile(dirty_from(undo)); !r) {
    store_.revert(std::move(undo));
    return r.err();
  }
  return changes;
}

result<std::vector<change>> node::remove(const std::vector<document>& docs) {
  auto objs = parse_all(docs);
  if (!objs) return objs.err();
  std::vector<store::key> keys;
  for (const auto& o : *objs) keys.push_back(key_of(o));
  if (auto r = check_not_api(keys); !r) return r.err();
  store::undo_log undo;
  auto changes = store_.remove(keys, &undo);
  if (auto r = recompile(dirty_from(undo)); !r) {
    store_.revert(std::move(undo));
    return r.err();
  }
  return changes;
}

result<std::vector<change>> node::sync_api(kube::update u) {
  store::undo_log undo;
  std::set<store::key> listed;
  for (const auto& o : u.upserts) listed.insert(key_of(o));
  // Deletes, and what a re-list no longer names: only objects the API holds. A local
  // object of the same name is not the API's to delete.
  std::vector<store::key> gone;
  auto held_by_api = [&](const store::key& k) {
    auto it = store_.objects().find(k);
    return it != store_.objects().end() && it->second.from == source::api;
  };
  for (const auto& k : u.deletes) {
    if (held_by_api(k)) gone.push_back(k);
  }
  for (const auto& kind : u.relisted) {
    for (auto it = store_.objects().lower_bound({kind, "", ""});
         it != store_.objects().end() && std::get<0>(it->first) == kind; ++it) {
      if (it->second.from == source::api && !listed.count(it->first)) gone.push_back(it->first);
    }
  }
  auto changes = store_.remove(gone, &undo);
  for (const auto& o : u.upserts) {
    auto it = store_.objects().find(key_of(o));
    if (it != store_.objects().end() && it->second.from != source::api) {
      spdlog::warn("kubernetes: {} {}/{} from the API replaces the one from {}",
                   model::kind_name(o), model::meta_of(o).ns, model::meta_of(o).name,
                   source_name(it->second.from));
    }
  }
  // One batch; when ferry refuses it (a Service that conflicts with a local one, say), one
  // object at a time, so one refusal does not hold back the rest.
  // Each object's apply is O(log store) (a full service range refuses in O(1)), so the
  // fallback is bounded by the update's size; it still checks for a stop between objects.
  auto batch = store_.apply(u.upserts, source::api, &undo);
  if (batch) {
    changes.insert(changes.end(), batch->begin(), batch->end());
  } else {
    size_t refused = 0;
    for (auto& o : u.upserts) {
      if (stop_ && stop_->load(std::memory_order_relaxed)) {
        store_.revert(std::move(undo));
        return make_error("kubernetes: update interrupted: ferryd is stopping");
      }
      auto one = store_.apply({o}, source::api, &undo);
      if (one) {
        changes.insert(changes.end(), one->begin(), one->end());
      } else {
        ++api_refused_;
        if (++refused <= kMaxRefusalLines) spdlog::warn("kubernetes: refused {}", one.message());
      }
    }
    if (refused > kMaxRefusalLines) {
      spdlog::warn(
          "kubernetes: {} more objects of this update refused, not logged "
          "(ferryctl stats: sources.kubernetes.refused)",
          refused - kMaxRefusalLines);
    }
  }
  if (auto r = recompile(dirty_from(undo)); !r) {
    store_.revert(std::move(undo));
    return r.err();
  }
  // A large re-list leaves its decoding garbage in the watch threads' malloc arenas.
  if (u.upserts.size() > 1000) malloc_trim(0);
  return changes;
}

void log_changes(const std::vector<change>& changes, std::string_view source) {
  constexpr size_t kMaxLines = 100;
  size_t logged = 0, more = 0;
  for (const auto& c : changes) {
    if (c.action == "unchanged") continue;
    if (logged == kMaxLines) {
      ++more;
      continue;
    }
    std::string kind = c.kind;
    std::transform(kind.begin(), kind.end(), kind.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    spdlog::info("change: {} {}{} {} (source: {})", kind, c.ns.empty() ? "" : c.ns + "/", c.name,
                 c.action, source);
    ++logged;
  }
  if (more) spdlog::info("change: {} more changes not logged (source: {})", more, source);
}

void log_change(std::string_view what, std::string_view source) {
  spdlog::info("change: {} (source: {})", what, source);
}

// kLogLevels lists the names in spdlog's level order (trace = 0 ... off = 6).
bool set_log_level(std::string_view name) {
  for (size_t i = 0; i < std::size(kLogLevels); ++i) {
    if (name == kLogLevels[i]) {
      spdlog::set_level(static_cast<spdlog::level::level_enum>(i));
      return true;
    }
  }
  return false;
}

std::string log_level() {
  auto i = static_cast<size_t>(spdlog::get_level());
  return i < std::size(kLogLevels) ? kLogLevels[i] : "?";
}

result<void> node::load_sources(const node_config& cfg, bool log) {
  if (!filters_loaded_) {
    filters_loaded_ = true;
    std::vector<filter_rule> rules;
    for (const auto& r : cfg.filters) rules.push_back({r, source::file});
    if (!rules.empty()) {
      if (auto r = set_filters(std::move(rules)); !r) return r.err();
    }
  }
  std::vector<document> docs;
  for (const auto& path : cfg.manifests) {
    auto d = read_documents(path);
    if (!d) return d.err();
    for (auto& doc : *d) docs.push_back(std::move(doc));
  }
  if (!docs.empty()) {
    auto r = apply(docs, source::file);
    if (!r) return r.err();
    if (log) log_changes(*r, "file");
  }
  if (!cfg.builtin_manifests.empty()) {
    auto r = apply({{"<built-in manifests>", cfg.builtin_manifests}}, source::builtin);
    if (!r) return r.err();
    if (log) log_changes(*r, "builtin");
  }
  if (docs.empty() && cfg.builtin_manifests.empty()) return recompile(dirty_set{.all = true});
  return {};
}

result<reload_result> node::reload(const node_config& fresh) {
  // Read and decode everything before touching the store: a bad file changes nothing.
  std::vector<document> docs;
  for (const auto& path : fresh.manifests) {
    auto d = read_documents(path);
    if (!d) return d.err();
    for (auto& doc : *d) docs.push_back(std::move(doc));
  }
  auto objs = parse_all(docs);
  if (!objs) return objs.err();
  // [[filter]]: the file's rules replace those it gave before (the socket's stay), compiled
  // now so that a refused set changes nothing; installed once the objects are in.
  std::vector<change> filter_changes;
  auto filters = filters_for(fresh, filter_changes);
  if (!filters) return filters.err();
  std::optional<filter_plan> plan;
  if (*filters) {
    auto p = plan_filters(std::move(**filters));
    if (!p) return make_error(fresh.source + ": " + p.message());
    plan = std::move(*p);
  }
  std::set<store::key> keys;
  for (const auto& o : *objs) keys.insert(key_of(o));
  if (auto r = check_not_api({keys.begin(), keys.end()}); !r) return r.err();
  std::vector<store::key> gone;
  for (const auto& [k, so] : store_.objects()) {
    if (so.from == source::file && !keys.count(k)) gone.push_back(k);
  }
  store::undo_log undo;
  reload_result out;
  out.changes = store_.remove(gone, &undo);
  auto applied = store_.apply(std::move(*objs), source::file, &undo);
  if (!applied) {
    store_.revert(std::move(undo));
    return applied.err();
  }
  out.changes.insert(out.changes.end(), applied->begin(), applied->end());
  if (auto r = recompile(dirty_from(undo)); !r) {
    store_.revert(std::move(undo));
    return r.err();
  }
  if (plan) {
    if (auto r = install_filters(std::move(*plan)); !r) return r.err();
  }
  out.changes.insert(out.changes.end(), filter_changes.begin(), filter_changes.end());
  cfg_.filters = fresh.filters;
  log_changes(out.changes, "file");
  out.restart_needed = restart_needed(cfg_, fresh);
  // Only a level the file changes: a level set at run time (ferryctl log-level, --verbose)
  // survives a reload that is about something else.
  if (fresh.log_level != cfg_.log_level) {
    auto was = log_level();
    set_log_level(fresh.log_level);
    spdlog::info("change: log level {} (was {}) (source: {})", fresh.log_level, was, fresh.source);
  }
  cfg_.log_level = fresh.log_level;
  cfg_.max_request_bytes = fresh.max_request_bytes;
  cfg_.manifests = fresh.manifests;
  for (const auto& key : out.restart_needed) {
    spdlog::warn("reload: {}: {} changed; restart ferryd to apply it", fresh.source, key);
  }
  return out;
}

result<reload_result> node::reload() {
  auto fresh = cfg_.source == default_config_source() ? default_config() : load_config(cfg_.source);
  if (!fresh) return fresh.err();
  return reload(*fresh);
}

namespace {

const char* type_name(model::service_type t) {
  switch (t) {
    case model::service_type::cluster_ip:
      return "ClusterIP";
    case model::service_type::node_port:
      return "NodePort";
    case model::service_type::load_balancer:
      return "LoadBalancer";
    case model::service_type::external_name:
      return "ExternalName";
  }
  return "?";
}

std::string endpoint_text(const backend& b) {
  return format_ipv4(b.ip) + ":" + std::to_string(b.port);
}

}  // namespace

namespace {

const char* policy_name(model::traffic_policy p) {
  return p == model::traffic_policy::local ? "Local" : "Cluster";
}

json addresses_json(const std::vector<uint32_t>& ips) {
  json out = json::array();
  for (uint32_t ip : ips) out.push_back(format_ipv4(ip));
  return out;
}

json service_json(const model::service& svc, const endpoint_index& endpoints) {
  json ports = json::array();
  size_t ready = 0;
  for (const auto& p : svc.ports) {
    json target;
    if (const auto* n = std::get_if<uint16_t>(&p.target_port)) {
      target = *n ? *n : p.port;
    } else {
      target = std::get<std::string>(p.target_port);
    }
    ports.push_back({{"name", p.name},
                     {"port", p.port},
                     {"protocol", proto_name(p.protocol)},
                     {"target_port", target},
                     {"node_port", p.node_port}});
    for (const auto& b : select_backends(endpoints.resolve(svc, p), {}, false)) {
      ready += b.weight > 0;
    }
  }
  json ranges = json::array();
  for (const auto& r : svc.source_ranges) {
    ranges.push_back(format_ipv4(r.addr & r.mask()) + "/" + std::to_string(r.len));
  }
  const bool lb = svc.type == model::service_type::load_balancer;
  json out = {{"namespace", svc.meta.ns},
              {"name", svc.meta.name},
              {"type", type_name(svc.type)},
              {"cluster_ip", svc.headless     ? "None"
                             : svc.cluster_ip ? format_ipv4(*svc.cluster_ip)
                                              : ""},
              {"external_ips", addresses_json(svc.external_ips)},
              {"load_balancer", addresses_json(lb ? svc.lb_addresses() : std::vector<uint32_t>{})},
              {"load_balancer_pending", lb && svc.lb_addresses().empty()},
              {"load_balancer_allocated", svc.lb_allocated},
              {"load_balancer_source_ranges", ranges},
              {"ports", ports},
              {"session_affinity", svc.affinity_client_ip ? "ClientIP" : "None"},
              {"external_traffic_policy", policy_name(svc.external_policy)},
              {"internal_traffic_policy", policy_name(svc.internal_policy)},
              {"ready_endpoints", ready}};
  if (svc.affinity_client_ip) out["affinity_timeout_seconds"] = svc.affinity_timeout;
  if (svc.type == model::service_type::external_name) out["external_name"] = svc.external_name;
  return out;
}

// Every endpoint of every port, with the conditions and node kube-proxy decides on, and
// the weight it gets (the operator's override applied).
json endpoints_json(const model::service& svc, const endpoint_index& endpoints,
                    const std::string& node_name, const compiler& comp) {
  json eps = json::array();
  json draining = json::array();
  json details = json::array();
  const compiler::service_name owner{svc.meta.ns, svc.meta.name};
  for (const auto& p : svc.ports) {
    const auto refs = endpoints.resolve(svc, p);
    const auto backends = select_backends(refs, {}, false);
    for (const auto& b : backends) {
      (comp.effective_weight(owner, b) ? eps : draining).push_back(endpoint_text(b));
    }
    for (const auto& e : refs) {
      uint16_t weight = 0;
      for (const auto& b : backends) {
        if (b.ip == e.ip && b.port == e.port) weight = comp.effective_weight(owner, b);
      }
      const auto over = comp.weight_override(owner, e.ip);
      details.push_back({{"address", format_ipv4(e.ip)},
                         {"port", e.port},
                         {"port_name", p.name},
                         {"protocol", proto_name(p.protocol)},
                         {"ready", e.ready},
                         {"serving", e.serving},
                         {"terminating", e.terminating},
                         {"node", std::string(e.node)},
                         {"local", !e.node.empty() && e.node == node_name},
                         {"weight", weight},
                         {"drained", over && *over == 0}});
    }
  }
  return {{"namespace", svc.meta.ns},
          {"name", svc.meta.name},
          {"endpoints", eps},
          {"draining", draining},
          {"details", details}};
}

}  // namespace

json node::get(const std::string& resource, const std::string& ns) const {
  json items = json::array();
  // Only Services and their endpoints need it; building it walks every object.
  std::optional<endpoint_index> index;
  if (resource == "services" || resource == "endpoints") index.emplace(store_);
  for (const auto& [key, so] : store_.objects()) {
    const auto& meta = model::meta_of(so.obj);
    if (!ns.empty() && meta.ns != ns && resource != "nodes") continue;
    if (const auto* svc = std::get_if<model::service>(&so.obj)) {
      if (resource == "services") {
        items.push_back(service_json(*svc, *index));
        items.back()["source"] = source_name(so.from);
      } else if (resource == "endpoints") {
        items.push_back(endpoints_json(*svc, *index, cfg_.node_name, compiler_));
      } else if (resource == "nodeports") {
        for (const auto& p : svc->ports) {
          if (!p.node_port || (svc->type != model::service_type::node_port &&
                               svc->type != model::service_type::load_balancer)) {
            continue;
          }
          size_t active = 0;
          for (const auto& e : compiler_.entries_of({meta.ns, meta.name})) {
            if (e->vip != 0 || e->port != p.node_port || e->proto != p.protocol) continue;
            for (const auto& b : e->backends) active += b.weight > 0;
          }
          items.push_back({{"protocol", proto_name(p.protocol)},
                           {"node_port", p.node_port},
                           {"namespace", meta.ns},
                           {"name", meta.name},
                           {"port_name", p.name},
                           {"port", p.port},
                           {"cluster_ip", svc->cluster_ip ? format_ipv4(*svc->cluster_ip) : ""},
                           {"external_traffic_policy", policy_name(svc->external_policy)},
                           {"backends", active}});
        }
      }
    } else if (const auto* pod = std::get_if<model::pod>(&so.obj); pod && resource == "pods") {
      items.push_back({{"namespace", meta.ns},
                       {"name", meta.name},
                       {"ready", pod->ready},
                       {"terminating", pod->terminating},
                       {"ip", pod->ip ? format_ipv4(*pod->ip) : ""},
                       {"node", pod->node_name}});
    } else if (const auto* n = std::get_if<model::node>(&so.obj); n && resource == "nodes") {
      items.push_back({{"name", meta.name},
                       {"addresses", addresses_json(n->addresses)},
                       {"zone", n->zone},
                       {"this_node", meta.name == cfg_.node_name}});
    }
  }
  if (resource == "nodeports") {
    std::sort(items.begin(), items.end(), [](const json& a, const json& b) {
      return std::pair(a["node_port"].get<int>(), a["protocol"].get<std::string>()) <
             std::pair(b["node_port"].get<int>(), b["protocol"].get<std::string>());
    });
  }
  return {{"items", items}};
}

std::vector<env_var> node::env(const std::string& ns, bool service_links) const {
  return service_environment(store_, ns, service_links);
}

uint64_t node::objects_from(source s) const {
  uint64_t n = 0;
  for (const auto& [key, so] : store_.objects()) n += so.from == s;
  return n;
}

namespace {

const model::service* find_service(const store& st, const std::string& ns,
                                   const std::string& name) {
  auto it = st.objects().find({"Service", ns, name});
  return it == st.objects().end() ? nullptr : std::get_if<model::service>(&it->second.obj);
}

json optional_weight(std::optional<uint16_t> w) { return w ? json(*w) : json(nullptr); }

}  // namespace

result<json> node::weight(const std::string& ns, const std::string& name, uint32_t ip,
                          std::optional<uint16_t> w) {
  const std::string what = "service \"" + ns + "/" + name + "\"";
  const auto* svc = find_service(store_, ns, name);
  if (!svc) return make_error(what + " not found");
  const compiler::service_name owner{ns, name};
  const auto previous = compiler_.weight_override(owner, ip);
  // The ports whose endpoints have this address.
  size_t ports = 0;
  const endpoint_index endpoints(store_, ns, name);
  for (const auto& p : svc->ports) {
    const auto refs = endpoints.resolve(*svc, p);
    ports += std::any_of(refs.begin(), refs.end(), [&](const auto& e) { return e.ip == ip; });
  }
  if (!ports && !(previous && !w)) {
    return make_error("address " + format_ipv4(ip) + " is not an endpoint of " + what);
  }
  compiler_.set_weight(owner, ip, w);
  dirty_set dirty;
  dirty.services.insert(owner);
  if (auto r = recompile(dirty); !r) {
    compiler_.set_weight(owner, ip, previous);
    return r.err();
  }
  return json{{"namespace", ns},
              {"name", name},
              {"address", format_ipv4(ip)},
              {"weight", optional_weight(w)},
              {"previous", optional_weight(previous)},
              {"ports", ports}};
}

result<json> node::describe(const std::string& ns, const std::string& name) const {
  auto it = store_.objects().find({"Service", ns, name});
  const auto* svc =
      it == store_.objects().end() ? nullptr : std::get_if<model::service>(&it->second.obj);
  if (!svc) return make_error("service \"" + ns + "/" + name + "\" not found");
  const endpoint_index endpoints(store_, ns, name);
  json out = service_json(*svc, endpoints);
  out["source"] = source_name(it->second.from);
  const compiler::service_name owner{ns, name};
  const auto entries = compiler_.entries_of(owner);
  // Counters and active flows per frontend come from the dataplane, by counter slot id.
  json live = json::object();
  if (auto v = views_.find("describe"); v != views_.end() && !entries.empty()) {
    json ids = json::array();
    for (const auto& e : entries) ids.push_back(e->id);
    live = v->second({{"ids", ids}});
  }
  auto zone_of = [&](std::string_view node_name) -> std::string {
    if (node_name.empty()) return "";
    auto n = store_.objects().find({"Node", "", std::string(node_name)});
    if (n == store_.objects().end()) return "";
    return std::get<model::node>(n->second.obj).zone;
  };
  json ports = json::array();
  for (const auto& p : svc->ports) {
    const std::string entry_name = ns + "/" + name + (p.name.empty() ? "" : ":" + p.name);
    const auto refs = endpoints.resolve(*svc, p);
    json target;
    if (const auto* n = std::get_if<uint16_t>(&p.target_port)) {
      target = std::to_string(*n ? *n : p.port);
    } else {
      target = std::get<std::string>(p.target_port);
    }
    for (const auto& e : entries) {
      if (e->name != entry_name || e->proto != p.protocol) continue;
      std::vector<uint32_t> slots(e->backends.size(), 0);
      for (uint16_t i : e->maglev) {
        if (i < slots.size()) ++slots[i];
      }
      const json counters =
          live.contains(std::to_string(e->id))
              ? live[std::to_string(e->id)]
              : json{{"counters", {{"packets", 0}, {"bytes", 0}, {"new_flows", 0}}},
                     {"active_flows", json::object()}};
      json backends = json::array();
      for (size_t i = 0; i < e->backends.size(); ++i) {
        const backend& b = e->backends[i];
        const std::string addr = format_ipv4(b.ip) + ":" + std::to_string(b.port);
        const auto over = compiler_.weight_override(owner, b.ip);
        bool ready = false, serving = false, terminating = false;
        std::string node_name;
        for (const auto& r : refs) {
          if (r.ip != b.ip || r.port != b.port) continue;
          ready = r.ready;
          serving = r.serving;
          terminating = r.terminating;
          node_name = r.node;
        }
        const json& af = counters["active_flows"];
        backends.push_back(
            {{"address", format_ipv4(b.ip)},
             {"port", b.port},
             {"weight", b.weight},
             {"configured_weight", b.configured_weight},
             {"override", optional_weight(over)},
             {"ready", ready},
             {"serving", serving},
             {"terminating", terminating},
             {"node", node_name},
             {"zone", zone_of(node_name)},
             {"local", b.local},
             {"slots", slots[i]},
             {"share", e->maglev.empty() ? 0.0 : double(slots[i]) / double(e->maglev.size())},
             {"active_flows", af.contains(addr) ? af[addr] : json(0)}});
      }
      ports.push_back({{"name", p.name},
                       {"protocol", proto_name(p.protocol)},
                       {"port", p.port},
                       {"target_port", target},
                       {"node_port", p.node_port},
                       {"vip", format_ipv4(e->vip)},
                       {"frontend_port", e->port},
                       {"external", e->external},
                       {"maglev_size", e->maglev.size()},
                       {"counters", counters["counters"]},
                       {"backends", backends}});
    }
  }
  out["ports"] = ports;
  return out;
}

namespace {

result<std::vector<document>> documents_of(const json& req) {
  std::vector<document> docs;
  if (!req.contains("documents") || !req["documents"].is_array()) {
    return make_error("bad request: \"documents\" must be an array");
  }
  for (const auto& d : req["documents"]) {
    if (!d.is_object() || !d.contains("text") || !d["text"].is_string()) {
      return make_error("bad request: each document needs a \"text\" string");
    }
    docs.push_back({d.value("origin", "<request>"), d["text"].get<std::string>()});
  }
  return docs;
}

json changes_json(const std::vector<change>& changes) {
  json out = json::array();
  for (const auto& c : changes) {
    out.push_back({{"kind", c.kind}, {"namespace", c.ns}, {"name", c.name}, {"action", c.action}});
  }
  return {{"changes", out}};
}

json variables_json(const std::vector<env_var>& vars) {
  json out = json::array();
  for (const auto& v : vars) out.push_back({{"name", v.name}, {"value", v.value}});
  return {{"variables", out}};
}

json ok(json result) { return {{"ok", true}, {"result", std::move(result)}}; }
json refused(const std::string& message) { return {{"ok", false}, {"error", message}}; }

// A view refuses a request (a malformed filter, say) by answering {"error": "..."}.
json view_answer(json v) {
  if (v.is_object() && v.contains("error") && v["error"].is_string()) {
    return refused(v["error"].get<std::string>());
  }
  return ok(std::move(v));
}

// Payload signature filter: a filter_add request's rule (fields as `[[filter]]` has them).
result<filter_rule_config> filter_rule_of(const json& req) {
  filter_rule_config r;
  std::string action = "drop", vip, proto;
  int64_t depth = r.depth, port = 0;
  const std::pair<const char*, std::string*> strings[] = {
      {"name", &r.name},       {"pattern", &r.pattern}, {"action", &action},
      {"service", &r.service}, {"vip", &vip},           {"protocol", &proto}};
  for (const auto& [key, out] : strings) {
    if (!req.contains(key) || req[key].is_null()) continue;
    if (!req[key].is_string()) {
      return make_error(std::string("bad request: \"") + key + "\" must be a string");
    }
    *out = req[key].get<std::string>();
  }
  for (auto [key, out] : {std::pair{"depth", &depth}, std::pair{"port", &port}}) {
    if (!req.contains(key) || req[key].is_null()) continue;
    if (!req[key].is_number_integer()) {
      return make_error(std::string("bad request: \"") + key + "\" must be an integer");
    }
    *out = req[key].get<int64_t>();
  }
  if (req.contains("flags") && !req["flags"].is_null()) {
    if (!req["flags"].is_array()) return make_error("bad request: \"flags\" must be a list");
    for (const auto& f : req["flags"]) {
      if (!f.is_string()) return make_error("bad request: \"flags\" must be a list of strings");
      r.flags.push_back(f.get<std::string>());
    }
  }
  const std::string who = "filter \"" + r.name + "\": ";
  if (action != "drop" && action != "count") {
    return make_error(who + "action: \"" + action + "\" must be drop or count");
  }
  r.drop = action == "drop";
  if (depth < 1 || depth > kFilterMaxDepth) {
    return make_error(who + "depth: must be between 1 and " + std::to_string(kFilterMaxDepth) +
                      ", got " + std::to_string(depth));
  }
  r.depth = static_cast<uint32_t>(depth);
  if (port < 0 || port > 65535) {
    return make_error(who + "port: must be between 1 and 65535, got " + std::to_string(port));
  }
  r.port = static_cast<uint16_t>(port);
  if (!vip.empty()) {
    auto a = parse_ipv4(vip);
    if (!a) return make_error(who + "vip: \"" + vip + "\" is not an IPv4 address");
    r.vip = *a;
  }
  if (!proto.empty()) {
    std::string up = proto;
    for (auto& c : up) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (up != "TCP" && up != "UDP") {
      return make_error(who + "protocol: \"" + proto + "\" must be TCP or UDP");
    }
    r.proto = up == "TCP" ? 6 : 17;
  }
  return r;
}

// A request's field by reference, null when absent: value() would copy the client's value,
// a recursion per level of nesting.
const json& field_of(const json& req, const char* key) {
  static const json kAbsent;
  const auto it = req.find(key);
  return it != req.end() ? *it : kAbsent;
}

}  // namespace

json node::handle(const json& req) {
  std::string op = req.value("op", "");
  if (op == "apply" || op == "delete") {
    auto docs = documents_of(req);
    if (!docs) return refused(docs.message());
    auto r = op == "apply" ? apply(*docs, source::socket) : remove(*docs);
    if (!r) return refused(r.message());
    log_changes(*r, "socket");
    return ok(changes_json(*r));
  }
  if (op == "get") {
    std::string resource = req.value("resource", "");
    std::string ns = req.value("namespace", "");
    if (resource == "flows") {
      if (!flows_) return refused("flows are not available");
      return view_answer(flows_(req));
    }
    if (resource == "neighbors" || resource == "routes") {
      auto v = views_.find(resource);
      if (v == views_.end()) return refused(resource + " are not available");
      return view_answer(v->second(req));
    }
    if (resource != "services" && resource != "endpoints" && resource != "pods" &&
        resource != "nodes" && resource != "nodeports") {
      return refused("unknown resource \"" + resource + "\"");
    }
    return ok(get(resource, ns));
  }
  if (op == "env") {
    const json& ns = field_of(req, "namespace");
    static const json kLinksDefault = true;  // enableServiceLinks' default
    const auto links_it = req.find("service_links");
    const json& links = links_it != req.end() ? *links_it : kLinksDefault;
    if (!ns.is_string() || ns.get<std::string>().empty()) {
      return refused("bad request: env needs a \"namespace\" (the pod's namespace)");
    }
    if (!links.is_boolean()) return refused("bad request: \"service_links\" must be true or false");
    return ok(variables_json(env(ns.get<std::string>(), links.get<bool>())));
  }
  if (op == "stats") {
    if (!stats_) return refused("stats are not available");
    return ok(stats_(req));
  }
  if (op == "status" || op == "trace" || op == "flush") {
    auto v = views_.find(op);
    if (v == views_.end()) return refused(op + " is not available");
    json out = v->second(req);
    // The dataplane knows a frontend is external; the store knows whether its address is
    // the Service's load balancer address or an externalIP.
    if (op == "trace" && out.value("match", "") == "external_ip" && out["service"].is_object()) {
      const auto& sv = out["service"];
      const auto* svc = find_service(store_, sv.value("namespace", ""), sv.value("name", ""));
      const auto vip = parse_ipv4(sv.value("vip", ""));
      if (svc && vip && svc->type == model::service_type::load_balancer) {
        const auto lb = svc->lb_addresses();
        if (std::find(lb.begin(), lb.end(), *vip) != lb.end()) out["match"] = "load_balancer";
      }
    }
    if (op == "flush" && out.contains("flushed")) {
      // Only the filters flush reads, each as describe_value() shows it: a request's other
      // fields are the client's and may be anything (dump() of a deep one overflows the stack).
      std::string filters;
      for (const char* key : {"service", "backend", "client", "state", "protocol"}) {
        auto it = req.find(key);
        if (it == req.end() || it->is_null()) continue;
        filters += (filters.empty() ? "" : ", ") + std::string(key) + "=" + describe_value(*it);
      }
      log_change("flush " + describe_value(out["flushed"]) + " flows " +
                     (filters.empty() ? std::string("(all)") : "matching " + filters),
                 "socket");
    }
    return view_answer(std::move(out));
  }
  if (op == "describe") {
    const std::string kind = req.value("kind", "service");
    if (kind != "service" && kind != "services" && kind != "svc") {
      return refused("describe: unknown kind \"" + kind + "\" (only service)");
    }
    const json& name = field_of(req, "name");
    if (!name.is_string() || name.get<std::string>().empty()) {
      return refused("bad request: describe needs a \"name\"");
    }
    auto r = describe(req.value("namespace", "default"), name.get<std::string>());
    if (!r) return refused(r.message());
    return ok(std::move(*r));
  }
  if (op == "weight") {
    const json& name = field_of(req, "name");
    const json& address = field_of(req, "address");
    if (!name.is_string() || name.get<std::string>().empty()) {
      return refused("bad request: weight needs a \"name\" (the Service)");
    }
    if (!address.is_string()) return refused("bad request: weight needs an \"address\"");
    auto ip = parse_ipv4(address.get<std::string>());
    if (!ip) {
      return refused("bad request: \"address\" " + describe_value(address) +
                     " is not an IPv4 address");
    }
    if (!req.contains("weight")) {
      return refused("bad request: weight needs a \"weight\" (0-1000, or null to remove)");
    }
    const json& w = req["weight"];
    std::optional<uint16_t> value;
    if (!w.is_null()) {
      if (!w.is_number_integer() || w.get<int64_t>() < 0 || w.get<int64_t>() > 1000) {
        return refused("bad request: \"weight\" must be an integer from 0 to 1000, or null, not " +
                       describe_value(w));
      }
      value = static_cast<uint16_t>(w.get<int64_t>());
    }
    const std::string ns = req.value("namespace", "default");
    auto r = weight(ns, name.get<std::string>(), *ip, value);
    if (!r) return refused(r.message());
    auto shown = [](const json& w) {
      return w.is_null() ? std::string("configured") : describe_value(w);
    };
    log_change("weight " + ns + "/" + name.get<std::string>() + " " + address.get<std::string>() +
                   " " + shown((*r)["weight"]) + " (was " + shown((*r)["previous"]) + ")",
               "socket");
    return ok(std::move(*r));
  }
  // Payload signature filter.
  if (op == "filter_list") return ok(filter_list());
  if (op == "filter_del") {
    const json& name = field_of(req, "name");
    if (!name.is_string() || name.get<std::string>().empty()) {
      return refused("bad request: filter_del needs a \"name\"");
    }
    auto r = filter_del(name.get<std::string>());
    if (!r) return refused(r.message());
    log_change("filter del " + name.get<std::string>(), "socket");
    return ok(std::move(*r));
  }
  if (op == "filter_add") {
    auto r = filter_rule_of(req);
    if (!r) return refused(r.message());
    auto out = filter_add(*r);
    if (!out) return refused(out.message());
    log_change(
        "filter add " + r->name + " " + (r->drop ? "drop" : "count") + " /" + r->pattern + "/",
        "socket");
    return ok(std::move(*out));
  }
  if (op == "log_level") {
    const json& level = field_of(req, "level");
    const std::string was = log_level();
    if (level.is_null()) return ok({{"level", was}, {"previous", was}});
    if (!level.is_string() || !set_log_level(level.get<std::string>())) {
      return refused(
          "bad request: \"level\" must be one of trace, debug, info, warn, error, "
          "critical, off");
    }
    log_change("log level " + log_level() + " (was " + was + ")", "socket");
    return ok({{"level", log_level()}, {"previous", was}});
  }
  if (op == "reload") {
    auto r = reload();
    if (!r) {
      spdlog::error("reload refused, nothing changed: {}", r.message());
      return refused(r.message());
    }
    json result = changes_json(r->changes);
    result["restart_needed"] = r->restart_needed;
    result["config"] = cfg_.source;
    return ok(std::move(result));
  }
  return refused("unknown op \"" + op + "\"");
}

// Payload signature filter.

bool node::filter_scope_dirty(const dirty_set& dirty) const {
  for (const auto& f : filters_) {
    if (f.rule.service.empty()) continue;
    if (dirty.all) return true;
    const auto slash = f.rule.service.find('/');
    const std::string ns = f.rule.service.substr(0, slash);
    if (dirty.namespaces.count(ns) ||
        dirty.services.count({ns, f.rule.service.substr(slash + 1)})) {
      return true;
    }
  }
  return false;
}

result<node::filter_plan> node::plan_filters(std::vector<filter_rule> rules) const {
  if (rules.size() > cfg_.filter_max_rules) {
    return make_error("filters: at most " + std::to_string(cfg_.filter_max_rules) +
                      " rules (limits.filter_max_rules)");
  }
  std::vector<filter_rule_config> configs;
  for (const auto& f : rules) configs.push_back(f.rule);
  // Compiled before anything changes: a refused pattern leaves the running set as it was.
  auto db = compile_filters(configs, workers_);
  if (!db) return db.err();
  return filter_plan{std::move(rules), std::move(*db)};
}

result<void> node::set_filters(std::vector<filter_rule> rules) {
  auto plan = plan_filters(std::move(rules));
  if (!plan) return plan.err();
  return install_filters(std::move(*plan));
}

result<void> node::install_filters(filter_plan plan) {
  auto& rules = plan.rules;
  std::vector<filter_rule_config> configs;
  // Slots: kept by rules that stay; new rules take a free one and remember its total so far.
  std::vector<uint32_t> slots;
  for (auto& f : rules) {
    configs.push_back(f.rule);
    auto old = std::find_if(filters_.begin(), filters_.end(),
                            [&](const filter_rule& o) { return o.rule.name == f.rule.name; });
    if (old != filters_.end()) {
      f.slot = old->slot;
      f.base = old->base;
    } else if (!free_filter_slots_.empty()) {
      f.slot = free_filter_slots_.back();
      free_filter_slots_.pop_back();
      f.base = filter_hits_ ? filter_hits_(f.slot) : 0;
    } else {
      f.slot = next_filter_slot_++;
      f.base = filter_hits_ ? filter_hits_(f.slot) : 0;
    }
    slots.push_back(f.slot);
  }
  for (const auto& o : filters_) {
    if (std::none_of(rules.begin(), rules.end(),
                     [&](const filter_rule& f) { return f.rule.name == o.rule.name; })) {
      free_filter_slots_.push_back(o.slot);
    }
  }
  filters_ = std::move(rules);
  filter_db_ = std::move(plan.db);
  filter_set_ = build_filter_set(filter_db_, configs, slots, compiler_);
  if (!compiled_) return {};  // the first compile (load_sources) publishes it
  // Only the filter set changed: the compile shares every service part of the last snapshot.
  auto snap = compiler_.compile(store_, dirty_set{});
  if (!snap) return snap.err();
  (*snap)->filters = filter_set_;
  publish_(std::move(*snap));
  return {};
}

namespace {

json filter_json(const node::filter_rule& f, uint64_t hits) {
  json flags = f.rule.flags;
  json out = {
      {"name", f.rule.name},   {"pattern", f.rule.pattern},
      {"flags", flags},        {"action", f.rule.drop ? "drop" : "count"},
      {"depth", f.rule.depth}, {"scope", filter_scope_text(f.rule)},
      {"hits", hits},          {"source", f.from == source::file ? "config" : source_name(f.from)}};
  if (!f.rule.service.empty()) out["service"] = f.rule.service;
  if (f.rule.vip) out["vip"] = format_ipv4(f.rule.vip);
  if (f.rule.proto) out["protocol"] = f.rule.proto == 6 ? "TCP" : "UDP";
  if (f.rule.port) out["port"] = f.rule.port;
  return out;
}

}  // namespace

result<std::optional<std::vector<node::filter_rule>>> node::filters_for(
    const node_config& fresh, std::vector<change>& changes) const {
  // The file's rules, in its order, then the socket's as they are.
  std::vector<filter_rule> want;
  for (const auto& r : fresh.filters) want.push_back({r, source::file});
  for (const auto& f : filters_) {
    if (f.from == source::file) continue;
    for (size_t i = 0; i < fresh.filters.size(); ++i) {
      if (fresh.filters[i].name == f.rule.name) {
        return make_error(fresh.source + ": filter[" + std::to_string(i) + "] (" + f.rule.name +
                          "): a rule of that name was added over the socket; delete it " +
                          "(ferryctl filter del " + f.rule.name + ") or rename this one");
      }
    }
    want.push_back(f);
  }
  for (const auto& w : want) {
    if (w.from != source::file) continue;
    auto old = std::find_if(filters_.begin(), filters_.end(),
                            [&](const filter_rule& f) { return f.rule.name == w.rule.name; });
    changes.push_back({"Filter", "", w.rule.name,
                       old == filters_.end() ? "created"
                       : old->rule == w.rule ? "unchanged"
                                             : "configured"});
  }
  for (const auto& f : filters_) {
    if (f.from == source::file && std::none_of(want.begin(), want.end(), [&](const filter_rule& w) {
          return w.rule.name == f.rule.name;
        })) {
      changes.push_back({"Filter", "", f.rule.name, "deleted"});
    }
  }
  const bool same = std::equal(want.begin(), want.end(), filters_.begin(), filters_.end(),
                               [](const filter_rule& a, const filter_rule& b) {
                                 return a.rule == b.rule && a.from == b.from;
                               });
  if (same) return std::optional<std::vector<filter_rule>>{};
  return std::optional{std::move(want)};
}

result<json> node::filter_add(const filter_rule_config& r, source from) {
  if (auto ok = check_filter_rule(r); !ok) {
    return make_error("filter \"" + r.name + "\": " + ok.message());
  }
  for (const auto& f : filters_) {
    if (f.rule.name == r.name) {
      return make_error("filter \"" + r.name + "\" already exists (source " +
                        (f.from == source::file ? "config" : source_name(f.from)) +
                        "); delete it first");
    }
  }
  auto rules = filters_;
  rules.push_back({r, from});
  if (auto ok = set_filters(std::move(rules)); !ok) return ok.err();
  return filter_json(filters_.back(), 0);
}

result<json> node::filter_del(const std::string& name) {
  auto rules = filters_;
  auto it = std::find_if(rules.begin(), rules.end(),
                         [&](const filter_rule& f) { return f.rule.name == name; });
  if (it == rules.end()) return make_error("filter \"" + name + "\" not found");
  const auto hits = filter_hits_ ? filter_hits_(it->slot) - it->base : 0;
  json out = filter_json(*it, hits);
  rules.erase(it);
  if (auto ok = set_filters(std::move(rules)); !ok) return ok.err();
  return out;
}

json node::filter_list() const {
  json rules = json::array();
  for (const auto& f : filters_) {
    rules.push_back(filter_json(f, filter_hits_ ? filter_hits_(f.slot) - f.base : 0));
  }
  return {{"rules", rules}, {"max_rules", cfg_.filter_max_rules}};
}

}  // namespace ferry::control
