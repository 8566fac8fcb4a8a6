// ferryctl: the command-line client for ferryd's control socket. It only builds requests and
// formats responses; parsing manifests and checking them is ferryd's job, so that there is one
// source of truth for what a valid object is.
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "ferry/dns.hpp"
#include "socket_server.hpp"

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr int exit_ok = 0;
constexpr int exit_failed = 1;  // ferryd refused, could not be reached, or input unreadable
constexpr int exit_usage = 2;
// ferryctl exec, when the command cannot be run (as env(1) and the shells say it).
constexpr int exit_cannot_run = 126;
constexpr int exit_not_found = 127;

// Ends the command with "error: <what>" and the given exit status.
struct failure : std::runtime_error {
  failure(const std::string& what, int status = exit_failed)
      : std::runtime_error(what), exit_status(status) {}
  int exit_status;
};

std::string default_socket_path() {
  const char* env = std::getenv("FERRY_SOCKET");
  return env != nullptr && *env != '\0' ? env : "/run/ferry/ferry.sock";
}

// ---- Input documents -------------------------------------------------------------------------

std::string read_fd(int fd, const std::string& origin) {
  std::string text;
  char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n == 0) return text;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw failure("cannot read " + origin + ": " + std::strerror(errno));
    text.append(buf, static_cast<size_t>(n));
  }
}

std::string read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw failure("cannot read " + path + ": " + std::strerror(errno));
  try {
    std::string text = read_fd(fd, path);
    ::close(fd);
    return text;
  } catch (...) {
    ::close(fd);
    throw;
  }
}

bool is_manifest_name(const fs::path& p) {
  auto ext = p.extension();
  return ext == ".yaml" || ext == ".yml" || ext == ".json";
}

// Expands -f arguments like kubectl: a file, "-" for stdin, or a directory's manifest files
// (sorted, so apply order is reproducible; not recursive, so nested backups are not picked up).
json collect_documents(const std::vector<std::string>& paths) {
  json documents = json::array();
  auto add = [&](const std::string& origin, std::string text) {
    documents.push_back({{"origin", origin}, {"text", std::move(text)}});
  };
  for (const auto& path : paths) {
    std::error_code ec;
    if (path == "-") {
      add("<stdin>", read_fd(STDIN_FILENO, "<stdin>"));
    } else if (fs::is_directory(path, ec)) {
      std::vector<fs::path> files;
      for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
        std::error_code type_ec;
        if (it->is_regular_file(type_ec) && is_manifest_name(it->path())) files.push_back(*it);
      }
      if (ec) throw failure("cannot read directory " + path + ": " + ec.message());
      if (files.empty()) throw failure("no .yaml, .yml or .json files in directory " + path);
      std::sort(files.begin(), files.end());
      for (const auto& file : files) add(file.string(), read_file(file.string()));
    } else {
      add(path, read_file(path));
    }
  }
  return documents;
}

// ---- Talking to ferryd -----------------------------------------------------------------------

// Sends the request and returns the response's "result"; any refusal becomes a failure.
json request_result(const std::string& socket_path, const json& request) {
  auto response = ferry::control::call(socket_path, request);
  if (!response.ok()) throw failure(response.message());
  const json& r = *response;
  auto ok = r.is_object() ? r.find("ok") : r.end();
  if (!r.is_object() || ok == r.end() || !ok->is_boolean()) {
    throw failure("bad response from ferryd: " + r.dump());
  }
  if (!ok->get<bool>()) {
    auto message = r.find("error");
    throw failure(message != r.end() && message->is_string() ? message->get<std::string>()
                                                             : "ferryd refused the request");
  }
  auto result = r.find("result");
  return result != r.end() ? *result : json();
}

// ---- Formatting ------------------------------------------------------------------------------

using row = std::vector<std::string>;

// Columns left-aligned and separated by at least 3 spaces, like kubectl; lines carry no trailing
// blanks (the last column is not padded, and a row may end in empty cells).
void print_table(const std::vector<row>& rows) {
  std::vector<size_t> widths;
  for (const auto& r : rows) {
    widths.resize(std::max(widths.size(), r.size()));
    for (size_t i = 0; i < r.size(); ++i) widths[i] = std::max(widths[i], r[i].size());
  }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line.append(widths[i] - r[i].size() + 3, ' ');
    }
    line.erase(line.find_last_not_of(' ') + 1);
    std::cout << line << '\n';
  }
}

// Missing fields read as null rather than throwing: an older or newer ferryd may differ.
const json& member(const json& object, const std::string& key) {
  static const json null;
  if (!object.is_object()) return null;
  auto it = object.find(key);
  return it != object.end() ? *it : null;
}

const json& items_of(const json& object, const std::string& key) {
  static const json empty = json::array();
  const json& items = member(object, key);
  return items.is_array() ? items : empty;
}

std::string text(const json& value) {
  if (value.is_null()) return "";
  if (value.is_string()) return value.get<std::string>();
  if (value.is_boolean()) return value.get<bool>() ? "True" : "False";
  if (value.is_number_float()) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.1f", value.get<double>());
    return buf;
  }
  return value.dump();
}

using cell_fn = std::function<std::string(const json& item)>;

struct column {
  std::string header;
  cell_fn cell;
};

cell_fn field(std::string key) {
  return [key = std::move(key)](const json& item) { return text(member(item, key)); };
}

// "rx_packets" -> column RX-PACKETS showing that field.
std::vector<column> fields(const std::vector<std::string>& keys) {
  std::vector<column> columns;
  for (const auto& key : keys) {
    std::string header = key;
    for (char& c : header) c = c == '_' ? '-' : static_cast<char>(std::toupper(c));
    columns.push_back({header, field(key)});
  }
  return columns;
}

// Some items are shown as several rows (an endpoints item, one row per endpoint): `expand`
// turns an item into the values the columns read, one per row.
using expand_fn = std::function<std::vector<json>(const json& item)>;

void print_items(const json& items, const std::vector<column>& columns,
                 const expand_fn& expand = nullptr) {
  std::vector<row> rows(1);
  for (const auto& c : columns) rows[0].push_back(c.header);
  for (const auto& item : items) {
    for (const auto& line : expand ? expand(item) : std::vector<json>{item}) {
      row& r = rows.emplace_back();
      for (const auto& c : columns) r.push_back(c.cell(line));
    }
  }
  print_table(rows);
}

// A list of strings joined with ",", or `none` when it is empty (or absent).
std::string joined(const json& list, const std::string& none = "<none>") {
  std::string out;
  if (list.is_array()) {
    for (const auto& v : list) out += (out.empty() ? "" : ",") + text(v);
  }
  return out.empty() ? none : out;
}

std::string service_ports(const json& service) {
  std::string out;
  for (const auto& port : items_of(service, "ports")) {
    if (!out.empty()) out += ',';
    out += text(member(port, "port"));
    const json& node_port = member(port, "node_port");
    if (node_port.is_number() && node_port != 0) out += ':' + text(node_port);
    out += '/' + text(member(port, "protocol"));
  }
  return out.empty() ? "<none>" : out;
}

// As kubectl shows it: load balancer addresses, then externalIPs; <pending> while a load
// balancer waits for an address and has no externalIP to show instead; the DNS name of an
// ExternalName Service.
std::string service_external_ip(const json& service) {
  if (text(member(service, "type")) == "ExternalName") {
    return joined(json::array({member(service, "external_name")}));
  }
  json all = json::array();
  for (const auto& ip : items_of(service, "load_balancer")) all.push_back(ip);
  for (const auto& ip : items_of(service, "external_ips")) all.push_back(ip);
  if (all.empty() && member(service, "load_balancer_pending") == true) return "<pending>";
  return joined(all);
}

// "None", or "ClientIP(10800s)" with the sticky timeout.
std::string service_affinity(const json& service) {
  std::string affinity = text(member(service, "session_affinity"));
  if (affinity.empty()) return "<unknown>";  // a ferryd from before affinity
  const json& timeout = member(service, "affinity_timeout_seconds");
  if (timeout.is_number()) affinity += "(" + text(timeout) + "s)";
  return affinity;
}

// "ext=Local,int=Cluster": which endpoints external and in-cluster traffic may reach.
std::string service_policy(const json& service) {
  auto policy = [&](const char* key) {
    std::string p = text(member(service, key));
    return p.empty() ? std::string("<unknown>") : p;
  };
  return "ext=" + policy("external_traffic_policy") + ",int=" + policy("internal_traffic_policy");
}

// One row per endpoint of every port, with the conditions traffic decisions follow; a Service
// without endpoints still gets a row, so it does not vanish from the list.
std::vector<json> endpoint_rows(const json& item) {
  std::vector<json> rows;
  for (const auto& detail : items_of(item, "details")) {
    json row = detail.is_object() ? detail : json::object();
    row["namespace"] = member(item, "namespace");
    row["name"] = member(item, "name");
    row["endpoint"] = text(member(detail, "address")) + ":" + text(member(detail, "port"));
    if (text(member(detail, "node")).empty()) row["node"] = "<none>";
    rows.push_back(std::move(row));
  }
  if (rows.empty()) {
    rows.push_back({{"namespace", member(item, "namespace")},
                    {"name", member(item, "name")},
                    {"endpoint", "<none>"}});
  }
  return rows;
}

struct resource {
  std::string name;  // what the request names
  std::vector<std::string> aliases;
  std::vector<column> columns;
  expand_fn expand = nullptr;  // several rows per item (see print_items)
  bool namespaced = true;
};

const std::vector<resource>& resources() {
  static const std::vector<resource> all = {
      {"services",
       {"services", "service", "svc"},
       {{"NAMESPACE", field("namespace")},
        {"NAME", field("name")},
        {"TYPE", field("type")},
        // Empty for ExternalName Services (kubectl's <none>).
        {"CLUSTER-IP",
         [](const json& s) { return joined(json::array({member(s, "cluster_ip")})); }},
        {"EXTERNAL-IP", service_external_ip},
        {"PORT(S)", service_ports},
        {"AFFINITY", service_affinity},
        {"POLICY", service_policy},
        {"ENDPOINTS", field("ready_endpoints")}}},
      {"endpoints",
       {"endpoints", "ep"},
       {{"NAMESPACE", field("namespace")},
        {"NAME", field("name")},
        {"ENDPOINT", field("endpoint")},
        {"READY", field("ready")},
        {"SERVING", field("serving")},
        {"TERMINATING", field("terminating")},
        {"NODE", field("node")}},
       endpoint_rows},
      {"pods",
       {"pods", "pod", "po"},
       {{"NAMESPACE", field("namespace")},
        {"NAME", field("name")},
        {"READY", field("ready")},
        {"IP", field("ip")},
        {"NODE", field("node")}}},
      {"nodes",
       {"nodes", "node", "no"},
       {{"NAME", field("name")},
        {"ADDRESSES", [](const json& n) { return joined(member(n, "addresses")); }},
        {"ZONE", [](const json& n) { return joined(json::array({member(n, "zone")})); }},
        {"THIS-NODE", field("this_node")}},
       nullptr,
       false},
      {"flows",
       {"flows", "flow"},
       {{"PROTO", field("protocol")},
        {"CLIENT", field("client")},
        {"SERVICE", field("service")},
        {"BACKEND", field("backend")},
        {"STATE", field("state")},
        {"IDLE(s)", field("idle_seconds")},
        {"LCORE", field("lcore")}}},
  };
  return all;
}

const resource& find_resource(const std::string& name) {
  std::string lower = name;
  for (char& c : lower) c = static_cast<char>(std::tolower(c));
  for (const auto& r : resources()) {
    if (std::find(r.aliases.begin(), r.aliases.end(), lower) != r.aliases.end()) return r;
  }
  throw failure("unknown resource type \"" + name +
                    "\" (want services/svc, endpoints/ep, pods/po, nodes/no or flows)",
                exit_usage);
}

void print_changes(const json& result) {
  for (const auto& change : items_of(result, "changes")) {
    std::string kind = text(member(change, "kind"));
    for (char& c : kind) c = static_cast<char>(std::tolower(c));
    std::cout << kind << '/' << text(member(change, "name")) << ' '
              << text(member(change, "action")) << '\n';
  }
}

// `ferryctl reload`: what changed in the file objects, then the config keys that wait for a
// restart.
void print_reload(const json& result) {
  const json& changes = items_of(result, "changes");
  size_t changed = 0;
  for (const auto& c : changes) changed += text(member(c, "action")) != "unchanged";
  std::cout << "reloaded " << text(member(result, "config")) << ": " << changed << " of "
            << changes.size() << " file objects changed\n";
  json shown = json::object({{"changes", json::array()}});
  for (const auto& c : changes) {
    if (text(member(c, "action")) != "unchanged") shown["changes"].push_back(c);
  }
  print_changes(shown);
  for (const auto& key : items_of(result, "restart_needed")) {
    std::cout << "restart needed: " << text(key) << " changed\n";
  }
}

// `ferryctl log-level [LEVEL]`: "log level: debug (was info)", or the level alone when asked.
void print_log_level(const json& result) {
  std::string level = text(member(result, "level"));
  std::string was = text(member(result, "previous"));
  std::cout << "log level: " << level;
  if (was != level) std::cout << " (was " << was << ")";
  std::cout << '\n';
}

void print_stats(const json& stats) {
  std::cout << "Ports:\n";
  print_items(items_of(stats, "ports"), fields({"name", "rx_packets", "tx_packets", "rx_bytes",
                                                "tx_bytes", "rx_missed", "tx_dropped"}));

  std::cout << "\nWorkers:\n";
  print_items(items_of(stats, "workers"),
              fields({"worker", "lcore", "rx_packets", "foreign_flow_hits"}));

  std::cout << "\nFlows:\n";
  print_items(json::array({member(stats, "flows")}),
              fields({"active", "capacity", "created", "picked_up", "expired", "table_full",
                      "stateless", "stateless_replies"}));

  std::cout << "\nL2/ICMP:\n";
  print_items(json::array({member(stats, "l2")}),
              fields({"arp_requests_sent", "arp_replies_sent", "neighbor_held", "icmp_echo_replies",
                      "icmp_unreachable_sent"}));

  // DNS, when ferryd serves it: answers by outcome from the workers (UDP) and the TCP side.
  if (const json& dns = member(stats, "dns"); dns.is_object()) {
    std::cout << "\nDNS:\n";
    const json& tcp = member(dns, "tcp");
    std::vector<row> rows = {{"OUTCOME", "UDP", "TCP"}};
    for (std::string_view name : ferry::dns::kOutcomeNames) {
      const std::string o(name);
      rows.push_back({o, text(member(dns, o)), tcp.is_object() ? text(member(tcp, o)) : "-"});
    }
    rows.push_back({"truncated", text(member(dns, "truncated")), "-"});
    rows.push_back({"connections", "-", tcp.is_object() ? text(member(tcp, "connections")) : "-"});
    print_table(rows);
  }

  // Only the reasons that happened, biggest first: that is what an operator is looking for.
  std::vector<std::pair<std::string, json>> drops;
  if (const json& all = member(stats, "drops"); all.is_object()) {
    for (const auto& [reason, count] : all.items()) {
      if (count.is_number() && count != 0) drops.emplace_back(reason, count);
    }
  }
  std::stable_sort(drops.begin(), drops.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  std::cout << "\nDrops:\n";
  if (drops.empty()) {
    std::cout << "no drops\n";
  } else {
    std::vector<row> rows = {{"REASON", "PACKETS"}};
    for (const auto& [reason, count] : drops) rows.push_back({reason, text(count)});
    print_table(rows);
  }

  std::cout << "\nServices:\n";
  print_items(items_of(stats, "services"),
              fields({"name", "vip", "port", "protocol", "packets", "bytes", "new_flows"}));

  // The Kubernetes API source, when ferryd follows one: is it in step, and since when not.
  const json& api = member(member(stats, "sources"), "kubernetes");
  if (!api.is_object()) return;
  std::cout << "\nKubernetes API: " << text(member(api, "server")) << " ("
            << text(member(api, "credentials")) << "), refused objects "
            << text(member(api, "refused")) << "\n";
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  std::vector<row> rows = {{"KIND", "SYNCED", "WATCHING", "RESOURCE-VERSION", "LAST-EVENT",
                            "EVENTS", "BOOKMARKS", "RELISTS", "ERRORS", "SKIPPED", "LAST-ERROR"}};
  for (const auto& r : items_of(api, "resources")) {
    const json& last = member(r, "last_event_unix_ms");
    std::string age = "never";
    if (last.is_number() && last.get<int64_t>() > 0) {
      age = std::to_string((now_ms - last.get<int64_t>()) / 1000) + "s ago";
    }
    rows.push_back({text(member(r, "kind")), text(member(r, "synced")),
                    text(member(r, "connected")), text(member(r, "resource_version")), age,
                    text(member(r, "events")), text(member(r, "bookmarks")),
                    text(member(r, "relists")), text(member(r, "errors")),
                    text(member(r, "skipped")), text(member(r, "last_error"))});
  }
  print_table(rows);
}

// ---- Service environment variables -----------------------------------------------------------

// The variables kubelet would give a pod in `ns`, as ferryd computes them, in its order.
std::vector<std::pair<std::string, std::string>> service_variables(const std::string& socket_path,
                                                                   const std::string& ns,
                                                                   bool service_links) {
  json result = request_result(
      socket_path, {{"op", "env"}, {"namespace", ns}, {"service_links", service_links}});
  std::vector<std::pair<std::string, std::string>> vars;
  for (const auto& v : items_of(result, "variables")) {
    const json& name = member(v, "name");
    const json& value = member(v, "value");
    if (!name.is_string() || !value.is_string()) {
      throw failure("bad response from ferryd: " + v.dump());
    }
    vars.emplace_back(name.get<std::string>(), value.get<std::string>());
  }
  return vars;
}

// env: NAME=VALUE lines; json: a pod spec's env list; docker: --env=NAME=VALUE, one a line, for
// `docker run $(ferryctl env -o docker) IMAGE` (names and values hold no blanks).
void print_variables(const std::vector<std::pair<std::string, std::string>>& vars,
                     const std::string& format) {
  if (format == "json") {
    json out = json::array();
    for (const auto& [name, value] : vars) out.push_back({{"name", name}, {"value", value}});
    std::cout << out.dump(2) << '\n';
    return;
  }
  const char* prefix = format == "docker" ? "--env=" : "";
  for (const auto& [name, value] : vars) std::cout << prefix << name << '=' << value << '\n';
}

// Adds the variables to this process's environment (replacing same names) and replaces the
// process with the command. Returns only when the command cannot be run, with env(1)'s status:
// 127 when it is not found, 126 when it is found but cannot be run.
int exec_with(const std::vector<std::pair<std::string, std::string>>& vars,
              const std::vector<std::string>& command) {
  for (const auto& [name, value] : vars) {
    if (::setenv(name.c_str(), value.c_str(), 1) != 0) {
      throw failure("cannot set " + name + ": " + std::strerror(errno));
    }
  }
  std::vector<char*> args;
  for (const auto& a : command) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::cout.flush();
  ::execvp(args[0], args.data());
  const int err = errno;
  std::cerr << "ferryctl: " << command[0] << ": " << std::strerror(err) << '\n';
  return err == ENOENT ? exit_not_found : exit_cannot_run;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ferryctl: inspect and configure the ferry load balancer (ferryd)"};
  // Let global options follow the subcommand too (`ferryctl get svc -o json`), as in kubectl.
  app.fallthrough();
  // Not require_subcommand(): CLI11 would then answer a misspelt command with "A subcommand is
  // required" instead of naming the word it did not understand.
  app.require_subcommand(0, 1);

  std::string socket_path = default_socket_path();
  std::string output = "table";
  app.add_option("--socket", socket_path, "ferryd control socket (env FERRY_SOCKET)")
      ->capture_default_str();
  app.add_option("-o,--output", output, "output format")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();

  std::vector<std::string> apply_files;
  auto* apply = app.add_subcommand("apply", "create or update objects from manifests");
  apply->add_option("-f,--filename", apply_files, "file, directory or - for stdin")->required();

  std::vector<std::string> delete_files;
  auto* remove = app.add_subcommand("delete", "delete the objects named in manifests");
  remove->add_option("-f,--filename", delete_files, "file, directory or - for stdin")->required();

  std::string resource_name;
  std::string namespace_name;
  int limit = 100;
  auto* get = app.add_subcommand("get", "list services, endpoints, pods, nodes or flows");
  get->add_option("resource", resource_name, "services|svc|endpoints|ep|pods|po|nodes|no|flows")
      ->required();
  auto* ns_opt = get->add_option("-n,--namespace", namespace_name, "only this namespace");
  bool all_namespaces = false;  // no namespace in the request already means all of them
  get->add_flag("-A,--all-namespaces", all_namespaces, "all namespaces (the default)")
      ->excludes(ns_opt);
  auto* limit_opt = get->add_option("--limit", limit, "flows: show at most N (default 100)")
                        ->check(CLI::Range(1, 10000000));

  auto* stats = app.add_subcommand("stats", "show packet, flow and drop counters");

  std::string log_level_name;
  auto* log_level = app.add_subcommand("log-level", "show or set ferryd's log level");
  log_level
      ->add_option("level", log_level_name, "trace|debug|info|warn|error|critical|off (omit: show)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  auto* reload = app.add_subcommand(
      "reload", "re-read ferryd's config file and [sources] manifests (as SIGHUP does)");

  // env and exec: the Service variables kubelet would give a pod in the namespace. Only one
  // subcommand is parsed, so they share their option variables.
  std::string pod_namespace = "default";
  bool no_service_links = false;
  std::string env_output = "env";
  auto* env = app.add_subcommand(
      "env", "print the Service variables kubelet would give a pod in a namespace");
  auto* exec = app.add_subcommand(
      "exec", "run a command with those variables in its environment: exec -- CMD ARGS...");
  for (auto* sub : {env, exec}) {
    sub->add_option("-n,--namespace", pod_namespace, "the pod's namespace")->capture_default_str();
    sub->add_flag("--no-service-links", no_service_links,
                  "only default/kubernetes, as for a pod with enableServiceLinks: false");
  }
  auto* env_output_opt =
      env->add_option(
             "-o,--output", env_output,
             "env: NAME=VALUE lines, json: a pod spec's env list, docker: --env=NAME=VALUE")
          ->check(CLI::IsMember({"env", "json", "docker"}))
          ->capture_default_str();
  std::vector<std::string> exec_command;
  exec->add_option("command", exec_command, "the command and its arguments (after --)")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help is a ParseError with status 0; every real usage error exits 2, whatever CLI11's
    // own code for it is, so scripts can tell "you typed it wrong" from "ferryd said no".
    return app.exit(e) == 0 ? exit_ok : exit_usage;
  }

  if (app.get_subcommands().empty()) {
    std::cerr << "error: missing command (apply, delete, get, stats, env or exec)\n"
              << "Run with --help for more information.\n";
    return exit_usage;
  }

  try {
    if (env->parsed()) {
      // `ferryctl -o json env` asks for JSON too; the global -o knows only table and json.
      if (env_output_opt->count() == 0 && output == "json") env_output = "json";
      print_variables(service_variables(socket_path, pod_namespace, !no_service_links), env_output);
      return exit_ok;
    }
    if (exec->parsed()) {
      return exec_with(service_variables(socket_path, pod_namespace, !no_service_links),
                       exec_command);
    }

    json request;
    std::function<void(const json&)> print_result;
    if (apply->parsed() || remove->parsed()) {
      request = {{"op", apply->parsed() ? "apply" : "delete"},
                 {"documents", collect_documents(apply->parsed() ? apply_files : delete_files)}};
      print_result = print_changes;
    } else if (get->parsed()) {
      const resource& r = find_resource(resource_name);
      request = {{"op", "get"}, {"resource", r.name}};
      std::string where;  // for "No resources found in NS namespace.", as kubectl says it
      // Nodes belong to no namespace: -n does not apply to them (kubectl ignores it too).
      if (ns_opt->count() > 0 && r.namespaced) {
        request["namespace"] = namespace_name;
        where = " in " + namespace_name + " namespace";
      }
      if (r.name == "flows") {
        request["limit"] = limit;
      } else if (limit_opt->count() > 0) {
        throw failure("--limit only applies to flows", exit_usage);
      }
      print_result = [&r, where](const json& result) {
        const json& items = items_of(result, "items");
        if (items.empty() && r.name != "flows") {
          std::cerr << "No resources found" << where << ".\n";
        } else {
          print_items(items, r.columns, r.expand);
        }
        if (r.name == "flows") {
          std::cout << "(showing " << items.size() << " of " << text(member(result, "total"))
                    << " flows)\n";
        }
      };
    } else if (stats->parsed()) {
      request = {{"op", "stats"}};
      print_result = print_stats;
    } else if (log_level->parsed()) {
      request = {{"op", "log_level"}};
      if (!log_level_name.empty()) request["level"] = log_level_name;
      print_result = print_log_level;
    } else if (reload->parsed()) {
      request = {{"op", "reload"}};
      print_result = print_reload;
    }

    json result = request_result(socket_path, request);
    if (output == "json") {
      std::cout << result.dump(2, ' ', false, json::error_handler_t::replace) << '\n';
    } else {
      print_result(result);
    }
    return exit_ok;
  } catch (const failure& e) {
    std::cerr << "error: " << e.what() << '\n';
    return e.exit_status;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << '\n';
    return exit_failed;
  }
}
