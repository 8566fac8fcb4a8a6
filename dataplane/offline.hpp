// An offline dataplane: everything a worker needs (ports with fixed MACs, routes, pool,
// RCU, connection and neighbor tables) without any device behind the ports. The pipeline
// tests and `ferry-perf pipeline` drive process_burst() on it and read the TX batches
// instead of transmitting. Needs an initialised EAL. Single-threaded use.
#pragma once

#include <rte_cycles.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>

#include <cstring>
#include <memory>

#include "dataplane.hpp"

namespace ferry::dp {

struct offline_options {
  uint32_t flow_capacity = 1024;
  uint32_t mbufs = 1023;
  uint32_t icmp_rate = 2;
  const char* pool_name = "offline_pool";
};

class offline_dataplane {
 public:
  /// Ports eth0 (port_mac[0], addr0/24) and eth1 (port_mac[1], addr1/24), plus `routes`.
  offline_dataplane(const node_config& cfg, const rte_ether_addr port_mac[2],
                    const offline_options& o = {}) {
    for (size_t i = 0; i < cfg.ports.size(); ++i) {
      dp.ports.push_back(
          {cfg.ports[i].name, static_cast<uint16_t>(i), port_mac[i], cfg.ports[i].address.addr});
    }
    dp.routes = build_routes(cfg);
    dp.tsc_hz = rte_get_tsc_hz();
    dp.hold_tsc = dp.tsc_hz;
    dp.arp_retry_tsc = dp.tsc_hz;
    dp.icmp_rate = o.icmp_rate;
    dp.max_service_ports = 1024;
    dp.pool = rte_pktmbuf_pool_create(o.pool_name, o.mbufs, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
    dp.qsbr = static_cast<rte_rcu_qsbr*>(rte_zmalloc(nullptr, rte_rcu_qsbr_get_memsize(1), 64));
    rte_rcu_qsbr_init(dp.qsbr, 1);
    rte_rcu_qsbr_thread_register(dp.qsbr, 0);
    rte_rcu_qsbr_thread_online(dp.qsbr, 0);
    dp.ct = std::make_unique<conntrack>(o.flow_capacity, 1, dp.qsbr, dp.tsc_hz, cfg.conntrack);
    dp.neighbors = std::make_unique<neighbor_table>(dp.tsc_hz * 3600);
    w = std::make_unique<worker>();
    init_worker(*w, dp, 0, 0);
  }

  ~offline_dataplane() {
    drain_tx();
    for (uint16_t i = 0; i < w->n_held; ++i) rte_pktmbuf_free(w->held[i].m);
    w.reset();
    dp.ct.reset();
    rte_free(dp.qsbr);
    rte_mempool_free(dp.pool);
  }

  void learn(uint16_t port, uint32_t ip, const rte_ether_addr& mac) {
    neighbor_table::learn(*dp.neighbors->get(port, ip, true), mac, rte_rdtsc());
  }

  /// Forgets what is in the TX batches without freeing (callers that reuse their mbufs).
  void drop_tx() {
    for (auto& b : w->tx) b.n = 0;
  }

  /// Frees what is in the TX batches.
  void drain_tx() {
    for (auto& b : w->tx) {
      rte_pktmbuf_free_bulk(b.pkts, b.n);
      b.n = 0;
    }
  }

  dataplane dp;
  std::unique_ptr<worker> w;
};

}  // namespace ferry::dp
