// Decisions the packet path makes about a new flow, as pure functions of the dataplane and
// the snapshot: which service port a packet is for and whether its source is masqueraded.
// The pipeline calls them per packet (inline: no cost over writing them in place) and
// `ferryctl trace` calls the same ones, so a trace cannot disagree with the packet path.
#pragma once

#include <cstdint>

#include "dataplane.hpp"

namespace ferry::dp {

// Linux's martian sources (ip_route_input_slow): 0.0.0.0/8, 127.0.0.0/8, multicast, the
// limited broadcast, and the directed broadcast of a connected subnet. None can be a client.
inline bool martian_source(const dataplane& dp, uint32_t src) {
  const uint32_t top = src >> 24;
  if (top == 0 || top == 127 || (src >> 28) == 0xe || src == 0xffffffff) return true;
  for (const route_entry& r : dp.routes) {
    if (!r.via && r.mask < 0xfffffffe && src == (r.net | ~r.mask)) return true;
  }
  return false;
}

// Addresses that are ferry's own: the node's (its ports'), the DNS addresses and, with a
// snapshot, every service address. Nothing outside sends from one, whatever the protocol:
// such a source is spoofed (Linux drops it as a martian too, in fib_validate_source), and
// answering it would make ferry talk to itself. What ferry's own kernel side sends (the DNS
// TCP TAP port, whose segments come from DNS addresses) never comes through here.
inline bool own_address(const dataplane& dp, const snapshot* snap, uint32_t ip) {
  return dp.is_local(ip) || dp.is_dns(ip) || (snap && snap->is_service_address(ip));
}

// Checks for a packet that may start something (no flow matched it, or it is for the node
// itself); an established flow never needs them: its first packet passed them. Ports are
// checked only for TCP and UDP (pass 1 for the others). True and the reason when refused.
inline bool refuse_new(const dataplane& dp, const snapshot* snap, uint32_t src, uint32_t dst,
                       uint16_t sport, uint16_t dport, drop& reason) {
  if (martian_source(dp, src)) {
    reason = drop::src_martian;
  } else if (src == dst) {
    reason = drop::land;  // also for TCP whatever the ports: no client sends to itself here
  } else if (own_address(dp, snap, src)) {
    reason = drop::src_own_address;
  } else if (!sport || !dport) {
    reason = drop::port_zero;
  } else {
    return false;
  }
  return true;
}

/// The service port for (dst, proto, dport); a NodePort answers on every node address
/// (`local`: dst is one).
inline const service_port_entry* find_service(const snapshot* snap, uint32_t dst, uint8_t proto,
                                              uint16_t dport, bool local) {
  if (!snap) return nullptr;
  auto* s = snap->vips.find(service_key(dst, proto, dport));
  if (!s && local) s = snap->vips.find(service_key(0, proto, dport));
  return s ? s->get() : nullptr;
}

// A client and a backend on the same on-link subnet would talk directly on the way back,
// around the VIP translation (and a pod reaching itself through its Service would see its
// own address as the source). Like kube-proxy's masquerade for hairpin traffic, such flows
// get the node's address on that port as their source; the entry remembers the client.
inline bool needs_masquerade(const dataplane& dp, uint32_t client, uint32_t backend,
                             uint32_t& snat_ip) {
  const route_entry* to_backend = dp.route(backend);
  const route_entry* to_client = dp.route(client);
  if (!to_backend || !to_client || to_backend->via || to_client->via ||
      to_backend->port != to_client->port) {
    return false;
  }
  snat_ip = dp.ports[to_backend->port].addr;
  return true;
}

// The node address traffic to a backend leaves from (externalTrafficPolicy: Cluster SNATs
// external clients to it when the backend is on another node); false without a route.
inline bool egress_address(const dataplane& dp, uint32_t backend, uint32_t& snat_ip) {
  const route_entry* r = dp.route(backend);
  if (!r) return false;
  snat_ip = dp.ports[r->port].addr;
  return true;
}

/// Whether a new flow of service port s to backend b is masqueraded, and to which address:
/// external traffic under policy Cluster to a backend on another node, or hairpin traffic.
inline bool masquerade_for(const dataplane& dp, const service_port_entry& s, const backend& b,
                           uint32_t client, uint32_t& snat_ip) {
  return s.snat_remote && !b.local ? egress_address(dp, b.ip, snat_ip)
                                   : needs_masquerade(dp, client, b.ip, snat_ip);
}

/// The affinity table key and timeout (in affinity ticks) of a ClientIP service port.
inline uint64_t affinity_key(const service_port_entry& s, uint32_t client) {
  return affinity_table::key(client, s.affinity_key);
}
inline uint16_t affinity_ticks(const service_port_entry& s) {
  return static_cast<uint16_t>((s.affinity_timeout + affinity_table::kTickSeconds - 1) /
                               affinity_table::kTickSeconds);
}

}  // namespace ferry::dp
