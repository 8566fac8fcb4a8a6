// IPv4 fragments: reassembly on the worker with DPDK's rte_ip_frag, one table per
// worker (no locks), and the accounting DPDK leaves out: rte_ip_frag frees whatever it
// gives up on (timed out, table full, overlapping, too many fragments) onto a death row
// without saying why; reassemble() reads the reason off what it freed (see fragments.cpp).
#pragma once

#include <string>

#include "dataplane.hpp"

namespace ferry::dp {

/// The most fragments rte_ip_frag joins into one datagram: RTE_LIBRTE_IP_FRAG_MAX_FRAG of the
/// DPDK build (8 in Debian's 22.11 packages; DPDK's own default is 4). A datagram in more
/// fragments is dropped (frag_too_many).
constexpr uint32_t kMaxFragments = RTE_LIBRTE_IP_FRAG_MAX_FRAG;

/// Sets [fragments] up on dp: the limits, and the pool of indirect mbufs egress fragmentation
/// attaches to a datagram's data (name: a mempool name unique in the process). Returns an
/// empty string, or what failed. With cfg.enabled false nothing is allocated.
std::string setup_fragments(dataplane& dp, const fragments_config& cfg, const char* name);

/// Frees what setup_fragments allocated; after every worker (and its table) is gone.
void release_fragments(dataplane& dp);

/// Creates worker w's reassembly table on NUMA socket `socket` (SOCKET_ID_ANY: anywhere).
/// false: no memory for it.
bool init_worker_fragments(worker& w, int socket);

/// Takes one fragment of a datagram (header at ip, ihl bytes, already validated). Returns
/// the whole datagram when this fragment completes it: a chained mbuf, IPv4 header checksum
/// valid, no fragment flags. Else null: the fragment is held, or dropped and counted.
rte_mbuf* reassemble(worker& w, rte_mbuf* m, rte_ipv4_hdr* ip, uint16_t ihl);

/// Once per loop iteration: drops datagrams past timeout_ms (counted frag_timeout) and frees
/// the death row.
void expire_fragments(worker& w);

}  // namespace ferry::dp
