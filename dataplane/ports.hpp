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

/// Stops and closes every port in dp.ports.
void close_ports(dataplane& dp);

}  // namespace ferry::dp
