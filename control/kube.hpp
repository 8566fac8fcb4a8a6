// The Kubernetes API source: list + watch of Services, EndpointSlices and this node's Node,
// the way kube-proxy's informers follow the API server. Each resource has its own thread
// (blocking libcurl transfers); decoded changes queue up for the control thread, which
// takes them all at once when wake_fd() is readable and applies them in one publish.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include "ferry/config.hpp"
#include "ferry/result.hpp"
#include "json_depth.hpp"
#include "model.hpp"

namespace ferry::control::kube {

/// Where the API server is and how to authenticate to it.
struct credentials {
  std::string server;               // https://host:port (no trailing slash)
  std::string ca_file, ca_pem;      // CA to verify the server: a file or PEM text (none: system)
  bool insecure = false;            // insecure-skip-tls-verify
  std::string token;                // bearer token, or
  std::string token_file;           // a file holding it, re-read before every request
  std::string cert_file, key_file;  // client certificate and key: files, or
  std::string cert_pem, key_pem;    // PEM text (client-certificate-data, client-key-data)
  std::string origin;               // where these came from, for messages and status
};

/// Reads a kubeconfig file (context: its current-context when empty). Relative paths in it
/// are relative to the file, as kubectl reads them.
result<credentials> from_kubeconfig(const std::string& path, const std::string& context);
/// In-cluster: KUBERNETES_SERVICE_HOST/_PORT, and token and ca.crt from the service account
/// directory.
result<credentials> in_cluster(const std::string& service_account_dir);
result<credentials> credentials_for(const kubernetes_config& cfg);

/// One watched resource, and what the control thread is told about it.
struct resource {
  std::string kind;         // "Service", "EndpointSlice", "Node"
  std::string api_version;  // of the objects
  std::string path;         // collection URL path ("/api/v1/services")
  std::string label_selector, field_selector;
  // Nothing is applied until every resource that gates the first sync has been listed
  // once, so a node never forwards Services without their endpoints at start (kube-proxy
  // waits for its Service and EndpointSlice caches likewise). The Node does not gate it.
  bool gates_first_sync = true;
};

/// The three resources ferry follows, filtered as kube-proxy filters them: objects labelled
/// service.kubernetes.io/service-proxy-name belong to another proxy, and only the Node
/// named node_name matters. Headless Services are kept (DNS answers for them).
std::vector<resource> watched_resources(const std::string& node_name);

/// Every change waiting for the control thread, merged: the last state of each object
/// named, and the kinds whose full list was read again (the store drops its other API
/// objects of those kinds).
using object_key = std::tuple<std::string, std::string, std::string>;  // kind, namespace, name

struct update {
  std::vector<model::object> upserts;
  std::vector<object_key> deletes;
  std::vector<std::string> relisted;  // kinds
  bool empty() const { return upserts.empty() && deletes.empty() && relisted.empty(); }
};

struct resource_status {
  std::string kind;
  bool synced = false;     // a full list was read
  bool connected = false;  // a watch stream is open
  std::string resource_version;
  int64_t last_event_ms = 0;  // unix time of the last event, list or bookmark (0: never)
  uint64_t events = 0, bookmarks = 0, relists = 0, errors = 0;
  uint64_t skipped = 0;  // objects that did not decode (a field ferry refuses): left out
  // Lists or watch events refused for a bound: max_list_objects, max_list_bytes,
  // max_event_bytes, or JSON nested deeper than kMaxJsonDepth.
  uint64_t too_large = 0;
  // The wait before the last retry (jittered); 0 once healthy for backoff::kResetMs.
  uint64_t backoff_ms = 0;
  std::string last_error;
};

/// JSON from the API server nested deeper than this is refused before it is parsed:
/// nlohmann parses deep text fine, but dump(), copies and comparisons recurse once per
/// level. Services, EndpointSlices and Nodes (managedFields included) nest about 10 deep.
inline constexpr size_t kMaxJsonDepth = 100;

/// client-go's reflector back-off (wait.NewExponentialBackoffManager(800ms, 30s, 2min, 2.0,
/// 1.0)): every failed or ended ListAndWatch waits step + rand[0, step), the step doubling
/// from 800 ms to 30 s, and starting again from 800 ms only when the previous wait began
/// more than 2 minutes ago (a healthy period). So a server that fails every call is asked
/// at most about once every 30-60 s per resource and node, and nodes do not retry in step.
/// ([kubernetes] backoff_initial_ms and backoff_max_ms change the 800 ms and 30 s.)
class backoff {
 public:
  static constexpr uint64_t kInitialMs = 800, kMaxMs = 30000, kResetMs = 120000;
  explicit backoff(uint64_t seed, uint64_t initial_ms = kInitialMs, uint64_t max_ms = kMaxMs)
      : rng_(seed | 1), initial_ms_(initial_ms), max_ms_(max_ms), step_ms_(initial_ms) {}
  /// The wait for a failure at now_ms (a monotonic clock).
  uint64_t next(int64_t now_ms);

 private:
  uint64_t rng_;  // xorshift64* state (never 0)
  uint64_t initial_ms_, max_ms_;
  uint64_t step_ms_;
  int64_t last_start_ms_ = 0;
  bool started_ = false;
};

class watcher {
 public:
  watcher(credentials creds, const kubernetes_config& cfg, std::vector<resource> resources);
  ~watcher();  // stops and joins the threads
  watcher(const watcher&) = delete;
  watcher& operator=(const watcher&) = delete;

  void start();
  /// Readable while changes wait; take() empties it.
  int wake_fd() const { return wake_fd_; }
  /// Everything waiting, or nothing until the first sync is complete.
  update take();
  std::vector<resource_status> status() const;
  const credentials& creds() const { return creds_; }

 private:
  void run(size_t index);
  // Lists when rv is empty, then watches from rv, again after each watch that ends well,
  // until an error (thrown), a 410 (rv cleared, returns) or a stop (returns).
  enum class ended { stopped, expired };
  ended list_and_watch(size_t index, std::string& rv);
  // Sleeps up to ms; false when stopping.
  bool pause(uint64_t ms);
  void deliver(size_t index, std::vector<model::object> objects, bool relist);
  void deliver_delete(object_key key);
  void note(size_t index, const std::function<void(resource_status&)>& fn);

  credentials creds_;
  kubernetes_config cfg_;
  std::vector<resource> resources_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stop_{false};
  int wake_fd_ = -1;

  mutable std::mutex mu_;
  std::condition_variable cv_;  // wakes pause() on stop
  std::vector<resource_status> status_;
  std::vector<int64_t> backoff_at_ms_;  // steady clock, when each resource's last wait began
  // Waiting changes, keyed like the store: (kind, namespace, name).
  std::map<object_key, std::optional<model::object>> waiting_;  // nullopt: deleted
  std::vector<std::string> relisted_;
};

}  // namespace ferry::control::kube
