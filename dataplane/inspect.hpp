// Read-only views of the running dataplane for the control socket (`ferryctl get flows`,
// `ferryctl stats`). Called on the control thread while workers run: counters are read with
// relaxed loads, flow entries are copied as they are (a flow being created or freed at that
// moment may show half-updated; the dump is for people, not for decisions).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dataplane.hpp"

namespace ferry::dp {

struct flow_view {
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

/// Up to `limit` flows (most recently created first is not guaranteed: table order), and
/// the number of active flows.
std::vector<flow_view> list_flows(const dataplane& dp, size_t limit, uint64_t& active);

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
           snat_flows = 0;
  uint64_t arp_requests_sent = 0, arp_replies_sent = 0, icmp_echo_replies = 0,
           icmp_unreach_sent = 0, neighbor_held = 0;
  uint64_t dns[dns::kNumOutcomes] = {}, dns_truncated = 0, dns_tcp = 0;
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
