#include "inspect.hpp"

#include <rte_cycles.h>
#include <rte_ethdev.h>

#include <algorithm>
#include <cstring>

#include "decide.hpp"

namespace ferry::dp {

bool flow_filter::matches(const flow_entry& e, flow_state s) const {
  if (proto && e.proto != proto) return false;
  if (state && s != *state) return false;
  if (vip && (e.vip != *vip || (vport && e.vport != vport))) return false;
  if (service_ids &&
      std::find(service_ids->begin(), service_ids->end(), e.service_id) == service_ids->end()) {
    return false;
  }
  if (backend_ip &&
      (e.backend_ip != *backend_ip || (backend_port && e.backend_port != backend_port)))
    return false;
  if (client_ip && (e.client_ip != *client_ip || (client_port && e.client_port != client_port)))
    return false;
  return true;
}

flow_view view_of(const dataplane& dp, const flow_entry& e, uint64_t now) {
  const double hz = static_cast<double>(dp.tsc_hz);
  const uint64_t seen = e.last_seen.load(std::memory_order_relaxed);
  return {e.service_id,
          e.proto,
          e.client_ip,
          e.vip,
          e.backend_ip,
          e.client_port,
          e.vport,
          e.backend_port,
          flow_state_name(e.state.load(std::memory_order_relaxed)),
          now > seen ? static_cast<double>(now - seen) / hz : 0.0,
          now > e.created ? static_cast<double>(now - e.created) / hz : 0.0,
          e.owner,
          e.snat_ip,
          e.snat_port};
}

std::vector<flow_view> list_flows(const dataplane& dp, const flow_filter& f, size_t limit,
                                  uint64_t& active, uint64_t& matched) {
  std::vector<flow_view> out;
  active = matched = 0;
  const conntrack& ct = *dp.ct;
  uint64_t now = rte_rdtsc();
  for (uint32_t i = 0; i < ct.capacity(); ++i) {
    const flow_entry& e = ct.entry(i);
    flow_state s = e.state.load(std::memory_order_acquire);
    // A flushed entry is gone for the packet path; it waits for its owner's sweep.
    if (s == flow_state::free || e.flushed.load(std::memory_order_relaxed)) continue;
    ++active;
    if (!f.matches(e, s)) continue;
    ++matched;
    if (out.size() < limit) out.push_back(view_of(dp, e, now));
  }
  return out;
}

std::vector<flow_view> list_flows(const dataplane& dp, size_t limit, uint64_t& active) {
  uint64_t matched = 0;
  return list_flows(dp, flow_filter{}, limit, active, matched);
}

uint32_t flush_flows(dataplane& dp, const flow_filter& f) {
  return dp.ct->flush(
      [&](const flow_entry& e) { return f.matches(e, e.state.load(std::memory_order_relaxed)); });
}

uint32_t flush_backends(dataplane& dp, std::vector<service_backend> which) {
  if (which.empty()) return 0;
  std::sort(which.begin(), which.end());
  return dp.ct->flush([&](const flow_entry& e) {
    auto listed = [&](uint32_t vip) {
      return std::binary_search(
          which.begin(), which.end(),
          service_backend{vip, e.vport, e.proto, e.backend_ip, e.backend_port});
    };
    // A NodePort flow carries the node address the client used; its frontend has vip 0.
    return listed(e.vip) || (dp.is_local(e.vip) && listed(0));
  });
}

backend_flows count_backend_flows(const dataplane& dp, const std::vector<uint32_t>& ids) {
  backend_flows out;
  for (uint32_t id : ids) out[id];
  const conntrack& ct = *dp.ct;
  for (uint32_t i = 0; i < ct.capacity(); ++i) {
    const flow_entry& e = ct.entry(i);
    if (e.state.load(std::memory_order_acquire) == flow_state::free ||
        e.flushed.load(std::memory_order_relaxed)) {
      continue;
    }
    auto it = out.find(e.service_id);
    if (it != out.end()) ++it->second[{e.backend_ip, e.backend_port}];
  }
  return out;
}

std::vector<neighbor_view> list_neighbors(const dataplane& dp) {
  std::vector<neighbor_view> out;
  const uint64_t now = rte_rdtsc();
  const double hz = static_cast<double>(dp.tsc_hz);
  const uint64_t timeout = dp.neighbors->timeout();
  dp.neighbors->for_each([&](uint64_t key, const neighbor_table::entry& e) {
    neighbor_view v{};
    v.port = static_cast<uint16_t>(key >> 32);
    v.ip = static_cast<uint32_t>(key);
    const uint64_t mac = e.mac.load(std::memory_order_acquire);
    const uint64_t at = e.confirmed.load(std::memory_order_relaxed);
    std::memcpy(v.mac.addr_bytes, &mac, RTE_ETHER_ADDR_LEN);
    if (!mac) {
      // Never answered: the age of the last request we sent.
      const uint64_t asked = e.requested.load(std::memory_order_relaxed);
      v.state = "incomplete";
      v.age_seconds = asked && now > asked ? static_cast<double>(now - asked) / hz : 0.0;
    } else {
      const uint64_t age = now > at ? now - at : 0;
      v.state = age > timeout ? "stale" : "reachable";
      v.age_seconds = static_cast<double>(age) / hz;
    }
    out.push_back(v);
  });
  std::sort(out.begin(), out.end(), [](const neighbor_view& a, const neighbor_view& b) {
    return std::pair(a.port, a.ip) < std::pair(b.port, b.ip);
  });
  return out;
}

link_view port_link(const port_info& p) {
  rte_eth_link link{};
  link_view v;
  if (rte_eth_link_get_nowait(p.port_id, &link) == 0) {
    v.up = link.link_status == RTE_ETH_LINK_UP;
    v.speed_mbps = link.link_speed == RTE_ETH_SPEED_NUM_UNKNOWN ? 0 : link.link_speed;
  }
  return v;
}

namespace {

const service_port_entry* by_id(const snapshot* snap, uint32_t id) {
  if (!snap) return nullptr;
  for (const auto* e : snap->ports()) {
    if (e->id == id) return e;
  }
  return nullptr;
}

}  // namespace

trace_result trace(const dataplane& dp, uint8_t proto, uint32_t src_ip, uint16_t src_port,
                   uint32_t dst_ip, uint16_t dst_port) {
  trace_result t;
  const snapshot* snap = dp.snap.load(std::memory_order_acquire);
  t.nat_dst_ip = dst_ip;
  t.nat_dst_port = dst_port;
  t.nat_src_ip = src_ip;
  t.nat_src_port = src_port;
  // The order of the packet path: DNS addresses first, then the connection table, then the
  // service tables (parse(), handle_transit()). What would start something passes the
  // new-flow checks first (a DNS address never has flows).
  drop refused_as;
  const bool refused = refuse_new(dp, snap, src_ip, dst_ip, src_port, dst_port, refused_as);
  auto refuse = [&] {
    t.verdict = "drop";
    t.decision = "refused";
    t.reason = std::string(
                   "refused before any lookup (a martian source, source = destination, "
                   "one of ferry's own addresses as source, or port 0): dropped as ") +
               std::string(kDropNames[static_cast<size_t>(refused_as)]);
    return t;
  };
  if (dst_port == dns::kPort && proto != kProtoSctp && dp.is_dns(dst_ip)) {
    if (refused) return refuse();
    t.match = trace_result::match_kind::dns;
    if (proto == kProtoUdp) {
      const bool upstream = snap && snap->dns_upstream;
      t.verdict = "answer";
      t.reason = upstream ? "answered by ferry's DNS responder; names outside its zones go to an "
                            "upstream resolver"
                          : "answered by ferry's DNS responder";
    } else {
      t.verdict = "pass";
      t.reason = "DNS over TCP: handed to the DNS TCP server through the TAP port";
    }
    return t;
  }
  const flow_key key{src_ip, dst_ip, src_port, dst_port, proto};
  const uint64_t hash = conntrack::hash(key);
  const bool local = dp.is_local(dst_ip);
  const flow_match hit = dp.ct->lookup(key, hash);
  if (hit.entry) {
    const flow_entry& e = *hit.entry;
    t.flow = view_of(dp, e, rte_rdtsc());
    t.reply = hit.dir == flow_dir::reply;
    t.service = by_id(snap, e.service_id);
    t.match = t.service ? (t.service->vip ? trace_result::match_kind::service
                                          : trace_result::match_kind::node_port)
                        : trace_result::match_kind::none;
    t.decision = "existing_flow";
    t.verdict = "forward";
    if (!t.reply) {
      t.nat_dst_ip = e.backend_ip;
      t.nat_dst_port = e.backend_port;
      if (e.snat_ip) {
        t.nat_src_ip = e.snat_ip;
        t.nat_src_port = e.snat_port;
      }
      t.reason = "an existing flow: translated to the backend it was given";
    } else {
      t.nat_src_ip = e.vip;
      t.nat_src_port = e.vport;
      if (e.snat_ip) {
        t.nat_dst_ip = e.client_ip;
        t.nat_dst_port = e.client_port;
      }
      t.reason = "a reply of an existing flow: translated back to the service address";
    }
    return t;
  }
  if (refused) return refuse();
  const service_port_entry* s = find_service(snap, dst_ip, proto, dst_port, local);
  if (s) {
    t.service = s;
    t.match = s->vip ? trace_result::match_kind::service : trace_result::match_kind::node_port;
    if (!s->allows(src_ip)) {
      t.decision = "source_denied";
      t.verdict = "drop";
      t.reason = "the client is outside the Service's loadBalancerSourceRanges";
      return t;
    }
    if (!s->has_active) {
      t.decision = "no_endpoints";
      t.verdict = s->drop_empty ? "drop" : "reject";
      t.reason = s->drop_empty ? "no endpoint on this node for the traffic policy Local: dropped"
                               : "the service port has no endpoints: answered with ICMP port "
                                 "unreachable";
      return t;
    }
    const backend* b = nullptr;
    uint64_t pick_hash = hash;
    if (s->affinity_timeout) {
      // Read-only: find() does not refresh the entry, unlike the packet path's remember().
      const uint64_t k = affinity_key(*s, src_ip);
      pick_hash = k;
      uint32_t ip = 0;
      uint16_t port = 0;
      if (dp.affinity->find(k, dp.affinity_now(rte_rdtsc()), affinity_ticks(*s), ip, port) &&
          (b = s->active(ip, port))) {
        t.decision = "affinity";
        t.reason = "sessionAffinity ClientIP: the backend this client had";
      }
    }
    if (!b) {
      t.maglev = true;
      t.maglev_size = static_cast<uint32_t>(s->maglev.size());
      t.maglev_slot = static_cast<uint32_t>(pick_hash % s->maglev.size());
      b = &s->pick(pick_hash);
      t.decision = "maglev";
      t.reason = s->affinity_timeout ? "a new client: Maglev on the client address (ClientIP)"
                                     : "a new flow: Maglev on the flow's 5-tuple hash";
    }
    t.chosen = b;
    t.nat_dst_ip = b->ip;
    t.nat_dst_port = b->port;
    uint32_t snat = 0;
    if (masquerade_for(dp, *s, *b, src_ip, snat)) {
      t.nat_src_ip = snat;
      t.nat_src_port = 0;
      t.src_port_chosen_later = true;
      t.reason += "; masqueraded to the node address";
    } else if (dp.ct->contains({b->ip, src_ip, b->port, src_port, proto})) {
      t.nat_src_ip = src_ip;
      t.src_port_chosen_later = true;
      t.reason += "; source port remapped: another flow from this client port has the backend";
    }
    if (!dp.route(b->ip)) {
      t.verdict = "drop";
      t.reason += "; but there is no route to the backend";
      return t;
    }
    t.verdict = "forward";
    return t;
  }
  if (local) {
    t.match = trace_result::match_kind::node_address;
    t.verdict = "drop";
    t.reason = "addressed to the node, and no NodePort or flow on this port";
    return t;
  }
  if (const auto* const* from =
          snap ? snap->backends.find(service_key(src_ip, proto, src_port)) : nullptr) {
    t.match = trace_result::match_kind::backend_reply;
    t.service = *from;
    t.verdict = "forward";
    t.nat_src_ip = (*from)->vip;
    t.nat_src_port = (*from)->port;
    t.reason = "a backend's reply without a flow entry: source translated back statelessly";
    return t;
  }
  t.verdict = "drop";
  t.reason = "not a service address, a flow or a backend's reply: not ferry's to forward";
  return t;
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
    t.port_remapped += c.port_remapped.get();
    t.syn_stateless += c.syn_stateless.get();
    t.ack_stateless += c.ack_stateless.get();
    t.arp_requests_sent += c.arp_requests_sent.get();
    t.arp_replies_sent += c.arp_replies_sent.get();
    t.icmp_echo_replies += c.icmp_echo_replies.get();
    t.icmp_unreach_sent += c.icmp_unreach_sent.get();
    t.neighbor_held += c.neighbor_held.get();
    for (size_t o = 0; o < dns::kNumOutcomes; ++o) t.dns[o] += c.dns[o].get();
    t.dns_truncated += c.dns_truncated.get();
    t.dns_slipped += c.dns_slipped.get();
    t.dns_tcp += c.dns_tcp.get();
    t.icmp_errors_translated += c.icmp_errors_translated.get();
    t.icmp_time_exceeded_sent += c.icmp_time_exceeded_sent.get();
    t.icmp_frag_needed_sent += c.icmp_frag_needed_sent.get();
    // IPv4 fragments
    t.frag_received += c.frag_received.get();
    t.frag_reassembled += c.frag_reassembled.get();
    t.frag_held += c.frag_held.get();
    t.frag_fragmented += c.frag_fragmented.get();
    t.frag_sent += c.frag_sent.get();
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
