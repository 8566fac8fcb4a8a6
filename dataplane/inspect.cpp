#include "inspect.hpp"

#include <rte_cycles.h>
#include <rte_ethdev.h>

namespace ferry::dp {

std::vector<flow_view> list_flows(const dataplane& dp, size_t limit, uint64_t& active) {
  std::vector<flow_view> out;
  active = 0;
  const conntrack& ct = *dp.ct;
  uint64_t now = rte_rdtsc();
  double hz = static_cast<double>(dp.tsc_hz);
  for (uint32_t i = 0; i < ct.capacity(); ++i) {
    const flow_entry& e = ct.entry(i);
    flow_state s = e.state.load(std::memory_order_acquire);
    if (s == flow_state::free) continue;
    ++active;
    if (out.size() >= limit) continue;
    uint64_t seen = e.last_seen.load(std::memory_order_relaxed);
    out.push_back({e.proto, e.client_ip, e.vip, e.backend_ip, e.client_port, e.vport,
                   e.backend_port, flow_state_name(s),
                   now > seen ? static_cast<double>(now - seen) / hz : 0.0,
                   now > e.created ? static_cast<double>(now - e.created) / hz : 0.0, e.owner,
                   e.snat_ip, e.snat_port});
  }
  return out;
}

totals collect(const dataplane& dp, const std::vector<std::unique_ptr<worker>>& workers) {
  totals t;
  for (uint16_t i = 0; i < dp.ports.size(); ++i) {
    port_stats ps{};
    ps.name = dp.ports[i].name;
    rte_eth_stats st{};
    if (rte_eth_stats_get(dp.ports[i].port_id, &st) == 0) {
      ps.rx_packets = st.ipackets;
      ps.tx_packets = st.opackets;
      ps.rx_bytes = st.ibytes;
      ps.tx_bytes = st.obytes;
      ps.rx_missed = st.imissed;
      ps.rx_errors = st.ierrors;
      ps.tx_errors = st.oerrors;
    }
    for (const auto& w : workers) {
      ps.rx_workers += w->counters.port_rx[i].get();
      ps.tx_workers += w->counters.port_tx[i].get();
    }
    t.ports.push_back(ps);
  }
  for (const auto& w : workers) {
    const worker_counters& c = w->counters;
    for (size_t d = 0; d < kNumDrops; ++d) t.drops[d] += c.drops[d].get();
    t.flows_created += c.flows_created.get();
    t.flows_picked_up += c.flows_picked_up.get();
    t.flows_expired += c.flows_expired.get();
    t.flows_table_full += c.flows_table_full.get();
    t.flows_foreign += c.flows_foreign.get();
    t.stateless_forward += c.stateless_forward.get();
    t.stateless_reply += c.stateless_reply.get();
    t.affinity_reused += c.affinity_reused.get();
    t.snat_flows += c.snat_flows.get();
    t.arp_requests_sent += c.arp_requests_sent.get();
    t.arp_replies_sent += c.arp_replies_sent.get();
    t.icmp_echo_replies += c.icmp_echo_replies.get();
    t.icmp_unreach_sent += c.icmp_unreach_sent.get();
    t.neighbor_held += c.neighbor_held.get();
    for (size_t o = 0; o < dns::kNumOutcomes; ++o) t.dns[o] += c.dns[o].get();
    t.dns_truncated += c.dns_truncated.get();
    t.dns_tcp += c.dns_tcp.get();
    uint64_t rx = 0;
    for (const auto& p : c.port_rx) rx += p.get();
    t.per_worker_rx.push_back(rx);
    t.per_worker_foreign.push_back(c.flows_foreign.get());
  }
  return t;
}

service_totals collect_service(const std::vector<std::unique_ptr<worker>>& workers, uint32_t id) {
  service_totals s;
  for (const auto& w : workers) {
    s.packets += w->services[id].packets.get();
    s.bytes += w->services[id].bytes.get();
    s.new_flows += w->services[id].new_flows.get();
  }
  return s;
}

}  // namespace ferry::dp
