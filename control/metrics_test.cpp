#include "metrics.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

namespace ferry::control::metrics {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

// ---- histogram and change latency -------------------------------------------------------

TEST(histogram, counts_each_observation_in_its_bucket) {
  histogram h;
  h.observe(0.00005);  // below the first bound
  h.observe(0.0001);   // on a bound: le is "less or equal"
  h.observe(0.003);
  h.observe(99);  // above the last bound: only +Inf (count)
  EXPECT_EQ(h.count, 4u);
  EXPECT_DOUBLE_EQ(h.sum, 0.00005 + 0.0001 + 0.003 + 99);
  EXPECT_EQ(h.cumulative(0), 2u);                              // le 0.0001
  EXPECT_EQ(h.cumulative(4), 2u);                              // le 0.0025
  EXPECT_EQ(h.cumulative(5), 3u);                              // le 0.005
  EXPECT_EQ(h.cumulative(histogram::kBounds.size() - 1), 3u);  // le 10
}

TEST(histogram, negative_or_nan_counts_as_zero) {
  histogram h;
  h.observe(-1);
  h.observe(std::nan(""));
  EXPECT_EQ(h.count, 2u);
  EXPECT_EQ(h.cumulative(0), 2u);
  EXPECT_EQ(h.sum, 0);
}

TEST(change_latency, observes_the_first_publish_after_begin_only) {
  change_latency l;
  const auto t0 = change_latency::clock::now();
  l.published(t0);  // a publish nobody began (a timer, say): not observed
  EXPECT_EQ(l.of(change_source::socket).count, 0u);

  l.begin(change_source::socket, t0);
  l.published(t0 + 2ms);
  l.published(t0 + 50ms);  // a second snapshot of the same operation
  l.end();
  EXPECT_EQ(l.of(change_source::socket).count, 1u);
  EXPECT_NEAR(l.of(change_source::socket).sum, 0.002, 1e-9);

  l.begin(change_source::kubernetes, t0);
  l.end();  // nothing changed: nothing published
  l.published(t0 + 1s);
  EXPECT_EQ(l.of(change_source::kubernetes).count, 0u);

  l.begin(change_source::file, t0);
  l.published(t0 + 20ms);
  EXPECT_EQ(l.of(change_source::file).count, 1u);
  EXPECT_EQ(l.of(change_source::socket).count, 1u);
}

// ---- rendering ----------------------------------------------------------------------------

TEST(escape_label, escapes_backslash_quote_and_newline) {
  EXPECT_EQ(escape_label("plain/name:80"), "plain/name:80");
  EXPECT_EQ(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
}

constexpr const char* kStats = R"json({
  "ports": [
    {"name": "eth0", "rx_packets": 10, "tx_packets": 9, "rx_bytes": 1000, "tx_bytes": 900,
     "rx_missed": 1, "rx_errors": 0, "rx_by_workers": 10, "tx_by_workers": 9, "tx_dropped": 2},
    {"name": "eth1", "rx_packets": 5, "tx_packets": 6, "rx_bytes": 500, "tx_bytes": 600,
     "rx_missed": 0, "rx_errors": 0, "rx_by_workers": 5, "tx_by_workers": 6, "tx_dropped": 0}
  ],
  "drops": {"tx_full": 0, "no_endpoints": 3},
  "flows": {"active": 2, "created": 5, "picked_up": 0, "expired": 3, "table_full": 0,
            "stateless": 1, "stateless_replies": 0, "snat": 0, "port_remapped": 2, "affinity_reused": 0,
            "foreign_hits": 0, "capacity": 1024, "memory_bytes": 98304,
            "embryonic": 1, "syn_max": 128, "syn_stateless": 4, "ack_stateless": 6},
  "l2": {"arp_requests_sent": 1, "arp_replies_sent": 2, "icmp_echo_replies": 0,
         "icmp_unreachable_sent": 3, "neighbor_held": 0, "icmp_errors_translated": 4,
         "icmp_time_exceeded_sent": 5, "icmp_frag_needed_sent": 6},
  "services": [
    {"name": "default/my-\"svc\":http", "vip": "198.19.0.10", "port": 80, "protocol": "TCP",
     "packets": 7, "bytes": 700, "new_flows": 2}
  ],
  "workers": [
    {"worker": 0, "lcore": 1, "rx_packets": 10, "foreign_flow_hits": 0,
     "busy_seconds": 0.25, "poll_seconds": 2},
    {"worker": 1, "lcore": 2, "rx_packets": 5, "foreign_flow_hits": 1}
  ],
  "dns": {"noerror": 4, "nxdomain": 1, "truncated": 0, "tcp_packets": 6, "slipped": 2,
          "tcp": {"connections": 1, "refused_connections": 0, "evicted": 2, "idle_closed": 0,
                  "message_timeouts": 3, "memory_limited": 4, "noerror": 1, "nxdomain": 0}},
  "sources": {"kubernetes": {"server": "https://198.18.0.1:6443", "credentials": "kubeconfig",
      "refused": 0,
      "resources": [{"kind": "Service", "synced": true, "connected": false,
                     "resource_version": "12", "last_event_unix_ms": 1700000001500,
                     "events": 4, "bookmarks": 1, "relists": 1, "errors": 2, "skipped": 0,
                     "last_error": "x"}]}},
  "snapshot": {"generation": 7, "published_unix_ns": 1700000002500000000}
})json";

// Written by hand from kStats: every sample of a family under one HELP/TYPE, label values
// escaped, counters as integers, timestamps in seconds.
constexpr const char* kExpected = R"(# HELP ferry_build_info The ferryd version; always 1.
# TYPE ferry_build_info gauge
ferry_build_info{version="0.1.0"} 1
# HELP process_start_time_seconds Start time of the process (Unix seconds).
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1700000000.5
# HELP ferry_snapshot_generation Generation of the published service snapshot.
# TYPE ferry_snapshot_generation gauge
ferry_snapshot_generation 7
# HELP ferry_snapshot_published_timestamp_seconds When the current snapshot was published (Unix seconds).
# TYPE ferry_snapshot_published_timestamp_seconds gauge
ferry_snapshot_published_timestamp_seconds 1700000002.5
# HELP ferry_port_rx_packets_total Packets the port received.
# TYPE ferry_port_rx_packets_total counter
ferry_port_rx_packets_total{port="eth0"} 10
ferry_port_rx_packets_total{port="eth1"} 5
# HELP ferry_port_tx_packets_total Packets the port sent.
# TYPE ferry_port_tx_packets_total counter
ferry_port_tx_packets_total{port="eth0"} 9
ferry_port_tx_packets_total{port="eth1"} 6
# HELP ferry_port_rx_bytes_total Bytes the port received.
# TYPE ferry_port_rx_bytes_total counter
ferry_port_rx_bytes_total{port="eth0"} 1000
ferry_port_rx_bytes_total{port="eth1"} 500
# HELP ferry_port_tx_bytes_total Bytes the port sent.
# TYPE ferry_port_tx_bytes_total counter
ferry_port_tx_bytes_total{port="eth0"} 900
ferry_port_tx_bytes_total{port="eth1"} 600
# HELP ferry_port_rx_missed_total Packets the port dropped because no receive descriptor was free.
# TYPE ferry_port_rx_missed_total counter
ferry_port_rx_missed_total{port="eth0"} 1
ferry_port_rx_missed_total{port="eth1"} 0
# HELP ferry_port_rx_errors_total Erroneous packets received.
# TYPE ferry_port_rx_errors_total counter
ferry_port_rx_errors_total{port="eth0"} 0
ferry_port_rx_errors_total{port="eth1"} 0
# HELP ferry_port_tx_dropped_total Packets the port failed to send.
# TYPE ferry_port_tx_dropped_total counter
ferry_port_tx_dropped_total{port="eth0"} 2
ferry_port_tx_dropped_total{port="eth1"} 0
# HELP ferry_port_worker_rx_packets_total Packets the workers took from the port's queues.
# TYPE ferry_port_worker_rx_packets_total counter
ferry_port_worker_rx_packets_total{port="eth0"} 10
ferry_port_worker_rx_packets_total{port="eth1"} 5
# HELP ferry_port_worker_tx_packets_total Packets the workers handed to the port's queues.
# TYPE ferry_port_worker_tx_packets_total counter
ferry_port_worker_tx_packets_total{port="eth0"} 9
ferry_port_worker_tx_packets_total{port="eth1"} 6
# HELP ferry_worker_rx_packets_total Packets the worker received.
# TYPE ferry_worker_rx_packets_total counter
ferry_worker_rx_packets_total{worker="0",lcore="1"} 10
ferry_worker_rx_packets_total{worker="1",lcore="2"} 5
# HELP ferry_worker_foreign_flow_hits_total Packets that matched a flow entry another worker made.
# TYPE ferry_worker_foreign_flow_hits_total counter
ferry_worker_foreign_flow_hits_total{worker="0",lcore="1"} 0
ferry_worker_foreign_flow_hits_total{worker="1",lcore="2"} 1
# HELP ferry_worker_busy_seconds_total Time the worker's poll loop spent in iterations that found packets.
# TYPE ferry_worker_busy_seconds_total counter
ferry_worker_busy_seconds_total{worker="0",lcore="1"} 0.25
# HELP ferry_worker_poll_seconds_total Time the worker's poll loop ran.
# TYPE ferry_worker_poll_seconds_total counter
ferry_worker_poll_seconds_total{worker="0",lcore="1"} 2
# HELP ferry_drops_total Packets dropped, by reason.
# TYPE ferry_drops_total counter
ferry_drops_total{reason="no_endpoints"} 3
ferry_drops_total{reason="tx_full"} 0
# HELP ferry_conntrack_flows Flow entries in the connection table.
# TYPE ferry_conntrack_flows gauge
ferry_conntrack_flows 2
# HELP ferry_conntrack_capacity Flow entries the table can hold.
# TYPE ferry_conntrack_capacity gauge
ferry_conntrack_capacity 1024
# HELP ferry_conntrack_memory_bytes Memory of the connection table.
# TYPE ferry_conntrack_memory_bytes gauge
ferry_conntrack_memory_bytes 98304
# HELP ferry_conntrack_created_total Flow entries made for new flows (SYN or first UDP packet).
# TYPE ferry_conntrack_created_total counter
ferry_conntrack_created_total 5
# HELP ferry_conntrack_picked_up_total Flow entries made for TCP flows found mid-stream, from the backend's answer.
# TYPE ferry_conntrack_picked_up_total counter
ferry_conntrack_picked_up_total 0
# HELP ferry_conntrack_expired_total Flow entries reclaimed after their timeout.
# TYPE ferry_conntrack_expired_total counter
ferry_conntrack_expired_total 3
# HELP ferry_conntrack_table_full_total New flows forwarded without an entry because the table was full.
# TYPE ferry_conntrack_table_full_total counter
ferry_conntrack_table_full_total 0
# HELP ferry_conntrack_stateless_forwards_total Packets forwarded by Maglev without a flow entry.
# TYPE ferry_conntrack_stateless_forwards_total counter
ferry_conntrack_stateless_forwards_total 1
# HELP ferry_conntrack_stateless_replies_total Replies un-NATed through the backend table without a flow entry.
# TYPE ferry_conntrack_stateless_replies_total counter
ferry_conntrack_stateless_replies_total 0
# HELP ferry_conntrack_snat_flows_total New flows whose source was translated to a node address.
# TYPE ferry_conntrack_snat_flows_total counter
ferry_conntrack_snat_flows_total 0
# HELP ferry_conntrack_port_remapped_total New flows given another source port: the client reused its port for another frontend of the same backend.
# TYPE ferry_conntrack_port_remapped_total counter
ferry_conntrack_port_remapped_total 2
# HELP ferry_conntrack_affinity_reused_total New flows sent to the backend their client had (sessionAffinity ClientIP).
# TYPE ferry_conntrack_affinity_reused_total counter
ferry_conntrack_affinity_reused_total 0
# HELP ferry_conntrack_foreign_hits_total Packets that matched a flow entry another worker made.
# TYPE ferry_conntrack_foreign_hits_total counter
ferry_conntrack_foreign_hits_total 0
# HELP ferry_conntrack_embryonic_flows Flow entries in SYN_SENT or SYN_RECV (capped at syn_max).
# TYPE ferry_conntrack_embryonic_flows gauge
ferry_conntrack_embryonic_flows 1
# HELP ferry_conntrack_syn_max Cap on SYN_SENT and SYN_RECV entries, whole table.
# TYPE ferry_conntrack_syn_max gauge
ferry_conntrack_syn_max 128
# HELP ferry_conntrack_syn_stateless_total SYNs forwarded by Maglev without an entry: embryonic entries at syn_max.
# TYPE ferry_conntrack_syn_stateless_total counter
ferry_conntrack_syn_stateless_total 4
# HELP ferry_conntrack_ack_stateless_total Mid-stream TCP packets without an entry forwarded by Maglev (no entry made).
# TYPE ferry_conntrack_ack_stateless_total counter
ferry_conntrack_ack_stateless_total 6
# HELP ferry_arp_requests_sent_total ARP requests sent.
# TYPE ferry_arp_requests_sent_total counter
ferry_arp_requests_sent_total 1
# HELP ferry_arp_replies_sent_total ARP replies sent.
# TYPE ferry_arp_replies_sent_total counter
ferry_arp_replies_sent_total 2
# HELP ferry_icmp_echo_replies_total ICMP echo replies sent for node addresses.
# TYPE ferry_icmp_echo_replies_total counter
ferry_icmp_echo_replies_total 0
# HELP ferry_icmp_unreachable_sent_total ICMP port unreachable answers for service ports without endpoints.
# TYPE ferry_icmp_unreachable_sent_total counter
ferry_icmp_unreachable_sent_total 3
# HELP ferry_icmp_errors_translated_total ICMP errors about NATed flows translated back and sent on.
# TYPE ferry_icmp_errors_translated_total counter
ferry_icmp_errors_translated_total 4
# HELP ferry_icmp_time_exceeded_sent_total ICMP time exceeded sent for packets forwarded with TTL 1 or less.
# TYPE ferry_icmp_time_exceeded_sent_total counter
ferry_icmp_time_exceeded_sent_total 5
# HELP ferry_icmp_frag_needed_sent_total ICMP fragmentation needed sent for DF packets over the egress MTU.
# TYPE ferry_icmp_frag_needed_sent_total counter
ferry_icmp_frag_needed_sent_total 6
# HELP ferry_neighbor_held_packets_total Packets parked while their next hop's MAC address was resolved.
# TYPE ferry_neighbor_held_packets_total counter
ferry_neighbor_held_packets_total 0
# HELP ferry_service_packets_total Packets sent to the service port's backends.
# TYPE ferry_service_packets_total counter
ferry_service_packets_total{service="default/my-\"svc\":http",vip="198.19.0.10",port="80",protocol="TCP"} 7
# HELP ferry_service_bytes_total Bytes sent to the service port's backends.
# TYPE ferry_service_bytes_total counter
ferry_service_bytes_total{service="default/my-\"svc\":http",vip="198.19.0.10",port="80",protocol="TCP"} 700
# HELP ferry_service_new_flows_total New flows balanced over the service port's backends.
# TYPE ferry_service_new_flows_total counter
ferry_service_new_flows_total{service="default/my-\"svc\":http",vip="198.19.0.10",port="80",protocol="TCP"} 2
# HELP ferry_dns_queries_total DNS queries answered, by outcome.
# TYPE ferry_dns_queries_total counter
ferry_dns_queries_total{transport="udp",outcome="noerror"} 4
ferry_dns_queries_total{transport="udp",outcome="nxdomain"} 1
ferry_dns_queries_total{transport="tcp",outcome="noerror"} 1
ferry_dns_queries_total{transport="tcp",outcome="nxdomain"} 0
# HELP ferry_dns_truncated_total DNS answers sent over UDP with TC set (too big).
# TYPE ferry_dns_truncated_total counter
ferry_dns_truncated_total 0
# HELP ferry_dns_slipped_total DNS answers over [dns] rate_limit sent with TC set and no records (slip).
# TYPE ferry_dns_slipped_total counter
ferry_dns_slipped_total 2
# HELP ferry_dns_tcp_packets_total DNS over TCP packets the workers handed to the TCP server.
# TYPE ferry_dns_tcp_packets_total counter
ferry_dns_tcp_packets_total 6
# HELP ferry_dns_tcp_connections_total DNS over TCP connections.
# TYPE ferry_dns_tcp_connections_total counter
ferry_dns_tcp_connections_total 1
# HELP ferry_dns_tcp_refused_connections_total DNS over TCP connections refused (their source had tcp_connections_per_source open).
# TYPE ferry_dns_tcp_refused_connections_total counter
ferry_dns_tcp_refused_connections_total 0
# HELP ferry_dns_tcp_evicted_total DNS over TCP connections closed to admit a new one (tcp_connections open).
# TYPE ferry_dns_tcp_evicted_total counter
ferry_dns_tcp_evicted_total 2
# HELP ferry_dns_tcp_idle_closed_total DNS over TCP connections closed for idleness.
# TYPE ferry_dns_tcp_idle_closed_total counter
ferry_dns_tcp_idle_closed_total 0
# HELP ferry_dns_tcp_message_timeouts_total DNS over TCP connections closed: a query took longer than tcp_message_timeout.
# TYPE ferry_dns_tcp_message_timeouts_total counter
ferry_dns_tcp_message_timeouts_total 3
# HELP ferry_dns_tcp_memory_limited_total DNS over TCP queries that waited, or answers dropped, at tcp_memory.
# TYPE ferry_dns_tcp_memory_limited_total counter
ferry_dns_tcp_memory_limited_total 4
# HELP ferry_kubernetes_events_total Watch events received.
# TYPE ferry_kubernetes_events_total counter
ferry_kubernetes_events_total{kind="Service"} 4
# HELP ferry_kubernetes_bookmarks_total Watch bookmarks received.
# TYPE ferry_kubernetes_bookmarks_total counter
ferry_kubernetes_bookmarks_total{kind="Service"} 1
# HELP ferry_kubernetes_relists_total Lists of the whole resource.
# TYPE ferry_kubernetes_relists_total counter
ferry_kubernetes_relists_total{kind="Service"} 1
# HELP ferry_kubernetes_errors_total Failed lists or watches.
# TYPE ferry_kubernetes_errors_total counter
ferry_kubernetes_errors_total{kind="Service"} 2
# HELP ferry_kubernetes_skipped_total Objects that could not be decoded.
# TYPE ferry_kubernetes_skipped_total counter
ferry_kubernetes_skipped_total{kind="Service"} 0
# HELP ferry_kubernetes_synced 1 once the resource's first list is applied.
# TYPE ferry_kubernetes_synced gauge
ferry_kubernetes_synced{kind="Service"} 1
# HELP ferry_kubernetes_connected 1 while a watch is open.
# TYPE ferry_kubernetes_connected gauge
ferry_kubernetes_connected{kind="Service"} 0
# HELP ferry_kubernetes_last_event_timestamp_seconds When the resource's last watch event arrived (Unix seconds).
# TYPE ferry_kubernetes_last_event_timestamp_seconds gauge
ferry_kubernetes_last_event_timestamp_seconds{kind="Service"} 1700000001.5
# HELP ferry_kubernetes_refused_total API objects ferry refused (a conflict with a local object, say).
# TYPE ferry_kubernetes_refused_total counter
ferry_kubernetes_refused_total 0
# HELP ferry_change_to_dataplane_seconds Time from the control thread having a change to the publish of the snapshot with it.
# TYPE ferry_change_to_dataplane_seconds histogram
ferry_change_to_dataplane_seconds_bucket{source="socket",le="0.0001"} 0
ferry_change_to_dataplane_seconds_bucket{source="socket",le="0.00025"} 0
ferry_change_to_dataplane_seconds_bucket{source="socket",le="0.0005"} 0
ferry_change_to_dataplane_seconds_bucket{source="socket",le="0.001"} 0
ferry_change_to_dataplane_seconds_bucket{source="socket",le="0.0025"} 0
ferry_change_to_dataplane_seconds_bucket{source="socket",le="0.005"} 1
ferry_change_to_dataplane_seconds_bucket{source="socket",le="0.01"} 1
ferry_change_to_dataplane_seconds_bucket{source="socket",le="0.025"} 1
ferry_change_to_dataplane_seconds_bucket{source="socket",le="0.05"} 1
ferry_change_to_dataplane_seconds_bucket{source="socket",le="0.1"} 1
ferry_change_to_dataplane_seconds_bucket{source="socket",le="0.25"} 1
ferry_change_to_dataplane_seconds_bucket{source="socket",le="0.5"} 1
ferry_change_to_dataplane_seconds_bucket{source="socket",le="1"} 1
ferry_change_to_dataplane_seconds_bucket{source="socket",le="2.5"} 1
ferry_change_to_dataplane_seconds_bucket{source="socket",le="5"} 1
ferry_change_to_dataplane_seconds_bucket{source="socket",le="10"} 1
ferry_change_to_dataplane_seconds_bucket{source="socket",le="+Inf"} 1
ferry_change_to_dataplane_seconds_sum{source="socket"} 0.003
ferry_change_to_dataplane_seconds_count{source="socket"} 1
ferry_change_to_dataplane_seconds_bucket{source="file",le="0.0001"} 0
ferry_change_to_dataplane_seconds_bucket{source="file",le="0.00025"} 0
ferry_change_to_dataplane_seconds_bucket{source="file",le="0.0005"} 0
ferry_change_to_dataplane_seconds_bucket{source="file",le="0.001"} 0
ferry_change_to_dataplane_seconds_bucket{source="file",le="0.0025"} 0
ferry_change_to_dataplane_seconds_bucket{source="file",le="0.005"} 0
ferry_change_to_dataplane_seconds_bucket{source="file",le="0.01"} 0
ferry_change_to_dataplane_seconds_bucket{source="file",le="0.025"} 0
ferry_change_to_dataplane_seconds_bucket{source="file",le="0.05"} 0
ferry_change_to_dataplane_seconds_bucket{source="file",le="0.1"} 0
ferry_change_to_dataplane_seconds_bucket{source="file",le="0.25"} 0
ferry_change_to_dataplane_seconds_bucket{source="file",le="0.5"} 0
ferry_change_to_dataplane_seconds_bucket{source="file",le="1"} 0
ferry_change_to_dataplane_seconds_bucket{source="file",le="2.5"} 0
ferry_change_to_dataplane_seconds_bucket{source="file",le="5"} 0
ferry_change_to_dataplane_seconds_bucket{source="file",le="10"} 0
ferry_change_to_dataplane_seconds_bucket{source="file",le="+Inf"} 0
ferry_change_to_dataplane_seconds_sum{source="file"} 0
ferry_change_to_dataplane_seconds_count{source="file"} 0
ferry_change_to_dataplane_seconds_bucket{source="kubernetes",le="0.0001"} 0
ferry_change_to_dataplane_seconds_bucket{source="kubernetes",le="0.00025"} 0
ferry_change_to_dataplane_seconds_bucket{source="kubernetes",le="0.0005"} 0
ferry_change_to_dataplane_seconds_bucket{source="kubernetes",le="0.001"} 0
ferry_change_to_dataplane_seconds_bucket{source="kubernetes",le="0.0025"} 0
ferry_change_to_dataplane_seconds_bucket{source="kubernetes",le="0.005"} 0
ferry_change_to_dataplane_seconds_bucket{source="kubernetes",le="0.01"} 0
ferry_change_to_dataplane_seconds_bucket{source="kubernetes",le="0.025"} 0
ferry_change_to_dataplane_seconds_bucket{source="kubernetes",le="0.05"} 0
ferry_change_to_dataplane_seconds_bucket{source="kubernetes",le="0.1"} 0
ferry_change_to_dataplane_seconds_bucket{source="kubernetes",le="0.25"} 0
ferry_change_to_dataplane_seconds_bucket{source="kubernetes",le="0.5"} 0
ferry_change_to_dataplane_seconds_bucket{source="kubernetes",le="1"} 0
ferry_change_to_dataplane_seconds_bucket{source="kubernetes",le="2.5"} 0
ferry_change_to_dataplane_seconds_bucket{source="kubernetes",le="5"} 0
ferry_change_to_dataplane_seconds_bucket{source="kubernetes",le="10"} 0
ferry_change_to_dataplane_seconds_bucket{source="kubernetes",le="+Inf"} 0
ferry_change_to_dataplane_seconds_sum{source="kubernetes"} 0
ferry_change_to_dataplane_seconds_count{source="kubernetes"} 0
)";

TEST(render, matches_the_golden_text) {
  change_latency l;
  const auto t0 = change_latency::clock::now();
  l.begin(change_source::socket, t0);
  l.published(t0 + 3ms);
  EXPECT_EQ(render(json::parse(kStats), l, {"0.1.0", 1700000000.5}), kExpected);
}

TEST(render, leaves_out_what_the_stats_lack) {
  // DNS off, no Kubernetes source, an older stats op: no such families, and no throw.
  std::string text = render(json::parse(R"({"ports": [{"name": "eth0", "rx_packets": 1}],
                                             "flows": {"active": "n/a"}, "workers": 3})"),
                            change_latency{}, {"v", 0});
  EXPECT_NE(text.find("ferry_port_rx_packets_total{port=\"eth0\"} 1\n"), std::string::npos);
  EXPECT_EQ(text.find("ferry_port_tx_packets_total"), std::string::npos);
  EXPECT_EQ(text.find("ferry_dns"), std::string::npos);
  EXPECT_EQ(text.find("ferry_kubernetes"), std::string::npos);
  EXPECT_EQ(text.find("ferry_conntrack_flows"), std::string::npos);
  // The histogram is always there, so a scrape sees every source from the start.
  EXPECT_NE(text.find("ferry_change_to_dataplane_seconds_count{source=\"kubernetes\"} 0\n"),
            std::string::npos);
  EXPECT_NO_THROW(render(json(), change_latency{}, {"v", 0}));
  EXPECT_NO_THROW(render(json::array({1, 2}), change_latency{}, {"v", 0}));
}

// Payload signature filter: one counter per rule.
TEST(render, filter_hits_per_rule) {
  std::string text = render(json::parse(R"({"filters": [
      {"name": "evil", "action": "drop", "hits": 3, "pattern": "/evil"},
      {"name": "php", "action": "count", "hits": 12045}]})"),
                            change_latency{}, {"v", 0});
  EXPECT_NE(text.find("# TYPE ferry_filter_hits_total counter\n"
                      "ferry_filter_hits_total{rule=\"evil\",action=\"drop\"} 3\n"
                      "ferry_filter_hits_total{rule=\"php\",action=\"count\"} 12045\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(render(json::parse(R"({"filters": []})"), change_latency{}, {"v", 0})
                .find("ferry_filter_hits_total"),
            std::string::npos);
}

// IPv4 fragments: the stats op's "fragments" object.
TEST(render, fragments_counters) {
  const std::string text = render(json::parse(R"({"fragments": {"received": 6, "reassembled": 2,
      "held": 1, "fragmented": 2, "fragments_sent": 6, "max_held": 1024}})"),
                                  change_latency{}, {"v", 0});
  for (const char* line :
       {"# TYPE ferry_fragments_received_total counter\nferry_fragments_received_total 6\n",
        "ferry_fragments_reassembled_total 2\n",
        "# TYPE ferry_fragments_held gauge\nferry_fragments_held 1\n",
        "ferry_fragments_fragmented_total 2\n", "ferry_fragments_sent_total 6\n"}) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\n" << text;
  }
}

// ---- listen address -----------------------------------------------------------------------

TEST(parse_listen_address, reads_ipv4_and_bracketed_ipv6) {
  auto a = parse_listen_address("127.0.0.1:9100");
  ASSERT_TRUE(a.ok()) << a.message();
  EXPECT_EQ(a->addr.ss_family, AF_INET);
  const auto* v4 = reinterpret_cast<const sockaddr_in*>(&a->addr);
  EXPECT_EQ(ntohs(v4->sin_port), 9100);
  EXPECT_EQ(ntohl(v4->sin_addr.s_addr), 0x7f000001u);
  auto b = parse_listen_address("[::1]:65535");
  ASSERT_TRUE(b.ok()) << b.message();
  EXPECT_EQ(b->addr.ss_family, AF_INET6);
  EXPECT_EQ(ntohs(reinterpret_cast<const sockaddr_in6*>(&b->addr)->sin6_port), 65535);
  for (const char* bad : {"", ":9100", "127.0.0.1", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:-1",
                          "127.0.0.1:9100x", "1.2.3:9100", "::1:9100", "[::1]9100", "[x]:1"}) {
    EXPECT_FALSE(parse_listen_address(bad).ok()) << bad;
  }
}

// ---- HTTP answers ---------------------------------------------------------------------------

TEST(http_answer, whole_responses) {
  auto body = [] { return std::string("m 1\n"); };
  EXPECT_EQ(http_answer("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", body),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            "Content-Length: 4\r\nConnection: close\r\n\r\nm 1\n");
  EXPECT_EQ(http_answer("PUT / HTTP/1.1\n\n", body),
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 19\r\nAllow: GET, HEAD\r\nConnection: close\r\n\r\n"
            "method not allowed\n");
  EXPECT_EQ(http_answer("HEAD /x HTTP/1.0\r\n\r\n", body),
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 10\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(http_answer("GET  /metrics HTTP/1.1\r\n\r\n", body).substr(0, 24),
            "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(http_answer("GET /metrics FTP/1.1\r\n\r\n", body).substr(0, 24),
            "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(http_answer("", body).substr(0, 24), "HTTP/1.1 400 Bad Request");
  // A failing render is a 500 with its reason, not a dropped connection.
  EXPECT_EQ(http_answer("GET /metrics HTTP/1.1\r\n\r\n",
                        []() -> std::string { throw std::runtime_error("no stats"); }),
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 9\r\nConnection: close\r\n\r\nno stats\n");
}

// ---- HTTP server --------------------------------------------------------------------------

// A port nobody listens on right now (the kernel's pick for a socket closed at once).
uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

class http_test : public ::testing::Test {
 protected:
  void SetUp() override {
    address_ = "127.0.0.1:" + std::to_string(free_port());
    auto s = http_server::listen(address_, 300ms);
    ASSERT_TRUE(s.ok()) << s.message();
    server_ = std::move(*s);
  }

  int connect_client() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    auto a = parse_listen_address(address_);
    int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&a->addr), a->len);
    EXPECT_TRUE(rc == 0 || errno == EINPROGRESS);
    return fd;
  }

  // Sends `request` in the given pieces and serves until the server closes; returns all the
  // client read. The server and the client share this thread, as they would not in ferryd,
  // which is the point: nothing here may block.
  std::string exchange(const std::vector<std::string>& pieces) {
    int fd = connect_client();
    std::string got;
    for (const auto& p : pieces) {
      serve();
      ::send(fd, p.data(), p.size(), MSG_NOSIGNAL);
      serve();
    }
    const auto deadline = std::chrono::steady_clock::now() + 2s;
    char buf[65536];
    while (std::chrono::steady_clock::now() < deadline) {
      serve();
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n == 0) break;
      if (n > 0) got.append(buf, static_cast<size_t>(n));
      if (n < 0) std::this_thread::sleep_for(1ms);
    }
    ::close(fd);
    for (int i = 0; i < 5; ++i) serve();  // the server sees the close
    return got;
  }

  void serve() {
    server_->serve_ready([&] {
      ++scrapes_;
      return body_;
    });
  }

  std::string address_;
  std::unique_ptr<http_server> server_;
  std::string body_ = "ferry_up 1\n";
  int scrapes_ = 0;
};

bool starts_with(const std::string& s, std::string_view prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

TEST_F(http_test, get_metrics_answers_the_exposition) {
  std::string r = exchange({"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"});
  EXPECT_TRUE(starts_with(r, "HTTP/1.1 200 OK\r\n")) << r;
  EXPECT_NE(r.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            std::string::npos);
  EXPECT_NE(r.find("Content-Length: 11\r\n"), std::string::npos) << r;
  EXPECT_NE(r.find("Connection: close\r\n"), std::string::npos);
  EXPECT_TRUE(r.ends_with("\r\n\r\nferry_up 1\n")) << r;
  EXPECT_EQ(scrapes_, 1);
  EXPECT_EQ(server_->connections(), 0u);
}

TEST_F(http_test, request_in_pieces_and_query_string) {
  std::string r = exchange({"GET /metr", "ics?x=1 HTTP/1.0\r\n", "Host: x\r\n\r\n"});
  EXPECT_TRUE(starts_with(r, "HTTP/1.1 200 OK\r\n")) << r;
  EXPECT_TRUE(r.ends_with("ferry_up 1\n")) << r;
}

TEST_F(http_test, head_has_no_body) {
  std::string r = exchange({"HEAD /metrics HTTP/1.1\r\n\r\n"});
  EXPECT_TRUE(starts_with(r, "HTTP/1.1 200 OK\r\n")) << r;
  EXPECT_NE(r.find("Content-Length: 11\r\n"), std::string::npos) << r;
  EXPECT_TRUE(r.ends_with("\r\n\r\n")) << r;
}

TEST_F(http_test, other_paths_and_methods) {
  EXPECT_TRUE(starts_with(exchange({"GET /healthz HTTP/1.1\r\n\r\n"}), "HTTP/1.1 200 OK\r\n"));
  EXPECT_TRUE(exchange({"GET /healthz HTTP/1.1\r\n\r\n"}).ends_with("\r\n\r\nok\n"));
  std::string root = exchange({"GET / HTTP/1.1\r\n\r\n"});
  EXPECT_TRUE(starts_with(root, "HTTP/1.1 200 OK\r\n")) << root;
  EXPECT_NE(root.find("href=\"/metrics\""), std::string::npos);
  EXPECT_TRUE(starts_with(exchange({"GET /metricsx HTTP/1.1\r\n\r\n"}), "HTTP/1.1 404 Not Found"));
  std::string post = exchange({"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"});
  EXPECT_TRUE(starts_with(post, "HTTP/1.1 405 Method Not Allowed\r\n")) << post;
  EXPECT_NE(post.find("Allow: GET, HEAD\r\n"), std::string::npos);
  EXPECT_TRUE(starts_with(exchange({"garbage\r\n\r\n"}), "HTTP/1.1 400 Bad Request"));
  EXPECT_TRUE(starts_with(exchange({"GET /metrics\r\n\r\n"}), "HTTP/1.1 400 Bad Request"));
  EXPECT_EQ(scrapes_, 0);  // none of these rendered the metrics
}

TEST_F(http_test, oversized_request_is_refused) {
  std::string big = "GET /metrics HTTP/1.1\r\nX-Pad: " + std::string(10000, 'a') + "\r\n\r\n";
  std::string r = exchange({big});
  EXPECT_TRUE(starts_with(r, "HTTP/1.1 431 ")) << r.substr(0, 100);
  EXPECT_EQ(scrapes_, 0);
}

TEST_F(http_test, a_silent_client_neither_blocks_nor_stays) {
  int idle = connect_client();
  int partial = connect_client();
  ::send(partial, "GET /met", 8, MSG_NOSIGNAL);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 10; ++i) serve();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 100ms);  // serve_ready never waits
  EXPECT_EQ(server_->connections(), 2u);
  // Meanwhile another client is answered.
  EXPECT_TRUE(starts_with(exchange({"GET /healthz HTTP/1.1\r\n\r\n"}), "HTTP/1.1 200 OK"));
  std::this_thread::sleep_for(350ms);  // past the 300 ms the fixture allows
  serve();
  EXPECT_EQ(server_->connections(), 0u);
  char c;
  EXPECT_EQ(::recv(partial, &c, 1, 0), 0);  // closed without an answer
  ::close(idle);
  ::close(partial);
}

TEST_F(http_test, out_of_descriptors_pauses_accepting_instead_of_spinning) {
  rlimit saved;
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  const int next = ::dup(0);  // descriptors are handed out lowest first
  ::close(next);
  // Room for the client's socket and nothing more: the server's accept gets EMFILE.
  rlimit tight = saved;
  tight.rlim_cur = static_cast<rlim_t>(next) + 1;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &tight), 0);
  int client = connect_client();
  serve();
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  ASSERT_GE(client, 0);
  EXPECT_EQ(server_->connections(), 0u);
  // The pending connection no longer makes the server's fd readable (the control loop would
  // wake at once forever)...
  pollfd p{server_->fd(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0);
  // ...until the pause ends and it is served.
  std::this_thread::sleep_for(1050ms);
  serve();
  EXPECT_EQ(server_->connections(), 1u);
  ::close(client);
}

TEST_F(http_test, a_second_listener_on_the_same_address_is_refused) {
  auto second = http_server::listen(address_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.message(), "cannot listen on " + address_ + ": Address already in use");
}

TEST(http_server, a_bad_address_is_refused) {
  auto s = http_server::listen("127.0.0.1");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message(),
            "\"127.0.0.1\" has no :PORT (expected ADDRESS:PORT, like 127.0.0.1:9100 or "
            "[::1]:9100)");
}

}  // namespace
}  // namespace ferry::control::metrics
