// Per-worker counters. Each worker owns one cache-aligned worker_counters and is its only
// writer; the control thread sums all workers on demand. Counters are std::atomic only so
// that those cross-thread reads are defined: writers use relaxed load + store (plain moves
// on x86), never a read-modify-write, so the hot path has no locked instructions.
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

#include "ferry/dns.hpp"

namespace ferry {

class counter {
 public:
  void add(uint64_t n = 1) {
    v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  uint64_t get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

// Every reason a worker drops a packet. The name is what `ferryctl stats` shows.
#define FERRY_DROP_REASONS(X)                                                               \
  X(eth_truncated)           /* frame shorter than an Ethernet header */                    \
  X(eth_unsupported)         /* neither IPv4 nor ARP (IPv6, LLDP, ...) */                   \
  X(vlan_unsupported)        /* 802.1Q/802.1ad tagged, or the NIC stripped a tag */         \
  X(own_source_mac)          /* our own frame seen again */                                 \
  X(arp_malformed)           /* short or not Ethernet/IPv4 ARP */                           \
  X(arp_not_ours)            /* ARP for an address we do not own */                         \
  X(ip_truncated)            /* shorter than the IPv4 header */                             \
  X(ip_bad_version)          /* version field is not 4 */                                   \
  X(ip_bad_ihl)              /* IHL < 5 or header beyond the frame */                       \
  X(ip_bad_length)           /* total length beyond the frame or below the header */        \
  X(ip_bad_checksum)         /* IPv4 header checksum wrong (NIC's verdict or ours) */       \
  X(src_martian)             /* source 0/8, 127/8, multicast or broadcast */                \
  X(src_own_address)         /* source is ferry's own (node, DNS or service address) */     \
  X(land)                    /* source address equals the destination */                    \
  X(ip_fragment)             /* a fragment, and [fragments] enabled = false */              \
  X(frag_timeout)            /* datagram not complete within timeout_ms */                  \
  X(frag_table_full)         /* a new datagram: max_datagrams incomplete */                 \
  X(frag_overlap)            /* overlapping or repeated fragments */                        \
  X(frag_oversized)          /* fragment reaching past max_size */                          \
  X(frag_too_many)           /* datagram in more than 8 fragments */                        \
  X(frag_no_room)            /* max_held fragments already held */                          \
  X(frag_malformed)          /* empty, or MF and not a multiple of 8 */                     \
  X(ip_ttl_exceeded)         /* TTL would reach zero (time exceeded sent) */                \
  X(l4_truncated)            /* TCP/UDP/SCTP header beyond the IP payload */                \
  X(l4_bad_length)           /* TCP offset < 5, UDP length < 8, SCTP chunk length < 4 */    \
  X(l4_bad_checksum)         /* NIC flagged the L4 checksum; SCTP's CRC32c is checked */    \
  X(port_zero)               /* TCP/UDP source or destination port 0 */                     \
  X(l4_unsupported)          /* protocol other than TCP/UDP/SCTP to a service */            \
  X(icmp_to_service)         /* ICMP echo to a service address (no ping by default) */      \
  X(icmp_echo_rate_limited)  /* echo over [icmp] echo_rate: unanswered */                   \
  X(icmp_malformed)          /* ICMP error: short, bad sum, bad quoted header */            \
  X(icmp_no_flow)            /* ICMP error about no flow of ours (or about ICMP) */         \
  X(not_service)             /* no service, no flow, no reply: not ours to forward */       \
  X(local_unhandled)         /* to a node address, nothing listens there */                 \
  X(no_endpoints)            /* service port without endpoints (ICMP answered) */           \
  X(icmp_rate_limited)       /* no-endpoint answer suppressed by the rate limit */          \
  X(no_route)                /* no route to the destination */                              \
  X(frag_needed)             /* DF and over the egress MTU (frag needed sent) */            \
  X(icmp_error_rate_limited) /* time exceeded / frag needed over error_rate */              \
  X(mtu_exceeded)            /* larger than the outgoing port's MTU, not fragmented */      \
  X(frag_egress_failed)      /* too big, and fragmenting it failed (mbufs) */               \
  X(snat_failed)             /* masquerade needed, but no connection entry to be had */     \
  X(snat_exhausted)          /* masquerade needed, no free source port in the slice */      \
  X(syn_flood)               /* masqueraded new TCP flow, embryonic entries at syn_max */   \
  X(tcp_rst_out_of_window)   /* TCP RST whose sequence number is outside tcp_rst_window */  \
  X(source_denied)           /* client outside the loadBalancerSourceRanges */              \
  X(source_rate_limited)     /* new flow over [limits] new_flows_per_source */              \
  X(filter_drop)             /* a [[filter]] rule with action drop matched the payload */   \
  X(no_local_endpoints)      /* traffic policy Local and no endpoint on this node */        \
  X(neighbor_timeout)        /* next hop did not answer ARP while the packet waited */      \
  X(neighbor_hold_full)      /* too many packets already waiting for ARP */                 \
  X(dns_not_query)           /* to the DNS address: shorter than a header, or a response */ \
  X(dns_malformed)           /* to the DNS address: split mbufs (lengths checked before) */ \
  X(dns_tcp_no_server)       /* DNS over TCP, but no TCP server is running */               \
  X(dns_rate_limited)        /* UDP answer over [dns] rate_limit (not slipped): dropped */  \
  X(tx_full)                 /* device TX queue full */                                     \
  X(mbuf_exhausted)          /* could not allocate an mbuf for a reply */

enum class drop : uint8_t {
#define FERRY_DROP_ENUM(name) name,
  FERRY_DROP_REASONS(FERRY_DROP_ENUM)
#undef FERRY_DROP_ENUM
      count
};
constexpr size_t kNumDrops = static_cast<size_t>(drop::count);

constexpr std::string_view kDropNames[] = {
#define FERRY_DROP_NAME(name) #name,
    FERRY_DROP_REASONS(FERRY_DROP_NAME)
#undef FERRY_DROP_NAME
};

struct service_counters {
  counter packets, bytes, new_flows;
};

constexpr uint16_t kMaxPorts = 8;

struct alignas(64) worker_counters {
  counter drops[kNumDrops];
  counter port_rx[kMaxPorts], port_tx[kMaxPorts];
  counter flows_created;      // entries inserted (SYN or first UDP packet)
  counter flows_picked_up;    // TCP flow without entry: made from the backend's answer
  counter flows_expired;      // entries reclaimed after their timeout
  counter flows_table_full;   // new flow forwarded statelessly: no room in the table
  counter flows_foreign;      // packets matched an entry another worker made
  counter stateless_forward;  // forwarded by Maglev without an entry
  counter stateless_reply;    // un-NATed through the backend table without an entry
  counter affinity_reused;    // new flow sent to the backend its client had (ClientIP)
  counter snat_flows;         // new flows whose source was translated to a node address
  counter port_remapped;      // new flows given another source port: their reply key clashed
  counter arp_requests_sent, arp_replies_sent, icmp_echo_replies, icmp_unreach_sent;
  counter neighbor_held;           // packets parked while their next hop was resolved
  counter dns[dns::kNumOutcomes];  // DNS queries answered, by outcome
  counter dns_truncated;           // answers sent with TC (too big for UDP)
  counter dns_slipped;             // over [dns] rate_limit: sent with TC and no records
  counter dns_tcp;                 // DNS over TCP packets handed to the TCP server
  // TCP abuse: a SYN let through without an entry (embryonic entries at syn_max), and a
  // mid-stream TCP packet without an entry forwarded by Maglev (no entry made for it).
  counter syn_stateless, ack_stateless;
  service_counters* services = nullptr;  // max_service_ports entries, indexed by id
  // TSC cycles of the poll loop, and those of its iterations that received packets (the
  // loop's one rdtsc per iteration, never per packet): busy_cycles / poll_cycles is the load.
  counter busy_cycles, poll_cycles;
  // Payload signature filter: hits per rule slot (filter_max_rules entries).
  counter* filter_hits = nullptr;
  // ICMP errors about NATed flows translated and sent on; errors ferry originates.
  counter icmp_errors_translated, icmp_time_exceeded_sent, icmp_frag_needed_sent;
  // IPv4 fragments: reassembly in, fragmentation out.
  counter frag_received;     // fragments taken in for reassembly
  counter frag_reassembled;  // datagrams completed and sent on through the packet path
  counter frag_held;         // a gauge: fragments the reassembly table holds now
  counter frag_fragmented;   // datagrams larger than the egress MTU sent as fragments
  counter frag_sent;         // fragments made by that

  void count(drop reason) { drops[static_cast<size_t>(reason)].add(); }
};

}  // namespace ferry
