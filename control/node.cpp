#include "node.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "ferry/net.hpp"

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

node::node(const node_config& cfg, publish_fn publish)
    : cfg_(cfg),
      publish_(std::move(publish)),
      store_(cfg.service_cidr),
      compiler_(cfg.maglev_max_size, cfg.max_service_ports) {}

namespace {

// The Services whose endpoints an object bears on.
void touch(const model::object& obj, dirty_set& d) {
  std::visit(
      [&](const auto& o) {
        using T = std::decay_t<decltype(o)>;
        if constexpr (std::is_same_v<T, model::service> || std::is_same_v<T, model::endpoints>) {
          d.services.insert({o.meta.ns, o.meta.name});
        } else if constexpr (std::is_same_v<T, model::endpoint_slice>) {
          d.services.insert({o.meta.ns, o.service_name});
        } else {
          d.namespaces.insert(o.meta.ns);  // a Pod: any selector in its namespace may match
        }
      },
      obj);
}

}  // namespace

dirty_set node::dirty_from(const store::undo_log& undo) const {
  dirty_set d;
  for (const auto& [key, before] : undo) {
    if (before) touch(before->obj, d);
    if (auto now = store_.objects().find(key); now != store_.objects().end())
      touch(now->second.obj, d);
  }
  return d;
}

result<void> node::recompile(const dirty_set& dirty) {
  auto snap = compiler_.compile(store_, dirty);
  if (!snap) return snap.err();
  size_t ports = (*snap)->vips.size();
  publish_(std::move(*snap));
  spdlog::debug("published snapshot: {} service ports", ports);
  return {};
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
  auto objs = parse_all(docs);
  if (!objs) return objs.err();
  return apply(std::move(*objs), from);
}

result<std::vector<change>> node::apply(std::vector<model::object> objects, source from) {
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
  store::undo_log undo;
  auto changes = store_.remove(*objs, &undo);
  if (auto r = recompile(dirty_from(undo)); !r) {
    store_.revert(std::move(undo));
    return r.err();
  }
  return changes;
}

result<void> node::load_sources(const node_config& cfg) {
  std::vector<document> docs;
  for (const auto& path : cfg.manifests) {
    auto d = read_documents(path);
    if (!d) return d.err();
    for (auto& doc : *d) docs.push_back(std::move(doc));
  }
  if (!docs.empty()) {
    if (auto r = apply(docs, source::file); !r) return r.err();
  }
  if (!cfg.builtin_manifests.empty()) {
    if (auto r = apply({{"<built-in manifests>", cfg.builtin_manifests}}, source::builtin); !r) {
      return r.err();
    }
  }
  if (docs.empty() && cfg.builtin_manifests.empty()) return recompile(dirty_set{.all = true});
  return {};
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

json node::get(const std::string& resource, const std::string& ns) const {
  json items = json::array();
  const endpoint_index endpoints(store_);
  for (const auto& [key, so] : store_.objects()) {
    const auto& meta = model::meta_of(so.obj);
    if (!ns.empty() && meta.ns != ns) continue;
    if (const auto* svc = std::get_if<model::service>(&so.obj)) {
      if (resource == "services") {
        json ports = json::array();
        size_t ready = 0;
        for (const auto& p : svc->ports) {
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
          for (const auto& b : endpoints.resolve(*svc, p)) ready += b.weight > 0;
        }
        items.push_back({{"namespace", meta.ns},
                         {"name", meta.name},
                         {"type", type_name(svc->type)},
                         {"cluster_ip", svc->headless     ? "None"
                                        : svc->cluster_ip ? format_ipv4(*svc->cluster_ip)
                                                          : ""},
                         {"ports", ports},
                         {"ready_endpoints", ready},
                         {"source", source_name(so.from)}});
      } else if (resource == "endpoints") {
        json eps = json::array();
        json draining = json::array();
        for (const auto& p : svc->ports) {
          for (const auto& b : endpoints.resolve(*svc, p)) {
            (b.weight ? eps : draining).push_back(endpoint_text(b));
          }
        }
        items.push_back({{"namespace", meta.ns},
                         {"name", meta.name},
                         {"endpoints", eps},
                         {"draining", draining}});
      }
    } else if (const auto* pod = std::get_if<model::pod>(&so.obj); pod && resource == "pods") {
      items.push_back({{"namespace", meta.ns},
                       {"name", meta.name},
                       {"ready", pod->ready},
                       {"ip", pod->ip ? format_ipv4(*pod->ip) : ""},
                       {"node", pod->node_name}});
    }
  }
  return {{"items", items}};
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

json ok(json result) { return {{"ok", true}, {"result", std::move(result)}}; }
json refused(const std::string& message) { return {{"ok", false}, {"error", message}}; }

}  // namespace

json node::handle(const json& req) {
  std::string op = req.value("op", "");
  if (op == "apply" || op == "delete") {
    auto docs = documents_of(req);
    if (!docs) return refused(docs.message());
    auto r = op == "apply" ? apply(*docs, source::socket) : remove(*docs);
    if (!r) return refused(r.message());
    for (const auto& c : *r) {
      if (c.action != "unchanged") {
        spdlog::info("{} {} {}/{} {}", op, c.kind, c.ns, c.name, c.action);
      }
    }
    return ok(changes_json(*r));
  }
  if (op == "get") {
    std::string resource = req.value("resource", "");
    std::string ns = req.value("namespace", "");
    if (resource == "flows") {
      if (!flows_) return refused("flows are not available");
      return ok(flows_(req));
    }
    if (resource != "services" && resource != "endpoints" && resource != "pods") {
      return refused("unknown resource \"" + resource + "\"");
    }
    return ok(get(resource, ns));
  }
  if (op == "stats") {
    if (!stats_) return refused("stats are not available");
    return ok(stats_(req));
  }
  return refused("unknown op \"" + op + "\"");
}

}  // namespace ferry::control
