#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>

#include <algorithm>

#include "dataplane.hpp"
#include "fragments.hpp"

namespace ferry::dp {

std::vector<route_entry> build_routes(const node_config& cfg) {
  struct sortable {
    route_entry r;
    uint8_t len;
  };
  std::vector<sortable> all;
  auto port_index = [&](const std::string& name) {
    for (uint16_t i = 0; i < cfg.ports.size(); ++i) {
      if (cfg.ports[i].name == name) return i;
    }
    return uint16_t{0};
  };
  for (uint16_t i = 0; i < cfg.ports.size(); ++i) {
    const auto& a = cfg.ports[i].address;
    all.push_back({{a.addr & a.mask(), a.mask(), 0, i}, a.len});
  }
  for (const auto& r : cfg.routes) {
    all.push_back({{r.to.addr & r.to.mask(), r.to.mask(), r.via, port_index(r.port)}, r.to.len});
  }
  // Longest prefix first; stable, so a static route beats a connected one of equal length
  // only if it comes first in the config (connected routes are listed first).
  std::stable_sort(all.begin(), all.end(),
                   [](const sortable& a, const sortable& b) { return a.len > b.len; });
  std::vector<route_entry> out;
  for (const auto& s : all) out.push_back(s.r);
  return out;
}

void init_worker(worker& w, dataplane& dp, unsigned index, unsigned lcore) {
  w.index = index;
  w.lcore = lcore;
  w.queue = static_cast<uint16_t>(index);
  w.dp = &dp;
  dp.ct->init_worker(w.ct, index, index);
  w.services.reset(new service_counters[dp.max_service_ports]);
  w.counters.services = w.services.get();
  w.filter_hits.reset(new counter[dp.filter_max_rules]);
  w.counters.filter_hits = w.filter_hits.get();
  (void)w.limiter.init(dp.limits.new_flows_per_source, dp.limits.new_flows_burst,
                       dp.limits.source_table_size, dp.n_workers, dp.tsc_hz);
  if (!dp.dns_addresses.empty()) {
    (void)w.dns_limiter.init(dp.dns_rrl_rate, 0, dp.limits.source_table_size, dp.n_workers,
                             dp.tsc_hz);
  }
  const uint64_t now = rte_rdtsc();
  w.unreach_bucket.start(dp.icmp_rate, now);
  w.echo_bucket.start(dp.echo_rate, now);
  w.error_bucket.start(dp.error_rate, now);
  dp.min_mtu = 0xffff;
  for (const port_info& p : dp.ports) dp.min_mtu = std::min(dp.min_mtu, p.mtu);
  // Left null when there is no memory for it: fragments are then dropped (ip_fragment);
  // ferryd refuses to start that way.
  init_worker_fragments(
      w, lcore < RTE_MAX_LCORE ? static_cast<int>(rte_lcore_to_socket_id(lcore)) : SOCKET_ID_ANY);
}

int worker_main(void* arg) {
  worker& w = *static_cast<worker*>(arg);
  dataplane& dp = *w.dp;
  rte_rcu_qsbr_thread_register(dp.qsbr, w.index);
  rte_rcu_qsbr_thread_online(dp.qsbr, w.index);
  rte_mbuf* pkts[kBurst];
  uint64_t last = rte_rdtsc();
  bool was_busy = false;

  while (!dp.stop.load(std::memory_order_relaxed)) {
    // acquire: pairs with the control thread's release store of a fully built snapshot.
    const snapshot* snap = dp.snap.load(std::memory_order_acquire);
    w.now = rte_rdtsc();
    // The previous iteration's cycles (its sleep included), busy when it received packets.
    const uint64_t spent = w.now - last;
    last = w.now;
    w.counters.poll_cycles.add(spent);
    if (was_busy) w.counters.busy_cycles.add(spent);
    uint32_t received = 0;
    for (uint16_t port = 0; port < dp.ports.size(); ++port) {
      if (w.queue >= dp.ports[port].rx_queues) continue;
      uint16_t n = rte_eth_rx_burst(dp.ports[port].port_id, w.queue, pkts, kBurst);
      if (n) process_burst(w, snap, pkts, n, port);
      received += n;
    }
    if (w.n_held) service_held(w);
    flush_tx(w);
    if (w.frag.tbl) expire_fragments(w);
    w.counters.flows_expired.add(dp.ct->sweep_paced(w.ct, w.now));
    // Nothing from this iteration (snapshot, flow entries) is held past this point.
    rte_rcu_qsbr_quiescent(dp.qsbr, w.index);
    was_busy = received != 0;
    if (!received && dp.idle_sleep_us) {
      // Offline while asleep so the control thread never waits on a sleeping worker.
      rte_rcu_qsbr_thread_offline(dp.qsbr, w.index);
      rte_delay_us_sleep(dp.idle_sleep_us);
      rte_rcu_qsbr_thread_online(dp.qsbr, w.index);
    }
  }
  rte_rcu_qsbr_thread_offline(dp.qsbr, w.index);
  rte_rcu_qsbr_thread_unregister(dp.qsbr, w.index);
  return 0;
}

}  // namespace ferry::dp
