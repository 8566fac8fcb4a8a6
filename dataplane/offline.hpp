// An offline dataplane: everything a worker needs (ports with fixed MACs, routes, pool,
// RCU, connection and neighbor tables) without any device behind the ports. The pipeline
// tests and `ferry-perf pipeline` drive process_burst() on it and read the TX batches
// instead of transmitting. Needs an initialised EAL. Each worker is driven by one thread.
#pragma once

#include <rte_cycles.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

#include "dataplane.hpp"
#include "fragments.hpp"

namespace ferry::dp {

struct offline_options {
  uint32_t flow_capacity = 1024;
  uint32_t mbufs = 1023;
  uint32_t icmp_rate = 2;
  uint32_t echo_rate = 2;
  uint32_t error_rate = 2;
  unsigned workers = 1;
  limits_config limits;  // [limits]: the per-source new-flow limit
  const char* pool_name = "offline_pool";
  fragments_config fragments{};  // [fragments] defaults: reassembly on
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
    dp.limits = o.limits;
    dp.n_workers = o.workers;
    dp.echo_rate = o.echo_rate;
    dp.error_rate = o.error_rate;
    dp.max_service_ports = 1024;
    dp.affinity = std::make_unique<affinity_table>(cfg.conntrack.affinity_capacity);
    dp.pool = rte_pktmbuf_pool_create(o.pool_name, o.mbufs, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
    dp.qsbr =
        static_cast<rte_rcu_qsbr*>(rte_zmalloc(nullptr, rte_rcu_qsbr_get_memsize(o.workers), 64));
    rte_rcu_qsbr_init(dp.qsbr, o.workers);
    dp.ct =
        std::make_unique<conntrack>(o.flow_capacity, o.workers, dp.qsbr, dp.tsc_hz, cfg.conntrack);
    dp.neighbors = std::make_unique<neighbor_table>(dp.tsc_hz * 3600);
    // Pool names are process-wide: one per offline dataplane.
    static unsigned made = 0;
    const std::string indirect = "offline_ind" + std::to_string(made++);
    // As ferryd requires: held fragments take at most half of the pool.
    fragments_config fc = o.fragments;
    fc.max_held = std::min(fc.max_held, o.mbufs / 2 / o.workers);
    frag_error = setup_fragments(dp, fc, indirect.c_str());
    for (unsigned i = 0; i < o.workers; ++i) {
      rte_rcu_qsbr_thread_register(dp.qsbr, i);
      rte_rcu_qsbr_thread_online(dp.qsbr, i);
      workers.push_back(std::make_unique<worker>());
      init_worker(*workers.back(), dp, i, i);
    }
    w = workers[0].get();
  }

  ~offline_dataplane() {
    for (auto& wk : workers) {
      drain_tx(*wk);
      for (uint16_t i = 0; i < wk->n_held; ++i) rte_pktmbuf_free(wk->held[i].m);
    }
    workers.clear();
    release_fragments(dp);
    dp.ct.reset();
    rte_free(dp.qsbr);
    rte_mempool_free(dp.pool);
  }

  void learn(uint16_t port, uint32_t ip, const rte_ether_addr& mac) {
    neighbor_table::learn(*dp.neighbors->get(port, ip, true), mac, rte_rdtsc());
  }

  /// Forgets what is in a worker's TX batches without freeing (callers that reuse mbufs).
  static void drop_tx(worker& wk) {
    for (auto& b : wk.tx) b.n = 0;
  }

  /// Frees what is in a worker's TX batches.
  static void drain_tx(worker& wk) {
    for (auto& b : wk.tx) {
      rte_pktmbuf_free_bulk(b.pkts, b.n);
      b.n = 0;
    }
  }
  void drain_tx() { drain_tx(*w); }

  dataplane dp;
  std::string frag_error;  // setup_fragments' answer ("" when it worked)
  std::vector<std::unique_ptr<worker>> workers;
  worker* w = nullptr;  // the first worker
};

}  // namespace ferry::dp
