// Node configuration (ferryd --config FILE.toml), decoded by control/config.cpp and read by
// both the control thread and, at start only, the dataplane setup. Plain values; a reload
// (SIGHUP, `ferryctl reload`) applies only log.level, control.max_request_bytes and
// sources.manifests live; control::restart_needed lists what else changed.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ferry/net.hpp"

namespace ferry {

struct port_config {
  std::string name;     // label used by routes and stats ("eth0")
  std::string device;   // PCI address or vdev string ("net_af_packet0,iface=fe0")
  ipv4_prefix address;  // the node's address and on-link subnet on this port
  uint16_t rx_desc = 1024;
  uint16_t tx_desc = 1024;
  uint16_t mtu = 0;  // largest IP packet ferry sends out of it; 0: the device's MTU
  bool operator==(const port_config&) const = default;
};

struct route_config {
  ipv4_prefix to;
  uint32_t via = 0;  // 0: destination is on-link
  std::string port;  // name of a [[port]]
  bool operator==(const route_config&) const = default;
};

struct conntrack_config {
  uint32_t capacity = 1u << 20;  // flows
  // Seconds, per state. SYN_SENT only waits for the backend's SYN-ACK (milliseconds on a
  // LAN; 5 s covers a client's first two SYN retransmissions, 1 s and 3 s in).
  uint32_t tcp_syn_timeout = 5;
  uint32_t tcp_established_timeout = 86400;
  uint32_t tcp_closing_timeout = 30;  // after a FIN ([conntrack] tcp_fin_timeout)
  uint32_t udp_timeout = 30;
  // TCP abuse: after a RST, and the cap on embryonic (SYN_SENT) entries.
  uint32_t tcp_rst_timeout = 2;
  // Blind RSTs: a RST counts only when its sequence number is within this many bytes of where
  // its sender is known to be (below or above); others are dropped (tcp_rst_out_of_window).
  uint32_t tcp_rst_window = 65536;
  uint32_t syn_max = 0;  // entries in SYN_SENT, whole table (split by worker); 0: capacity / 8
  // SCTP associations (as Linux conntrack): INIT until COOKIE-ACK (embryonic, capped by
  // syn_max with the SYN_SENT ones), established (heartbeats every 30 s keep it alive), and
  // after SHUTDOWN or ABORT.
  uint32_t sctp_init_timeout = 5;
  uint32_t sctp_established_timeout = 210;
  uint32_t sctp_closing_timeout = 10;
  uint32_t affinity_capacity = 65536;  // sessionAffinity: ClientIP entries (client, service)
  // Seconds a TCP flow to a backend that left its service port keeps that backend before it
  // is flushed (UDP ones: at once); like a pod's terminationGracePeriodSeconds (30).
  uint32_t removed_backend_grace = 30;
  bool operator==(const conntrack_config&) const = default;
};

/// [kubernetes]: follow an API server (list + watch Services, EndpointSlices, this Node).
struct kubernetes_config {
  bool enabled = false;     // the table is present
  std::string kubeconfig;   // a kubeconfig file, or
  bool in_cluster = false;  // KUBERNETES_SERVICE_HOST/_PORT and the service account files
  std::string context;      // kubeconfig context (default: current-context)
  std::string service_account_dir = "/var/run/secrets/kubernetes.io/serviceaccount";
  uint32_t page_size = 500;      // list pages (limit=), as client-go's reflector
  uint32_t watch_timeout = 300;  // seconds; each watch asks for a random timeoutSeconds in [t, 2t)
  // Bounds on what one API server answer may make ferryd hold: exceeding one fails the list
  // or watch (then a back-off). An etcd object is at most ~1.5 MiB.
  uint32_t max_list_objects = 100000;             // objects in one (paged) list
  uint64_t max_list_bytes = uint64_t{256} << 20;  // bytes of one list, all pages
  uint32_t max_event_bytes = uint32_t{4} << 20;   // one watch event (line)
  // Back-off between list-and-watch attempts: client-go's reflector numbers.
  uint32_t backoff_initial_ms = 800;
  uint32_t backoff_max_ms = 30000;
  bool operator==(const kubernetes_config&) const = default;
};

/// [dns]: the cluster DNS the workers answer (off unless addresses are given).
struct dns_config {
  std::vector<uint32_t> addresses;  // answered on UDP and TCP port 53 (host order)
  std::string zone = "cluster.local";
  uint32_t ttl = 5;  // seconds, for every record and negative answers
  // Where queries for names outside ferry's zones go (UDP; address, port), spread over them
  // by Maglev like a Service's backends. Empty: such queries are REFUSED.
  std::vector<std::pair<uint32_t, uint16_t>> upstreams;
  /// DNS over TCP bounds (dataplane/dns_tcp.hpp): keys tcp_connections, tcp_*.
  struct tcp_limits {
    uint32_t connections = 256;            // open at once; a new one evicts the oldest idle
    uint32_t connections_per_source = 32;  // open at once from one client address
    uint32_t idle_timeout = 10;            // seconds without a query or progress (RFC 7766)
    uint32_t message_timeout = 3;          // seconds from a query's first byte to its last
    uint32_t memory = 8u << 20;            // bytes of queries and answers buffered, in all
    bool operator==(const tcp_limits&) const = default;
  } tcp;
  // ExternalName targets outside the zone, resolved through the upstreams by the DNS thread:
  // their records' TTLs are capped at this (seconds), and this many answers are cached.
  uint32_t external_ttl_max = 60;
  uint32_t external_cache_size = 1024;
  // Response rate limiting of UDP answers (reflection): per source prefix, per second (0:
  // off); of the answers over the limit, every rate_limit_slip-th is sent with TC and no
  // records (0: none), the rest are dropped. Exempt prefixes are never limited.
  uint32_t rate_limit = 1000;
  uint8_t rate_limit_prefix = 24;
  uint32_t rate_limit_slip = 2;
  std::vector<ipv4_prefix> rate_limit_exempt;
  // Sources whose names outside the zones go to the upstreams; the rest get REFUSED.
  // Empty: every source (a cluster-internal DNS address; an edge-facing one is an open
  // resolver without it).
  std::vector<ipv4_prefix> forward_sources;

  bool enabled() const { return !addresses.empty(); }
  bool operator==(const dns_config&) const = default;
};

/// [limits]: new flows per client address (token bucket per worker; 0 = no limit).
struct limits_config {
  uint32_t new_flows_per_source = 0;   // per second, per worker
  uint32_t new_flows_burst = 0;        // bucket size; 0: the rate
  uint32_t source_table_size = 65536;  // sources tracked per worker (rounded up to a power of 2)
  bool operator==(const limits_config&) const = default;
};

/// [fragments]: IPv4 reassembly on the workers (and fragmentation of what leaves too big).
struct fragments_config {
  bool enabled = true;            // false: every fragment is dropped (ip_fragment)
  uint32_t max_datagrams = 4096;  // incomplete datagrams per worker
  uint32_t timeout_ms = 2000;     // a datagram not complete by then is dropped
  uint32_t max_size = 65535;      // largest reassembled datagram (IP header included)
  uint32_t max_held = 1024;       // fragments (mbufs) held per worker, at most
  bool operator==(const fragments_config&) const = default;
};

/// [metrics]: the Prometheus endpoint (GET /metrics over HTTP).
struct metrics_config {
  std::string address = "127.0.0.1:9100";  // ADDRESS:PORT to listen on; "" turns it off
};

/// [[filter]] (also `ferryctl filter add`): a payload signature rule. Packets from clients to
/// a service whose scope matches have the first `depth` bytes of their L4 payload scanned
/// for `pattern` (a Hyperscan regex); a hit is counted and, for action drop, the packet dropped.
struct filter_rule_config {
  std::string name;
  std::string pattern;
  std::vector<std::string> flags;  // caseless, dotall, multiline, utf8
  bool drop = true;                // action: drop (true) or count
  uint32_t depth = 512;            // bytes of L4 payload scanned, 1-65535
  // Scope; every one given must match (none: every service).
  std::string service;  // "namespace/name": any frontend of that Service
  uint32_t vip = 0;     // the address the client sent to (host order); 0: any
  uint8_t proto = 0;    // 6 TCP, 17 UDP; 0: both
  uint16_t port = 0;    // the port the client sent to (service port or nodePort); 0: any
  bool operator==(const filter_rule_config&) const = default;
};

/// [icmp]: echo answers and the errors ferry originates, per second per worker
/// (token buckets; 0: never sent).
struct icmp_config {
  uint32_t echo_rate = 1000;         // echo replies (node addresses, and VIPs when answered)
  uint32_t error_rate = 1000;        // time exceeded and fragmentation needed, together
  bool answer_service_echo = false;  // answer ping to service addresses (Kubernetes: no)
  bool operator==(const icmp_config&) const = default;
};

struct node_config {
  std::string source = "<built-in default>";  // file name, for messages
  std::string node_name = "ferry";
  std::vector<std::string> eal_args;
  uint32_t mbufs = 16383;      // packet buffers in the pool (per process)
  uint32_t idle_sleep_us = 0;  // workers sleep this long after an empty poll (0: busy poll)
  std::vector<port_config> ports;
  std::vector<route_config> routes;
  std::string socket_path = "/run/ferry/ferry.sock";
  std::string socket_group;                // [control] socket_group as written ("" = process's)
  int64_t socket_gid = -1;                 // ... resolved; -1: the process's effective group
  uint64_t max_request_bytes = 4ul << 20;  // [control] max_request_bytes
  std::string log_level = "info";          // [log] level: trace|debug|info|warn|error|critical|off
  std::vector<std::string> manifests;      // files or directories
  std::string builtin_manifests;           // YAML applied at start (the built-in demo)
  conntrack_config conntrack;
  limits_config limits;  // [limits]
  kubernetes_config kubernetes;
  dns_config dns;
  metrics_config metrics;
  fragments_config fragments;  // [fragments]
  uint32_t maglev_max_size = 655373;
  uint32_t max_service_ports = 65536;
  ipv4_prefix service_cidr{0x0a600000, 12};  // ClusterIPs: allocated from and checked against
  uint16_t node_port_min = 30000;            // node_port_range: allocated and allowed nodePorts
  uint16_t node_port_max = 32767;
  std::vector<ipv4_prefix> load_balancer_pool;  // LoadBalancer addresses ferry hands out
  uint32_t icmp_unreachable_rate = 100;         // per second per worker, for no-endpoint answers
  uint32_t neighbor_timeout = 300;              // seconds an ARP answer stays valid
  uint32_t neighbor_hold_ms = 1000;             // how long a packet waits for ARP before a drop
  // Payload signature filter.
  std::vector<filter_rule_config> filters;  // [[filter]]
  uint32_t filter_max_rules = 4096;         // [limits] filter_max_rules: hit counter slots
  icmp_config icmp;                         // [icmp]
};

}  // namespace ferry
