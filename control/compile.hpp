// compile: turns the store into an immutable snapshot for the workers: one service_port_entry
// (backends + Maglev table) per (ClusterIP, protocol, port), plus the lookup tables.
// Control thread only. Entries whose backends did not change are reused from the previous
// snapshot, so one endpoint change rebuilds one Maglev table.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "dns_zone.hpp"
#include "ferry/result.hpp"
#include "ferry/snapshot.hpp"
#include "store.hpp"

namespace ferry::control {

/// One endpoint of a Service port as kube-proxy sees it: address, backend port, conditions
/// and node. `node` points into the store (valid until the store changes).
struct endpoint_ref {
  uint32_t ip = 0;
  uint16_t port = 0;
  bool ready = true, serving = true, terminating = false;
  std::string_view node;
  std::span<const std::string> for_zones, for_nodes;  // topology hints
};

/// One endpoint address of a Service whatever its ports, for DNS: headless Services answer
/// with these. `hostname` points into the store.
struct host_ref {
  uint32_t ip = 0;
  bool ready = true;
  std::string_view hostname;
};

/// Where this proxy runs: its node name (endpoints there are local) and the node's zone
/// (label topology.kubernetes.io/zone), for topology hints.
struct topology {
  std::string_view node, zone;
};

/// The backends traffic may go to, as kube-proxy's CategorizeEndpoints picks them: ready
/// endpoints (weight 1) plus serving-and-terminating ones as draining (weight 0); when none
/// is ready, the serving-and-terminating ones take traffic. `local_only`: only endpoints on
/// `here.node` (a traffic policy of Local). Otherwise topology hints narrow the ready
/// endpoints as kube-proxy's topologyModeFromHints does: to those hinted for this node when
/// every ready endpoint has a node hint and one names this node, else to those hinted for
/// this zone when every ready endpoint has a zone hint and one names this zone. Each
/// backend says whether it is on this node.
std::vector<backend> select_backends(const std::vector<endpoint_ref>& endpoints,
                                     const topology& here, bool local_only);

/// Where each Service's endpoints come from, indexed once per compile so that resolving all
/// services costs O(objects), not O(services x objects).
class endpoint_index {
 public:
  explicit endpoint_index(const store& st);
  /// Only what one Service needs (range queries on the store: for single changes).
  endpoint_index(const store& st, const std::string& ns, const std::string& service);

  /// The endpoints of one Service port: from the Service's EndpointSlices (ports joined by
  /// name and protocol, the backend port being the slice's), else its legacy Endpoints,
  /// else (a standalone node) the Pods its selector matches, with targetPort resolved by
  /// number or container port name. Sorted by address, no duplicates (a ready one wins).
  std::vector<endpoint_ref> resolve(const model::service& svc,
                                    const model::service_port& port) const;
  /// Every endpoint address of the Service (same sources as resolve, ports aside), with its
  /// hostname: the endpoint's, or for a Pod its spec.hostname when spec.subdomain names the
  /// Service. Sorted by address.
  std::vector<host_ref> hosts(const model::service& svc) const;

 private:
  using name = std::pair<std::string, std::string>;  // namespace, service
  std::map<name, std::vector<const model::endpoint_slice*>> slices_;
  std::map<name, const model::endpoints*> legacy_;
  std::map<std::string, std::vector<const model::pod*>> pods_;  // by namespace
};

/// One-off: the backends of a Service port under the Cluster policy (builds the index: use
/// the class in loops).
std::vector<backend> resolve_backends(const store& st, const model::service& svc,
                                      const model::service_port& port);

/// A backend (ip, port) that left or joined one frontend in a compile. The frontend is named
/// by its address, protocol and port (vip 0: a NodePort), as flow entries carry them: its
/// counter slot id changes when the Service is deleted and created again, the key does not.
/// `name` is the frontend's, for logs.
struct backend_change {
  uint32_t vip = 0;
  uint16_t vport = 0;
  uint8_t proto = 0;
  uint32_t ip = 0;
  uint16_t port = 0;
  std::string name;
};

struct backend_changes {
  std::vector<backend_change> removed, added;
};

/// Which Services a change touched, so compile() redoes only those.
struct dirty_set {
  bool all = false;
  std::set<std::pair<std::string, std::string>> services;  // (namespace, name)
  std::set<std::string> namespaces;                        // every Service in these
};

class compiler {
 public:
  /// node_name: this node, for traffic policies (endpoints whose nodeName it is are local).
  /// pool: the node's load balancer addresses ([services] load_balancer_pool); LB addresses
  /// inside it are announced (answered for by ARP), others are someone else's to route.
  compiler(uint32_t maglev_max_size, uint32_t max_service_ports, std::string node_name = "",
           std::vector<ipv4_prefix> pool = {})
      : maglev_max_size_(maglev_max_size),
        max_service_ports_(max_service_ports),
        node_name_(std::move(node_name)),
        pool_(std::move(pool)) {}

  /// Serves the cluster DNS zone too: each snapshot carries it, built from the same store
  /// and changes.
  void enable_dns(const dns_config& cfg, ipv4_prefix service_cidr);
  size_t dns_names() const { return dns_ ? dns_->names() : 0; }

  /// Operator weight overrides (`ferryctl weight|drain`), keyed by Service and backend
  /// address: every backend of the Service's ports at that address gets this weight instead
  /// of its configured one (0: drained, no new flows). They outlive endpoint changes; the
  /// caller recompiles the Service after changing one.
  using service_name = std::pair<std::string, std::string>;
  void set_weight(const service_name& svc, uint32_t ip, std::optional<uint16_t> weight);
  std::optional<uint16_t> weight_override(const service_name& svc, uint32_t ip) const;
  /// A backend's weight with the Service's override applied. A backend configured at 0 (a
  /// terminating endpoint while ready ones exist) stays at 0.
  uint16_t effective_weight(const service_name& svc, const backend& b) const;

  /// The frontends a Service has as of the last compile (what the snapshot holds).
  std::vector<std::shared_ptr<const service_port_entry>> entries_of(const service_name& svc) const;

  /// Builds the next snapshot, redoing the endpoints of the dirty Services only (all of
  /// them on the first compile). Fails (and changes nothing) when more service ports exist
  /// than the workers have counter slots for. The cost of a change is that of the Services
  /// it touches: unchanged service ports keep their entry and Maglev table, and the new
  /// snapshot shares every lookup-table shard the change did not touch.
  result<std::unique_ptr<snapshot>> compile(const store& st, const dirty_set& dirty);
  result<std::unique_ptr<snapshot>> compile(const store& st) {
    return compile(st, dirty_set{.all = true});
  }

  /// The backends the last compile took out of (or put into) a frontend's backend set,
  /// a frontend that went away losing all of its; a weight change (drain) is neither.
  /// The removed-backend grace (node) flushes the removed ones' flows.
  backend_changes take_backend_changes() { return std::exchange(backend_changes_, {}); }

 private:
  // What one frontend should look like: the entry minus id and Maglev table.
  using wanted = service_port_entry;
  using service_ports = std::vector<std::pair<uint64_t, wanted>>;  // by service_key
  using entry_ptr = std::shared_ptr<const service_port_entry>;

  service_ports ports_of(const model::service& svc, const endpoint_index& endpoints) const;
  void remove(uint64_t key, const service_name& owner);
  // Records the backends e gained and lost against old (nullptr: a new frontend).
  void note_backend_changes(const service_port_entry* old, const service_port_entry& e);
  void upsert(uint64_t key, const wanted& w, const service_name& owner);
  // Adds (or removes) an entry to the derived indexes: backend table and announced addresses.
  void link(uint64_t key, const service_port_entry& e, bool add);

  // The frontend keys each Service had after the last compile (the entries hold the rest).
  std::map<service_name, std::vector<uint64_t>> by_service_;
  size_t total_ports_ = 0;
  uint32_t maglev_max_size_;
  uint32_t max_service_ports_;
  std::string node_name_;
  std::string zone_;  // of this node's Node object, as of the last compile
  std::vector<ipv4_prefix> pool_;
  std::map<service_name, std::map<uint32_t, uint16_t>> weights_;
  uint64_t generation_ = 0;  // of the last snapshot built; 0: none yet (the next compile is full)
  std::vector<uint32_t> free_ids_;   // counter slots of service ports that went away
  backend_changes backend_changes_;  // of the last compile
  uint32_t next_id_ = 0;

  // The live service ports and who owns each, and for every backend the service ports it
  // serves (by service key; the lowest one is the one replies are un-NATed to).
  struct live {
    entry_ptr entry;
    service_name owner;
  };
  std::unordered_map<uint64_t, live> entries_;
  std::unordered_map<uint64_t, std::map<uint64_t, const service_port_entry*>> backend_users_;
  // Announced LB addresses -> how many frontends use them: ferry answers ARP for them.
  std::map<uint32_t, uint32_t> announced_;
  bool announced_changed_ = false;
  std::shared_ptr<const std::vector<uint32_t>> announced_list_;
  // Every service address (ClusterIP, externalIP, LB) -> frontends using it.
  std::map<uint32_t, uint32_t> addresses_;
  bool addresses_changed_ = false;
  std::shared_ptr<const std::vector<uint32_t>> address_list_;
  // Keys whose lookup-table value this compile changed: only their shards are copied.
  std::vector<uint64_t> touched_vips_, touched_backends_;
  sharded_map<entry_ptr> vips_;
  sharded_map<const service_port_entry*> backends_;
  sharded_map<bool> shared_backends_;  // TCP abuse: backends with several frontends
  std::unique_ptr<dns_zone_builder> dns_;
  std::shared_ptr<const service_port_entry> dns_upstream_;
};

}  // namespace ferry::control
