#include "compile.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/maglev.hpp"
#include "ferry/net.hpp"
#include "ferry/snapshot.hpp"
#include "model.hpp"
#include "store.hpp"

namespace ferry::control {
namespace {

// The seed: my-service 80 -> 9376 and a slice with three ready endpoints on 9376.
constexpr std::string_view kSeedService = R"(apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  clusterIP: 198.19.0.10
  selector:
    app: MyApp
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
)";

constexpr std::string_view kSeedSlice = R"(apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: my-service-abc12
  labels:
    kubernetes.io/service-name: my-service
addressType: IPv4
ports:
  - name: ""
    protocol: TCP
    port: 9376
endpoints:
  - addresses: ["198.18.1.11"]
    conditions: {ready: true}
  - addresses: ["198.18.1.12"]
    conditions: {ready: true}
  - addresses: ["198.18.1.13"]
    conditions: {ready: true}
)";

// A two-port Service; slices join its ports by name.
constexpr std::string_view kWebService = R"(apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  clusterIP: 198.19.0.20
  selector:
    app: web
  ports:
    - name: http
      port: 80
      targetPort: 8080
    - name: https
      port: 443
      targetPort: 8443
)";

constexpr uint32_t kMaxSize = kMaglevDefaultMaxSize;

uint32_t ip(const char* text) { return *parse_ipv4(text); }

bool has(const std::string& msg, std::string_view part) {
  return msg.find(part) != std::string::npos;
}

std::vector<model::object> parse(std::string_view text) {
  auto r = model::parse_manifests(text, "test.yaml");
  EXPECT_TRUE(r.ok()) << r.message();
  if (!r.ok()) return {};
  return std::move(r).value();
}

void apply_text(store& st, std::string_view text) {
  auto r = st.apply(parse(text), source::file);
  ASSERT_TRUE(r.ok()) << r.message();
}

std::string join(std::initializer_list<std::string_view> docs) {
  std::string out;
  for (auto d : docs) {
    if (!out.empty()) out += "---\n";
    out += d;
  }
  return out;
}

std::unique_ptr<snapshot> compile_ok(compiler& c, const store& st) {
  auto r = c.compile(st);
  EXPECT_TRUE(r.ok()) << r.message();
  if (!r.ok()) return nullptr;
  return std::move(r).value();
}

const service_port_entry* find_vip(const snapshot& snap, const char* vip, uint16_t port,
                                   uint8_t proto = kProtoTcp) {
  auto found = snap.vips.find(service_key(ip(vip), proto, port));
  return found ? found->get() : nullptr;
}

// "a.b.c.d:port/weight" for each backend, for readable comparisons.
std::vector<std::string> describe(const std::vector<backend>& backends) {
  std::vector<std::string> out;
  for (const auto& b : backends) {
    out.push_back(format_ipv4(b.ip) + ":" + std::to_string(b.port) + "/" +
                  std::to_string(b.weight));
  }
  return out;
}

// A slice for `service` with one port (`port_name`, `port`) and the endpoints given as YAML
// list items.
std::string slice_yaml(std::string_view name, std::string_view service, std::string_view port_name,
                       uint16_t port, std::string_view endpoints,
                       std::string_view protocol = "TCP") {
  return "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: " +
         std::string(name) +
         "\n  labels:\n    kubernetes.io/service-name: " + std::string(service) +
         "\naddressType: IPv4\nports:\n  - name: \"" + std::string(port_name) +
         "\"\n    protocol: " + std::string(protocol) + "\n    port: " + std::to_string(port) +
         "\nendpoints:\n" + std::string(endpoints);
}

std::string service_yaml(std::string_view name, std::string_view cluster_ip, uint16_t port) {
  return "apiVersion: v1\nkind: Service\nmetadata:\n  name: " + std::string(name) +
         "\nspec:\n  clusterIP: " + std::string(cluster_ip) +
         "\n  selector:\n    app: " + std::string(name) +
         "\n  ports:\n    - port: " + std::to_string(port) + "\n";
}

std::string pod_yaml(std::string_view name, std::string_view labels, std::string_view pod_ip,
                     bool ready, std::string_view ports = "", std::string_view ns = "default") {
  std::string text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + std::string(name) +
                     "\n  namespace: " + std::string(ns) + "\n  labels: " + std::string(labels) +
                     "\nspec:\n  containers:\n    - name: app\n";
  if (!ports.empty()) text += "      ports: " + std::string(ports) + "\n";
  text += "status:\n";
  if (!pod_ip.empty()) text += "  podIP: " + std::string(pod_ip) + "\n";
  text += "  conditions:\n    - type: Ready\n      status: \"" +
          std::string(ready ? "True" : "False") + "\"\n";
  return text;
}

const model::service& service_in(const store& st, const std::string& name) {
  return std::get<model::service>(st.objects().at(store::key{"Service", "default", name}).obj);
}

TEST(compile, seed_example_yields_one_service_port) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({kSeedService, kSeedSlice}));
  compiler c(kMaxSize, 65536);
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  EXPECT_EQ(snap->generation, 1u);
  ASSERT_EQ(snap->ports().size(), 1u);
  const service_port_entry& e = *snap->ports()[0];
  EXPECT_EQ(e.vip, ip("198.19.0.10"));
  EXPECT_EQ(e.port, 80);
  EXPECT_EQ(e.proto, kProtoTcp);
  EXPECT_EQ(e.name, "default/my-service");
  EXPECT_EQ(e.id, 0u);
  EXPECT_TRUE(e.has_active);
  EXPECT_EQ(
      describe(e.backends),
      (std::vector<std::string>{"198.18.1.11:9376/1", "198.18.1.12:9376/1", "198.18.1.13:9376/1"}));
}

TEST(compile, seed_example_has_a_prime_maglev_table_using_every_backend) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({kSeedService, kSeedSlice}));
  compiler c(kMaxSize, 65536);
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  ASSERT_EQ(snap->ports().size(), 1u);
  const auto& table = snap->ports()[0]->maglev;
  EXPECT_GE(table.size(), 300u);
  EXPECT_TRUE(is_prime(static_cast<uint32_t>(table.size()))) << table.size();
  std::set<uint16_t> used(table.begin(), table.end());
  EXPECT_EQ(used, (std::set<uint16_t>{0, 1, 2}));
}

TEST(compile, seed_example_is_found_in_the_vip_table) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({kSeedService, kSeedSlice}));
  compiler c(kMaxSize, 65536);
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  ASSERT_EQ(snap->ports().size(), 1u);
  auto found = snap->vips.find(service_key(ip("198.19.0.10"), 6, 80));
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->get(), snap->ports()[0]);
  EXPECT_EQ(snap->vips.size(), 1u);
  EXPECT_EQ(snap->vips.find(service_key(ip("198.19.0.10"), 17, 80)), nullptr);
  EXPECT_EQ(snap->vips.find(service_key(ip("198.19.0.10"), 6, 9376)), nullptr);
}

TEST(compile, seed_example_backends_are_found_in_the_backend_table) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({kSeedService, kSeedSlice}));
  compiler c(kMaxSize, 65536);
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  ASSERT_EQ(snap->ports().size(), 1u);
  for (const char* b : {"198.18.1.11", "198.18.1.12", "198.18.1.13"}) {
    auto found = snap->backends.find(service_key(ip(b), 6, 9376));
    ASSERT_NE(found, nullptr) << b;
    EXPECT_EQ(*found, snap->ports()[0]) << b;
  }
  EXPECT_EQ(snap->backends.size(), 3u);
  EXPECT_EQ(snap->backends.find(service_key(ip("198.18.1.11"), 6, 80)), nullptr);
}

TEST(compile, builtin_manifests_compile_to_two_service_ports) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  // The redis-master pair of the built-in demo: a legacy Endpoints object only.
  apply_text(st, join({kSeedService, kSeedSlice, R"(apiVersion: v1
kind: Service
metadata:
  name: redis-master
spec:
  clusterIP: 198.19.0.11
  ports:
    - protocol: TCP
      port: 6379
      targetPort: 6379
)",
                       R"(apiVersion: v1
kind: Endpoints
metadata:
  name: redis-master
subsets:
  - addresses:
      - ip: 198.18.1.21
    ports:
      - port: 6379
        protocol: TCP
)"}));
  compiler c(kMaxSize, 65536);
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  EXPECT_EQ(snap->ports().size(), 2u);
  auto redis = find_vip(*snap, "198.19.0.11", 6379);
  ASSERT_NE(redis, nullptr);
  EXPECT_EQ(describe(redis->backends), std::vector<std::string>{"198.18.1.21:6379/1"});
  EXPECT_NE(redis->id, find_vip(*snap, "198.19.0.10", 80)->id);
}

TEST(compile, slice_ports_join_service_ports_by_name) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({kWebService, slice_yaml("web-a", "web", "https", 8443,
                                               "  - addresses: [\"198.18.1.31\"]\n")}));
  compiler c(kMaxSize, 65536);
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  ASSERT_EQ(snap->ports().size(), 2u);
  auto http = find_vip(*snap, "198.19.0.20", 80);
  auto https = find_vip(*snap, "198.19.0.20", 443);
  ASSERT_NE(http, nullptr);
  ASSERT_NE(https, nullptr);
  EXPECT_EQ(http->name, "default/web:http");
  EXPECT_EQ(https->name, "default/web:https");
  // The "https" slice port must not feed the "http" service port.
  EXPECT_TRUE(http->backends.empty());
  EXPECT_FALSE(http->has_active);
  EXPECT_EQ(describe(https->backends), std::vector<std::string>{"198.18.1.31:8443/1"});
  EXPECT_TRUE(https->has_active);
}

TEST(compile, each_service_port_gets_the_port_of_its_named_slice_port) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({kWebService, R"(apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-a
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
  - name: https
    port: 8443
  - name: http
    port: 8080
endpoints:
  - addresses: ["198.18.1.31"]
  - addresses: ["198.18.1.32"]
)"}));
  compiler c(kMaxSize, 65536);
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  auto http = find_vip(*snap, "198.19.0.20", 80);
  auto https = find_vip(*snap, "198.19.0.20", 443);
  ASSERT_NE(http, nullptr);
  ASSERT_NE(https, nullptr);
  EXPECT_EQ(describe(http->backends),
            (std::vector<std::string>{"198.18.1.31:8080/1", "198.18.1.32:8080/1"}));
  EXPECT_EQ(describe(https->backends),
            (std::vector<std::string>{"198.18.1.31:8443/1", "198.18.1.32:8443/1"}));
  EXPECT_EQ(*snap->backends.find(service_key(ip("198.18.1.31"), 6, 8080)), http);
  EXPECT_EQ(*snap->backends.find(service_key(ip("198.18.1.31"), 6, 8443)), https);
  // Each backend port serves one frontend: not shared (replies may make flow entries).
  EXPECT_EQ(snap->shared_backends.find(service_key(ip("198.18.1.31"), 6, 8080)), nullptr);
}

TEST(compile, slice_port_of_another_protocol_does_not_join) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({kSeedService, slice_yaml("my-service-udp", "my-service", "", 9376,
                                                "  - addresses: [\"198.18.1.11\"]\n", "UDP")}));
  auto& svc = service_in(st, "my-service");
  EXPECT_TRUE(resolve_backends(st, svc, svc.ports[0]).empty());
}

TEST(compile, slices_of_other_services_and_namespaces_are_ignored) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  std::string other_ns =
      slice_yaml("my-service-x", "my-service", "", 9376, "  - addresses: [\"198.18.1.51\"]\n");
  other_ns.replace(other_ns.find("  name: my-service-x"), 0, "  namespace: prod\n");
  apply_text(
      st, join({kSeedService, other_ns,
                slice_yaml("other-y", "other", "", 9376, "  - addresses: [\"198.18.1.52\"]\n")}));
  auto& svc = service_in(st, "my-service");
  EXPECT_TRUE(resolve_backends(st, svc, svc.ports[0]).empty());
}

TEST(compile, backends_from_several_slices_are_merged_sorted_and_deduplicated) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(
      st, join({kSeedService,
                slice_yaml("my-service-b", "my-service", "", 9376,
                           "  - addresses: [\"198.18.1.13\"]\n"
                           "  - addresses: [\"198.18.1.11\"]\n"),
                slice_yaml("my-service-a", "my-service", "", 9376,
                           "  - addresses: [\"198.18.1.12\"]\n"
                           "  - addresses: [\"198.18.1.11\"]\n"
                           "    conditions: {ready: false, serving: true, terminating: true}\n")}));
  auto& svc = service_in(st, "my-service");
  // The duplicate 198.18.1.11 keeps its ready (weight 1) copy.
  EXPECT_EQ(
      describe(resolve_backends(st, svc, svc.ports[0])),
      (std::vector<std::string>{"198.18.1.11:9376/1", "198.18.1.12:9376/1", "198.18.1.13:9376/1"}));
}

TEST(compile, not_ready_endpoints_are_excluded) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st,
             join({kSeedService, slice_yaml("my-service-a", "my-service", "", 9376,
                                            "  - addresses: [\"198.18.1.11\"]\n"
                                            "  - addresses: [\"198.18.1.12\"]\n"
                                            "    conditions: {ready: false}\n"
                                            "  - addresses: [\"198.18.1.13\"]\n"
                                            "    conditions: {ready: false, serving: true}\n")}));
  compiler c(kMaxSize, 65536);
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  auto e = find_vip(*snap, "198.19.0.10", 80);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(describe(e->backends), std::vector<std::string>{"198.18.1.11:9376/1"});
  EXPECT_EQ(snap->backends.find(service_key(ip("198.18.1.12"), 6, 9376)), nullptr);
}

TEST(compile, terminating_endpoints_drain_with_weight_zero) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(
      st,
      join({kSeedService,
            slice_yaml("my-service-a", "my-service", "", 9376,
                       "  - addresses: [\"198.18.1.11\"]\n"
                       "  - addresses: [\"198.18.1.12\"]\n"
                       "    conditions: {ready: false, serving: true, terminating: true}\n"
                       "  - addresses: [\"198.18.1.13\"]\n"
                       "    conditions: {ready: false, serving: false, terminating: true}\n")}));
  compiler c(kMaxSize, 65536);
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  auto e = find_vip(*snap, "198.19.0.10", 80);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(describe(e->backends),
            (std::vector<std::string>{"198.18.1.11:9376/1", "198.18.1.12:9376/0"}));
  EXPECT_TRUE(e->has_active);
  // Draining backends get no Maglev slots, but replies from them are still un-NATed.
  EXPECT_TRUE(std::all_of(e->maglev.begin(), e->maglev.end(), [](uint16_t i) { return i == 0; }));
  EXPECT_NE(snap->backends.find(service_key(ip("198.18.1.12"), 6, 9376)), nullptr);
}

// kube-proxy's fallback: with no ready endpoint left, serving-and-terminating ones take new
// traffic (so a rolling update never blackholes); with a ready one, they only drain.
TEST(compile, only_terminating_endpoints_take_traffic_when_none_is_ready) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(
      st, join({kSeedService,
                slice_yaml("my-service-a", "my-service", "", 9376,
                           "  - addresses: [\"198.18.1.11\"]\n"
                           "    conditions: {ready: false, serving: true, terminating: true}\n"
                           "  - addresses: [\"198.18.1.12\"]\n"
                           "    conditions: {ready: false, serving: true, terminating: true}\n")}));
  compiler c(kMaxSize, 65536);
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  auto e = find_vip(*snap, "198.19.0.10", 80);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(describe(e->backends),
            (std::vector<std::string>{"198.18.1.11:9376/1", "198.18.1.12:9376/1"}));
  EXPECT_TRUE(e->has_active);

  // A ready endpoint comes back: the terminating ones drain.
  apply_text(
      st, slice_yaml("my-service-b", "my-service", "", 9376, "  - addresses: [\"198.18.1.13\"]\n"));
  snap = compile_ok(c, st);
  e = find_vip(*snap, "198.19.0.10", 80);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(
      describe(e->backends),
      (std::vector<std::string>{"198.18.1.11:9376/0", "198.18.1.12:9376/0", "198.18.1.13:9376/1"}));
}

// serving absent counts as true (kube-proxy), so a terminating endpoint that does not say
// whether it serves still carries traffic when nothing is ready.
TEST(compile, terminating_endpoint_without_serving_is_a_fallback) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(
      st, join({kSeedService, slice_yaml("my-service-a", "my-service", "", 9376,
                                         "  - addresses: [\"198.18.1.11\"]\n"
                                         "    conditions: {ready: false, terminating: true}\n")}));
  compiler c(kMaxSize, 65536);
  auto snap = compile_ok(c, st);
  auto e = find_vip(*snap, "198.19.0.10", 80);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(describe(e->backends), std::vector<std::string>{"198.18.1.11:9376/1"});
}

// A Service another proxy owns (service.kubernetes.io/service-proxy-name) is not forwarded.
TEST(compile, service_of_another_proxy_is_not_forwarded) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  std::string svc(kSeedService);
  svc.replace(svc.find("  name: my-service\n") + 19, 0,
              "  labels: {service.kubernetes.io/service-proxy-name: other-proxy}\n");
  apply_text(st, join({svc, kSeedSlice}));
  compiler c(kMaxSize, 65536);
  auto snap = compile_ok(c, st);
  EXPECT_TRUE(snap->ports().empty());
}

TEST(compile, endpoints_neither_ready_nor_serving_leave_no_backend) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st,
             join({kSeedService,
                   slice_yaml("my-service-a", "my-service", "", 9376,
                              "  - addresses: [\"198.18.1.11\"]\n"
                              "    conditions: {ready: false, serving: false, terminating: true}\n"
                              "  - addresses: [\"198.18.1.12\"]\n"
                              "    conditions: {ready: false}\n")}));
  compiler c(kMaxSize, 65536);
  auto snap = compile_ok(c, st);
  auto e = find_vip(*snap, "198.19.0.10", 80);
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(e->backends.empty());
  EXPECT_FALSE(e->has_active);
  EXPECT_FALSE(e->drop_empty);  // no endpoints at all: rejected (ICMP), not dropped
}

TEST(compile, service_without_endpoints_has_an_empty_entry) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, kSeedService);
  compiler c(kMaxSize, 65536);
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  auto e = find_vip(*snap, "198.19.0.10", 80);
  ASSERT_NE(e, nullptr);  // still answered (ICMP unreachable), so it must be in the table
  EXPECT_TRUE(e->backends.empty());
  EXPECT_FALSE(e->has_active);
  EXPECT_EQ(snap->backends.size(), 0u);
}

constexpr std::string_view kSeedEndpoints = R"(apiVersion: v1
kind: Endpoints
metadata:
  name: my-service
subsets:
  - addresses:
      - ip: 198.18.1.21
      - ip: 198.18.1.22
    notReadyAddresses:
      - ip: 198.18.1.23
    ports:
      - port: 9376
        protocol: TCP
)";

TEST(compile, legacy_endpoints_are_used_without_slices) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({kSeedService, kSeedEndpoints}));
  auto& svc = service_in(st, "my-service");
  EXPECT_EQ(describe(resolve_backends(st, svc, svc.ports[0])),
            (std::vector<std::string>{"198.18.1.21:9376/1", "198.18.1.22:9376/1"}));
}

TEST(compile, legacy_endpoints_are_ignored_when_a_slice_exists) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({kSeedService, kSeedEndpoints, kSeedSlice}));
  auto& svc = service_in(st, "my-service");
  EXPECT_EQ(
      describe(resolve_backends(st, svc, svc.ports[0])),
      (std::vector<std::string>{"198.18.1.11:9376/1", "198.18.1.12:9376/1", "198.18.1.13:9376/1"}));
}

TEST(compile, legacy_endpoints_of_another_namespace_are_ignored) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  std::string other(kSeedEndpoints);
  other.replace(other.find("  name: my-service"), 0, "  namespace: prod\n");
  apply_text(st, join({kSeedService, other}));
  auto& svc = service_in(st, "my-service");
  EXPECT_TRUE(resolve_backends(st, svc, svc.ports[0]).empty());
}

TEST(compile, pods_are_used_without_endpoint_objects) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({kSeedService, pod_yaml("my-app-1", "{app: MyApp}", "198.18.1.41", true),
                       pod_yaml("my-app-2", "{app: MyApp, tier: x}", "198.18.1.42", true),
                       pod_yaml("not-ready", "{app: MyApp}", "198.18.1.43", false),
                       pod_yaml("no-ip", "{app: MyApp}", "", true),
                       pod_yaml("other-app", "{app: Other}", "198.18.1.44", true),
                       pod_yaml("other-ns", "{app: MyApp}", "198.18.1.45", true, "", "prod")}));
  compiler c(kMaxSize, 65536);
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  auto e = find_vip(*snap, "198.19.0.10", 80);
  ASSERT_NE(e, nullptr);
  // Numeric targetPort 9376.
  EXPECT_EQ(describe(e->backends),
            (std::vector<std::string>{"198.18.1.41:9376/1", "198.18.1.42:9376/1"}));
}

TEST(compile, pods_resolve_a_named_target_port_through_container_ports) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(
      st,
      join({R"(apiVersion: v1
kind: Service
metadata:
  name: named
spec:
  clusterIP: 198.19.0.30
  selector:
    app: named
  ports:
    - port: 80
      targetPort: web
)",
            pod_yaml("named-1", "{app: named}", "198.18.1.61", true,
                     "[{name: web, containerPort: 8080}, {name: admin, containerPort: 9000}]"),
            pod_yaml("named-2", "{app: named}", "198.18.1.62", true,
                     "[{name: web, containerPort: 8081}]"),
            pod_yaml("named-udp", "{app: named}", "198.18.1.63", true,
                     "[{name: web, containerPort: 8082, protocol: UDP}]"),
            pod_yaml("unnamed", "{app: named}", "198.18.1.64", true, "[{containerPort: 8080}]")}));
  auto& svc = service_in(st, "named");
  // Each pod maps the name itself; pods without a TCP port of that name are left out.
  EXPECT_EQ(describe(resolve_backends(st, svc, svc.ports[0])),
            (std::vector<std::string>{"198.18.1.61:8080/1", "198.18.1.62:8081/1"}));
}

TEST(compile, pods_without_target_port_use_the_service_port) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({service_yaml("plain", "198.19.0.31", 8080),
                       pod_yaml("plain-1", "{app: plain}", "198.18.1.71", true)}));
  auto& svc = service_in(st, "plain");
  EXPECT_EQ(describe(resolve_backends(st, svc, svc.ports[0])),
            std::vector<std::string>{"198.18.1.71:8080/1"});
}

TEST(compile, pods_are_ignored_when_endpoint_objects_exist) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  std::string pod = pod_yaml("my-app-9", "{app: MyApp}", "198.18.1.99", true);
  apply_text(st, join({kSeedService, kSeedEndpoints, pod}));
  auto& svc = service_in(st, "my-service");
  auto with_endpoints = describe(resolve_backends(st, svc, svc.ports[0]));
  EXPECT_EQ(std::count(with_endpoints.begin(), with_endpoints.end(), "198.18.1.99:9376/1"), 0);

  store st2(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st2, join({kSeedService, kSeedSlice, pod}));
  auto& svc2 = service_in(st2, "my-service");
  EXPECT_EQ(resolve_backends(st2, svc2, svc2.ports[0]).size(), 3u);
}

TEST(compile, service_without_selector_takes_no_pods) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({R"(apiVersion: v1
kind: Service
metadata:
  name: manual
spec:
  clusterIP: 198.19.0.32
  ports:
    - port: 80
)",
                       pod_yaml("any", "{app: manual}", "198.18.1.81", true)}));
  auto& svc = service_in(st, "manual");
  EXPECT_TRUE(resolve_backends(st, svc, svc.ports[0]).empty());
}

TEST(compile, unchanged_service_ports_are_reused) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st,
             join({kSeedService, kSeedSlice, service_yaml("other", "198.19.0.40", 81),
                   slice_yaml("other-a", "other", "", 81, "  - addresses: [\"198.18.1.91\"]\n")}));
  compiler c(kMaxSize, 65536);
  auto first = compile_ok(c, st);
  ASSERT_TRUE(first);
  auto seed1 = find_vip(*first, "198.19.0.10", 80);
  auto other1 = find_vip(*first, "198.19.0.40", 81);
  ASSERT_NE(seed1, nullptr);
  ASSERT_NE(other1, nullptr);

  // Nothing changed: every entry is the same object.
  auto second = compile_ok(c, st);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->generation, first->generation + 1);
  EXPECT_EQ(find_vip(*second, "198.19.0.10", 80), seed1);
  EXPECT_EQ(find_vip(*second, "198.19.0.40", 81), other1);

  // One endpoint more behind "other": only that entry is rebuilt.
  apply_text(st, slice_yaml("other-a", "other", "", 81,
                            "  - addresses: [\"198.18.1.91\"]\n"
                            "  - addresses: [\"198.18.1.92\"]\n"));
  auto third = compile_ok(c, st);
  ASSERT_TRUE(third);
  ASSERT_EQ(third->ports().size(), 2u);
  EXPECT_EQ(find_vip(*third, "198.19.0.10", 80), seed1);
  auto other3 = find_vip(*third, "198.19.0.40", 81);
  ASSERT_NE(other3, nullptr);
  EXPECT_NE(other3, other1);
  EXPECT_EQ(other3->backends.size(), 2u);
  // The old snapshot still owns its entry, untouched (workers may be reading it).
  EXPECT_EQ(other1->backends.size(), 1u);
}

TEST(compile, reused_entries_are_shared_between_snapshots) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({kSeedService, kSeedSlice}));
  compiler c(kMaxSize, 65536);
  auto first = compile_ok(c, st);
  auto second = compile_ok(c, st);
  ASSERT_TRUE(first && second);
  ASSERT_EQ(first->ports().size(), 1u);
  ASSERT_EQ(second->ports().size(), 1u);
  EXPECT_EQ(first->ports()[0], second->ports()[0]);
}

TEST(compile, weight_change_rebuilds_the_entry) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({kSeedService, kSeedSlice}));
  compiler c(kMaxSize, 65536);
  auto first = compile_ok(c, st);
  ASSERT_TRUE(first);
  apply_text(st, slice_yaml("my-service-abc12", "my-service", "", 9376,
                            "  - addresses: [\"198.18.1.11\"]\n"
                            "  - addresses: [\"198.18.1.12\"]\n"
                            "  - addresses: [\"198.18.1.13\"]\n"
                            "    conditions: {ready: false, serving: true, terminating: true}\n"));
  auto second = compile_ok(c, st);
  ASSERT_TRUE(second);
  ASSERT_EQ(second->ports().size(), 1u);
  EXPECT_NE(second->ports()[0], first->ports()[0]);
  EXPECT_EQ(second->ports()[0]->id, first->ports()[0]->id);
  EXPECT_EQ(
      describe(second->ports()[0]->backends),
      (std::vector<std::string>{"198.18.1.11:9376/1", "198.18.1.12:9376/1", "198.18.1.13:9376/0"}));
}

TEST(compile, counter_ids_stay_stable_for_unchanged_service_ports) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({service_yaml("a", "198.19.0.1", 80), service_yaml("b", "198.19.0.2", 80),
                       service_yaml("c", "198.19.0.3", 80)}));
  compiler c(kMaxSize, 65536);
  auto first = compile_ok(c, st);
  ASSERT_TRUE(first);
  uint32_t id_a = find_vip(*first, "198.19.0.1", 80)->id;
  uint32_t id_b = find_vip(*first, "198.19.0.2", 80)->id;
  uint32_t id_c = find_vip(*first, "198.19.0.3", 80)->id;
  EXPECT_EQ((std::set<uint32_t>{id_a, id_b, id_c}), (std::set<uint32_t>{0, 1, 2}));

  // A new service and a changed one: the others keep their slots.
  apply_text(st, join({service_yaml("d", "198.19.0.4", 80),
                       slice_yaml("b-1", "b", "", 80, "  - addresses: [\"198.18.1.2\"]\n")}));
  auto second = compile_ok(c, st);
  ASSERT_TRUE(second);
  EXPECT_EQ(find_vip(*second, "198.19.0.1", 80)->id, id_a);
  EXPECT_EQ(find_vip(*second, "198.19.0.2", 80)->id, id_b);
  EXPECT_EQ(find_vip(*second, "198.19.0.3", 80)->id, id_c);
  EXPECT_EQ(find_vip(*second, "198.19.0.4", 80)->id, 3u);
}

// TCP abuse: a backend serving two frontends is marked shared (no flow entry is made from
// its replies), and unmarked, incrementally, when one of them goes.
TEST(compile, a_backend_of_two_frontends_is_shared_until_one_goes) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  const std::string pod = "  - addresses: [\"198.18.1.11\"]\n";
  apply_text(st,
             join({service_yaml("a", "198.19.0.1", 80), service_yaml("b", "198.19.0.2", 80),
                   slice_yaml("a-1", "a", "", 9376, pod), slice_yaml("b-1", "b", "", 9376, pod)}));
  compiler c(kMaxSize, 65536);
  auto first = compile_ok(c, st);
  ASSERT_TRUE(first);
  const uint64_t key = service_key(ip("198.18.1.11"), 6, 9376);
  EXPECT_NE(first->shared_backends.find(key), nullptr);
  ASSERT_NE(first->backends.find(key), nullptr);  // still un-NATed (to the lowest ClusterIP)
  st.remove(parse(service_yaml("b", "198.19.0.2", 80)));
  auto second = compile_ok(c, st);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->shared_backends.find(key), nullptr);
  ASSERT_NE(second->backends.find(key), nullptr);
  EXPECT_EQ((*second->backends.find(key))->vip, ip("198.19.0.1"));
}

TEST(compile, counter_ids_are_reused_after_a_service_is_deleted) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({service_yaml("a", "198.19.0.1", 80), service_yaml("b", "198.19.0.2", 80),
                       service_yaml("c", "198.19.0.3", 80)}));
  compiler c(kMaxSize, 65536);
  auto first = compile_ok(c, st);
  ASSERT_TRUE(first);
  uint32_t id_b = find_vip(*first, "198.19.0.2", 80)->id;

  st.remove(parse(service_yaml("b", "198.19.0.2", 80)));
  auto second = compile_ok(c, st);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->ports().size(), 2u);
  EXPECT_EQ(find_vip(*second, "198.19.0.2", 80), nullptr);

  apply_text(st, service_yaml("e", "198.19.0.5", 80));
  auto third = compile_ok(c, st);
  ASSERT_TRUE(third);
  EXPECT_EQ(find_vip(*third, "198.19.0.5", 80)->id, id_b);
  std::set<uint32_t> ids;
  for (const auto& e : third->ports()) ids.insert(e->id);
  EXPECT_EQ(ids, (std::set<uint32_t>{0, 1, 2}));
}

TEST(compile, ids_stay_below_max_service_ports_through_churn) {
  compiler c(kMaxSize, 16);
  for (int round = 0; round < 10; ++round) {
    std::string text;
    for (int i = 0; i < 16; ++i) {
      if (i) text += "---\n";
      // Each round replaces half the services with new ones.
      int n = (i % 2) ? i : i + 100 * round;
      std::string name = "s";  // appended, not "s" + ...: GCC 12 warns (-Wrestrict) at -O2
      name += std::to_string(n);
      std::string vip = "198.19.1.";
      vip += std::to_string(n % 250 + 1);
      text += service_yaml(name, vip, static_cast<uint16_t>(1000 + n));
    }
    store fresh(*parse_ipv4_prefix("198.19.0.0/16"));
    apply_text(fresh, text);
    auto snap = compile_ok(c, fresh);
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->ports().size(), 16u);
    std::set<uint32_t> ids;
    for (const auto& e : snap->ports()) {
      EXPECT_LT(e->id, 16u);
      ids.insert(e->id);
    }
    EXPECT_EQ(ids.size(), 16u) << "round " << round;
  }
}

TEST(compile, too_many_service_ports_is_an_error) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({service_yaml("a", "198.19.0.1", 80), service_yaml("b", "198.19.0.2", 80),
                       kWebService}));
  compiler c(kMaxSize, 3);
  auto r = c.compile(st);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "too many service ports: 4")) << r.message();
  EXPECT_TRUE(has(r.message(), "max_service_ports is 3")) << r.message();
}

TEST(compile, failed_compile_changes_nothing) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({service_yaml("a", "198.19.0.1", 80), service_yaml("b", "198.19.0.2", 80)}));
  compiler c(kMaxSize, 2);
  auto first = compile_ok(c, st);
  ASSERT_TRUE(first);
  auto a1 = find_vip(*first, "198.19.0.1", 80);

  apply_text(st, service_yaml("c", "198.19.0.3", 80));
  EXPECT_FALSE(c.compile(st).ok());

  st.remove(parse(service_yaml("c", "198.19.0.3", 80)));
  auto second = compile_ok(c, st);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->generation, first->generation + 1);
  EXPECT_EQ(find_vip(*second, "198.19.0.1", 80), a1);
}

TEST(compile, exactly_max_service_ports_is_allowed) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({service_yaml("a", "198.19.0.1", 80), kWebService}));
  compiler c(kMaxSize, 3);
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  EXPECT_EQ(snap->ports().size(), 3u);
}

TEST(compile, external_name_and_headless_services_produce_no_entries) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(
      st,
      join({R"(apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  type: ExternalName
  externalName: db.example.com
  ports:
    - port: 5432
)",
            R"(apiVersion: v1
kind: Service
metadata:
  name: ext-with-ip
spec:
  type: ExternalName
  externalName: db.example.com
  clusterIP: 198.19.0.50
  ports:
    - port: 5432
)",
            R"(apiVersion: v1
kind: Service
metadata:
  name: headless
spec:
  clusterIP: None
  selector:
    app: headless
  ports:
    - port: 80
)",
            slice_yaml("headless-a", "headless", "", 80, "  - addresses: [\"198.18.1.55\"]\n")}));
  compiler c(kMaxSize, 65536);
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  EXPECT_TRUE(snap->ports().empty());
  EXPECT_EQ(snap->vips.size(), 0u);
  EXPECT_EQ(snap->backends.size(), 0u);
  EXPECT_EQ(find_vip(*snap, "198.19.0.50", 5432), nullptr);
}

TEST(compile, every_protocol_and_port_is_its_own_entry) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, R"(apiVersion: v1
kind: Service
metadata:
  name: dns
spec:
  clusterIP: 198.19.0.53
  ports:
    - name: dns-udp
      protocol: UDP
      port: 53
    - name: dns-tcp
      protocol: TCP
      port: 53
)");
  compiler c(kMaxSize, 65536);
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  ASSERT_EQ(snap->ports().size(), 2u);
  auto udp = find_vip(*snap, "198.19.0.53", 53, kProtoUdp);
  auto tcp = find_vip(*snap, "198.19.0.53", 53, kProtoTcp);
  ASSERT_NE(udp, nullptr);
  ASSERT_NE(tcp, nullptr);
  EXPECT_NE(udp, tcp);
  EXPECT_EQ(udp->proto, kProtoUdp);
  EXPECT_EQ(udp->name, "default/dns:dns-udp");
  EXPECT_NE(udp->id, tcp->id);
}

}  // namespace
}  // namespace ferry::control

// ---- Frontends and traffic policies ----------------------------------------------------------

namespace ferry::control {
namespace {

constexpr uint16_t kNodePort = 30080;

// A LoadBalancer Service "lb" (ClusterIP 198.19.0.60) with every kind of frontend: the
// ClusterIP, externalIP 203.0.113.20, load balancer address 203.0.113.30 (status) and
// nodePort 30080, all for port 80 -> 8080. `spec` adds spec lines (indented two spaces).
std::string frontends_service(std::string_view spec = "") {
  return R"(apiVersion: v1
kind: Service
metadata:
  name: lb
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.60
  selector:
    app: lb
  externalIPs: [203.0.113.20]
  loadBalancerSourceRanges: [192.0.2.0/24, 198.51.100.7/32]
)" + std::string(spec) +
         R"(  ports:
    - port: 80
      targetPort: 8080
      nodePort: 30080
status:
  loadBalancer:
    ingress:
      - ip: 203.0.113.30
)";
}

// Endpoints of "lb" on port 8080: .11 and .13 on node-a, .12 on node-b.
std::string frontends_slice(std::string_view node_11 = "node-a",
                            std::string_view node_12 = "node-b",
                            std::string_view node_13 = "node-a") {
  return slice_yaml(
      "lb-1", "lb", "", 8080,
      "  - addresses: [\"198.18.2.11\"]\n    nodeName: " + std::string(node_11) +
          "\n  - addresses: [\"198.18.2.12\"]\n    nodeName: " + std::string(node_12) +
          "\n  - addresses: [\"198.18.2.13\"]\n    nodeName: " + std::string(node_13) + "\n");
}

const service_port_entry* find_node_port(const snapshot& snap, uint16_t port,
                                         uint8_t proto = kProtoTcp) {
  auto found = snap.vips.find(service_key(0, proto, port));
  return found ? found->get() : nullptr;
}

struct lb_entries {
  const service_port_entry *cluster_ip, *external_ip, *lb, *node_port;
};

// The four frontends of frontends_service(), each checked present.
lb_entries entries_of(const snapshot& snap) {
  lb_entries e{find_vip(snap, "198.19.0.60", 80), find_vip(snap, "203.0.113.20", 80),
               find_vip(snap, "203.0.113.30", 80), find_node_port(snap, kNodePort)};
  EXPECT_NE(e.cluster_ip, nullptr);
  EXPECT_NE(e.external_ip, nullptr);
  EXPECT_NE(e.lb, nullptr);
  EXPECT_NE(e.node_port, nullptr);
  return e;
}

// "a.b.c.d:port/weight/L" (L: on this node) for each backend.
std::vector<std::string> describe_local(const std::vector<backend>& backends) {
  std::vector<std::string> out;
  for (const auto& b : backends) {
    out.push_back(format_ipv4(b.ip) + ":" + std::to_string(b.port) + "/" +
                  std::to_string(b.weight) + (b.local ? "/L" : ""));
  }
  return out;
}

TEST(compile_frontends, each_frontend_of_a_service_port_is_an_entry) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({frontends_service(), frontends_slice()}));
  compiler c(kMaxSize, 65536, "node-a");
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  EXPECT_EQ(snap->ports().size(), 4u);
  auto e = entries_of(*snap);
  ASSERT_TRUE(e.cluster_ip && e.external_ip && e.lb && e.node_port);

  EXPECT_EQ(e.cluster_ip->vip, ip("198.19.0.60"));
  EXPECT_EQ(e.cluster_ip->port, 80);
  EXPECT_FALSE(e.cluster_ip->external);
  EXPECT_FALSE(e.cluster_ip->snat_remote);

  EXPECT_EQ(e.external_ip->vip, ip("203.0.113.20"));
  EXPECT_EQ(e.external_ip->port, 80);
  EXPECT_TRUE(e.external_ip->external);

  EXPECT_EQ(e.lb->vip, ip("203.0.113.30"));
  EXPECT_EQ(e.lb->port, 80);
  EXPECT_TRUE(e.lb->external);

  // The NodePort is keyed with address 0 and its own port number.
  EXPECT_EQ(e.node_port->vip, 0u);
  EXPECT_EQ(e.node_port->port, kNodePort);
  EXPECT_EQ(e.node_port->proto, kProtoTcp);
  EXPECT_TRUE(e.node_port->external);
  EXPECT_EQ(find_vip(*snap, "198.19.0.60", kNodePort), nullptr);
  EXPECT_EQ(find_node_port(*snap, 80), nullptr);

  // One Service port: one name and one affinity key, but a counter slot each.
  std::set<uint32_t> ids;
  for (const auto* f : {e.cluster_ip, e.external_ip, e.lb, e.node_port}) {
    EXPECT_EQ(f->name, "default/lb");
    EXPECT_EQ(f->proto, kProtoTcp);
    EXPECT_EQ(f->affinity_key, service_key(ip("198.19.0.60"), kProtoTcp, 80));
    EXPECT_EQ(describe(f->backends),
              (std::vector<std::string>{"198.18.2.11:8080/1", "198.18.2.12:8080/1",
                                        "198.18.2.13:8080/1"}));
    ids.insert(f->id);
  }
  EXPECT_EQ(ids.size(), 4u);
  // Replies without a flow entry are un-NATed to the ClusterIP entry.
  auto back = snap->backends.find(service_key(ip("198.18.2.12"), kProtoTcp, 8080));
  ASSERT_NE(back, nullptr);
  EXPECT_EQ(*back, e.cluster_ip);
}

TEST(compile_frontends, node_port_service_has_cluster_ip_and_node_port_entries) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, R"(apiVersion: v1
kind: Service
metadata:
  name: np
spec:
  type: NodePort
  clusterIP: 198.19.0.61
  ports:
    - {name: dns-udp, port: 53, protocol: UDP, nodePort: 30053}
    - {name: dns-tcp, port: 53, protocol: TCP, nodePort: 30054}
)");
  compiler c(kMaxSize, 65536);
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  EXPECT_EQ(snap->ports().size(), 4u);
  auto udp = find_node_port(*snap, 30053, kProtoUdp);
  auto tcp = find_node_port(*snap, 30054, kProtoTcp);
  ASSERT_NE(udp, nullptr);
  ASSERT_NE(tcp, nullptr);
  EXPECT_EQ(udp->name, "default/np:dns-udp");
  EXPECT_EQ(udp->affinity_key, service_key(ip("198.19.0.61"), kProtoUdp, 53));
  EXPECT_EQ(find_node_port(*snap, 30053, kProtoTcp), nullptr);
  EXPECT_EQ(find_node_port(*snap, 30054, kProtoUdp), nullptr);
  EXPECT_FALSE(snap->announces(0)) << "a NodePort is on every node address, nothing to announce";
  EXPECT_FALSE(snap->announces(ip("198.19.0.61")));
}

TEST(compile_frontends, allocated_node_port_and_pool_address_are_entries) {
  store st(service_ranges{.service_cidr = *parse_ipv4_prefix("198.19.0.0/16"),
                          .load_balancer_pool = {*parse_ipv4_prefix("203.0.113.64/26")}});
  apply_text(st, R"(apiVersion: v1
kind: Service
metadata:
  name: auto
spec:
  type: LoadBalancer
  ports:
    - port: 443
)");
  const auto& svc = service_in(st, "auto");
  ASSERT_EQ(svc.lb_ingress.size(), 1u);
  ASSERT_NE(svc.ports[0].node_port, 0);
  compiler c(kMaxSize, 65536, "", {*parse_ipv4_prefix("203.0.113.64/26")});
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  EXPECT_EQ(snap->ports().size(), 3u);
  auto lb = snap->vips.find(service_key(svc.lb_ingress[0], kProtoTcp, 443));
  ASSERT_NE(lb, nullptr);
  EXPECT_TRUE((*lb)->external);
  EXPECT_NE(find_node_port(*snap, svc.ports[0].node_port), nullptr);
  EXPECT_TRUE(snap->announces(svc.lb_ingress[0]));
}

TEST(compile_frontends, pending_load_balancer_has_no_address_entry) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, R"(apiVersion: v1
kind: Service
metadata:
  name: pending
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.62
  ports:
    - {port: 80, nodePort: 30081}
)");
  compiler c(kMaxSize, 65536);
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  EXPECT_EQ(snap->ports().size(), 2u);  // ClusterIP and NodePort
  EXPECT_NE(find_vip(*snap, "198.19.0.62", 80), nullptr);
  EXPECT_NE(find_node_port(*snap, 30081), nullptr);
  ASSERT_TRUE(snap->announced);
  EXPECT_TRUE(snap->announced->empty());
}

TEST(compile_frontends, external_policy_cluster_uses_every_endpoint_and_snats) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st,
             join({frontends_service("  externalTrafficPolicy: Cluster\n"), frontends_slice()}));
  compiler c(kMaxSize, 65536, "node-a");
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  auto e = entries_of(*snap);
  ASSERT_TRUE(e.cluster_ip && e.external_ip && e.lb && e.node_port);
  const std::vector<std::string> all{"198.18.2.11:8080/1/L", "198.18.2.12:8080/1",
                                     "198.18.2.13:8080/1/L"};
  for (const auto* f : {e.external_ip, e.lb, e.node_port}) {
    EXPECT_TRUE(f->snat_remote) << format_ipv4(f->vip) << ":" << f->port;
    EXPECT_FALSE(f->drop_empty);
    EXPECT_EQ(describe_local(f->backends), all) << format_ipv4(f->vip) << ":" << f->port;
  }
  EXPECT_FALSE(e.cluster_ip->snat_remote);
  EXPECT_EQ(describe_local(e.cluster_ip->backends), all);
}

TEST(compile_frontends, local_flag_follows_the_compilers_node_name) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({frontends_service(), frontends_slice()}));
  compiler on_b(kMaxSize, 65536, "node-b");
  auto snap = compile_ok(on_b, st);
  ASSERT_TRUE(snap);
  EXPECT_EQ(describe_local(find_vip(*snap, "198.19.0.60", 80)->backends),
            (std::vector<std::string>{"198.18.2.11:8080/1", "198.18.2.12:8080/1/L",
                                      "198.18.2.13:8080/1"}));
  // No node name: nothing is local (an endpoint without nodeName never is).
  compiler anonymous(kMaxSize, 65536);
  snap = compile_ok(anonymous, st);
  ASSERT_TRUE(snap);
  EXPECT_EQ(
      describe_local(find_vip(*snap, "198.19.0.60", 80)->backends),
      (std::vector<std::string>{"198.18.2.11:8080/1", "198.18.2.12:8080/1", "198.18.2.13:8080/1"}));
}

TEST(compile_frontends, external_policy_local_keeps_only_this_nodes_endpoints_outside) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({frontends_service("  externalTrafficPolicy: Local\n"), frontends_slice()}));
  compiler c(kMaxSize, 65536, "node-a");
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  auto e = entries_of(*snap);
  ASSERT_TRUE(e.cluster_ip && e.external_ip && e.lb && e.node_port);
  for (const auto* f : {e.external_ip, e.lb, e.node_port}) {
    EXPECT_FALSE(f->snat_remote) << "Local keeps the client address";
    EXPECT_FALSE(f->drop_empty);
    EXPECT_EQ(describe_local(f->backends),
              (std::vector<std::string>{"198.18.2.11:8080/1/L", "198.18.2.13:8080/1/L"}))
        << format_ipv4(f->vip) << ":" << f->port;
  }
  // Traffic from inside the cluster is not external: the ClusterIP keeps every endpoint.
  EXPECT_EQ(describe_local(e.cluster_ip->backends),
            (std::vector<std::string>{"198.18.2.11:8080/1/L", "198.18.2.12:8080/1",
                                      "198.18.2.13:8080/1/L"}));
  EXPECT_FALSE(e.cluster_ip->drop_empty);
}

TEST(compile_frontends, internal_policy_local_applies_to_the_cluster_ip_only) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({frontends_service("  internalTrafficPolicy: Local\n"), frontends_slice()}));
  compiler c(kMaxSize, 65536, "node-b");
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  auto e = entries_of(*snap);
  ASSERT_TRUE(e.cluster_ip && e.external_ip && e.lb && e.node_port);
  EXPECT_EQ(describe_local(e.cluster_ip->backends),
            std::vector<std::string>{"198.18.2.12:8080/1/L"});
  EXPECT_FALSE(e.cluster_ip->snat_remote);
  for (const auto* f : {e.external_ip, e.lb, e.node_port}) {
    EXPECT_TRUE(f->snat_remote);
    EXPECT_EQ(f->backends.size(), 3u) << format_ipv4(f->vip) << ":" << f->port;
  }
}

TEST(compile_frontends, local_policy_without_local_endpoints_drops) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({frontends_service("  externalTrafficPolicy: Local\n"
                                         "  internalTrafficPolicy: Local\n"),
                       frontends_slice("node-b", "node-b", "node-c")}));
  compiler c(kMaxSize, 65536, "node-a");
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  auto e = entries_of(*snap);
  ASSERT_TRUE(e.cluster_ip && e.external_ip && e.lb && e.node_port);
  // The Service has endpoints, just none here: drop (kube-proxy), not reject.
  for (const auto* f : {e.cluster_ip, e.external_ip, e.lb, e.node_port}) {
    EXPECT_TRUE(f->backends.empty());
    EXPECT_FALSE(f->has_active);
    EXPECT_TRUE(f->drop_empty) << format_ipv4(f->vip) << ":" << f->port;
  }

  // With no endpoints at all it is a reject again.
  apply_text(st, slice_yaml("lb-1", "lb", "", 8080, "  []\n"));
  snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  e = entries_of(*snap);
  ASSERT_TRUE(e.cluster_ip && e.external_ip && e.lb && e.node_port);
  for (const auto* f : {e.cluster_ip, e.external_ip, e.lb, e.node_port}) {
    EXPECT_FALSE(f->drop_empty) << format_ipv4(f->vip) << ":" << f->port;
  }
}

TEST(compile_frontends, local_policy_falls_back_to_local_terminating_endpoints) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({frontends_service("  externalTrafficPolicy: Local\n"),
                       slice_yaml("lb-1", "lb", "", 8080,
                                  "  - addresses: [\"198.18.2.11\"]\n    nodeName: node-a\n"
                                  "    conditions: {ready: false, serving: true, "
                                  "terminating: true}\n"
                                  "  - addresses: [\"198.18.2.12\"]\n    nodeName: node-b\n")}));
  compiler c(kMaxSize, 65536, "node-a");
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  // Outside: the only local endpoint is terminating, so it takes traffic (a ready one
  // elsewhere does not count for Local).
  EXPECT_EQ(describe_local(find_node_port(*snap, kNodePort)->backends),
            std::vector<std::string>{"198.18.2.11:8080/1/L"});
  // Inside: a ready endpoint exists, so the terminating one drains.
  EXPECT_EQ(describe_local(find_vip(*snap, "198.19.0.60", 80)->backends),
            (std::vector<std::string>{"198.18.2.11:8080/0/L", "198.18.2.12:8080/1"}));
}

TEST(compile_frontends, source_ranges_restrict_load_balancer_addresses_only) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({frontends_service(), frontends_slice()}));
  compiler c(kMaxSize, 65536, "node-a");
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  auto e = entries_of(*snap);
  ASSERT_TRUE(e.cluster_ip && e.external_ip && e.lb && e.node_port);
  ASSERT_EQ(e.lb->source_ranges.size(), 2u);
  EXPECT_EQ(e.lb->source_ranges[0], *parse_ipv4_prefix("192.0.2.0/24"));
  EXPECT_EQ(e.lb->source_ranges[1], *parse_ipv4_prefix("198.51.100.7/32"));
  EXPECT_TRUE(e.lb->allows(ip("192.0.2.200")));
  EXPECT_TRUE(e.lb->allows(ip("198.51.100.7")));
  EXPECT_FALSE(e.lb->allows(ip("198.51.100.8")));
  for (const auto* f : {e.cluster_ip, e.external_ip, e.node_port}) {
    EXPECT_TRUE(f->source_ranges.empty()) << format_ipv4(f->vip) << ":" << f->port;
    EXPECT_TRUE(f->allows(ip("198.51.100.8")));
  }
}

TEST(compile_frontends, client_ip_affinity_timeout_is_on_every_frontend) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({frontends_service("  sessionAffinity: ClientIP\n"
                                         "  sessionAffinityConfig:\n"
                                         "    clientIP:\n"
                                         "      timeoutSeconds: 600\n"),
                       frontends_slice()}));
  compiler c(kMaxSize, 65536, "node-a");
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  auto e = entries_of(*snap);
  ASSERT_TRUE(e.cluster_ip && e.external_ip && e.lb && e.node_port);
  for (const auto* f : {e.cluster_ip, e.external_ip, e.lb, e.node_port}) {
    EXPECT_EQ(f->affinity_timeout, 600u) << format_ipv4(f->vip) << ":" << f->port;
  }

  // ClientIP without a config: the API server's default of three hours.
  apply_text(st, frontends_service("  sessionAffinity: ClientIP\n"));
  snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  e = entries_of(*snap);
  ASSERT_TRUE(e.cluster_ip && e.external_ip && e.lb && e.node_port);
  for (const auto* f : {e.cluster_ip, e.external_ip, e.lb, e.node_port}) {
    EXPECT_EQ(f->affinity_timeout, 10800u);
  }

  // None: no affinity anywhere.
  apply_text(st, frontends_service("  sessionAffinity: None\n"));
  snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  e = entries_of(*snap);
  ASSERT_TRUE(e.cluster_ip && e.external_ip && e.lb && e.node_port);
  for (const auto* f : {e.cluster_ip, e.external_ip, e.lb, e.node_port}) {
    EXPECT_EQ(f->affinity_timeout, 0u);
  }
}

// Only load balancer addresses of the node's pool are announced: an externalIP, or an LB
// address some other controller handed out, is routed to the node by someone else.
TEST(compile_frontends, pool_addresses_are_announced_until_the_service_goes) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({frontends_service(), frontends_slice()}));
  compiler c(kMaxSize, 65536, "node-a", {*parse_ipv4_prefix("203.0.113.64/27")});
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  EXPECT_FALSE(snap->announces(ip("203.0.113.30"))) << "outside the pool";
  EXPECT_FALSE(snap->announces(ip("203.0.113.20"))) << "an externalIP is not announced";
  EXPECT_FALSE(snap->announces(ip("198.19.0.60"))) << "a ClusterIP is not announced";
  ASSERT_TRUE(snap->announced);
  EXPECT_TRUE(snap->announced->empty());

  compiler owner(kMaxSize, 65536, "node-a", {*parse_ipv4_prefix("203.0.113.24/29")});
  snap = compile_ok(owner, st);
  EXPECT_TRUE(snap->announces(ip("203.0.113.30")));
  EXPECT_FALSE(snap->announces(ip("203.0.113.20")));
  EXPECT_EQ(*snap->announced, (std::vector<uint32_t>{ip("203.0.113.30")}));

  // Deleted, compiled incrementally (only the touched Service is redone).
  st.remove(parse(frontends_service()));
  auto next = owner.compile(st, dirty_set{.services = {{"default", "lb"}}});
  ASSERT_TRUE(next.ok()) << next.message();
  EXPECT_FALSE((*next)->announces(ip("203.0.113.30")));
  EXPECT_TRUE((*next)->ports().empty());
  // The previous snapshot, which workers may still read, is untouched.
  EXPECT_TRUE(snap->announces(ip("203.0.113.30")));
}

// Every service address (ClusterIP, externalIP, LB address; not a NodePort's
// node addresses) is listed, so ICMP to one is told apart; gone with its Service.
TEST(compile_frontends, service_addresses_are_listed_until_the_service_goes) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({frontends_service(), frontends_slice()}));
  compiler c(kMaxSize, 65536, "node-a", {*parse_ipv4_prefix("203.0.113.24/29")});
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  for (const char* a : {"198.19.0.60", "203.0.113.20", "203.0.113.30"}) {
    EXPECT_TRUE(snap->is_service_address(ip(a))) << a;
  }
  EXPECT_FALSE(snap->is_service_address(0)) << "NodePorts are keyed with address 0";
  EXPECT_FALSE(snap->is_service_address(ip("198.19.0.61")));
  st.remove(parse(frontends_service()));
  auto next = c.compile(st, dirty_set{.services = {{"default", "lb"}}});
  ASSERT_TRUE(next.ok()) << next.message();
  EXPECT_FALSE((*next)->is_service_address(ip("198.19.0.60")));
  EXPECT_FALSE((*next)->is_service_address(ip("203.0.113.20")));
  EXPECT_TRUE(snap->is_service_address(ip("198.19.0.60"))) << "the old snapshot is untouched";
}

TEST(compile_frontends, shared_pool_address_is_announced_while_any_service_uses_it) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  auto on_lb_ip = [](std::string_view name, std::string_view cluster_ip, uint16_t port) {
    return service_yaml(name, cluster_ip, port) +
           "  type: LoadBalancer\n  loadBalancerIP: 203.0.113.40\n";
  };
  apply_text(st, join({on_lb_ip("a", "198.19.0.71", 80), on_lb_ip("b", "198.19.0.72", 443)}));
  compiler c(kMaxSize, 65536, "", {*parse_ipv4_prefix("203.0.113.32/28")});
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  EXPECT_TRUE(snap->announces(ip("203.0.113.40")));

  st.remove(parse(on_lb_ip("a", "198.19.0.71", 80)));
  auto next = c.compile(st, dirty_set{.services = {{"default", "a"}}});
  ASSERT_TRUE(next.ok()) << next.message();
  EXPECT_TRUE((*next)->announces(ip("203.0.113.40"))) << "b still serves on it";
  EXPECT_EQ(find_vip(**next, "203.0.113.40", 80), nullptr);
  EXPECT_NE(find_vip(**next, "203.0.113.40", 443), nullptr);

  // b drops the address but stays.
  apply_text(st, service_yaml("b", "198.19.0.72", 443));
  next = c.compile(st, dirty_set{.services = {{"default", "b"}}});
  ASSERT_TRUE(next.ok()) << next.message();
  EXPECT_FALSE((*next)->announces(ip("203.0.113.40")));
  EXPECT_NE(find_vip(**next, "198.19.0.72", 443), nullptr);
}

// A Pod being deleted (deletionTimestamp) that is still Ready: serving and terminating.
std::string terminating_pod_yaml(std::string_view name, std::string_view labels,
                                 std::string_view pod_ip) {
  std::string text = pod_yaml(name, labels, pod_ip, true);
  text.replace(text.find("metadata:\n") + 10, 0, "  deletionTimestamp: \"2026-01-01T00:00:00Z\"\n");
  return text;
}

TEST(compile_frontends, terminating_ready_pod_is_a_serving_terminating_endpoint) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  const std::string ready = pod_yaml("my-app-1", "{app: MyApp}", "198.18.1.41", true);
  apply_text(st, join({kSeedService, ready,
                       terminating_pod_yaml("my-app-2", "{app: MyApp}", "198.18.1.42")}));
  compiler c(kMaxSize, 65536);
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  auto e = find_vip(*snap, "198.19.0.10", 80);
  ASSERT_NE(e, nullptr);
  // Another ready pod exists: the terminating one only drains.
  EXPECT_EQ(describe(e->backends),
            (std::vector<std::string>{"198.18.1.41:9376/1", "198.18.1.42:9376/0"}));

  // The ready pod goes (incremental compile of the namespace a Pod touches): the
  // terminating one takes the traffic rather than leaving the Service empty.
  st.remove(parse(ready));
  auto next = c.compile(st, dirty_set{.namespaces = {"default"}});
  ASSERT_TRUE(next.ok()) << next.message();
  e = find_vip(**next, "198.19.0.10", 80);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(describe(e->backends), std::vector<std::string>{"198.18.1.42:9376/1"});
  EXPECT_TRUE(e->has_active);
}

TEST(compile_frontends, terminating_pod_that_is_not_ready_is_not_an_endpoint) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  std::string gone = pod_yaml("my-app-2", "{app: MyApp}", "198.18.1.42", false);
  gone.replace(gone.find("metadata:\n") + 10, 0, "  deletionTimestamp: \"2026-01-01T00:00:00Z\"\n");
  apply_text(st, join({kSeedService, gone}));
  compiler c(kMaxSize, 65536);
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  auto e = find_vip(*snap, "198.19.0.10", 80);
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(e->backends.empty());
  EXPECT_FALSE(e->drop_empty);
}

TEST(compile_frontends, publish_not_ready_addresses_counts_unready_pods_in) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  std::string svc(kSeedService);
  svc.replace(svc.find("spec:\n") + 6, 0, "  publishNotReadyAddresses: true\n");
  apply_text(st, join({svc, pod_yaml("my-app-1", "{app: MyApp}", "198.18.1.41", false)}));
  compiler c(kMaxSize, 65536);
  auto snap = compile_ok(c, st);
  ASSERT_TRUE(snap);
  auto e = find_vip(*snap, "198.19.0.10", 80);
  ASSERT_NE(e, nullptr);
  ASSERT_EQ(e->backends.size(), 1u);
  EXPECT_EQ(e->backends[0].weight, 1);
}

// Topology hints, as kube-proxy's topologyModeFromHints reads them.
std::string hinted_slice(std::string_view zone_11, std::string_view zone_12,
                         std::string_view zone_13, std::string_view extra_13 = "") {
  auto ep = [](std::string_view addr, std::string_view zone, std::string_view extra) {
    std::string out = "  - addresses: [\"" + std::string(addr) + "\"]\n";
    if (!zone.empty()) out += "    hints:\n      forZones: [{name: " + std::string(zone) + "}]\n";
    return out + std::string(extra);
  };
  return slice_yaml("lb-1", "lb", "", 8080,
                    ep("198.18.2.11", zone_11, "") + ep("198.18.2.12", zone_12, "") +
                        ep("198.18.2.13", zone_13, extra_13));
}

std::string node_yaml(std::string_view name, std::string_view zone) {
  return "apiVersion: v1\nkind: Node\nmetadata:\n  name: " + std::string(name) +
         "\n  labels:\n    topology.kubernetes.io/zone: " + std::string(zone) + "\n";
}

std::vector<std::string> cluster_ip_backends(compiler& c, const store& st) {
  auto snap = compile_ok(c, st);
  if (!snap) return {};
  return describe(find_vip(*snap, "198.19.0.60", 80)->backends);
}

TEST(compile_topology, zone_hints_keep_the_endpoints_hinted_for_this_nodes_zone) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({frontends_service(), hinted_slice("zone-a", "zone-b", "zone-a"),
                       node_yaml("node-a", "zone-a")}));
  compiler c(kMaxSize, 65536, "node-a");
  EXPECT_EQ(cluster_ip_backends(c, st),
            (std::vector<std::string>{"198.18.2.11:8080/1", "198.18.2.13:8080/1"}));
  // Every frontend under the Cluster policy is narrowed, the NodePort too.
  auto snap = compile_ok(c, st);
  EXPECT_EQ(describe(find_node_port(*snap, kNodePort)->backends),
            (std::vector<std::string>{"198.18.2.11:8080/1", "198.18.2.13:8080/1"}));
}

TEST(compile_topology, a_new_zone_on_this_node_recompiles_every_service) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({frontends_service(), hinted_slice("zone-a", "zone-b", "zone-a"),
                       node_yaml("node-a", "zone-a")}));
  compiler c(kMaxSize, 65536, "node-a");
  ASSERT_TRUE(compile_ok(c, st));
  apply_text(st, node_yaml("node-a", "zone-b"));
  // The Node bears on no Service by itself: an incremental compile with nothing dirty.
  auto r = c.compile(st, dirty_set{});
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(describe(find_vip(**r, "198.19.0.60", 80)->backends),
            (std::vector<std::string>{"198.18.2.12:8080/1"}));
}

TEST(compile_topology, hints_are_ignored_unless_every_ready_endpoint_has_one) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({frontends_service(), hinted_slice("zone-a", "", "zone-a"),
                       node_yaml("node-a", "zone-a")}));
  compiler c(kMaxSize, 65536, "node-a");
  EXPECT_EQ(cluster_ip_backends(c, st).size(), 3u);
}

TEST(compile_topology, a_not_ready_endpoint_without_hints_does_not_count) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({frontends_service(),
                       hinted_slice("zone-a", "zone-b", "", "    conditions: {ready: false}\n"),
                       node_yaml("node-a", "zone-a")}));
  compiler c(kMaxSize, 65536, "node-a");
  EXPECT_EQ(cluster_ip_backends(c, st), (std::vector<std::string>{"198.18.2.11:8080/1"}));
}

TEST(compile_topology, hints_are_ignored_when_none_names_this_zone_or_the_node_has_none) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({frontends_service(), hinted_slice("zone-a", "zone-b", "zone-a"),
                       node_yaml("node-a", "zone-c")}));
  compiler c(kMaxSize, 65536, "node-a");
  EXPECT_EQ(cluster_ip_backends(c, st).size(), 3u);
  // Without a Node object there is no zone.
  store bare(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(bare, join({frontends_service(), hinted_slice("zone-a", "zone-b", "zone-a")}));
  compiler c2(kMaxSize, 65536, "node-a");
  EXPECT_EQ(cluster_ip_backends(c2, bare).size(), 3u);
}

TEST(compile_topology, node_hints_win_over_zone_hints) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  auto for_node = [](std::string_view n) {
    return "      forNodes: [{name: " + std::string(n) + "}]\n";
  };
  // Every endpoint is hinted for zone-a, and by node: .12 for node-a.
  std::string slice = slice_yaml(
      "lb-1", "lb", "", 8080,
      "  - addresses: [\"198.18.2.11\"]\n    hints:\n      forZones: [{name: zone-a}]\n" +
          for_node("node-b") +
          "  - addresses: [\"198.18.2.12\"]\n    hints:\n      forZones: [{name: zone-a}]\n" +
          for_node("node-a"));
  apply_text(st, join({frontends_service(), slice, node_yaml("node-a", "zone-a")}));
  compiler c(kMaxSize, 65536, "node-a");
  EXPECT_EQ(cluster_ip_backends(c, st), (std::vector<std::string>{"198.18.2.12:8080/1"}));
}

TEST(compile_topology, local_policy_ignores_hints) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  apply_text(st, join({frontends_service("  internalTrafficPolicy: Local\n"),
                       hinted_slice("zone-b", "zone-a", "zone-b", "    nodeName: node-a\n"),
                       node_yaml("node-a", "zone-a")}));
  compiler c(kMaxSize, 65536, "node-a");
  EXPECT_EQ(cluster_ip_backends(c, st), (std::vector<std::string>{"198.18.2.13:8080/1"}));
}

}  // namespace
}  // namespace ferry::control
