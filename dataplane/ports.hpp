// Bringing up the DPDK side at start: the mbuf pool and the ports. Main lcore only, before
// workers launch.
#pragma once

#include <string>

#include "dataplane.hpp"
#include "ferry/result.hpp"

namespace ferry::dp {

/// Probes each configured device (vdev string or PCI address), configures one RX/TX queue
/// pair per worker where the device allows (RSS across them), starts it, and fills
/// dp.ports. af_packet devices get qpairs=<workers> unless the device string sets it.
result<void> setup_ports(dataplane& dp, const node_config& cfg, unsigned workers);

/// Probes a device (vdev string or PCI address); its ethdev port id.
result<uint16_t> probe(const std::string& devargs);

/// Configures and starts a probed port with one RX/TX queue pair per worker where the device
/// allows (RSS across them); the port_info to append to dp.ports (addr left 0).
result<port_info> start_port(uint16_t port_id, const std::string& name, uint16_t rx_desc,
                             uint16_t tx_desc, unsigned workers, rte_mempool* pool);

/// Stops and closes every port in dp.ports.
void close_ports(dataplane& dp);

}  // namespace ferry::dp
