// ferryctl: the command-line client for ferryd's control socket. It only builds requests and
// formats responses; parsing manifests and checking them is ferryd's job, so that there is one
// source of truth for what a valid object is.
#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
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

#include "cli_format.hpp"
#include "socket_server.hpp"

namespace {

using nlohmann::json;
namespace cli = ferry::cli;
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

// Where ferryd is, and how long to wait for each answer.
struct ferryd_at {
  std::string socket;
  int timeout_ms = 30000;  // 0: wait as long as it takes
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
json request_result(const ferryd_at& at, const json& request) {
  auto response = ferry::control::call(at.socket, request, at.timeout_ms);
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

// ---- Service environment variables -----------------------------------------------------------

// The variables kubelet would give a pod in `ns`, as ferryd computes them, in its order.
std::vector<std::pair<std::string, std::string>> service_variables(const ferryd_at& at,
                                                                   const std::string& ns,
                                                                   bool service_links) {
  json result =
      request_result(at, {{"op", "env"}, {"namespace", ns}, {"service_links", service_links}});
  std::vector<std::pair<std::string, std::string>> vars;
  const json& list = result.is_object() ? result.value("variables", json::array()) : json();
  for (const auto& v : list.is_array() ? list : json::array()) {
    json name = v.is_object() ? v.value("name", json()) : json();
    json value = v.is_object() ? v.value("value", json()) : json();
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

// ---- Arguments --------------------------------------------------------------------------------

// "NS/NAME", or NAME in namespace `ns` (kubectl's default namespace when -n is not given).
std::pair<std::string, std::string> service_target(const std::string& target,
                                                   const std::string& ns) {
  auto slash = target.find('/');
  if (slash == std::string::npos) {
    if (target.empty()) throw failure("missing Service name (NS/NAME)", exit_usage);
    return {ns, target};
  }
  std::string n = target.substr(0, slash), name = target.substr(slash + 1);
  if (n.empty() || name.empty() || name.find('/') != std::string::npos) {
    throw failure("bad Service \"" + target + "\" (want NS/NAME)", exit_usage);
  }
  return {n, name};
}

bool is_ipv4(const std::string& s) {
  in_addr a{};
  return ::inet_pton(AF_INET, s.c_str(), &a) == 1;
}

// "IP:PORT" with a port in 1..65535; what trace wants.
void check_ip_port(const std::string& what, const std::string& s) {
  auto colon = s.rfind(':');
  bool ok = colon != std::string::npos && is_ipv4(s.substr(0, colon));
  if (ok) {
    const std::string port = s.substr(colon + 1);
    ok = !port.empty() && port.size() <= 5 &&
         std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
         std::stoi(port) >= 1 && std::stoi(port) <= 65535;
  }
  if (!ok) throw failure("bad " + what + " \"" + s + "\" (want IP:PORT)", exit_usage);
}

// Flow filters, shared by get flows and flush flows (only one subcommand is parsed).
struct flow_filters {
  std::string service, backend, client, state, protocol;

  // Adds the given filters to the request; state and protocol are checked here so that a typo
  // is a usage error, the addresses by ferryd (which knows the Services).
  bool add_to(json& request) const {
    bool any = false;
    for (const auto& [key, value] : {std::pair<const char*, std::string>{"service", service},
                                     {"backend", backend},
                                     {"client", client},
                                     {"state", state},
                                     {"protocol", protocol}}) {
      if (value.empty()) continue;
      std::string v = value;
      if (key == std::string("state") || key == std::string("protocol")) {
        for (char& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      }
      request[key] = v;
      any = true;
    }
    return any;
  }

  void options(CLI::App* sub) {
    sub->add_option("--service", service, "flows to NS/NAME, VIP or VIP:PORT");
    sub->add_option("--backend", backend, "flows to backend IP or IP:PORT");
    sub->add_option("--client", client, "flows from client IP or IP:PORT");
    sub->add_option("--state", state,
                    "syn_sent, syn_recv, established, closing, reset, udp, sctp_init, "
                    "sctp_established or sctp_closing")
        ->check(CLI::IsMember({"syn_sent", "established", "closing", "udp", "sctp_init",
                               "sctp_established", "sctp_closing"},
                              CLI::ignore_case));
    sub->add_option("--protocol", protocol, "tcp, udp or sctp")
        ->check(CLI::IsMember({"tcp", "udp", "sctp"}, CLI::ignore_case));
  }

  bool empty() const {
    return service.empty() && backend.empty() && client.empty() && state.empty() &&
           protocol.empty();
  }
};

// ---- stats --watch ---------------------------------------------------------------------------

volatile std::sig_atomic_t interrupted = 0;

extern "C" void on_interrupt(int) { interrupted = 1; }

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Like top: a screen redrawn every interval on a terminal, one block per interval (a blank line
// between) when stdout is a file or a pipe. Ctrl-C ends it with status 0.
int watch_stats(const ferryd_at& at, double interval, cli::format fmt) {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;  // no SA_RESTART: the sleep ends at once
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  const bool screen =
      ::isatty(STDOUT_FILENO) && (fmt == cli::format::table || fmt == cli::format::wide);
  struct cursor_guard {
    bool on;
    explicit cursor_guard(bool screen) : on(screen) {
      if (on) std::cout << "\x1b[?25l" << std::flush;  // hide the cursor while redrawing
    }
    ~cursor_guard() {
      if (on) std::cout << "\x1b[?25h" << std::flush;
    }
  } guard(screen);

  std::string node;  // for the header; an older ferryd has no status op
  try {
    json status = request_result(at, {{"op", "status"}});
    if (status.is_object() && status.value("node", json()).is_string()) node = status["node"];
  } catch (const failure&) {
  }
  using clock = std::chrono::steady_clock;
  json before = request_result(at, {{"op", "stats"}});
  auto taken = clock::now();
  bool first = true;
  while (!interrupted) {
    const auto until = taken + std::chrono::duration<double>(interval);
    while (!interrupted && clock::now() < until) {
      auto left = std::chrono::duration<double>(until - clock::now()).count();
      ::usleep(static_cast<useconds_t>(std::clamp(left, 0.0, 0.05) * 1e6));
    }
    if (interrupted) break;
    json after;
    try {
      after = request_result(at, {{"op", "stats"}});
    } catch (const failure&) {
      if (interrupted) break;
      throw;
    }
    const auto now = clock::now();
    const double elapsed = std::chrono::duration<double>(now - taken).count();
    std::string text =
        cli::render_rates(cli::stats_rates(before, after, elapsed), fmt, node, {unix_now()});
    if (screen) {
      std::cout << "\x1b[H\x1b[2J" << text << std::flush;
    } else {
      // YAML as a stream of documents; the other formats a blank line apart.
      const char* separator = fmt == cli::format::yaml ? "---\n" : first ? "" : "\n";
      std::cout << separator << text << std::flush;
    }
    first = false;
    before = std::move(after);
    taken = now;
  }
  return exit_ok;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ferryctl: inspect and configure the ferry load balancer (ferryd)"};
  // Let global options follow the subcommand too (`ferryctl get svc -o json`), as in kubectl.
  app.fallthrough();
  // Not require_subcommand(): CLI11 would then answer a misspelt command with "A subcommand is
  // required" instead of naming the word it did not understand.
  app.require_subcommand(0, 1);

  ferryd_at at{default_socket_path()};
  double timeout_seconds = 30;
  std::string output = "table";
  app.add_option("--socket", at.socket, "ferryd control socket (env FERRY_SOCKET)")
      ->capture_default_str();
  app.add_option("--timeout", timeout_seconds,
                 "seconds to wait for each answer from ferryd (0: no limit)")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  app.add_option("-o,--output", output, "output format: table, wide, json or yaml")
      ->check(CLI::IsMember({"table", "wide", "json", "yaml"}))
      ->capture_default_str();

  // Only one subcommand is parsed, so those that take a namespace share the variable.
  std::string namespace_name = "default";
  auto namespace_option = [&](CLI::App* sub, const char* help) {
    return sub->add_option("-n,--namespace", namespace_name, help);
  };

  auto* status = app.add_subcommand("status", "version, uptime, lcores, ports and sources");

  std::vector<std::string> apply_files;
  auto* apply = app.add_subcommand("apply", "create or update objects from manifests");
  apply->add_option("-f,--filename", apply_files, "file, directory or - for stdin")->required();

  std::vector<std::string> delete_files;
  auto* remove = app.add_subcommand("delete", "delete the objects named in manifests");
  remove->add_option("-f,--filename", delete_files, "file, directory or - for stdin")->required();

  std::string resource_name;
  std::vector<std::string> names;
  int limit = 100;
  flow_filters filters;
  auto* get = app.add_subcommand("get", "list services, endpoints, pods, nodes, flows, ...");
  get->add_option("resource", resource_name, "svc|ep|po|no|flows|np|neigh|rt, or full names")
      ->required();
  get->add_option("names", names, "only the objects with these names");
  auto* ns_opt = namespace_option(get, "only this namespace");
  bool all_namespaces = false;  // no namespace in the request already means all of them
  get->add_flag("-A,--all-namespaces", all_namespaces, "all namespaces (the default)")
      ->excludes(ns_opt);
  auto* limit_opt = get->add_option("--limit", limit, "flows: show at most N (default 100)")
                        ->check(CLI::Range(1, 10000000));
  filters.options(get);

  std::string describe_kind, describe_target;
  auto* describe =
      app.add_subcommand("describe", "show one Service in detail: describe svc NS/NAME");
  describe->add_option("kind", describe_kind, "service|svc")
      ->required()
      ->check(CLI::IsMember({"service", "services", "svc"}, CLI::ignore_case));
  describe->add_option("name", describe_target, "NS/NAME, or NAME with -n")->required();
  namespace_option(describe, "the Service's namespace (default: default)");

  std::string trace_source, trace_destination, trace_protocol = "tcp";
  auto* trace = app.add_subcommand("trace", "what a packet would get now: SRC:PORT DST:PORT");
  trace->add_option("source", trace_source, "client IP:PORT")->required();
  trace->add_option("destination", trace_destination, "destination IP:PORT")->required();
  trace->add_option("protocol", trace_protocol, "tcp (default), udp or sctp")
      ->check(CLI::IsMember({"tcp", "udp", "sctp"}, CLI::ignore_case));

  std::string weight_target, weight_address;
  int weight_value = -1;
  bool weight_reset = false;
  auto* drain = app.add_subcommand("drain", "stop new flows to an endpoint: drain NS/NAME IP");
  auto* weight = app.add_subcommand("weight", "set an endpoint's weight: NS/NAME IP N|--reset");
  for (auto* sub : {drain, weight}) {
    sub->add_option("service", weight_target, "NS/NAME, or NAME with -n")->required();
    sub->add_option("address", weight_address, "the endpoint's IP")->required();
    namespace_option(sub, "the Service's namespace (default: default)");
  }
  auto* weight_opt =
      weight->add_option("weight", weight_value, "0..1000 (0 = drain)")->check(CLI::Range(0, 1000));
  auto* reset_opt =
      weight->add_flag("--reset", weight_reset, "back to the weight the endpoints give");
  weight_opt->excludes(reset_opt);

  std::string flush_what;
  bool flush_all = false;
  auto* flush = app.add_subcommand("flush", "remove flows: flush flows [filters] | --all");
  flush->add_option("what", flush_what, "flows")->required()->check(CLI::IsMember({"flows"}));
  filters.options(flush);
  flush->add_flag("--all", flush_all, "every flow (required when no filter is given)");

  // Payload signature filter: filter add|del|list.
  auto* filter_cmd = app.add_subcommand("filter", "payload signature rules: add, del, list");
  filter_cmd->require_subcommand(1);
  std::string filter_name, filter_pattern, filter_action = "drop", filter_service, filter_vip,
                                           filter_protocol;
  int filter_depth = 512, filter_port = 0;
  bool filter_caseless = false, filter_dotall = false;
  auto* filter_add = filter_cmd->add_subcommand("add", "add a rule: add NAME --pattern RE ...");
  filter_add->add_option("name", filter_name, "the rule's name")->required();
  filter_add->add_option("--pattern", filter_pattern, "a Hyperscan (PCRE-like) regex")->required();
  filter_add->add_option("--action", filter_action, "drop (default) or count")
      ->check(CLI::IsMember({"drop", "count"}));
  filter_add->add_option("--depth", filter_depth, "bytes of L4 payload scanned (default 512)")
      ->check(CLI::Range(1, 65535));
  auto* filter_service_opt =
      filter_add->add_option("--service", filter_service, "only this Service's traffic (NS/NAME)");
  filter_add->add_option("--vip", filter_vip, "only traffic to this address")
      ->excludes(filter_service_opt);
  filter_add->add_option("--protocol", filter_protocol, "tcp or udp")
      ->check(CLI::IsMember({"tcp", "udp"}, CLI::ignore_case));
  filter_add->add_option("--port", filter_port, "only traffic to this port")
      ->check(CLI::Range(1, 65535));
  filter_add->add_flag("--caseless", filter_caseless, "match letters in either case");
  filter_add->add_flag("--dotall", filter_dotall, "'.' matches newlines too");
  auto* filter_del = filter_cmd->add_subcommand("del", "delete a rule: del NAME");
  filter_del->add_option("name", filter_name, "the rule's name")->required();
  auto* filter_list = filter_cmd->add_subcommand("list", "every rule with its hits");

  bool watch = false;
  double interval = 1.0;
  auto* stats = app.add_subcommand("stats", "packet, flow and drop counters; --watch for rates");
  stats->add_flag("-w,--watch", watch, "rates every interval, like top (Ctrl-C quits)");
  auto* interval_opt = stats->add_option("--interval", interval, "seconds between refreshes")
                           ->check(CLI::Range(0.1, 3600.0))
                           ->capture_default_str();

  std::string log_level_name;
  auto* log_level = app.add_subcommand("log-level", "show or set ferryd's log level");
  log_level
      ->add_option("level", log_level_name, "trace|debug|info|warn|error|critical|off (omit: show)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  auto* reload = app.add_subcommand(
      "reload", "re-read ferryd's config file and [sources] manifests (as SIGHUP does)");

  // env and exec: the Service variables kubelet would give a pod in the namespace.
  std::string pod_namespace = "default";
  bool no_service_links = false;
  std::string env_output = "env";
  auto* env = app.add_subcommand("env", "the Service variables kubelet gives a pod (-n NS)");
  auto* exec = app.add_subcommand("exec", "run -- CMD ARGS... with those variables set");
  for (auto* sub : {env, exec}) {
    sub->add_option("-n,--namespace", pod_namespace, "the pod's namespace")->capture_default_str();
    sub->add_flag("--no-service-links", no_service_links,
                  "only default/kubernetes (no service links)");
  }
  auto* env_output_opt =
      env->add_option("-o,--output", env_output, "env: NAME=VALUE, json: a pod's env, docker")
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
  at.timeout_ms =
      timeout_seconds > 0 ? std::max(1, static_cast<int>(std::lround(timeout_seconds * 1000))) : 0;

  if (app.get_subcommands().empty()) {
    std::cerr << "error: missing command (status, get, describe, trace, drain, weight, flush, "
                 "stats, apply, delete, reload, log-level, filter, env or exec)\n"
              << "Run with --help for more information.\n";
    return exit_usage;
  }

  try {
    const cli::format fmt = *cli::parse_format(output);
    if (env->parsed()) {
      // `ferryctl -o json env` asks for JSON too; the global -o knows other formats.
      if (env_output_opt->count() == 0 && output == "json") env_output = "json";
      print_variables(service_variables(at, pod_namespace, !no_service_links), env_output);
      return exit_ok;
    }
    if (exec->parsed()) {
      return exec_with(service_variables(at, pod_namespace, !no_service_links), exec_command);
    }
    if (stats->parsed() && watch) return watch_stats(at, interval, fmt);
    if (interval_opt->count() > 0) throw failure("--interval only applies to --watch", exit_usage);

    json request;
    // What to print; the name the renderer knows the result by (cli::render).
    std::string view;
    std::function<json(const json&)> filter;  // client-side: get's names
    std::vector<std::string> missing;         // names no item has
    std::string empty_message;                // when a get finds nothing
    if (status->parsed()) {
      request = {{"op", "status"}};
      view = "status";
    } else if (apply->parsed() || remove->parsed()) {
      request = {{"op", apply->parsed() ? "apply" : "delete"},
                 {"documents", collect_documents(apply->parsed() ? apply_files : delete_files)}};
      view = apply->parsed() ? "apply" : "delete";
    } else if (get->parsed()) {
      const cli::resource_info* r = cli::find_resource(resource_name);
      if (r == nullptr) {
        throw failure(
            "unknown resource type \"" + resource_name + "\" (want " + cli::resource_list() + ")",
            exit_usage);
      }
      request = {{"op", "get"}, {"resource", r->name}};
      view = "get " + r->name;
      std::string where;  // for "No resources found in NS namespace.", as kubectl says it
      // Nodes, neighbors and routes belong to no namespace: -n does not apply to them.
      if (ns_opt->count() > 0 && r->namespaced) {
        request["namespace"] = namespace_name;
        where = " in " + namespace_name + " namespace";
      }
      if (r->name == "flows") {
        request["limit"] = limit;
        filters.add_to(request);
      } else if (limit_opt->count() > 0) {
        throw failure("--limit only applies to flows", exit_usage);
      } else if (!filters.empty()) {
        throw failure(
            "--service, --backend, --client, --state and --protocol only apply to "
            "flows",
            exit_usage);
      }
      if (!names.empty()) {
        if (!r->named) {
          throw failure(
              r->name + " have no names to filter on" +
                  (r->name == "flows" ? " (use --service, --backend, --client, ...)" : ""),
              exit_usage);
        }
        filter = [&names, &missing](const json& result) {
          return cli::filter_by_name(result, names, missing);
        };
      }
      if (r->name != "flows") empty_message = "No resources found" + where + ".";
    } else if (describe->parsed()) {
      auto [ns, name] = service_target(describe_target, namespace_name);
      request = {{"op", "describe"}, {"kind", "service"}, {"namespace", ns}, {"name", name}};
      view = "describe service";
    } else if (trace->parsed()) {
      check_ip_port("source", trace_source);
      check_ip_port("destination", trace_destination);
      std::string proto = trace_protocol;
      for (char& c : proto) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      request = {{"op", "trace"},
                 {"protocol", proto},
                 {"source", trace_source},
                 {"destination", trace_destination}};
      view = "trace";
    } else if (drain->parsed() || weight->parsed()) {
      auto [ns, name] = service_target(weight_target, namespace_name);
      if (!is_ipv4(weight_address)) {
        throw failure("bad endpoint address \"" + weight_address + "\" (want an IPv4 address)",
                      exit_usage);
      }
      request = {{"op", "weight"}, {"namespace", ns}, {"name", name}, {"address", weight_address}};
      if (drain->parsed()) {
        request["weight"] = 0;
      } else if (weight_reset) {
        request["weight"] = nullptr;
      } else if (weight_opt->count() > 0) {
        request["weight"] = weight_value;
      } else {
        throw failure("weight needs a value (0..1000) or --reset", exit_usage);
      }
      view = "weight";
    } else if (flush->parsed()) {
      request = {{"op", "flush"}};
      // Flushing everything moves every connection's next packet to a fresh Maglev pick: only
      // when asked for in so many words.
      if (!filters.add_to(request) && !flush_all) {
        throw failure(
            "flush flows needs a filter (--service, --backend, --client, --state, "
            "--protocol) or --all",
            exit_usage);
      }
      view = "flush";
    } else if (stats->parsed()) {
      request = {{"op", "stats"}};
      view = "stats";
    } else if (log_level->parsed()) {
      request = {{"op", "log_level"}};
      if (!log_level_name.empty()) request["level"] = log_level_name;
      view = "log-level";
    } else if (reload->parsed()) {
      request = {{"op", "reload"}};
      view = "reload";
    } else if (filter_add->parsed()) {
      request = {{"op", "filter_add"},
                 {"name", filter_name},
                 {"pattern", filter_pattern},
                 {"action", filter_action},
                 {"depth", filter_depth}};
      json flags = json::array();
      if (filter_caseless) flags.push_back("caseless");
      if (filter_dotall) flags.push_back("dotall");
      request["flags"] = flags;
      if (!filter_service.empty()) {
        auto [ns, name] = service_target(filter_service, namespace_name);
        request["service"] = ns + "/" + name;
      }
      if (!filter_vip.empty()) {
        if (!is_ipv4(filter_vip)) {
          throw failure("bad --vip \"" + filter_vip + "\" (want an IPv4 address)", exit_usage);
        }
        request["vip"] = filter_vip;
      }
      if (!filter_protocol.empty()) request["protocol"] = filter_protocol;
      if (filter_port) request["port"] = filter_port;
      view = "filter add";
    } else if (filter_del->parsed()) {
      request = {{"op", "filter_del"}, {"name", filter_name}};
      view = "filter del";
    } else if (filter_list->parsed()) {
      request = {{"op", "filter_list"}};
      view = "filter list";
    }

    json result = request_result(at, request);
    if (filter) result = filter(result);
    const bool nothing = result.is_object() && result.contains("items") &&
                         result["items"].is_array() && result["items"].empty();
    if (nothing && !empty_message.empty() && missing.empty() &&
        (fmt == cli::format::table || fmt == cli::format::wide)) {
      std::cerr << empty_message << '\n';
    } else if (!(nothing && !missing.empty())) {
      std::cout << cli::render(view, result, fmt, {unix_now()});
    }
    for (const auto& name : missing) {
      std::cerr << "error: " << request["resource"].get<std::string>() << " \"" << name
                << "\" not found\n";
    }
    return missing.empty() ? exit_ok : exit_failed;
  } catch (const failure& e) {
    std::cerr << "error: " << e.what() << '\n';
    return e.exit_status;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << '\n';
    return exit_failed;
  }
}
