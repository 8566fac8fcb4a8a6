// Read-only views of the running dataplane for the control socket (`ferryctl get flows`,
// `ferryctl stats`). Called on the control thread while workers run: counters are read with
// relaxed loads, flow entries are copied as they are (a flow being created or freed at that
// moment may show half-updated; the dump is for people, not for decisions).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dataplane.hpp"

namespace ferry::dp {

struct flow_view {
  uint32_t service_id;  // counter slot of the service port
  uint8_t proto;
  uint32_t client_ip, vip, backend_ip;
  uint16_t client_port, vport, backend_port;
  const char* state;
  double idle_seconds;
  double age_seconds;
  unsigned worker;
  uint32_t snat_ip;  // 0 unless the client is masqueraded
  uint16_t snat_port;
};

/// Which flows `get flows` lists and `flush` removes; every set field must match.
struct flow_filter {
  uint8_t proto = 0;  // 0: any
  std::optional<flow_state> state;
  // The service port: by frontend address (and port when nonzero), or by counter slot ids.
  std::optional<uint32_t> vip;
  uint16_t vport = 0;
  std::optional<std::vector<uint32_t>> service_ids;
  std::optional<uint32_t> backend_ip, client_ip;
  uint16_t backend_port = 0, client_port = 0;  // 0: any

  bool matches(const flow_entry& e, flow_state s) const;
};

/// A backend of one frontend (vip 0: a NodePort, on any node address), for flush_backends.
struct service_backend {
  uint32_t vip = 0;
  uint16_t vport = 0;
  uint8_t proto = 0;
  uint32_t ip = 0;
  uint16_t port = 0;
  auto operator<=>(const service_backend&) const = default;
};
/// Flushes (conntrack::flush) the flows through any of these frontends to their backend, in
/// one pass over the table; returns how many. By frontend address, not counter slot: flows
/// made before their Service was deleted and created again carry the old slot. Control
/// thread.
uint32_t flush_backends(dataplane& dp, std::vector<service_backend> which);

/// Up to `limit` flows (most recently created first is not guaranteed: table order), and
/// the number of active flows.
std::vector<flow_view> list_flows(const dataplane& dp, size_t limit, uint64_t& active);
/// The same for the flows the filter matches (`matched` of them; `active` counts all).
std::vector<flow_view> list_flows(const dataplane& dp, const flow_filter& f, size_t limit,
                                  uint64_t& active, uint64_t& matched);
flow_view view_of(const dataplane& dp, const flow_entry& e, uint64_t now);

/// Marks the flows the filter matches as flushed (conntrack::flush): from now on their next
/// packet makes a new flow. Returns how many.
uint32_t flush_flows(dataplane& dp, const flow_filter& f);

/// Active flows per backend (address, port) of each of the given service port ids.
using backend_flows = std::map<uint32_t, std::map<std::pair<uint32_t, uint16_t>, uint64_t>>;
backend_flows count_backend_flows(const dataplane& dp, const std::vector<uint32_t>& ids);

struct neighbor_view {
  uint16_t port;
  uint32_t ip;
  rte_ether_addr mac;
  const char* state;   // reachable, stale (answer older than the timeout), incomplete
  double age_seconds;  // since the last answer (incomplete: since the last request)
};
std::vector<neighbor_view> list_neighbors(const dataplane& dp);

struct link_view {
  bool up = false;
  uint32_t speed_mbps = 0;
};
link_view port_link(const port_info& p);

/// `ferryctl trace`: what the packet path would do with the first packet from src to dst,
/// decided by the same functions (decide.hpp) and read-only: no flow is created, no counter
/// or affinity entry touched.
struct trace_result {
  enum class match_kind { none, service, node_port, dns, node_address, backend_reply };
  match_kind match = match_kind::none;
  const service_port_entry* service = nullptr;  // from the current snapshot
  std::optional<flow_view> flow;                // an existing entry, forward or reply
  bool reply = false;                           // the flow matched in its reply direction
  const char* decision = "not_a_service";
  const backend* chosen = nullptr;
  uint32_t nat_dst_ip = 0, nat_src_ip = 0;
  uint16_t nat_dst_port = 0, nat_src_port = 0;
  bool src_port_chosen_later = false;  // masqueraded: the port is picked at flow creation
  uint32_t maglev_size = 0, maglev_slot = 0;
  bool maglev = false;
  const char* verdict = "drop";
  std::string reason;
};
trace_result trace(const dataplane& dp, uint8_t proto, uint32_t src_ip, uint16_t src_port,
                   uint32_t dst_ip, uint16_t dst_port);

struct port_stats {
  std::string name;
  uint64_t rx_packets, tx_packets, rx_bytes, tx_bytes, rx_missed, rx_errors, tx_errors;
  uint64_t rx_workers, tx_workers;  // what the workers counted (all queues)
};

struct totals {
  std::vector<port_stats> ports;
  uint64_t drops[kNumDrops] = {};
  uint64_t flows_created = 0, flows_picked_up = 0, flows_expired = 0, flows_table_full = 0,
           flows_foreign = 0, stateless_forward = 0, stateless_reply = 0, affinity_reused = 0,
           snat_flows = 0, port_remapped = 0;
  uint64_t syn_stateless = 0, ack_stateless = 0;  // TCP abuse
  uint64_t arp_requests_sent = 0, arp_replies_sent = 0, icmp_echo_replies = 0,
           icmp_unreach_sent = 0, neighbor_held = 0;
  uint64_t dns[dns::kNumOutcomes] = {}, dns_truncated = 0, dns_tcp = 0, dns_slipped = 0;
  uint64_t icmp_errors_translated = 0, icmp_time_exceeded_sent = 0, icmp_frag_needed_sent = 0;
  // IPv4 fragments
  uint64_t frag_received = 0, frag_reassembled = 0, frag_held = 0, frag_fragmented = 0,
           frag_sent = 0;
  std::vector<uint64_t> per_worker_rx, per_worker_foreign;
};

/// Sums every worker's counters and reads the devices' own statistics.
totals collect(const dataplane& dp, const std::vector<std::unique_ptr<worker>>& workers);

/// One service port's counters summed over workers.
struct service_totals {
  uint64_t packets = 0, bytes = 0, new_flows = 0;
};
service_totals collect_service(const std::vector<std::unique_ptr<worker>>& workers, uint32_t id);

}  // namespace ferry::dp
