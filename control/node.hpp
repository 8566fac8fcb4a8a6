// node: the control thread's operations. One function per operation (apply, delete, the
// views); the control socket, the config loader and (later) the Kubernetes watcher only
// decode their input and call these. Control thread only (not thread-safe).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "compile.hpp"
#include "envvars.hpp"
#include "ferry/config.hpp"
#include "ferry/result.hpp"
#include "ferry/snapshot.hpp"
#include "filter.hpp"
#include "kube.hpp"
#include "store.hpp"

namespace ferry::control {

struct document {
  std::string origin;  // file name or "<stdin>", for messages
  std::string text;
};

/// Reads a manifest file, or every *.yaml, *.yml and *.json file of a directory (sorted,
/// not recursive, like kubectl apply -f DIR).
result<std::vector<document>> read_documents(const std::string& path);

/// Logs each change (not "unchanged") once at info, naming where it came from:
/// "change: service default/web configured (source: socket)". A large batch (a re-list, a
/// start with thousands of objects) logs its first lines and a count of the rest.
void log_changes(const std::vector<change>& changes, std::string_view source);
/// One change that is not an object's (a weight, a drain, a flush), in the same form:
/// log_change("weight default/web 198.18.1.11 0 (was 1)", "socket").
void log_change(std::string_view what, std::string_view source);

/// The process-wide log level by name (config.hpp kLogLevels); false for an unknown name.
bool set_log_level(std::string_view name);
std::string log_level();

/// What a reload did: the file objects' changes, and the changed config keys it could not
/// apply.
struct reload_result {
  std::vector<change> changes;
  std::vector<std::string> restart_needed;
};

class node {
 public:
  using publish_fn = std::function<void(std::unique_ptr<const snapshot>)>;
  using view_fn = std::function<nlohmann::json(const nlohmann::json& request)>;

  /// workers: how many workers scan payloads (one Hyperscan scratch each).
  node(const node_config& cfg, publish_fn publish, unsigned workers = 1);

  /// Parses every document, applies all objects at once, recompiles and publishes. Nothing
  /// changes when any document or object is refused.
  result<std::vector<change>> apply(const std::vector<document>& docs, source from);
  /// The same for objects already decoded (an API watch, a benchmark).
  result<std::vector<change>> apply(std::vector<model::object> objects, source from);

  /// Deletes the objects the documents name.
  result<std::vector<change>> remove(const std::vector<document>& docs);

  /// Applies what the Kubernetes API watch delivered, in one publish: upserts, deletes, and
  /// for each relisted kind the removal of its API objects the list no longer has. An
  /// object ferry refuses (a conflict with a local object, say) is skipped and logged, not
  /// the whole update. The API wins a name clash: its object replaces a local one, and
  /// apply/delete from a file or the socket may not touch an object the API holds. Nothing
  /// is published when nothing changed (a re-list that found nothing new).
  /// Long work (an API update's objects, one at a time) is bounded: it gives up, changing
  /// nothing, once `stop` is set (ferryd is stopping), and logs only the first refusals of
  /// each update (kMaxRefusalLines) and a count of the rest.
  result<std::vector<change>> sync_api(kube::update u);
  uint64_t api_refused() const { return api_refused_; }
  /// The flag that tells long control work ferryd is stopping (SIGTERM); nullptr: none.
  void set_stop(const std::atomic<bool>* stop) { stop_ = stop; }
  static constexpr size_t kMaxRefusalLines = 10;

  /// Loads [sources] manifests and the built-in manifests (at start).
  /// log: log each change (false for the dry runs that only check the files).
  result<void> load_sources(const node_config& cfg, bool log = true);

  /// Re-reads [sources] manifests of fresh: file objects are upserted, file objects no
  /// longer in any file deleted, in one publish; socket and API objects stay. Applies the
  /// live config keys (log.level when it changed, control.max_request_bytes,
  /// sources.manifests) and lists the rest that changed. Refused whole (nothing changes)
  /// when a manifest is unreadable or wrong.
  result<reload_result> reload(const node_config& fresh);
  /// The same with the config file this node started from (the built-in default when none).
  result<reload_result> reload();

  /// The running config (with what reloads applied).
  const node_config& config() const { return cfg_; }

  /// Listing for `get services|endpoints|pods`; ns empty means all namespaces.
  nlohmann::json get(const std::string& resource, const std::string& ns) const;

  /// The Service environment variables kubelet would give a pod in namespace ns (see
  /// service_environment); service_links is the pod's enableServiceLinks.
  std::vector<env_var> env(const std::string& ns, bool service_links) const;

  /// Decodes a control-socket request and calls the operation.
  nlohmann::json handle(const nlohmann::json& request);

  /// Sets (weight) or removes (nullopt) the operator's weight for a backend address of a
  /// Service: every port of the Service whose backend has that address. Recompiles that
  /// Service only. Refused when the Service is unknown, or the address is none of its
  /// endpoints (removing an existing override is always allowed).
  result<nlohmann::json> weight(const std::string& ns, const std::string& name, uint32_t ip,
                                std::optional<uint16_t> w);

  /// `describe service`: the `get services` item, its source, and per frontend the Maglev
  /// table's share of each backend (from the last published snapshot) plus what the
  /// "describe" view adds (counters, active flows).
  result<nlohmann::json> describe(const std::string& ns, const std::string& name) const;

  /// Views the dataplane provides (flows, stats), installed by ferryd.
  void set_views(view_fn flows, view_fn stats) {
    flows_ = std::move(flows);
    stats_ = std::move(stats);
  }
  /// Further dataplane views by name: "status", "neighbors", "routes", "trace", "flush",
  /// "describe" (counters and active flows of service port ids). Unset: the op is refused.
  void set_view(const std::string& name, view_fn fn) { views_[name] = std::move(fn); }

  // Payload signature filter. Rules from the config ([[filter]], source
  // file) and the socket; the database is compiled from all of them in this order.
  struct filter_rule {
    filter_rule_config rule;
    source from = source::socket;
    uint32_t slot = 0;  // its hit counter in every worker
    uint64_t base = 0;  // the slot's total when the rule got it (a reused slot's old hits)
  };
  /// Adds a rule: checked and compiled with every other rule before anything changes (a bad
  /// pattern is refused with Hyperscan's message naming the rule); a name in use is refused.
  /// Publishes a snapshot carrying the new filter set.
  result<nlohmann::json> filter_add(const filter_rule_config& r, source from = source::socket);
  /// Removes a rule by name (and recompiles the rest).
  result<nlohmann::json> filter_del(const std::string& name);
  /// Every rule with its hits ({"rules": [...]}).
  nlohmann::json filter_list() const;
  const std::vector<filter_rule>& filter_rules() const { return filters_; }
  /// How the node reads a counter slot's total over all workers (ferryd: the workers'
  /// filter_hits); unset: hits read 0.
  void set_filter_hits(std::function<uint64_t(uint32_t slot)> fn) { filter_hits_ = std::move(fn); }
  /// Removed-backend grace ([conntrack] removed_backend_grace): flushes the flows of
  /// backends that left a frontend; returns how many. Installed by ferryd (control/ never
  /// touches the connection table itself). Unset: nothing is tracked.
  using backend_flush_fn = std::function<uint64_t(const std::vector<backend_change>&)>;
  void set_backend_flush(backend_flush_fn fn) { backend_flush_ = std::move(fn); }
  /// The control loop's tick: flushes the flows of removed backends whose grace ended at or
  /// before `now` and did not come back meanwhile. Returns the flows flushed.
  uint64_t tick(std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());
  /// Removed backends waiting out their grace.
  size_t pending_backend_flushes() const { return pending_.size(); }

  /// How many objects in the store came from a source.
  uint64_t objects_from(source s) const;
  const store& objects() const { return store_; }

 private:
  result<void> recompile(const dirty_set& dirty);
  // After a publish: starts the grace of removed backends (UDP ones are flushed at once) and
  // ends it for those that came back.
  void track_backend_changes(backend_changes changes);
  // Flushes and logs a batch of removed backends' flows.
  uint64_t flush_backends(const std::vector<backend_change>& gone, bool at_once);
  // Refuses a local change to an object the API holds.
  result<void> check_not_api(const std::vector<store::key>& keys) const;
  dirty_set dirty_from(const store::undo_log& undo) const;

  node_config cfg_;
  publish_fn publish_;
  store store_;
  compiler compiler_;
  view_fn flows_, stats_;
  std::map<std::string, view_fn> views_;
  uint64_t api_refused_ = 0;
  const std::atomic<bool>* stop_ = nullptr;
  bool compiled_ = false;  // a snapshot was published

  // Payload signature filter.
  // Rules checked against the limit and compiled, not yet installed.
  struct filter_plan {
    std::vector<filter_rule> rules;
    std::shared_ptr<const filter_db> db;
  };
  result<filter_plan> plan_filters(std::vector<filter_rule> rules) const;
  // Installs planned rules (slots kept by name) and publishes.
  result<void> install_filters(filter_plan plan);
  // Both: all or nothing.
  result<void> set_filters(std::vector<filter_rule> rules);
  // Reload: the rules the fresh config's [[filter]] tables and the socket's rules make
  // (nullopt: the same as now), and what that changes; a config rule named like a socket
  // rule is refused.
  result<std::optional<std::vector<filter_rule>>> filters_for(const node_config& fresh,
                                                              std::vector<change>& changes) const;
  // Re-resolves Service scopes when the compile touched a Service a rule names.
  bool filter_scope_dirty(const dirty_set& dirty) const;
  unsigned workers_ = 1;
  bool filters_loaded_ = false;  // the config's rules were installed
  std::vector<filter_rule> filters_;
  std::shared_ptr<const filter_db> filter_db_;
  std::shared_ptr<const filter_set> filter_set_;
  std::vector<uint32_t> free_filter_slots_;
  uint32_t next_filter_slot_ = 0;
  std::function<uint64_t(uint32_t)> filter_hits_;
  backend_flush_fn backend_flush_;
  struct pending_flush {
    std::chrono::steady_clock::time_point deadline;
    backend_change backend;
  };
  // Removed backends in their grace, by frontend (vip, port, proto) and backend (ip, port).
  std::map<std::tuple<uint32_t, uint16_t, uint8_t, uint32_t, uint16_t>, pending_flush> pending_;
};

}  // namespace ferry::control
