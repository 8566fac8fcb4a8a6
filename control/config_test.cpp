#include "config.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "builtin.hpp"
#include "ferry/net.hpp"
#include "model.hpp"

namespace ferry::control {
namespace {

constexpr std::string_view kFullConfig = R"toml(
[node]
name = "edge-1"
[dataplane]
eal_args = ["-l", "0,1", "--no-huge", "-m", "512", "--no-pci", "--file-prefix", "ferry"]
[[port]]
name = "eth0"
device = "net_af_packet0,iface=fe0"
address = "198.18.0.254/24"
[[route]]
to = "198.19.0.0/16"
via = "198.18.0.1"
port = "eth0"
[control]
socket = "/run/ferry/ferry.sock"
[sources]
manifests = ["examples/manifests/"]
[conntrack]
capacity = 2048
tcp_syn_timeout = 5
tcp_established_timeout = 100
tcp_closing_timeout = 7
udp_timeout = 9
[maglev]
max_table_size = 65537
[services]
max_service_ports = 1024
icmp_unreachable_rate = 10
service_cidr = "198.19.0.0/16"
[neighbor]
timeout = 60
hold_ms = 500
)toml";

// One valid port; tests append the section under test after it.
constexpr std::string_view kOnePort = R"toml(
[[port]]
name = "eth0"
device = "net_af_packet0,iface=fe0"
address = "198.18.0.254/24"
)toml";

uint32_t ip(const char* text) { return *parse_ipv4(text); }

bool has(const std::string& msg, std::string_view part) {
  return msg.find(part) != std::string::npos;
}

// Parses text that must fail and returns the message, which must start with the source.
std::string config_err(std::string_view text, const std::string& source = "test.toml") {
  auto r = parse_config(text, source);
  EXPECT_FALSE(r.ok());
  if (r.ok()) return "<parsed>";
  return r.message();
}

void expect_names_source(const std::string& msg, const std::string& source = "test.toml") {
  EXPECT_EQ(msg.rfind(source + ": ", 0), 0u) << msg;
}

// SCTP associations: their three timeouts, with defaults and ranges.
TEST(config, reads_sctp_timeouts) {
  auto d = parse_config(kOnePort, "t.toml");
  ASSERT_TRUE(d.ok()) << d.message();
  EXPECT_EQ(d->conntrack.sctp_init_timeout, 5u);
  EXPECT_EQ(d->conntrack.sctp_established_timeout, 210u);
  EXPECT_EQ(d->conntrack.sctp_closing_timeout, 10u);
  auto r = parse_config(std::string(kOnePort) +
                            "[conntrack]\nsctp_init_timeout = 3\nsctp_established_timeout = 600\n"
                            "sctp_closing_timeout = 4\n",
                        "t.toml");
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(r->conntrack.sctp_init_timeout, 3u);
  EXPECT_EQ(r->conntrack.sctp_established_timeout, 600u);
  EXPECT_EQ(r->conntrack.sctp_closing_timeout, 4u);
  auto msg = config_err(std::string(kOnePort) + "[conntrack]\nsctp_init_timeout = 0\n");
  EXPECT_TRUE(has(msg, "conntrack.sctp_init_timeout: must be between 1")) << msg;
}

// TCP abuse: the SYN cap and the RST/FIN timeouts.
TEST(config, reads_tcp_abuse_keys_with_defaults_and_ranges) {
  auto d = parse_config(kOnePort, "t.toml");
  ASSERT_TRUE(d.ok()) << d.message();
  EXPECT_EQ(d->conntrack.tcp_syn_timeout, 5u);
  EXPECT_EQ(d->conntrack.tcp_rst_timeout, 2u);
  EXPECT_EQ(d->conntrack.tcp_closing_timeout, 30u);
  EXPECT_EQ(d->conntrack.syn_max, 0u);  // an eighth of the capacity
  auto r = parse_config(std::string(kOnePort) +
                            "[conntrack]\ncapacity = 4096\nsyn_max = 100\ntcp_rst_timeout = 3\n"
                            "tcp_fin_timeout = 40\n",
                        "t.toml");
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(r->conntrack.syn_max, 100u);
  EXPECT_EQ(r->conntrack.tcp_rst_timeout, 3u);
  EXPECT_EQ(r->conntrack.tcp_closing_timeout, 40u);
  auto msg = config_err(std::string(kOnePort) + "[conntrack]\ncapacity = 4096\nsyn_max = 5000\n");
  EXPECT_TRUE(has(msg, "conntrack.syn_max: must not exceed capacity (4096)")) << msg;
  msg = config_err(std::string(kOnePort) + "[conntrack]\ntcp_rst_timeout = 0\n");
  EXPECT_TRUE(has(msg, "conntrack.tcp_rst_timeout: must be between 1")) << msg;
  EXPECT_EQ(d->conntrack.tcp_rst_window, 65536u);
  auto w = parse_config(std::string(kOnePort) + "[conntrack]\ntcp_rst_window = 0\n", "t.toml");
  ASSERT_TRUE(w.ok()) << w.message();
  EXPECT_EQ(w->conntrack.tcp_rst_window, 0u);
  msg = config_err(std::string(kOnePort) + "[conntrack]\ntcp_rst_window = 2000000000\n");
  EXPECT_TRUE(has(msg, "conntrack.tcp_rst_window: must be between 0")) << msg;
  msg = config_err(std::string(kOnePort) +
                   "[conntrack]\ntcp_fin_timeout = 5\ntcp_closing_timeout = 6\n");
  EXPECT_TRUE(has(msg, "conntrack.tcp_fin_timeout: is the new name")) << msg;
}

TEST(default_config, parses) {
  auto c = default_config();
  ASSERT_TRUE(c.ok()) << c.message();
  EXPECT_EQ(c->source, "<built-in default>");
  EXPECT_EQ(c->node_name, "ferry-demo");
  EXPECT_FALSE(c->eal_args.empty());
}

TEST(default_config, has_two_af_packet_ports) {
  auto c = default_config();
  ASSERT_TRUE(c.ok()) << c.message();
  ASSERT_EQ(c->ports.size(), 2u);
  EXPECT_EQ(c->ports[0].name, "eth0");
  EXPECT_EQ(c->ports[1].name, "eth1");
  EXPECT_TRUE(has(c->ports[0].device, "iface=fe0")) << c->ports[0].device;
  EXPECT_TRUE(has(c->ports[1].device, "iface=fe1")) << c->ports[1].device;
  EXPECT_EQ(c->ports[0].address.addr, ip("198.18.0.254"));
  EXPECT_EQ(c->ports[0].address.len, 24);
  EXPECT_EQ(c->ports[1].address.addr, ip("198.18.1.254"));
  EXPECT_EQ(c->ports[1].address.len, 24);
  EXPECT_TRUE(c->routes.empty());
}

TEST(default_config, serves_dns_in_the_clusterip_range) {
  auto c = default_config();
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->dns.addresses, std::vector<uint32_t>{0xc6130035});  // 198.19.0.53
  EXPECT_TRUE(c->service_cidr.contains(c->dns.addresses[0]));
}

TEST(default_config, uses_the_benchmarking_service_cidr) {
  auto c = default_config();
  ASSERT_TRUE(c.ok()) << c.message();
  EXPECT_EQ(c->service_cidr.addr, ip("198.19.0.0"));
  EXPECT_EQ(c->service_cidr.len, 16);
}

TEST(default_config, carries_the_builtin_manifests) {
  auto c = default_config();
  ASSERT_TRUE(c.ok()) << c.message();
  EXPECT_FALSE(c->builtin_manifests.empty());
  EXPECT_EQ(c->builtin_manifests, kDefaultManifests);
  auto objects = model::parse_manifests(c->builtin_manifests, "builtin");
  ASSERT_TRUE(objects.ok()) << objects.message();
  EXPECT_EQ(objects->size(), 4u);
}

TEST(default_config, only_the_default_gets_builtin_manifests) {
  auto c = parse_config(kDefaultConfig, "copy.toml");
  ASSERT_TRUE(c.ok()) << c.message();
  EXPECT_TRUE(c->builtin_manifests.empty());
}

TEST(parse_config, reads_every_key) {
  auto r = parse_config(kFullConfig, "full.toml");
  ASSERT_TRUE(r.ok()) << r.message();
  const node_config& c = *r;
  EXPECT_EQ(c.source, "full.toml");
  EXPECT_EQ(c.node_name, "edge-1");
  EXPECT_EQ(c.eal_args, (std::vector<std::string>{"-l", "0,1", "--no-huge", "-m", "512", "--no-pci",
                                                  "--file-prefix", "ferry"}));
  ASSERT_EQ(c.ports.size(), 1u);
  EXPECT_EQ(c.ports[0].name, "eth0");
  EXPECT_EQ(c.ports[0].device, "net_af_packet0,iface=fe0");
  EXPECT_EQ(c.ports[0].address.addr, ip("198.18.0.254"));
  EXPECT_EQ(c.ports[0].address.len, 24);
  ASSERT_EQ(c.routes.size(), 1u);
  EXPECT_EQ(c.routes[0].to.addr, ip("198.19.0.0"));
  EXPECT_EQ(c.routes[0].to.len, 16);
  EXPECT_EQ(c.routes[0].via, ip("198.18.0.1"));
  EXPECT_EQ(c.routes[0].port, "eth0");
  EXPECT_EQ(c.socket_path, "/run/ferry/ferry.sock");
  EXPECT_EQ(c.manifests, std::vector<std::string>{"examples/manifests/"});
  EXPECT_EQ(c.conntrack.capacity, 2048u);
  EXPECT_EQ(c.conntrack.tcp_syn_timeout, 5u);
  EXPECT_EQ(c.conntrack.tcp_established_timeout, 100u);
  EXPECT_EQ(c.conntrack.tcp_closing_timeout, 7u);
  EXPECT_EQ(c.conntrack.udp_timeout, 9u);
  EXPECT_EQ(c.maglev_max_size, 65537u);
  EXPECT_EQ(c.max_service_ports, 1024u);
  EXPECT_EQ(c.icmp_unreachable_rate, 10u);
  EXPECT_EQ(c.service_cidr.addr, ip("198.19.0.0"));
  EXPECT_EQ(c.service_cidr.len, 16);
  EXPECT_EQ(c.neighbor_timeout, 60u);
  EXPECT_EQ(c.neighbor_hold_ms, 500u);
  EXPECT_TRUE(c.builtin_manifests.empty());
}

TEST(parse_config, reads_the_kubernetes_table) {
  std::string base(kFullConfig);
  auto r = parse_config(base +
                            "[kubernetes]\nkubeconfig = \"/etc/ferry/kubeconfig\"\n"
                            "context = \"edge\"\npage_size = 100\nwatch_timeout = 60\n",
                        "k.toml");
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_TRUE(r->kubernetes.enabled);
  EXPECT_EQ(r->kubernetes.kubeconfig, "/etc/ferry/kubeconfig");
  EXPECT_EQ(r->kubernetes.context, "edge");
  EXPECT_EQ(r->kubernetes.page_size, 100u);
  EXPECT_EQ(r->kubernetes.watch_timeout, 60u);
  EXPECT_FALSE(parse_config(kFullConfig, "f")->kubernetes.enabled);

  auto in = parse_config(base + "[kubernetes]\nin_cluster = true\n", "k.toml");
  ASSERT_TRUE(in.ok()) << in.message();
  EXPECT_TRUE(in->kubernetes.in_cluster);
  EXPECT_EQ(in->kubernetes.service_account_dir, "/var/run/secrets/kubernetes.io/serviceaccount");

  EXPECT_EQ(config_err(base + "[kubernetes]\n", "k.toml"),
            "k.toml: kubernetes: needs kubeconfig = \"FILE\" or in_cluster = true");
  EXPECT_EQ(config_err(base + "[kubernetes]\nin_cluster = true\nkubeconfig = \"x\"\n", "k.toml"),
            "k.toml: kubernetes.in_cluster: set either in_cluster or kubeconfig, not both");
  EXPECT_EQ(config_err(base + "[kubernetes]\nin_cluster = 1\n", "k.toml"),
            "k.toml: kubernetes.in_cluster: must be true or false");

  // Bounds on what the API server sends, and the back-off: defaults and limits.
  EXPECT_EQ(in->kubernetes.max_list_objects, 100000u);
  EXPECT_EQ(in->kubernetes.max_list_bytes, uint64_t{256} << 20);
  EXPECT_EQ(in->kubernetes.max_event_bytes, 4u << 20);
  EXPECT_EQ(in->kubernetes.backoff_initial_ms, 800u);
  EXPECT_EQ(in->kubernetes.backoff_max_ms, 30000u);
  auto bounds = parse_config(base +
                                 "[kubernetes]\nin_cluster = true\nmax_list_objects = 50\n"
                                 "max_list_bytes = 8589934592\nmax_event_bytes = 65536\n"
                                 "backoff_initial_ms = 100\nbackoff_max_ms = 2000\n",
                             "k.toml");
  ASSERT_TRUE(bounds.ok()) << bounds.message();
  EXPECT_EQ(bounds->kubernetes.max_list_objects, 50u);
  EXPECT_EQ(bounds->kubernetes.max_list_bytes, uint64_t{8} << 30);
  EXPECT_EQ(bounds->kubernetes.max_event_bytes, 65536u);
  EXPECT_EQ(bounds->kubernetes.backoff_initial_ms, 100u);
  EXPECT_EQ(bounds->kubernetes.backoff_max_ms, 2000u);
  EXPECT_EQ(config_err(base + "[kubernetes]\nin_cluster = true\nmax_event_bytes = 100\n", "k"),
            "k: kubernetes.max_event_bytes: must be between 4096 and 1073741824, got 100");
  EXPECT_EQ(config_err(base + "[kubernetes]\nin_cluster = true\nbackoff_max_ms = 500\n", "k"),
            "k: kubernetes.backoff_max_ms: must not be below backoff_initial_ms (800)");
}

TEST(parse_config, reads_the_dns_table) {
  std::string base(kFullConfig);
  auto r = parse_config(base +
                            "[dns]\naddresses = [\"10.96.0.10\", \"198.18.0.53\"]\n"
                            "zone = \"Edge.Example.\"\nttl = 30\n"
                            "upstreams = [\"198.18.0.1\", \"198.18.0.2:5353\"]\n"
                            "external_ttl_max = 10\nexternal_cache_size = 0\n",
                        "d.toml");
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_TRUE(r->dns.enabled());
  EXPECT_EQ(r->dns.addresses, (std::vector<uint32_t>{0x0a60000a, 0xc6120035}));
  EXPECT_EQ(r->dns.zone, "Edge.Example");
  EXPECT_EQ(r->dns.ttl, 30u);
  EXPECT_EQ(r->dns.upstreams,
            (std::vector<std::pair<uint32_t, uint16_t>>{{0xc6120001, 53}, {0xc6120002, 5353}}));
  EXPECT_EQ(r->dns.external_ttl_max, 10u);
  EXPECT_EQ(r->dns.external_cache_size, 0u);
  EXPECT_EQ(parse_config(kFullConfig, "f")->dns.external_ttl_max, 60u);
  EXPECT_EQ(parse_config(kFullConfig, "f")->dns.external_cache_size, 1024u);
  EXPECT_EQ(
      config_err(base + "[dns]\naddresses = [\"10.96.0.10\"]\nexternal_ttl_max = 86401\n", "d.toml")
          .substr(0, 31),
      "d.toml: dns.external_ttl_max: m");
  EXPECT_FALSE(parse_config(kFullConfig, "f")->dns.enabled());
  EXPECT_EQ(parse_config(kFullConfig, "f")->dns.zone, "cluster.local");

  EXPECT_EQ(config_err(base + "[dns]\naddresses = [\"10.96.0.300\"]\n", "d.toml"),
            "d.toml: dns.addresses: \"10.96.0.300\" is not an IPv4 address");
  EXPECT_EQ(config_err(base + "[dns]\naddresses = [\"10.96.0.10\"]\nzone = \"a..b\"\n", "d.toml"),
            "d.toml: dns.zone: \"a..b\" is not a DNS domain name (like cluster.local)");
  EXPECT_EQ(
      config_err(base + "[dns]\naddresses = [\"10.96.0.10\"]\nzone = \"bad_name\"\n", "d.toml"),
      "d.toml: dns.zone: \"bad_name\" is not a DNS domain name (like cluster.local)");
  EXPECT_EQ(config_err(base + "[dns]\nupstreams = [\"198.18.0.1\"]\n", "d.toml"),
            "d.toml: dns.upstreams: needs addresses: DNS is off without them");
  EXPECT_EQ(
      config_err(base + "[dns]\naddresses = [\"10.96.0.10\"]\nupstreams = [\"198.18.0.1:0\"]\n",
                 "d.toml"),
      "d.toml: dns.upstreams: \"198.18.0.1:0\" is not an IPv4 address or address:port");
  EXPECT_EQ(
      config_err(base + "[dns]\naddresses = [\"10.96.0.10\"]\nttl = -1\n", "d.toml").substr(0, 16),
      "d.toml: dns.ttl:");
}

// DNS over TCP bounds (issue 16): defaults, the keys, and their ranges.
TEST(parse_config, reads_the_dns_tcp_limits) {
  std::string base = std::string(kFullConfig) + "[dns]\naddresses = [\"10.96.0.10\"]\n";
  const auto defaults = parse_config(base, "d.toml")->dns.tcp;
  EXPECT_EQ(defaults.connections, 256u);
  EXPECT_EQ(defaults.connections_per_source, 32u);
  EXPECT_EQ(defaults.idle_timeout, 10u);
  EXPECT_EQ(defaults.message_timeout, 3u);
  EXPECT_EQ(defaults.memory, 8u << 20);
  auto r = parse_config(base +
                            "tcp_connections = 12\ntcp_connections_per_source = 4\n"
                            "tcp_idle_timeout = 4\ntcp_message_timeout = 1\n"
                            "tcp_memory = 1048576\n",
                        "d.toml");
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(r->dns.tcp, (dns_config::tcp_limits{12, 4, 4, 1, 1048576}));
  EXPECT_EQ(config_err(base + "tcp_connections = 0\n", "d.toml"),
            "d.toml: dns.tcp_connections: must be between 1 and 1024, got 0");
  EXPECT_EQ(config_err(base + "tcp_message_timeout = 0\n", "d.toml"),
            "d.toml: dns.tcp_message_timeout: must be between 1 and 3600, got 0");
  // Below two largest messages one query and one answer could not both be held.
  EXPECT_EQ(config_err(base + "tcp_memory = 65536\n", "d.toml"),
            "d.toml: dns.tcp_memory: must be between 131074 and 1073741824, got 65536");
}

// [dns] response rate limiting and forwarding sources: on by default (NSD's /24 and slip 2).
TEST(parse_config, reads_the_dns_rate_limit) {
  std::string base(kFullConfig);
  auto d = parse_config(base + "[dns]\naddresses = [\"10.96.0.10\"]\n", "d.toml");
  ASSERT_TRUE(d.ok()) << d.message();
  EXPECT_EQ(d->dns.rate_limit, 1000u);
  EXPECT_EQ(d->dns.rate_limit_prefix, 24u);
  EXPECT_EQ(d->dns.rate_limit_slip, 2u);
  EXPECT_TRUE(d->dns.rate_limit_exempt.empty());
  EXPECT_TRUE(d->dns.forward_sources.empty());
  auto r = parse_config(base +
                            "[dns]\naddresses = [\"10.96.0.10\"]\nrate_limit = 50\n"
                            "rate_limit_prefix = 32\nrate_limit_slip = 0\n"
                            "rate_limit_exempt = [\"10.244.0.0/16\", \"192.0.2.7\"]\n"
                            "forward_sources = [\"10.0.0.0/8\"]\n",
                        "d.toml");
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(r->dns.rate_limit, 50u);
  EXPECT_EQ(r->dns.rate_limit_prefix, 32u);
  EXPECT_EQ(r->dns.rate_limit_slip, 0u);
  EXPECT_EQ(r->dns.rate_limit_exempt,
            (std::vector<ipv4_prefix>{{0x0af40000, 16}, {0xc0000207, 32}}));
  EXPECT_EQ(r->dns.forward_sources, (std::vector<ipv4_prefix>{{0x0a000000, 8}}));
  EXPECT_EQ(
      config_err(base + "[dns]\naddresses = [\"10.96.0.10\"]\nrate_limit_prefix = 4\n", "d.toml"),
      "d.toml: dns.rate_limit_prefix: must be between 8 and 32, got 4");
  EXPECT_EQ(config_err(base + "[dns]\naddresses = [\"10.96.0.10\"]\n"
                              "forward_sources = [\"10.0.0.0/33\"]\n",
                       "d.toml"),
            "d.toml: dns.forward_sources: \"10.0.0.0/33\" is not an IPv4 address or prefix "
            "(a.b.c.d/n)");
  EXPECT_EQ(config_err(base + "[dns]\naddresses = [\"10.96.0.10\"]\nrate_limit_exempt = \"x\"\n",
                       "d.toml"),
            "d.toml: dns.rate_limit_exempt: must be an array of strings");
}

TEST(parse_config, reads_the_metrics_table) {
  std::string base(kOnePort);
  // Default: loopback only, Prometheus' usual exporter port.
  EXPECT_EQ(parse_config(base, "m.toml")->metrics.address, "127.0.0.1:9100");
  auto r = parse_config(base + "[metrics]\naddress = \"0.0.0.0:9187\"\n", "m.toml");
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(r->metrics.address, "0.0.0.0:9187");
  EXPECT_EQ(parse_config(base + "[metrics]\naddress = \"[::1]:9100\"\n", "m.toml")->metrics.address,
            "[::1]:9100");
  // "" turns the endpoint off.
  r = parse_config(base + "[metrics]\naddress = \"\"\n", "m.toml");
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(r->metrics.address, "");

  const std::string expected = " (expected ADDRESS:PORT, like 127.0.0.1:9100 or [::1]:9100)";
  EXPECT_EQ(config_err(base + "[metrics]\naddress = \"127.0.0.1\"\n", "m.toml"),
            "m.toml: metrics.address: \"127.0.0.1\" has no :PORT" + expected);
  EXPECT_EQ(config_err(base + "[metrics]\naddress = \"127.0.0.1:0\"\n", "m.toml"),
            "m.toml: metrics.address: \"127.0.0.1:0\" has no port between 1 and 65535" + expected);
  EXPECT_EQ(
      config_err(base + "[metrics]\naddress = \"127.0.0.1:70000\"\n", "m.toml"),
      "m.toml: metrics.address: \"127.0.0.1:70000\" has no port between 1 and 65535" + expected);
  EXPECT_EQ(config_err(base + "[metrics]\naddress = \"localhost:9100\"\n", "m.toml"),
            "m.toml: metrics.address: \"localhost:9100\" is not an IPv4 address" + expected);
  EXPECT_EQ(config_err(base + "[metrics]\naddress = \"[::1:9100\"\n", "m.toml"),
            "m.toml: metrics.address: \"[::1:9100\" has no ]:PORT" + expected);
  EXPECT_EQ(config_err(base + "[metrics]\naddress = \"[1.2.3.4]:9100\"\n", "m.toml"),
            "m.toml: metrics.address: \"[1.2.3.4]:9100\" is not an IPv6 address" + expected);
  EXPECT_EQ(config_err(base + "[metrics]\naddress = 9100\n", "m.toml"),
            "m.toml: metrics.address: must be a string (\"\" turns metrics off)");
  EXPECT_EQ(config_err(base + "[metrics]\nport = 9100\n", "m.toml"),
            "m.toml: metrics.port: unknown key");
}

TEST(parse_config, reads_dataplane_and_descriptor_keys) {
  auto r = parse_config(R"toml(
[dataplane]
mbufs = 4095
idle_sleep_us = 50
[[port]]
name = "eth0"
device = "0000:3b:00.0"
address = "10.0.0.2/24"
rx_desc = 512
tx_desc = 2048
)toml",
                        "test.toml");
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(r->mbufs, 4095u);
  EXPECT_EQ(r->idle_sleep_us, 50u);
  ASSERT_EQ(r->ports.size(), 1u);
  EXPECT_EQ(r->ports[0].rx_desc, 512);
  EXPECT_EQ(r->ports[0].tx_desc, 2048);
}

TEST(parse_config, leaves_defaults_for_absent_keys) {
  auto r = parse_config(kOnePort, "test.toml");
  ASSERT_TRUE(r.ok()) << r.message();
  node_config defaults;
  EXPECT_EQ(r->node_name, defaults.node_name);
  EXPECT_EQ(r->socket_path, defaults.socket_path);
  EXPECT_EQ(r->conntrack.capacity, defaults.conntrack.capacity);
  EXPECT_EQ(r->maglev_max_size, defaults.maglev_max_size);
  EXPECT_EQ(r->max_service_ports, defaults.max_service_ports);
  EXPECT_EQ(r->service_cidr.addr, defaults.service_cidr.addr);
  EXPECT_EQ(r->service_cidr.len, defaults.service_cidr.len);
  EXPECT_EQ(r->ports[0].rx_desc, 1024);
  EXPECT_TRUE(r->routes.empty());
}

// [conntrack] removed_backend_grace and [limits].
TEST(parse_config, reads_the_grace_and_limits) {
  auto r = parse_config(std::string(kOnePort) +
                            "[conntrack]\nremoved_backend_grace = 5\n"
                            "[limits]\nnew_flows_per_source = 100\nnew_flows_burst = 300\n"
                            "source_table_size = 1024\n",
                        "test.toml");
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(r->conntrack.removed_backend_grace, 5u);
  EXPECT_EQ(r->limits.new_flows_per_source, 100u);
  EXPECT_EQ(r->limits.new_flows_burst, 300u);
  EXPECT_EQ(r->limits.source_table_size, 1024u);
  auto d = parse_config(kOnePort, "test.toml");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->conntrack.removed_backend_grace, 30u);
  EXPECT_EQ(d->limits.new_flows_per_source, 0u);
  EXPECT_EQ(d->limits.new_flows_burst, 0u);
  EXPECT_EQ(d->limits.source_table_size, 65536u);
  auto msg = config_err(std::string(kOnePort) + "[limits]\nsource_table_size = 8\n");
  EXPECT_TRUE(has(msg, "limits.source_table_size: must be between 16 and")) << msg;
  msg = config_err(std::string(kOnePort) + "[conntrack]\nremoved_backend_grace = -1\n");
  EXPECT_TRUE(has(msg, "conntrack.removed_backend_grace: must be between 0 and 86400")) << msg;
  msg = config_err(std::string(kOnePort) + "[limits]\nrate = 1\n");
  EXPECT_TRUE(has(msg, "rate")) << msg;
  // Changing them needs a restart.
  auto changed = *d;
  changed.limits.new_flows_per_source = 1;
  EXPECT_EQ(restart_needed(*d, changed), std::vector<std::string>{"limits"});
}

TEST(parse_config, route_without_via_is_on_link) {
  auto r = parse_config(std::string(kOnePort) + R"toml(
[[route]]
to = "10.0.0.0/8"
port = "eth0"
)toml",
                        "test.toml");
  ASSERT_TRUE(r.ok()) << r.message();
  ASSERT_EQ(r->routes.size(), 1u);
  EXPECT_EQ(r->routes[0].via, 0u);
}

TEST(parse_config, unknown_top_level_key_is_an_error) {
  auto msg = config_err(std::string(kOnePort) + "\nverbose = true\n");
  expect_names_source(msg);
  EXPECT_TRUE(has(msg, "verbose: unknown key")) << msg;
}

TEST(parse_config, unknown_key_in_a_section_is_an_error) {
  auto msg = config_err(std::string(kOnePort) + "[conntrack]\ncapacty = 2048\n");
  expect_names_source(msg);
  EXPECT_TRUE(has(msg, "conntrack.capacty: unknown key")) << msg;
}

TEST(parse_config, unknown_key_in_port_is_an_error) {
  auto msg = config_err(R"toml(
[[port]]
name = "eth0"
device = "net_af_packet0,iface=fe0"
address = "198.18.0.254/24"
adress = "198.18.0.254/24"
)toml");
  expect_names_source(msg);
  EXPECT_TRUE(has(msg, "port[0].adress")) << msg;
  EXPECT_TRUE(has(msg, "unknown key")) << msg;
}

TEST(parse_config, misspelled_required_port_key_is_an_error) {
  // The typo hides the required key, so the message names the key that is missing.
  auto msg = config_err(R"toml(
[[port]]
name = "eth0"
device = "net_af_packet0,iface=fe0"
adress = "198.18.0.254/24"
)toml");
  expect_names_source(msg);
  EXPECT_TRUE(has(msg, "port[0].address: required")) << msg;
}

TEST(parse_config, unknown_key_in_second_port_names_its_index) {
  auto msg = config_err(std::string(kOnePort) + R"toml(
[[port]]
name = "eth1"
device = "net_af_packet1,iface=fe1"
address = "198.18.1.254/24"
rxdesc = 512
)toml");
  EXPECT_TRUE(has(msg, "port[1].rxdesc: unknown key")) << msg;
}

TEST(parse_config, text_that_is_not_utf8_is_an_error) {
  // Invalid UTF-8 inside a multi-line literal string once made toml11 read past its buffer.
  auto msg = config_err("[node]\nname = \"a\"\n[dataplane]\neal_args = ['''\xfe''']\n");
  EXPECT_EQ(msg.rfind("test.toml:4: ", 0), 0u) << msg;
  EXPECT_TRUE(has(msg, "not valid UTF-8")) << msg;
  EXPECT_TRUE(has(config_err("name = \"\xed\xa0\x80\"\n"), "not valid UTF-8"));  // surrogate
  EXPECT_TRUE(has(config_err("name = \"\xc0\xaf\"\n"), "not valid UTF-8"));      // overlong
  EXPECT_TRUE(has(config_err("name = \"\xe2\x82\"\n"), "not valid UTF-8"));      // cut short
  auto ok = parse_config("[node]\nname = \"f\xc3\xa9rry \xe2\x82\xac \xf0\x9f\x9a\xa2\"\n", "t");
  ASSERT_FALSE(ok.ok());  // no [[port]], but the UTF-8 text itself is accepted
  EXPECT_FALSE(has(ok.message(), "UTF-8")) << ok.message();
}

TEST(parse_config, string_where_integer_is_an_error) {
  auto msg = config_err(std::string(kOnePort) + "[conntrack]\ncapacity = \"2048\"\n");
  expect_names_source(msg);
  EXPECT_TRUE(has(msg, "conntrack.capacity: must be an integer")) << msg;
}

TEST(parse_config, integer_where_string_is_an_error) {
  auto msg = config_err(std::string(kOnePort) + "[node]\nname = 7\n");
  expect_names_source(msg);
  EXPECT_TRUE(has(msg, "node.name: must be a string")) << msg;
}

TEST(parse_config, out_of_range_integer_is_an_error) {
  auto msg = config_err(std::string(kOnePort) + "[conntrack]\ncapacity = 5\n");
  expect_names_source(msg);
  EXPECT_TRUE(has(msg, "conntrack.capacity: must be between 1024 and")) << msg;
  EXPECT_TRUE(has(msg, "got 5")) << msg;
}

TEST(parse_config, negative_integer_is_out_of_range) {
  auto msg = config_err(std::string(kOnePort) + "[neighbor]\ntimeout = -1\n");
  EXPECT_TRUE(has(msg, "neighbor.timeout: must be between 1 and 86400, got -1")) << msg;
}

// [icmp] and [[port]] mtu, with their defaults and ranges.
TEST(parse_config, reads_the_icmp_table_and_port_mtu) {
  auto d = parse_config(std::string(kOnePort), "d.toml");
  ASSERT_TRUE(d.ok()) << d.message();
  EXPECT_EQ(d->icmp.echo_rate, 1000u);
  EXPECT_EQ(d->icmp.error_rate, 1000u);
  EXPECT_FALSE(d->icmp.answer_service_echo);
  EXPECT_EQ(d->ports[0].mtu, 0);
  auto r = parse_config(std::string(kOnePort) +
                            "mtu = 1000\n[icmp]\necho_rate = 0\nerror_rate = 5\n"
                            "answer_service_echo = true\n",
                        "i.toml");
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(r->ports[0].mtu, 1000);
  EXPECT_EQ(r->icmp.echo_rate, 0u);
  EXPECT_EQ(r->icmp.error_rate, 5u);
  EXPECT_TRUE(r->icmp.answer_service_echo);
  auto small = config_err(std::string(kOnePort) + "mtu = 100\n");
  EXPECT_TRUE(has(small, "port[0].mtu: must be between 576 and 9702, got 100")) << small;
  auto typo = config_err(std::string(kOnePort) + "[icmp]\necho = 5\n");
  EXPECT_TRUE(has(typo, "icmp.echo: unknown key")) << typo;
  EXPECT_EQ(restart_needed(*d, *r), (std::vector<std::string>{"port", "icmp"}));
}

TEST(parse_config, too_small_maglev_table_is_an_error) {
  auto msg = config_err(std::string(kOnePort) + "[maglev]\nmax_table_size = 100\n");
  EXPECT_TRUE(has(msg, "maglev.max_table_size: must be between 251 and")) << msg;
}

TEST(parse_config, bad_port_address_is_an_error) {
  auto msg = config_err(R"toml(
[[port]]
name = "eth0"
device = "net_af_packet0,iface=fe0"
address = "198.18.0.300/24"
)toml");
  expect_names_source(msg);
  EXPECT_TRUE(has(msg, "port[0].address")) << msg;
  EXPECT_TRUE(has(msg, "198.18.0.300/24")) << msg;
  EXPECT_TRUE(has(msg, "is not an IPv4 address")) << msg;
}

TEST(parse_config, missing_port_address_is_an_error) {
  auto msg = config_err(R"toml(
[[port]]
name = "eth0"
device = "net_af_packet0,iface=fe0"
)toml");
  EXPECT_TRUE(has(msg, "port[0].address: required")) << msg;
}

TEST(parse_config, missing_port_device_is_an_error) {
  auto msg = config_err(R"toml(
[[port]]
name = "eth0"
address = "198.18.0.254/24"
)toml");
  expect_names_source(msg);
  EXPECT_TRUE(has(msg, "port[0].device: required")) << msg;
}

TEST(parse_config, bad_service_cidr_is_an_error) {
  auto msg = config_err(std::string(kOnePort) + "[services]\nservice_cidr = \"198.19.0.0/33\"\n");
  expect_names_source(msg);
  EXPECT_TRUE(has(msg, "services.service_cidr")) << msg;
}

TEST(parse_config, bad_route_via_is_an_error) {
  auto msg = config_err(std::string(kOnePort) + R"toml(
[[route]]
to = "10.0.0.0/8"
via = "10.0.0"
port = "eth0"
)toml");
  expect_names_source(msg);
  EXPECT_TRUE(has(msg, "route[0].via")) << msg;
  EXPECT_TRUE(has(msg, "is not an IPv4 address")) << msg;
}

TEST(parse_config, route_to_unknown_port_is_an_error) {
  auto msg = config_err(std::string(kOnePort) + R"toml(
[[route]]
to = "10.0.0.0/8"
via = "198.18.0.1"
port = "eth9"
)toml");
  expect_names_source(msg);
  EXPECT_TRUE(has(msg, "route[0].port")) << msg;
  EXPECT_TRUE(has(msg, "no [[port]] named \"eth9\"")) << msg;
}

TEST(parse_config, route_without_port_is_an_error) {
  auto msg = config_err(std::string(kOnePort) + R"toml(
[[route]]
to = "10.0.0.0/8"
)toml");
  EXPECT_TRUE(has(msg, "route[0].port: required")) << msg;
}

TEST(parse_config, duplicate_port_names_are_an_error) {
  auto msg = config_err(std::string(kOnePort) + R"toml(
[[port]]
name = "eth0"
device = "net_af_packet1,iface=fe1"
address = "198.18.1.254/24"
)toml");
  expect_names_source(msg);
  EXPECT_TRUE(has(msg, "port[1].name")) << msg;
  EXPECT_TRUE(has(msg, "duplicate port name \"eth0\"")) << msg;
}

TEST(parse_config, no_ports_is_an_error) {
  auto msg = config_err("[node]\nname = \"edge-1\"\n");
  expect_names_source(msg);
  EXPECT_TRUE(has(msg, "port: at least one [[port]] is required")) << msg;
}

TEST(parse_config, empty_text_is_an_error) {
  auto msg = config_err("");
  EXPECT_TRUE(has(msg, "at least one [[port]]")) << msg;
}

TEST(parse_config, too_many_ports_is_an_error) {
  std::string text;
  for (int i = 0; i < 9; ++i) {
    text += "[[port]]\nname = \"eth" + std::to_string(i) + "\"\ndevice = \"net_af_packet" +
            std::to_string(i) + "\"\naddress = \"10.0." + std::to_string(i) + ".1/24\"\n";
  }
  auto msg = config_err(text);
  expect_names_source(msg);
  EXPECT_TRUE(has(msg, "at most 8 ports")) << msg;
}

TEST(parse_config, port_as_plain_table_is_an_error) {
  auto msg = config_err("[port]\nname = \"eth0\"\n");
  expect_names_source(msg);
  EXPECT_TRUE(has(msg, "port: must be an array of tables")) << msg;
}

TEST(parse_config, section_that_is_not_a_table_is_an_error) {
  auto msg = config_err(std::string("node = 5\n") + std::string(kOnePort));
  expect_names_source(msg);
  EXPECT_TRUE(has(msg, "node: must be a table")) << msg;
}

TEST(parse_config, eal_args_must_be_strings) {
  auto msg =
      config_err(std::string("[dataplane]\neal_args = [\"-l\", 1]\n") + std::string(kOnePort));
  EXPECT_TRUE(has(msg, "dataplane.eal_args: must be an array of strings")) << msg;
}

TEST(parse_config, empty_string_is_an_error) {
  auto msg = config_err(std::string(kOnePort) + "[control]\nsocket = \"\"\n");
  EXPECT_TRUE(has(msg, "control.socket: must not be empty")) << msg;
}

TEST(parse_config, toml_syntax_error_names_the_file) {
  auto r = parse_config("[node\nname = \"edge-1\"\n", "broken.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "broken.toml")) << r.message();
}

TEST(parse_config, toml_syntax_error_in_a_value_names_the_file) {
  auto r = parse_config(std::string(kOnePort) + "[conntrack]\ncapacity = = 5\n", "broken.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "broken.toml")) << r.message();
}

TEST(load_config, missing_file_names_the_path) {
  std::string path = "/nonexistent-ferry-dir/node-" + std::to_string(getpid()) + ".toml";
  auto r = load_config(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.message().rfind(path + ": ", 0), 0u) << r.message();
  EXPECT_TRUE(has(r.message(), "cannot read")) << r.message();
}

TEST(parse_config, log_level_and_control_keys) {
  auto base = std::string(kOnePort);
  auto r = parse_config(base +
                            "[log]\nlevel = \"debug\"\n[control]\nsocket_group = \"0\"\n"
                            "max_request_bytes = 4096\n",
                        "t.toml");
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(r->log_level, "debug");
  EXPECT_EQ(r->socket_gid, 0);
  EXPECT_EQ(r->max_request_bytes, 4096u);
  auto d = parse_config(base, "t.toml");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->log_level, "info");
  EXPECT_EQ(d->socket_gid, -1);
  EXPECT_EQ(d->max_request_bytes, 4u << 20);
  // A group by name (root exists everywhere).
  auto n = parse_config(base + "[control]\nsocket_group = \"root\"\n", "t.toml");
  ASSERT_TRUE(n.ok()) << n.message();
  EXPECT_EQ(n->socket_gid, 0);
}

// [fragments]
TEST(parse_config, fragments_keys_defaults_and_ranges) {
  auto base = std::string(kOnePort);
  auto d = parse_config(base, "t.toml");
  ASSERT_TRUE(d.ok()) << d.message();
  EXPECT_TRUE(d->fragments.enabled);
  EXPECT_EQ(d->fragments.max_datagrams, 4096u);
  EXPECT_EQ(d->fragments.timeout_ms, 2000u);
  EXPECT_EQ(d->fragments.max_size, 65535u);
  EXPECT_EQ(d->fragments.max_held, 1024u);
  auto r = parse_config(base +
                            "[fragments]\nenabled = false\nmax_datagrams = 64\ntimeout_ms = 500\n"
                            "max_size = 9000\nmax_held = 256\n",
                        "t.toml");
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_FALSE(r->fragments.enabled);
  EXPECT_EQ(r->fragments.max_datagrams, 64u);
  EXPECT_EQ(r->fragments.timeout_ms, 500u);
  EXPECT_EQ(r->fragments.max_size, 9000u);
  EXPECT_EQ(r->fragments.max_held, 256u);
  for (const char* bad : {"max_size = 70000", "max_size = 100", "timeout_ms = 0", "max_held = 1",
                          "max_datagrams = 0", "enabled = 1", "reassemble = true"}) {
    auto b = parse_config(base + "[fragments]\n" + bad + "\n", "t.toml");
    ASSERT_FALSE(b.ok()) << bad;
    const std::string key = std::string(bad).substr(0, std::string(bad).find(' '));
    EXPECT_NE(b.message().find("fragments." + key), std::string::npos) << b.message();
  }
  node_config a = *d, c = *d;
  c.fragments.timeout_ms = 100;
  EXPECT_EQ(restart_needed(a, c), std::vector<std::string>{"fragments"});
}

TEST(parse_config, bad_log_and_control_keys_are_named) {
  auto base = std::string(kOnePort);
  auto m = config_err(base + "[log]\nlevel = \"loud\"\n");
  EXPECT_EQ(m,
            "test.toml: log.level: \"loud\" is not a log level (trace, debug, info, warn, "
            "error, critical, off)");
  m = config_err(base + "[log]\nlevel = 3\n");
  EXPECT_EQ(m, "test.toml: log.level: must be a string");
  m = config_err(base + "[log]\nlevels = \"info\"\n");
  EXPECT_EQ(m, "test.toml: log.levels: unknown key");
  m = config_err(base + "[control]\nsocket_group = \"no-such-group-ferry\"\n");
  EXPECT_EQ(m,
            "test.toml: control.socket_group: no group named \"no-such-group-ferry\" (a group "
            "name or numeric gid)");
  m = config_err(base + "[control]\nmax_request_bytes = 10\n");
  EXPECT_TRUE(has(m, "control.max_request_bytes: must be between 1024")) << m;
}

TEST(restart_needed, lists_only_what_a_reload_cannot_apply) {
  auto a = parse_config(kFullConfig, "a.toml");
  ASSERT_TRUE(a.ok()) << a.message();
  auto b = *a;
  EXPECT_TRUE(restart_needed(*a, b).empty());
  // Live: log level, request limit, manifests.
  b.log_level = "debug";
  b.max_request_bytes = 4096;
  b.manifests = {"other/"};
  EXPECT_TRUE(restart_needed(*a, b).empty());
  b.eal_args.push_back("--no-telemetry");
  b.ports[0].address = *parse_ipv4_prefix("198.18.0.253/24");
  b.conntrack.capacity = 4096;
  b.socket_path = "/tmp/x.sock";
  b.dns.ttl = 7;
  EXPECT_EQ(restart_needed(*a, b),
            (std::vector<std::string>{"dataplane.eal_args", "port", "control.socket", "conntrack",
                                      "dns"}));
}

// Payload signature filter: [[filter]] tables reload live (node_test); the rule limit sizes
// the counters at start.
TEST(restart_needed, names_the_filter_rule_limit_not_the_rules) {
  auto a =
      parse_config(std::string(kFullConfig) + "[[filter]]\nname = \"a\"\npattern = \"x\"\n", "a");
  ASSERT_TRUE(a.ok()) << a.message();
  auto b = *a;
  b.filters[0].depth = 64;
  b.filter_max_rules = 8;
  EXPECT_EQ(restart_needed(*a, b), std::vector<std::string>{"limits.filter_max_rules"});
}

TEST(load_config, reads_a_file_and_names_it_as_source) {
  std::string path =
      ::testing::TempDir() + "ferry-config-test-" + std::to_string(getpid()) + ".toml";
  {
    std::ofstream out(path);
    out << kFullConfig;
  }
  auto r = load_config(path);
  std::remove(path.c_str());
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(r->source, path);
  EXPECT_EQ(r->node_name, "edge-1");
  EXPECT_EQ(r->conntrack.capacity, 2048u);
}

TEST(load_config, errors_in_a_file_name_the_path) {
  std::string path =
      ::testing::TempDir() + "ferry-config-bad-" + std::to_string(getpid()) + ".toml";
  {
    std::ofstream out(path);
    out << kOnePort << "[conntrack]\ncapacity = 5\n";
  }
  auto r = load_config(path);
  std::remove(path.c_str());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.message().rfind(path + ": conntrack.capacity: ", 0), 0u) << r.message();
}

// Payload signature filter.
TEST(parse_config, reads_filter_rules) {
  std::string base(kFullConfig);
  auto r = parse_config(base +
                            "[limits]\nfilter_max_rules = 16\n"
                            "[[filter]]\nname = \"evil\"\npattern = \"/evil\"\n"
                            "[[filter]]\nname = \"php\"\npattern = \"\\\\.php\"\n"
                            "flags = [\"caseless\"]\naction = \"count\"\ndepth = 64\n"
                            "service = \"default/web\"\nvip = \"198.19.0.10\"\n"
                            "protocol = \"TCP\"\nport = 80\n",
                        "f.toml");
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(r->filter_max_rules, 16u);
  ASSERT_EQ(r->filters.size(), 2u);
  EXPECT_EQ(r->filters[0].name, "evil");
  EXPECT_TRUE(r->filters[0].drop);
  EXPECT_EQ(r->filters[0].depth, 512u);
  const auto& php = r->filters[1];
  EXPECT_FALSE(php.drop);
  EXPECT_EQ(php.pattern, "\\.php");
  EXPECT_EQ(php.flags, std::vector<std::string>{"caseless"});
  EXPECT_EQ(php.depth, 64u);
  EXPECT_EQ(php.service, "default/web");
  EXPECT_EQ(php.vip, ip("198.19.0.10"));
  EXPECT_EQ(php.proto, 6);
  EXPECT_EQ(php.port, 80);
  EXPECT_TRUE(parse_config(kFullConfig, "f")->filters.empty());
  EXPECT_EQ(parse_config(kFullConfig, "f")->filter_max_rules, 4096u);
}

TEST(parse_config, refuses_bad_filter_rules_naming_the_rule) {
  std::string base(kFullConfig);
  auto rule = [&](const std::string& body) {
    return base + "[[filter]]\nname = \"ok\"\npattern = \"ok\"\n[[filter]]\nname = \"bad\"\n" +
           body;
  };
  std::string msg = config_err(rule("pattern = \"(evil\"\n"));
  expect_names_source(msg);
  EXPECT_TRUE(has(msg, "filter[1] (bad): pattern: Missing close parenthesis")) << msg;
  msg = config_err(rule("pattern = \"x\"\ndepth = 0\n"));
  EXPECT_TRUE(has(msg, "filter[1] (bad): depth: must be between 1 and 65535, got 0")) << msg;
  msg = config_err(rule("pattern = \"x\"\naction = \"block\"\n"));
  EXPECT_TRUE(has(msg, "filter[1] (bad): action: \"block\" must be drop or count")) << msg;
  msg = config_err(rule("pattern = \"x\"\nprotocol = \"SCTP\"\n"));
  EXPECT_TRUE(has(msg, "filter[1] (bad): protocol")) << msg;
  msg = config_err(rule("pattern = \"x\"\nvip = \"1.2.3\"\n"));
  EXPECT_TRUE(has(msg, "filter[1] (bad): vip")) << msg;
  msg = config_err(rule("pattern = \"x\"\nflags = [\"nocase\"]\n"));
  EXPECT_TRUE(has(msg, "filter[1] (bad): flags: unknown flag \"nocase\"")) << msg;
  msg = config_err(rule(""));
  EXPECT_TRUE(has(msg, "filter[1] (bad): pattern: required")) << msg;
  msg = config_err(base +
                   "[[filter]]\nname = \"a\"\npattern = \"x\"\n[[filter]]\nname = \"a\"\n"
                   "pattern = \"y\"\n");
  EXPECT_TRUE(has(msg, "filter[1] (a): name: duplicate filter name \"a\"")) << msg;
  msg = config_err(base + "[limits]\nfilter_max_rules = 1\n" +
                   rule("pattern = \"x\"\n").substr(base.size()));
  EXPECT_TRUE(has(msg, "more than limits.filter_max_rules (1)")) << msg;
}

// Issue 16 item 3: values nested 100,000 deep overflowed toml11's stack; now a message with
// the line, before toml11 sees the text. Every way TOML nests is bounded.
TEST(parse_config, deep_nesting_is_refused_before_toml11_sees_it) {
  const size_t n = 100000;
  const std::string base = std::string(kOnePort);
  std::string tables, key = "a", header = "[a", mixed = "x = [";
  for (size_t i = 0; i < n; ++i) tables += "{a=";
  for (size_t i = 0; i < n; ++i) key += ".a";
  for (size_t i = 0; i < n; ++i) header += ".a";
  for (size_t i = 0; i < n / 4; ++i) mixed += "{a.b.c=[";
  const std::vector<std::string> deep = {
      "[node]\nname = " + std::string(n, '[') + std::string(n, ']') + "\n",  // arrays
      "[node]\nx = " + tables + "1" + std::string(n, '}') + "\n",            // inline tables
      key + " = 1\n",                                                        // a dotted key
      header + "]\n",                                                        // a dotted header
      mixed + "\n",  // dotted keys in inline tables in arrays
  };
  for (const auto& d : deep) {
    auto msg = config_err(base + "\n" + d);
    EXPECT_TRUE(has(msg, "test.toml:")) << msg.substr(0, 200);
    EXPECT_TRUE(has(msg, "nested more than 32 levels deep")) << msg.substr(0, 200);
  }
  // The line is named.
  auto at = config_err(base + "\nx = " + std::string(40, '[') + "\n");
  EXPECT_TRUE(has(at, "test.toml:7:")) << at;
  // Brackets inside strings and comments do not count; modest nesting is fine.
  auto ok = parse_config(base + "# " + std::string(100, '[') + "\n[node]\nname = \"" +
                             std::string(100, '{') + "\"\n[dataplane]\neal_args = ['''" +
                             std::string(100, '[') + "''']\n",
                         "t.toml");
  ASSERT_TRUE(ok.ok()) << ok.message();
  EXPECT_EQ(ok->node_name, std::string(100, '{'));
  // 32 levels are allowed (the key is then refused as unknown, not for its depth); a table
  // header's depth counts: [[port]] is 2 (the array and its table).
  auto msg = config_err("x = " + std::string(32, '[') + std::string(32, ']') + "\n" + base);
  EXPECT_TRUE(has(msg, "x: unknown key")) << msg;
  msg = config_err("x = " + std::string(33, '[') + std::string(33, ']') + "\n" + base);
  EXPECT_TRUE(has(msg, "nested")) << msg;
  msg = config_err(base + "x = " + std::string(30, '[') + std::string(30, ']') + "\n");
  EXPECT_TRUE(has(msg, "port[0].x: unknown key")) << msg;
  msg = config_err(base + "x = " + std::string(31, '[') + std::string(31, ']') + "\n");
  EXPECT_TRUE(has(msg, "nested")) << msg;
}

// Issue 16 item 19: values that passed --check but are wrong.
TEST(parse_config, ports_must_have_their_own_device_and_subnet) {
  const std::string two = R"toml(
[[port]]
name = "eth0"
device = "net_af_packet0,iface=fe0"
address = "198.18.0.254/24"
[[port]]
name = "eth1"
)toml";
  auto msg =
      config_err(two + "device = \"net_af_packet0,iface=fe1\"\naddress = \"198.18.1.254/24\"\n");
  EXPECT_TRUE(has(msg,
                  "port[1].device: \"net_af_packet0,iface=fe1\" is the device of another "
                  "port (port[0], eth0)"))
      << msg;
  msg = config_err(two + "device = \"net_af_packet1,iface=fe0\"\naddress = \"198.18.1.254/24\"\n");
  EXPECT_TRUE(has(msg, "port[1].device")) << msg;
  msg = config_err(two + "device = \"net_af_packet1,iface=fe1\"\naddress = \"198.18.0.1/24\"\n");
  EXPECT_TRUE(has(msg, "port[1].address: 198.18.0.0/24 is on the subnet of another port")) << msg;
  msg = config_err(two + "device = \"net_af_packet1,iface=fe1\"\naddress = \"198.18.0.1/16\"\n");
  EXPECT_TRUE(has(msg, "port[1].address")) << msg;
  auto ok = parse_config(
      two + "device = \"net_af_packet1,iface=fe1\"\naddress = \"198.18.1.254/24\"\n", "t.toml");
  EXPECT_TRUE(ok.ok()) << ok.message();
}

TEST(parse_config, service_cidr_and_dns_addresses_are_checked_against_the_node) {
  const std::string base = std::string(kOnePort);
  auto msg = config_err(base + "[services]\nservice_cidr = \"0.0.0.0/0\"\n");
  EXPECT_TRUE(has(msg, "services.service_cidr: 0.0.0.0/0 is too large")) << msg;
  msg = config_err(base + "[services]\nservice_cidr = \"10.0.0.0/11\"\n");
  EXPECT_TRUE(has(msg, "at least 12")) << msg;
  msg = config_err(base + "[services]\nservice_cidr = \"198.18.0.0/16\"\n");
  EXPECT_TRUE(has(msg, "services.service_cidr: 198.18.0.0/16 overlaps port[0].address")) << msg;
  EXPECT_TRUE(parse_config(base + "[services]\nservice_cidr = \"10.96.0.0/12\"\n", "t").ok());
  msg = config_err(base + "[dns]\naddresses = [\"198.18.0.254\"]\n");
  EXPECT_TRUE(has(msg, "dns.addresses: 198.18.0.254 is port[0].address")) << msg;
  // On the node's subnet (ferryd answers ARP for it) is fine, as the demo does.
  EXPECT_TRUE(parse_config(base + "[dns]\naddresses = [\"198.18.0.53\"]\n", "t").ok());
}

TEST(parse_config, reassembly_tables_must_fit_the_dpdk_memory) {
  const std::string base = std::string(kOnePort) +
                           "[dataplane]\neal_args = [\"-l\", \"0-2\", \"--no-huge\", \"-m\", "
                           "\"512\"]\n[fragments]\n";
  // The documented maximum: 512 MiB per worker, two workers.
  auto msg = config_err(base + "max_datagrams = 1048576\n");
  EXPECT_TRUE(has(msg,
                  "fragments.max_datagrams: 1048576 needs a reassembly table of 512 MiB per "
                  "worker (2 workers)"))
      << msg;
  EXPECT_TRUE(has(msg, "512 MiB dataplane.eal_args gives DPDK")) << msg;
  // 128 MiB per worker: fits.
  EXPECT_TRUE(parse_config(base + "max_datagrams = 262144\n", "t").ok());
  // Off, or memory not given: nothing to check.
  EXPECT_TRUE(parse_config(base + "max_datagrams = 1048576\nenabled = false\n", "t").ok());
  EXPECT_TRUE(
      parse_config(std::string(kOnePort) + "[fragments]\nmax_datagrams = 1048576\n", "t").ok());
  // --socket-mem counts too.
  msg = config_err(std::string(kOnePort) +
                   "[dataplane]\neal_args = [\"--socket-mem=64,64\"]\n[fragments]\n"
                   "max_datagrams = 262144\n");
  EXPECT_TRUE(has(msg, "fragments.max_datagrams")) << msg;
}

}  // namespace
}  // namespace ferry::control
