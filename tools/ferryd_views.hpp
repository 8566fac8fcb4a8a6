// ferryd's views of the running dataplane for the control socket ops of `ferryctl status`,
// `get flows|neighbors|routes`, `describe`, `trace` and `flush`: they decode the request,
// call the dataplane's read-only inspection (dataplane/inspect.hpp) and render JSON.
// Control thread only.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dataplane.hpp"
#include "ferry/config.hpp"
#include "inspect.hpp"
#include "kube.hpp"
#include "node.hpp"

namespace ferry::views {

using nlohmann::json;
using worker_list = std::vector<std::unique_ptr<dp::worker>>;

std::string addr_port(uint32_t ip, uint16_t port);

// Counter slots are reused when a service port goes away; remember what a slot showed when
// its current owner got it, so a new service port starts from zero.
struct service_baselines {
  std::map<uint32_t, std::pair<std::string, dp::service_totals>> by_id;
};
/// A service port's counters since it got its slot.
dp::service_totals service_counts(const worker_list& workers, service_baselines& base,
                                  const service_port_entry& e);

/// Each worker's share of busy loop cycles over the last sampling window (~1 s): the
/// control loop calls tick() whenever it wakes (at least every 200 ms).
class busy_sampler {
 public:
  void tick(const worker_list& workers);
  double ratio(size_t worker) const { return worker < ratio_.size() ? ratio_[worker] : 0.0; }

 private:
  std::chrono::steady_clock::time_point last_{};
  std::vector<std::pair<uint64_t, uint64_t>> prev_;  // busy, poll cycles at last_
  std::vector<double> ratio_;
};

/// `get flows` with its filters: {"items", "total", "matched"}; {"error"} for a bad filter.
json flows(const dp::dataplane& d, const json& req);
/// `flush` with the same filters: {"flushed"}.
json flush(dp::dataplane& d, const json& req);
json neighbors(const dp::dataplane& d);
json routes(const dp::dataplane& d, const node_config& cfg);
json trace(const dp::dataplane& d, const json& req);
/// The "describe" view for node::describe: per service port id, counters and active flows.
json describe(const dp::dataplane& d, const worker_list& workers, service_baselines& base,
              const json& req);

/// What `status` reports beyond the dataplane.
struct status_inputs {
  const node_config& cfg;
  const control::node& ctl;
  const control::kube::watcher* api;
  uint64_t generation;
  int64_t published_ns;
  int64_t started_unix;
  std::chrono::steady_clock::time_point started;
  bool dns_tcp;
};
json status(const dp::dataplane& d, const worker_list& workers, const busy_sampler& busy,
            const status_inputs& in);

}  // namespace ferry::views
