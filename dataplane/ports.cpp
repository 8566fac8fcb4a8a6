#include "ports.hpp"

#include <rte_bus.h>
#include <rte_dev.h>
#include <rte_ethdev.h>

#include <algorithm>

namespace ferry::dp {
namespace {

std::string with_queue_pairs(const std::string& device, unsigned workers) {
  if (device.rfind("net_af_packet", 0) != 0 || device.find("qpairs=") != std::string::npos) {
    return device;
  }
  return device + (device.back() == ',' ? "" : ",") + "qpairs=" + std::to_string(workers);
}

}  // namespace

result<uint16_t> probe(const std::string& devargs) {
  std::string name = devargs.substr(0, devargs.find(','));
  uint16_t port_id;
  if (rte_eth_dev_get_port_by_name(name.c_str(), &port_id) == 0) return port_id;
  if (int rc = rte_dev_probe(devargs.c_str()); rc < 0) {
    // DPDK's codes here (EFAULT, EPERM, ...) read badly; its own log line above says more.
    return make_error("cannot probe DPDK device \"" + devargs +
                      "\": no driver took it (unknown driver name, bad device arguments, or "
                      "a device that is missing or busy; see the EAL message above) [" +
                      rte_strerror(-rc) + "]");
  }
  if (rte_eth_dev_get_port_by_name(name.c_str(), &port_id) != 0) {
    return make_error("DPDK device \"" + devargs + "\" probed but no ethdev port named \"" + name +
                      "\"");
  }
  return port_id;
}

result<port_info> start_port(uint16_t port_id, const std::string& name, uint16_t rx_desc,
                             uint16_t tx_desc, unsigned workers, rte_mempool* pool) {
  rte_eth_dev_info info;
  if (int rc = rte_eth_dev_info_get(port_id, &info); rc != 0) {
    return make_error("cannot read device info: " + std::string(rte_strerror(-rc)));
  }
  if (info.max_tx_queues < workers) {
    return make_error("device has " + std::to_string(info.max_tx_queues) +
                      " TX queues, each of the " + std::to_string(workers) +
                      " workers needs one (use fewer worker lcores)");
  }
  auto rxq = static_cast<uint16_t>(std::min<unsigned>(workers, info.max_rx_queues));
  auto txq = static_cast<uint16_t>(workers);
  rte_eth_conf conf{};
  uint64_t rss = info.flow_type_rss_offloads & (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP);
  if (rxq > 1 && rss) {
    conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
    conf.rx_adv_conf.rss_conf.rss_hf = rss;
  }
  // The NIC's IPv4 and TCP/UDP checksum verdicts where it can give them: the pipeline drops
  // what it flags bad, and checks the IPv4 header itself only when there is no verdict.
  conf.rxmode.offloads =
      info.rx_offload_capa &
      (RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_TCP_CKSUM | RTE_ETH_RX_OFFLOAD_UDP_CKSUM);
  if (int rc = rte_eth_dev_configure(port_id, rxq, txq, &conf); rc != 0) {
    return make_error("configure failed: " + std::string(rte_strerror(-rc)));
  }
  rte_eth_dev_adjust_nb_rx_tx_desc(port_id, &rx_desc, &tx_desc);
  int socket = rte_eth_dev_socket_id(port_id);
  for (uint16_t q = 0; q < rxq; ++q) {
    if (int rc = rte_eth_rx_queue_setup(port_id, q, rx_desc, socket, nullptr, pool); rc) {
      return make_error("RX queue " + std::to_string(q) + ": " + rte_strerror(-rc));
    }
  }
  for (uint16_t q = 0; q < txq; ++q) {
    if (int rc = rte_eth_tx_queue_setup(port_id, q, tx_desc, socket, nullptr); rc) {
      return make_error("TX queue " + std::to_string(q) + ": " + rte_strerror(-rc));
    }
  }
  if (int rc = rte_eth_dev_start(port_id); rc != 0) {
    return make_error("start failed: " + std::string(rte_strerror(-rc)));
  }
  port_info p;
  p.name = name;
  p.port_id = port_id;
  rte_eth_macaddr_get(port_id, &p.mac);
  rte_eth_dev_get_mtu(port_id, &p.mtu);
  p.rx_queues = rxq;
  p.tx_queues = txq;
  return p;
}

result<void> setup_ports(dataplane& dp, const node_config& cfg, unsigned workers) {
  for (const auto& pc : cfg.ports) {
    std::string where = cfg.source + ": port \"" + pc.name + "\": ";
    auto id = probe(with_queue_pairs(pc.device, workers));
    if (!id) return make_error(where + id.message());
    auto p = start_port(*id, pc.name, pc.rx_desc, pc.tx_desc, workers, dp.pool);
    if (!p) return make_error(where + p.message());
    p->addr = pc.address.addr;
    // [[port]] mtu: the path towards the pods may be narrower than the device (an overlay, a
    // smaller MTU beyond the switch); never above what the device itself sends.
    if (pc.mtu) p->mtu = std::min(p->mtu, pc.mtu);
    dp.ports.push_back(*p);
  }
  return {};
}

void close_ports(dataplane& dp) {
  for (const auto& p : dp.ports) {
    rte_eth_dev_stop(p.port_id);
    rte_eth_dev_close(p.port_id);
  }
}

}  // namespace ferry::dp
