#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "ferry/net.hpp"
#include "model.hpp"

namespace ferry::model {
namespace {

constexpr std::string_view kSeedYaml = R"(apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector:
    app: MyApp
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
)";

constexpr std::string_view kSeedJson = R"({
  "apiVersion": "v1",
  "kind": "Service",
  "metadata": {"name": "my-service"},
  "spec": {
    "selector": {"app": "MyApp"},
    "ports": [{"protocol": "TCP", "port": 80, "targetPort": 9376}]
  }
})";

uint32_t ip(const char* text) { return *parse_ipv4(text); }

std::vector<object> parse_ok(std::string_view text) {
  auto r = parse_manifests(text, "test.yaml");
  EXPECT_TRUE(r.ok()) << r.message();
  if (!r.ok()) return {};
  return std::move(r).value();
}

// Parses text that must fail; checks nothing came back and returns the message.
std::string parse_err(std::string_view text, std::string_view origin = "svc.yaml") {
  auto r = parse_manifests(text, origin);
  EXPECT_FALSE(r.ok());
  if (r.ok()) return "<parsed: " + std::to_string(r->size()) + " objects>";
  EXPECT_EQ(r.message().rfind(std::string(origin) + ": ", 0), 0u) << r.message();
  return r.message();
}

bool has(const std::string& msg, std::string_view part) {
  return msg.find(part) != std::string::npos;
}

// A Service with one port whose body is `port_body` (indented as a list item's fields).
std::string service_with_port(std::string_view port_body) {
  return std::string(R"(apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  ports:
    - )") +
         std::string(port_body) + "\n";
}

void expect_seed(const std::vector<object>& objs) {
  ASSERT_EQ(objs.size(), 1u);
  ASSERT_TRUE(std::holds_alternative<service>(objs[0]));
  const auto& svc = std::get<service>(objs[0]);
  EXPECT_EQ(kind_name(objs[0]), "Service");
  EXPECT_EQ(&meta_of(objs[0]), &svc.meta);
  EXPECT_EQ(svc.meta.name, "my-service");
  EXPECT_EQ(svc.meta.ns, "default");
  EXPECT_EQ(svc.type, service_type::cluster_ip);
  EXPECT_FALSE(svc.cluster_ip.has_value());
  EXPECT_FALSE(svc.headless);
  EXPECT_EQ(svc.selector, (labels{{"app", "MyApp"}}));
  ASSERT_EQ(svc.ports.size(), 1u);
  EXPECT_EQ(svc.ports[0].protocol, kProtoTcp);
  EXPECT_EQ(svc.ports[0].port, 80);
  EXPECT_EQ(svc.ports[0].target_port, (std::variant<uint16_t, std::string>{uint16_t{9376}}));
  EXPECT_EQ(svc.ports[0].node_port, 0);
  EXPECT_EQ(svc.ports[0].name, "");
  EXPECT_TRUE(svc.external_ips.empty());
}

TEST(Manifest, SeedServiceFromYaml) { expect_seed(parse_ok(kSeedYaml)); }

TEST(Manifest, SeedServiceFromJson) {
  auto json = parse_ok(kSeedJson);
  expect_seed(json);
  auto yaml = parse_ok(kSeedYaml);
  ASSERT_EQ(yaml.size(), 1u);
  EXPECT_TRUE(json[0] == yaml[0]);
}

// DNS names: endpoint hostnames and a Pod's hostname/subdomain (headless Services' names).
TEST(Manifest, HostnamesForDns) {
  auto objs = parse_ok(R"(apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
endpoints:
  - {addresses: ["198.18.1.11"], hostname: db-0}
---
apiVersion: v1
kind: Endpoints
metadata: {name: db}
subsets: [{addresses: [{ip: 198.18.1.12, hostname: db-1}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-2}
spec: {hostname: db-2, subdomain: db, containers: [{name: c}]}
)");
  ASSERT_EQ(objs.size(), 3u);
  EXPECT_EQ(std::get<endpoint_slice>(objs[0]).group.endpoints[0].hostname, "db-0");
  EXPECT_EQ(std::get<endpoints>(objs[1]).subsets[0].endpoints[0].hostname, "db-1");
  EXPECT_EQ(std::get<pod>(objs[2]).hostname, "db-2");
  EXPECT_EQ(std::get<pod>(objs[2]).subdomain, "db");
  std::string msg = parse_err(R"(apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
endpoints:
  - {addresses: ["198.18.1.11"], hostname: Db_0}
)");
  EXPECT_TRUE(has(msg,
                  "endpoints[0].hostname: must be a lower-case DNS-1123 label (a-z, 0-9, "
                  "'-'; at most 63 characters), got \"Db_0\""))
      << msg;
  msg = parse_err("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {subdomain: a.b}\n");
  EXPECT_TRUE(has(msg, "spec.subdomain: must be a lower-case DNS-1123 label")) << msg;
}

TEST(Manifest, KindNamesAndMeta) {
  object o = pod{};
  EXPECT_EQ(kind_name(o), "Pod");
  o = endpoints{};
  EXPECT_EQ(kind_name(o), "Endpoints");
  o = endpoint_slice{};
  EXPECT_EQ(kind_name(o), "EndpointSlice");
  std::get<endpoint_slice>(o).meta.name = "x";
  EXPECT_EQ(meta_of(o).name, "x");
}

TEST(Manifest, FullServiceAsKubectlPrintsIt) {
  auto objs = parse_ok(R"(apiVersion: v1
kind: Service
metadata:
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: |
      {"apiVersion":"v1"}
  creationTimestamp: "2024-01-01T00:00:00Z"
  labels:
    app: web
    version: "2"
  name: web
  namespace: shop
  resourceVersion: "1234"
  uid: 0f0e0d0c-0000-0000-0000-000000000000
spec:
  clusterIP: 10.96.0.10
  clusterIPs:
  - 10.96.0.10
  externalIPs:
  - 198.18.0.7
  externalTrafficPolicy: Cluster
  internalTrafficPolicy: Cluster
  ipFamilies:
  - IPv4
  ipFamilyPolicy: SingleStack
  ports:
  - name: http
    nodePort: 30080
    port: 80
    protocol: TCP
    targetPort: http
  - name: dns
    nodePort: 30053
    port: 53
    protocol: UDP
    targetPort: 5353
  selector:
    app: web
  sessionAffinity: None
  type: NodePort
status:
  loadBalancer: {}
)");
  ASSERT_EQ(objs.size(), 1u);
  const auto& svc = std::get<service>(objs[0]);
  EXPECT_EQ(svc.meta.ns, "shop");
  EXPECT_EQ(svc.meta.label_map, (labels{{"app", "web"}, {"version", "2"}}));
  EXPECT_EQ(svc.meta.annotations.at("kubectl.kubernetes.io/last-applied-configuration"),
            "{\"apiVersion\":\"v1\"}\n");
  EXPECT_EQ(svc.type, service_type::node_port);
  EXPECT_EQ(svc.cluster_ip, ip("10.96.0.10"));
  EXPECT_EQ(svc.external_ips, std::vector<uint32_t>{ip("198.18.0.7")});
  ASSERT_EQ(svc.ports.size(), 2u);
  EXPECT_EQ(svc.ports[0].name, "http");
  EXPECT_EQ(svc.ports[0].node_port, 30080);
  EXPECT_EQ(std::get<std::string>(svc.ports[0].target_port), "http");
  EXPECT_EQ(svc.ports[1].protocol, kProtoUdp);
  EXPECT_EQ(std::get<uint16_t>(svc.ports[1].target_port), 5353);
}

TEST(Manifest, ServiceDefaultsAndVariants) {
  auto objs = parse_ok(R"(apiVersion: v1
kind: Service
metadata: {name: a}
spec:
  type: LoadBalancer
  clusterIP: ""
  clusterIPs: ["fd00::1", "10.0.0.9"]
  ports:
  - port: 443
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec:
  clusterIP: None
  ports:
  - {name: x, port: 1, targetPort: "9376", protocol: TCP}
  - {name: y, port: 1, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: c}
spec:
  type: ExternalName
  externalName: db.example.com
---
apiVersion: v1
kind: Service
metadata: {name: d}
spec:
  clusterIPs: [None]
  ports: [{port: 8080, targetPort: 0}]
)");
  ASSERT_EQ(objs.size(), 4u);
  const auto& a = std::get<service>(objs[0]);
  EXPECT_EQ(a.type, service_type::load_balancer);
  EXPECT_EQ(a.cluster_ip, ip("10.0.0.9"));  // first IPv4 of clusterIPs
  // Absent targetPort means "same as port".
  EXPECT_EQ(std::get<uint16_t>(a.ports[0].target_port), 443);
  const auto& b = std::get<service>(objs[1]);
  EXPECT_TRUE(b.headless);
  EXPECT_FALSE(b.cluster_ip.has_value());
  EXPECT_EQ(b.ports[0].protocol, 6);
  // A digit string counts as a number, as in Kubernetes' IntOrString.
  EXPECT_EQ(std::get<uint16_t>(b.ports[0].target_port), 9376);
  EXPECT_EQ(std::get<uint16_t>(b.ports[1].target_port), 1);
  const auto& c = std::get<service>(objs[2]);
  EXPECT_EQ(c.type, service_type::external_name);
  EXPECT_EQ(c.external_name, "db.example.com");
  EXPECT_TRUE(c.ports.empty());
  const auto& d = std::get<service>(objs[3]);
  EXPECT_TRUE(d.headless);
  EXPECT_EQ(std::get<uint16_t>(d.ports[0].target_port), 8080);
}

// SCTP is a Service protocol like TCP and UDP (kube-proxy forwards it): Service ports,
// EndpointSlice ports, Endpoints ports and container ports all take it.
TEST(Manifest, SctpPortsAreKept) {
  auto objs = parse_ok(R"(apiVersion: v1
kind: Service
metadata: {name: diameter}
spec:
  clusterIP: 198.19.0.30
  type: NodePort
  ports: [{name: diameter, port: 3868, protocol: SCTP, nodePort: 30868}, {name: m, port: 3868}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: diameter-1, labels: {kubernetes.io/service-name: diameter}}
addressType: IPv4
ports: [{name: diameter, port: 3869, protocol: SCTP}]
endpoints: [{addresses: ["198.18.1.11"]}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: diameter}
subsets: [{addresses: [{ip: 198.18.1.12}], ports: [{name: diameter, port: 3869, protocol: SCTP}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: d-0}
spec: {containers: [{name: c, ports: [{name: diam, containerPort: 3869, protocol: SCTP}]}]}
)");
  ASSERT_GE(objs.size(), 3u);
  const auto& svc = std::get<service>(objs[0]);
  ASSERT_EQ(svc.ports.size(), 2u);
  EXPECT_EQ(svc.ports[0].protocol, kProtoSctp);
  EXPECT_EQ(svc.ports[0].node_port, 30868);
  // The same number over TCP is another port (Kubernetes keys ports by number and protocol).
  EXPECT_EQ(svc.ports[1].protocol, kProtoTcp);
  const auto& slice = std::get<endpoint_slice>(objs[1]);
  ASSERT_EQ(slice.group.ports.size(), 1u);
  EXPECT_EQ(slice.group.ports[0].protocol, kProtoSctp);
  const auto& eps = std::get<endpoints>(objs[2]);
  ASSERT_EQ(eps.subsets.size(), 1u);
  EXPECT_EQ(eps.subsets[0].ports[0].protocol, kProtoSctp);
}

// The fields of kube-proxy's service semantics, in the shape `kubectl get svc -o yaml` prints.
TEST(Manifest, ServiceTypesAndPolicies) {
  auto objs = parse_ok(R"(apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.40
  allocateLoadBalancerNodePorts: false
  externalIPs: [198.18.0.50]
  externalTrafficPolicy: Local
  internalTrafficPolicy: Local
  loadBalancerIP: 198.18.0.60
  loadBalancerSourceRanges: [198.18.0.0/24, 203.0.113.7/32]
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 31002}]
status:
  loadBalancer:
    ingress: [{ip: 198.18.0.61}, {hostname: lb.example.com}, {ip: "2001:db8::1"}]
)");
  ASSERT_EQ(objs.size(), 1u);
  const auto& s = std::get<service>(objs[0]);
  EXPECT_EQ(s.type, service_type::load_balancer);
  EXPECT_FALSE(s.allocate_node_ports);
  EXPECT_EQ(s.external_ips, std::vector<uint32_t>{ip("198.18.0.50")});
  EXPECT_EQ(s.external_policy, traffic_policy::local);
  EXPECT_EQ(s.internal_policy, traffic_policy::local);
  EXPECT_EQ(s.load_balancer_ip, ip("198.18.0.60"));
  ASSERT_EQ(s.source_ranges.size(), 2u);
  EXPECT_EQ(s.source_ranges[1].len, 32);
  EXPECT_TRUE(s.affinity_client_ip);
  EXPECT_EQ(s.affinity_timeout, 600u);
  EXPECT_EQ(s.ports[0].node_port, 31002);
  // Status wins over spec.loadBalancerIP; hostname-only and IPv6 ingresses are skipped.
  EXPECT_EQ(s.lb_addresses(), std::vector<uint32_t>{ip("198.18.0.61")});

  // Defaults: no affinity (10800 s when turned on), Cluster policies.
  auto plain = std::get<service>(parse_ok(service_with_port("{port: 80}"))[0]);
  EXPECT_FALSE(plain.affinity_client_ip);
  EXPECT_EQ(plain.affinity_timeout, 10800u);
  EXPECT_EQ(plain.external_policy, traffic_policy::cluster);
  EXPECT_EQ(plain.internal_policy, traffic_policy::cluster);
}

TEST(Manifest, BadServicePolicyFieldsNameTheField) {
  struct row {
    std::string spec;
    std::string message;
  };
  const row rows[] = {
      {"sessionAffinity: Sticky", "spec.sessionAffinity: must be None or ClientIP"},
      {"sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}",
       "spec.sessionAffinityConfig.clientIP.timeoutSeconds: must be an integer 1-86400"},
      {"sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}",
       "timeoutSeconds: requires spec.sessionAffinity: ClientIP"},
      {"externalTrafficPolicy: Nearby", "spec.externalTrafficPolicy: must be Cluster or Local"},
      {"internalTrafficPolicy: local", "spec.internalTrafficPolicy: must be Cluster or Local"},
      {"type: LoadBalancer\n  loadBalancerSourceRanges: [10.0.0.1]",
       "spec.loadBalancerSourceRanges[0]: must be an IPv4 CIDR"},
      {"type: LoadBalancer\n  loadBalancerIP: 300.1.1.1", "spec.loadBalancerIP: must be an IPv4"},
      {"type: ClusterIP\n  ports: [{port: 80, nodePort: 30001}]",
       "spec.ports[0].nodePort: may only be set for type NodePort or LoadBalancer"},
  };
  for (const auto& r : rows) {
    std::string text = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  " + r.spec;
    if (r.spec.find("ports:") == std::string::npos) text += "\n  ports: [{port: 80}]";
    auto got = parse_manifests(text + "\n", "t.yaml");
    ASSERT_FALSE(got.ok()) << r.spec;
    EXPECT_NE(got.message().find("Service default/s"), std::string::npos) << got.message();
    EXPECT_NE(got.message().find(r.message), std::string::npos) << got.message();
  }
}

TEST(Manifest, NodeAndTerminatingPod) {
  auto objs = parse_ok(R"(apiVersion: v1
kind: Node
metadata:
  name: edge-1
  labels: {topology.kubernetes.io/zone: zone-a}
status:
  addresses:
  - {type: InternalIP, address: 198.18.0.254}
  - {type: InternalIP, address: "fd00::1"}
  - {type: Hostname, address: edge-1}
---
apiVersion: v1
kind: Pod
metadata: {name: p, deletionTimestamp: "2026-11-27T10:00:00Z"}
spec: {containers: [{name: c}]}
status:
  podIP: 198.18.1.11
  conditions: [{type: Ready, status: "True"}]
)");
  ASSERT_EQ(objs.size(), 2u);
  const auto& n = std::get<model::node>(objs[0]);
  EXPECT_EQ(n.meta.name, "edge-1");
  EXPECT_EQ(n.zone, "zone-a");
  EXPECT_EQ(n.addresses, std::vector<uint32_t>{ip("198.18.0.254")});
  const auto& p = std::get<pod>(objs[1]);
  EXPECT_TRUE(p.ready);
  EXPECT_TRUE(p.terminating);
}

TEST(Manifest, NamedTargetPort) {
  auto objs = parse_ok(service_with_port("{port: 80, targetPort: http-web}"));
  ASSERT_EQ(objs.size(), 1u);
  const auto& svc = std::get<service>(objs[0]);
  ASSERT_TRUE(std::holds_alternative<std::string>(svc.ports[0].target_port));
  EXPECT_EQ(std::get<std::string>(svc.ports[0].target_port), "http-web");

  objs = parse_ok(service_with_port("{port: 80, targetPort: \"metrics\"}"));
  ASSERT_EQ(objs.size(), 1u);
  EXPECT_EQ(std::get<std::string>(std::get<service>(objs[0]).ports[0].target_port), "metrics");
}

TEST(Manifest, MultiDocumentSkipsEmptyDocuments) {
  auto objs = parse_ok(R"(---
# nothing here
---
apiVersion: v1
kind: Service
metadata:
  name: one
---
---
apiVersion: v1
kind: Pod
metadata:
  name: two
  namespace: ns2
...
)");
  ASSERT_EQ(objs.size(), 2u);
  EXPECT_EQ(meta_of(objs[0]).name, "one");
  EXPECT_EQ(kind_name(objs[1]), "Pod");
  EXPECT_EQ(meta_of(objs[1]).ns, "ns2");

  EXPECT_TRUE(parse_ok("").empty());
  EXPECT_TRUE(parse_ok("# only a comment\n---\n").empty());
}

TEST(Manifest, ListWithNestedList) {
  auto objs = parse_ok(R"(apiVersion: v1
kind: List
metadata:
  resourceVersion: ""
items:
- apiVersion: v1
  kind: Service
  metadata:
    name: a
- apiVersion: v1
  kind: List
  items:
  - apiVersion: v1
    kind: Endpoints
    metadata:
      name: a
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata:
      name: a-xyz
      labels:
        kubernetes.io/service-name: a
    addressType: IPv4
    endpoints: null
    ports: null
- apiVersion: v1
  kind: List
  items: []
)");
  ASSERT_EQ(objs.size(), 3u);
  EXPECT_EQ(kind_name(objs[0]), "Service");
  EXPECT_EQ(kind_name(objs[1]), "Endpoints");
  EXPECT_EQ(kind_name(objs[2]), "EndpointSlice");
  const auto& slice = std::get<endpoint_slice>(objs[2]);
  EXPECT_TRUE(slice.group.endpoints.empty());
  EXPECT_TRUE(slice.group.ports.empty());
}

TEST(Manifest, ListFromJson) {
  auto objs = parse_ok(R"({"apiVersion": "v1", "kind": "List", "items": [
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
     "spec": {"ports": [{"port": 80}]}},
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "x"},
     "status": {"podIP": "10.1.2.3"}}
  ]})");
  ASSERT_EQ(objs.size(), 2u);
  EXPECT_EQ(std::get<pod>(objs[1]).ip, ip("10.1.2.3"));
}

TEST(Manifest, EndpointSliceConversion) {
  auto objs = parse_ok(R"(apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: my-service-abc12
  namespace: shop
  labels:
    kubernetes.io/service-name: my-service
    endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io
addressType: IPv4
endpoints:
- addresses:
  - 10.1.0.5
  conditions:
    ready: true
    serving: true
    terminating: false
  nodeName: node-a
  targetRef:
    kind: Pod
    name: web-1
    namespace: shop
  zone: z1
- addresses: ["10.1.0.6"]
  conditions:
    ready: false
    serving: true
    terminating: true
  targetRef: {kind: Node, name: node-b}
- addresses: ["10.1.0.7"]
- addresses: ["10.1.0.8"]
  conditions: {ready: false}
ports:
- name: http
  port: 9376
  protocol: TCP
- name: ""
  port: 53
  protocol: UDP
- name: admin
  port: 7000
)");
  ASSERT_EQ(objs.size(), 1u);
  const auto& s = std::get<endpoint_slice>(objs[0]);
  EXPECT_EQ(s.meta.ns, "shop");
  EXPECT_EQ(s.service_name, "my-service");
  EXPECT_TRUE(s.ipv4);
  ASSERT_EQ(s.group.endpoints.size(), 4u);
  const auto& e0 = s.group.endpoints[0];
  EXPECT_EQ(e0.addresses, std::vector<uint32_t>{ip("10.1.0.5")});
  EXPECT_TRUE(e0.ready);
  EXPECT_TRUE(e0.serving);
  EXPECT_FALSE(e0.terminating);
  EXPECT_EQ(e0.node_name, "node-a");
  EXPECT_EQ(e0.target_pod, "web-1");
  const auto& e1 = s.group.endpoints[1];
  EXPECT_FALSE(e1.ready);
  EXPECT_TRUE(e1.serving);
  EXPECT_TRUE(e1.terminating);
  EXPECT_EQ(e1.target_pod, "");           // targetRef to something other than a Pod
  const auto& e2 = s.group.endpoints[2];  // no conditions: ready, serving, not terminating
  EXPECT_TRUE(e2.ready);
  EXPECT_TRUE(e2.serving);
  EXPECT_FALSE(e2.terminating);
  const auto& e3 = s.group.endpoints[3];  // absent serving is true, as kube-proxy reads it
  EXPECT_FALSE(e3.ready);
  EXPECT_TRUE(e3.serving);
  EXPECT_FALSE(e3.terminating);
  ASSERT_EQ(s.group.ports.size(), 3u);
  EXPECT_EQ(s.group.ports[0].name, "http");
  EXPECT_EQ(s.group.ports[0].port, 9376);
  EXPECT_EQ(s.group.ports[1].name, "");
  EXPECT_EQ(s.group.ports[1].protocol, kProtoUdp);
  EXPECT_EQ(s.group.ports[2].protocol, kProtoTcp);
}

TEST(Manifest, Ipv6SliceKeptWithoutAddresses) {
  auto objs = parse_ok(R"(apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: my-service-v6
  labels: {kubernetes.io/service-name: my-service}
addressType: IPv6
endpoints:
- addresses: ["fd00::5"]
  conditions: {ready: true}
ports:
- {name: http, port: 80}
)");
  ASSERT_EQ(objs.size(), 1u);
  const auto& s = std::get<endpoint_slice>(objs[0]);
  EXPECT_FALSE(s.ipv4);
  ASSERT_EQ(s.group.endpoints.size(), 1u);
  EXPECT_TRUE(s.group.endpoints[0].addresses.empty());
  EXPECT_EQ(s.group.ports.size(), 1u);
}

TEST(Manifest, LegacyEndpointsConversion) {
  auto objs = parse_ok(R"(apiVersion: v1
kind: Endpoints
metadata:
  name: my-service
subsets:
- addresses:
  - ip: 10.1.0.5
    nodeName: node-a
    targetRef: {kind: Pod, name: web-1, namespace: default}
  - ip: 10.1.0.6
  notReadyAddresses:
  - ip: 10.1.0.7
    targetRef: {kind: Pod, name: web-3}
  ports:
  - name: http
    port: 9376
    protocol: TCP
- ports:
  - port: 53
    protocol: UDP
)");
  ASSERT_EQ(objs.size(), 1u);
  const auto& eps = std::get<endpoints>(objs[0]);
  ASSERT_EQ(eps.subsets.size(), 2u);
  const auto& g = eps.subsets[0];
  ASSERT_EQ(g.endpoints.size(), 3u);
  EXPECT_EQ(g.endpoints[0].addresses, std::vector<uint32_t>{ip("10.1.0.5")});
  EXPECT_TRUE(g.endpoints[0].ready);
  EXPECT_TRUE(g.endpoints[0].serving);
  EXPECT_EQ(g.endpoints[0].node_name, "node-a");
  EXPECT_EQ(g.endpoints[0].target_pod, "web-1");
  EXPECT_TRUE(g.endpoints[1].ready);
  EXPECT_FALSE(g.endpoints[2].ready);
  EXPECT_FALSE(g.endpoints[2].serving);
  EXPECT_FALSE(g.endpoints[2].terminating);
  EXPECT_EQ(g.endpoints[2].target_pod, "web-3");
  ASSERT_EQ(g.ports.size(), 1u);
  EXPECT_EQ(g.ports[0].name, "http");
  EXPECT_EQ(g.ports[0].port, 9376);
  EXPECT_TRUE(eps.subsets[1].endpoints.empty());
  EXPECT_EQ(eps.subsets[1].ports[0].protocol, kProtoUdp);
}

TEST(Manifest, PodConversion) {
  auto objs = parse_ok(R"(apiVersion: v1
kind: Pod
metadata:
  name: web-1
  labels: {app: web}
spec:
  nodeName: node-a
  containers:
  - name: app
    image: nginx
    ports:
    - containerPort: 9376
      name: http
      protocol: TCP
    - containerPort: 53
      protocol: UDP
  - name: sidecar
status:
  conditions:
  - type: Initialized
    status: "True"
  - type: Ready
    status: "True"
  phase: Running
  podIP: 10.1.0.5
  podIPs:
  - ip: 10.1.0.5
---
apiVersion: v1
kind: Pod
metadata: {name: web-2}
status:
  conditions:
  - {type: Ready, status: "False"}
---
apiVersion: v1
kind: Pod
metadata: {name: web-3}
status:
  podIP: fd00::7
  podIPs: [{ip: "fd00::7"}, {ip: 10.1.0.7}]
)");
  ASSERT_EQ(objs.size(), 3u);
  const auto& p = std::get<pod>(objs[0]);
  EXPECT_EQ(p.meta.label_map, (labels{{"app", "web"}}));
  EXPECT_EQ(p.ip, ip("10.1.0.5"));
  EXPECT_TRUE(p.ready);
  EXPECT_EQ(p.node_name, "node-a");
  ASSERT_EQ(p.ports.size(), 2u);
  EXPECT_EQ(p.ports[0].name, "http");
  EXPECT_EQ(p.ports[0].port, 9376);
  EXPECT_EQ(p.ports[0].protocol, kProtoTcp);
  EXPECT_EQ(p.ports[1].protocol, kProtoUdp);
  const auto& p2 = std::get<pod>(objs[1]);
  EXPECT_FALSE(p2.ready);
  EXPECT_FALSE(p2.ip.has_value());
  EXPECT_EQ(std::get<pod>(objs[2]).ip, ip("10.1.0.7"));
}

TEST(Manifest, UnknownFieldsIgnored) {
  auto objs = parse_ok(R"(apiVersion: v1
kind: Service
metadata:
  name: my-service
  finalizers: [a, b]
  managedFields: [{manager: kubectl, fieldsV1: {f:spec: {}}}]
spec:
  somethingNew: {deeply: [nested, 1, 2.5, true]}
  ports:
  - port: 80
    appProtocol: http
    futureField: [1, 2]
status: {anything: goes}
extraTopLevel: 7
)");
  ASSERT_EQ(objs.size(), 1u);
  EXPECT_EQ(std::get<service>(objs[0]).ports[0].port, 80);
}

// --- errors -------------------------------------------------------------------------------

TEST(ManifestErrors, YamlSyntax) {
  auto msg = parse_err("apiVersion: v1\nkind: Service\nspec: [1,\n", "manifests.yaml");
  EXPECT_TRUE(has(msg, "manifests.yaml: YAML syntax error at line ")) << msg;
  msg = parse_err("{\"apiVersion\": \"v1\", \"kind\": ", "x.json");
  EXPECT_TRUE(has(msg, "x.json: YAML syntax error")) << msg;
}

TEST(ManifestErrors, UnsupportedKindNamesDocument) {
  auto msg = parse_err(
      std::string(kSeedYaml) + "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
      "manifests.yaml");
  EXPECT_EQ(msg,
            "manifests.yaml: document 2: unsupported kind \"Deployment\" (apiVersion apps/v1)");
}

TEST(ManifestErrors, MissingKindOrApiVersion) {
  auto msg = parse_err("apiVersion: v1\nmetadata: {name: a}\n");
  EXPECT_EQ(msg, "svc.yaml: document 1: kind: required");
  msg = parse_err(std::string(kSeedYaml) + "---\nkind: Service\nmetadata: {name: a}\n");
  EXPECT_EQ(msg, "svc.yaml: document 2: apiVersion: required");
  msg = parse_err("- a\n- b\n");
  EXPECT_TRUE(has(msg, "document 1: must be a mapping, got a list")) << msg;
}

TEST(ManifestErrors, WrongApiVersionForKnownKind) {
  auto msg = parse_err("apiVersion: apps/v1\nkind: Service\nmetadata: {name: a}\n");
  EXPECT_TRUE(has(msg, "document 1: Service: apiVersion: must be v1")) << msg;
  msg =
      parse_err("apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: a}\n");
  EXPECT_TRUE(has(msg, "EndpointSlice: apiVersion: must be discovery.k8s.io/v1")) << msg;
  msg = parse_err("apiVersion: discovery.k8s.io/v1\nkind: Pod\nmetadata: {name: a}\n");
  EXPECT_TRUE(has(msg, "apiVersion")) << msg;
  msg = parse_err("apiVersion: v2\nkind: List\nitems: []\n");
  EXPECT_TRUE(has(msg, "List: apiVersion")) << msg;
}

TEST(ManifestErrors, WholeTextFailsOnOneBadDocument) {
  // The first document is fine, but a bad second one leaves nothing, not a partial result.
  auto msg = parse_err(std::string(kSeedYaml) + "---\n" + service_with_port("{port: 0}"));
  EXPECT_TRUE(has(msg, "Service default/my-service: spec.ports[0].port")) << msg;
}

TEST(ManifestErrors, MetadataName) {
  auto msg = parse_err("apiVersion: v1\nkind: Service\nspec: {}\n");
  EXPECT_EQ(msg, "svc.yaml: document 1: Service: metadata.name: required");
  msg = parse_err("apiVersion: v1\nkind: Service\nmetadata: {name: \"\"}\n");
  EXPECT_EQ(msg, "svc.yaml: document 1: Service: metadata.name: required");
  msg = parse_err("apiVersion: v1\nkind: Service\nmetadata: {name: My_Service}\n");
  EXPECT_TRUE(has(msg, "document 1: Service: metadata.name: Invalid value")) << msg;
  EXPECT_TRUE(has(msg, "\"My_Service\"")) << msg;
  msg =
      parse_err("apiVersion: v1\nkind: Service\nmetadata: {name: " + std::string(254, 'a') + "}\n");
  EXPECT_TRUE(has(msg, "metadata.name")) << msg;
  msg = parse_err("apiVersion: v1\nkind: Service\nmetadata: {name: -a}\n");
  EXPECT_TRUE(has(msg, "metadata.name")) << msg;
  msg = parse_err("apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: Bad.NS}\n");
  EXPECT_TRUE(has(msg, "metadata.namespace: Invalid value")) << msg;
  msg = parse_err("apiVersion: v1\nkind: Service\nmetadata: [name, a]\n");
  EXPECT_TRUE(has(msg, "metadata: must be a mapping, got a list")) << msg;
  // Dotted names are fine.
  EXPECT_EQ(parse_ok("apiVersion: v1\nkind: Pod\nmetadata: {name: web.v1-0}\n").size(), 1u);
}

TEST(ManifestErrors, MetadataMaps) {
  auto msg = parse_err("apiVersion: v1\nkind: Service\nmetadata: {name: a, labels: [x]}\n");
  EXPECT_TRUE(has(msg, "metadata.labels: must be a mapping, got a list")) << msg;
  msg = parse_err(
      "apiVersion: v1\nkind: Service\nmetadata: {name: a, annotations: {note: {x: 1}}}\n");
  EXPECT_TRUE(has(msg, "metadata.annotations[note]: must be a string")) << msg;
}

TEST(ManifestErrors, ServicePortNumber) {
  auto msg = parse_err(service_with_port("protocol: TCP\n      port: abc"));
  EXPECT_EQ(msg,
            "svc.yaml: Service default/my-service: spec.ports[0].port: must be an integer "
            "1-65535, got \"abc\"");
  for (const char* bad : {"0", "65536", "-1", "80.0", "1e2", "true", "\"80\"",
                          "99999999999999999999", "[80]", "{a: 1}", "0x50", "080"}) {
    msg = parse_err(service_with_port(std::string("port: ") + bad));
    EXPECT_TRUE(
        has(msg, "Service default/my-service: spec.ports[0].port: must be an integer 1-65535"))
        << bad << ": " << msg;
  }
  msg = parse_err(service_with_port("name: x"));
  EXPECT_TRUE(has(msg, "spec.ports[0].port: required")) << msg;
  msg = parse_err(service_with_port("port: null"));
  EXPECT_TRUE(has(msg, "spec.ports[0].port: required")) << msg;
  // JSON numbers behave the same.
  msg = parse_err(R"({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "j"},
    "spec": {"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 8.5}]}})");
  EXPECT_TRUE(has(msg, "spec.ports[1].port: must be an integer 1-65535, got 8.5")) << msg;
  msg = parse_err(R"({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "j"},
    "spec": {"ports": [{"port": "80"}]}})");
  EXPECT_TRUE(has(msg, "spec.ports[0].port: must be an integer 1-65535, got \"80\"")) << msg;
}

TEST(ManifestErrors, ServicePortOtherFields) {
  auto msg = parse_err(service_with_port("{port: 80, protocol: ICMP}"));
  EXPECT_TRUE(has(msg, "spec.ports[0].protocol: must be one of TCP, UDP, SCTP, got \"ICMP\""))
      << msg;
  msg = parse_err(service_with_port("{port: 80, nodePort: 70000}"));
  EXPECT_TRUE(has(msg, "spec.ports[0].nodePort: must be an integer 0-65535")) << msg;
  EXPECT_EQ(std::get<service>(parse_ok(service_with_port("{port: 80, nodePort: 0}"))[0])
                .ports[0]
                .node_port,
            0);
  for (const char* bad :
       {"70000", "-5", "1.5", "true", "\"Bad_Name\"", "\"toolongportname16\"", "\"123-\"", "[1]"}) {
    msg = parse_err(service_with_port(std::string("{port: 80, targetPort: ") + bad + "}"));
    EXPECT_TRUE(has(msg, "spec.ports[0].targetPort: ")) << bad << ": " << msg;
  }
  msg = parse_err(service_with_port("{port: 80, name: Bad_Name}"));
  EXPECT_TRUE(has(msg, "spec.ports[0].name: must be")) << msg;
  msg = parse_err(service_with_port("[80]"));
  EXPECT_TRUE(has(msg, "spec.ports[0]: must be a mapping, got a list")) << msg;
}

TEST(ManifestErrors, ServicePortNamesAndDuplicates) {
  auto base = std::string(R"(apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns}
spec:
  ports:
)");
  auto msg = parse_err(base + "  - {name: a, port: 80}\n  - {port: 81}\n");
  EXPECT_TRUE(has(msg, "Service ns/s: spec.ports[1].name: required")) << msg;
  msg = parse_err(base + "  - {port: 80}\n  - {name: b, port: 81}\n");
  EXPECT_TRUE(has(msg, "spec.ports[0].name: required")) << msg;
  msg = parse_err(base + "  - {name: a, port: 80}\n  - {name: a, port: 81}\n");
  EXPECT_TRUE(has(msg, "spec.ports[1].name: duplicate name \"a\"")) << msg;
  msg = parse_err(base + "  - {name: a, port: 80}\n  - {name: b, port: 80}\n");
  EXPECT_TRUE(has(msg, "spec.ports[1]: duplicate port 80/TCP")) << msg;
  // Same number on another protocol is a different port.
  EXPECT_EQ(
      parse_ok(base + "  - {name: a, port: 53}\n  - {name: b, port: 53, protocol: UDP}\n").size(),
      1u);
}

TEST(ManifestErrors, ServiceSpecFields) {
  auto svc = [](std::string spec) {
    return "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n" + spec;
  };
  auto msg = parse_err(svc("  type: Weird\n"));
  EXPECT_TRUE(has(msg, "spec.type: must be one of ClusterIP, NodePort, LoadBalancer, ExternalName"))
      << msg;
  msg = parse_err(svc("  clusterIP: 10.0.0\n"));
  EXPECT_TRUE(has(msg, "spec.clusterIP: must be an IPv4 address, got \"10.0.0\"")) << msg;
  msg = parse_err(svc("  clusterIP: \"fd00::1\"\n"));
  EXPECT_TRUE(has(msg, "spec.clusterIP: IPv6 is not supported yet")) << msg;
  msg = parse_err(svc("  clusterIPs: 10.0.0.1\n"));
  EXPECT_TRUE(has(msg, "spec.clusterIPs: must be a list")) << msg;
  msg = parse_err(svc("  clusterIPs: [bogus]\n"));
  EXPECT_TRUE(has(msg, "spec.clusterIPs[0]: must be")) << msg;
  msg = parse_err(svc("  selector: [app]\n"));
  EXPECT_TRUE(has(msg, "spec.selector: must be a mapping, got a list")) << msg;
  msg = parse_err(svc("  ports: {port: 80}\n"));
  EXPECT_TRUE(has(msg, "spec.ports: must be a list, got a mapping")) << msg;
  msg = parse_err(svc("  externalIPs: [1.2.3.4, nope]\n"));
  EXPECT_TRUE(has(msg, "spec.externalIPs[1]: must be an IPv4 address")) << msg;
  msg = parse_err(svc("  type: ExternalName\n"));
  EXPECT_TRUE(has(msg, "spec.externalName: required")) << msg;
  msg = parse_err(svc("  type: ExternalName\n  externalName: {a: b}\n"));
  EXPECT_TRUE(has(msg, "spec.externalName: must be a string, got a mapping")) << msg;
  msg = parse_err("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: [1]\n");
  EXPECT_TRUE(has(msg, "Service default/s: spec: must be a mapping")) << msg;
}

TEST(ManifestErrors, EndpointSlice) {
  auto slice = [](std::string body, std::string labels = "{kubernetes.io/service-name: svc}") {
    return "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-1\n"
           "  labels: " +
           labels + "\n" + body;
  };
  auto msg = parse_err(slice("addressType: IPv4\n", "{app: x}"));
  EXPECT_TRUE(has(msg,
                  "EndpointSlice default/svc-1: metadata.labels[kubernetes.io/service-name]: "
                  "required"))
      << msg;
  msg = parse_err(slice("endpoints: []\n"));
  EXPECT_TRUE(has(msg, "EndpointSlice default/svc-1: addressType: required")) << msg;
  msg = parse_err(slice("addressType: IPv5\n"));
  EXPECT_TRUE(has(msg, "addressType: must be one of IPv4, IPv6, FQDN")) << msg;
  msg = parse_err(slice("addressType: IPv4\nendpoints:\n- addresses: [10.0.0.1, 300.0.0.1]\n"));
  EXPECT_TRUE(has(msg, "endpoints[0].addresses[1]: must be an IPv4 address")) << msg;
  msg = parse_err(slice("addressType: IPv4\nendpoints:\n- addresses: [\"fd00::1\"]\n"));
  EXPECT_TRUE(has(msg, "endpoints[0].addresses[0]: IPv6 is not supported yet")) << msg;
  msg = parse_err(slice("addressType: IPv4\nendpoints:\n- nodeName: n\n"));
  EXPECT_TRUE(has(msg, "endpoints[0].addresses: required")) << msg;
  msg = parse_err(slice("addressType: IPv4\nendpoints:\n- addresses: []\n"));
  EXPECT_TRUE(has(msg, "endpoints[0].addresses: required")) << msg;
  msg = parse_err(slice("addressType: IPv4\nendpoints:\n- addresses: 10.0.0.1\n"));
  EXPECT_TRUE(has(msg, "endpoints[0].addresses: must be a list")) << msg;
  msg = parse_err(slice(
      "addressType: IPv4\nendpoints:\n- addresses: [10.0.0.1]\n  conditions: {ready: \"yes\"}\n"));
  EXPECT_TRUE(has(msg, "endpoints[0].conditions.ready: must be a boolean, got \"yes\"")) << msg;
  msg = parse_err(slice(
      "addressType: IPv4\nendpoints:\n- addresses: [10.0.0.1]\n  conditions: {serving: 1}\n"));
  EXPECT_TRUE(has(msg, "endpoints[0].conditions.serving: must be a boolean, got 1")) << msg;
  msg = parse_err(slice("addressType: IPv4\nendpoints: {a: b}\n"));
  EXPECT_TRUE(has(msg, "endpoints: must be a list, got a mapping")) << msg;
  msg = parse_err(slice("addressType: IPv4\nports:\n- name: http\n"));
  EXPECT_TRUE(has(msg, "ports[0].port: required")) << msg;
  msg = parse_err(slice("addressType: IPv4\nports:\n- {name: http, port: null}\n"));
  EXPECT_TRUE(has(msg, "ports[0].port: required")) << msg;
  msg = parse_err(slice("addressType: IPv4\nports:\n- {name: http, port: 70000}\n"));
  EXPECT_TRUE(has(msg, "ports[0].port: must be an integer 1-65535, got 70000")) << msg;
  msg = parse_err(slice("addressType: IPv4\nports:\n- {name: a, port: 1}\n- {name: a, port: 2}\n"));
  EXPECT_TRUE(has(msg, "ports[1].name: duplicate name")) << msg;
  msg = parse_err(slice("addressType: IPv4\nports:\n- {port: 1, protocol: tcpx}\n"));
  EXPECT_TRUE(has(msg, "ports[0].protocol: must be one of TCP, UDP, SCTP")) << msg;
}

TEST(ManifestErrors, LegacyEndpoints) {
  auto eps = [](std::string body) {
    return "apiVersion: v1\nkind: Endpoints\nmetadata: {name: e}\nsubsets:\n" + body;
  };
  auto msg = parse_err(eps("- addresses:\n  - ip: nope\n"));
  EXPECT_TRUE(has(msg, "Endpoints default/e: subsets[0].addresses[0].ip: must be an IPv4")) << msg;
  msg = parse_err(eps("- notReadyAddresses:\n  - nodeName: n\n"));
  EXPECT_TRUE(has(msg, "subsets[0].notReadyAddresses[0].ip: required")) << msg;
  msg = parse_err(eps("- ports:\n  - {name: a, port: -1}\n"));
  EXPECT_TRUE(has(msg, "subsets[0].ports[0].port: must be an integer 1-65535, got -1")) << msg;
  msg = parse_err(eps("- addresses: {ip: 10.0.0.1}\n"));
  EXPECT_TRUE(has(msg, "subsets[0].addresses: must be a list, got a mapping")) << msg;
  msg = parse_err(eps("- addresses:\n  - ip: 10.0.0.1\n    targetRef: [Pod]\n"));
  EXPECT_TRUE(has(msg, "subsets[0].addresses[0].targetRef: must be a mapping")) << msg;
}

TEST(ManifestErrors, Pod) {
  auto pod_doc = [](std::string body) {
    return "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n" + body;
  };
  auto msg = parse_err(pod_doc("status: {podIP: 10.0.0.300}\n"));
  EXPECT_TRUE(has(msg, "Pod default/p: status.podIP: must be an IPv4 address")) << msg;
  msg = parse_err(pod_doc("status: {podIP: \"fd00::1\"}\n"));
  EXPECT_TRUE(has(msg, "status.podIP: IPv6 is not supported yet")) << msg;
  msg = parse_err(pod_doc("spec:\n  containers:\n  - name: a\n    ports:\n    - name: x\n"));
  EXPECT_TRUE(has(msg, "spec.containers[0].ports[0].containerPort: required")) << msg;
  msg = parse_err(
      pod_doc("spec:\n  containers:\n  - name: a\n    ports:\n    - containerPort: 1.5\n"));
  EXPECT_TRUE(has(msg, "spec.containers[0].ports[0].containerPort: must be an integer")) << msg;
  msg = parse_err(pod_doc("spec:\n  containers: {name: a}\n"));
  EXPECT_TRUE(has(msg, "spec.containers: must be a list, got a mapping")) << msg;
  msg = parse_err(pod_doc("status:\n  conditions: [Ready]\n"));
  EXPECT_TRUE(has(msg, "status.conditions[0]: must be a mapping")) << msg;
}

TEST(ManifestErrors, ListItems) {
  auto msg = parse_err(R"(apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: ok}
- apiVersion: apps/v1
  kind: Deployment
)");
  EXPECT_EQ(msg,
            "svc.yaml: document 1: items[1]: unsupported kind \"Deployment\" (apiVersion "
            "apps/v1)");
  msg = parse_err("apiVersion: v1\nkind: List\nitems:\n- kind: Pod\n  apiVersion: v1\n");
  EXPECT_EQ(msg, "svc.yaml: document 1: items[0]: Pod: metadata.name: required");
  msg = parse_err("apiVersion: v1\nkind: List\nitems: {a: b}\n");
  EXPECT_TRUE(has(msg, "document 1: items: must be a list, got a mapping")) << msg;
  msg = parse_err("apiVersion: v1\nkind: List\nitems: [null]\n");
  EXPECT_TRUE(has(msg, "items[0]: must be a mapping")) << msg;
  // A List that contains itself through an alias ends in an error, not a crash.
  msg = parse_err("&a {apiVersion: v1, kind: List, items: [*a]}\n");
  EXPECT_TRUE(has(msg, "nested too deeply")) << msg;
}

}  // namespace
}  // namespace ferry::model

namespace ferry::model {
namespace {

// yaml-cpp 0.7's LoadAll never returns on these (found by fuzz_manifest); the parser must.
TEST(ManifestRegression, StrayCommaAtDocumentLevelDoesNotHang) {
  for (const char* text : {",", ",a", "\"a\",", "[1],", "\t,\t", "---\n,\n---\n,"}) {
    SCOPED_TRACE(text);
    auto r = parse_manifests(text, "comma.yaml");
    if (r) {
      EXPECT_TRUE(r->empty());
    } else {
      EXPECT_NE(r.message().find("comma.yaml"), std::string::npos);
    }
  }
}

TEST(ManifestRegression, DocumentsAreNumberedAndLinesCountedAcrossSeparators) {
  auto r = parse_manifests(
      "---\napiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n"
      "---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {ports: [{port: 0}]}\n",
      "two.yaml");
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("Service default/b"), std::string::npos) << r.message();
  auto syntax = parse_manifests("a: 1\n---\nb: [1,\n", "bad.yaml");
  ASSERT_FALSE(syntax);
  // The unclosed flow ends at the end of the text: line 4 of the file, not of the document.
  EXPECT_NE(syntax.message().find("line 4"), std::string::npos) << syntax.message();
}

}  // namespace
}  // namespace ferry::model

namespace ferry::model {
namespace {

// Issue 16 item 10: nested aliases make a few KB of YAML into millions of objects. Here a
// slice of 100 aliased endpoints, then Lists each holding ten aliases of the one before:
// 10^5 slices, 10^7 endpoints (minutes and gigabytes) from 3 KB.
std::string alias_bomb(int levels) {
  std::string y = "apiVersion: v1\nkind: List\nitems:\n";
  y += "- &s {apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: s, labels: "
       "{kubernetes.io/service-name: a}}, addressType: IPv4, endpoints: [&e {addresses: "
       "[10.0.0.1]}";
  for (int i = 1; i < 100; ++i) y += ", *e";
  y += "]}\n";
  std::string below = "s";
  for (int l = 1; l <= levels; ++l) {
    std::string name = std::to_string(l);
    name.insert(name.begin(), 'l');
    y += "- &";
    y += name;
    y += " {apiVersion: v1, kind: List, items: [";
    for (int i = 0; i < 10; ++i) {
      y += i ? ", *" : "*";
      y += below;
    }
    y += "]}\n";
    below = name;
  }
  return y;
}

TEST(ManifestLimits, NestedAliasesAreRefusedQuickly) {
  const std::string y = alias_bomb(5);
  ASSERT_LT(y.size(), 4096u);
  const auto t0 = std::chrono::steady_clock::now();
  auto msg = parse_err(y);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  EXPECT_TRUE(has(msg, "excessive aliasing")) << msg;
  EXPECT_TRUE(has(msg, "svc.yaml: document 1: items[")) << msg;  // names where it happened
  EXPECT_LT(ms, 2000) << "took " << ms << " ms";
}

TEST(ManifestLimits, ModestAliasesAndLargeAliasFreeTextsPass) {
  // Anchors reused a few times, as people share labels.
  auto objs = parse_ok(R"(apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Service, metadata: {name: a, labels: &l {app: web, tier: front}},
   spec: {selector: *l, ports: [{port: 80}]}}
- {apiVersion: v1, kind: Service, metadata: {name: b, labels: *l}, spec: {selector: *l}}
)");
  EXPECT_EQ(objs.size(), 2u);
  // 200 slices of 50 endpoints (0.5 MB), no aliases: more nodes than kWalkBase, and fine.
  std::string y;
  for (int s = 0; s < 200; ++s) {
    y += "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s" +
         std::to_string(s) +
         "\n  labels: {kubernetes.io/service-name: a}\naddressType: IPv4\nendpoints:\n";
    for (int e = 0; e < 50; ++e) {
      y += "- addresses: [10.0." + std::to_string(e) + ".1]\n  conditions: {ready: true}\n";
    }
    y += "ports: [{name: http, port: 80}]\n";
  }
  EXPECT_EQ(parse_ok(y).size(), 200u);
  // Flow style, the densest text: a list of many one-key maps.
  std::string f = "apiVersion: v1\nkind: Service\nmetadata: {name: a, labels: {";
  for (int i = 0; i < 20000; ++i) f += std::string(i ? "," : "") + "k" + std::to_string(i) + ": v";
  f += "}}\n";
  EXPECT_EQ(parse_ok(f).size(), 1u);
}

// Issue 16 item 16: names as the API server validates them.
std::string named(const char* kind, const std::string& name, const char* api = "v1") {
  return std::string("apiVersion: ") + api + "\nkind: " + kind + "\nmetadata: {name: " + name +
         ", labels: {kubernetes.io/service-name: a}}\naddressType: IPv4\n";
}

TEST(ManifestNames, ServiceNamesAreDns1035Labels) {
  // The impostor: pod-0.db in prod would answer pod-0.db.prod.svc.cluster.local.
  auto msg = parse_err(named("Service", "pod-0.db"));
  EXPECT_TRUE(has(msg, "metadata.name: Invalid value: \"pod-0.db\": a DNS-1035 label")) << msg;
  msg = parse_err(named("Service", std::string(64, 'a')));
  EXPECT_TRUE(has(msg, "must be no more than 63 characters")) << msg;
  msg = parse_err(named("Service", "0abc"));  // must start with a letter
  EXPECT_TRUE(has(msg, "start with an alphabetic character")) << msg;
  EXPECT_EQ(parse_ok(named("Service", std::string(63, 'a'))).size(), 1u);
  EXPECT_EQ(parse_ok(named("Service", "a-0")).size(), 1u);
}

TEST(ManifestNames, OtherObjectsAreDns1123Subdomains) {
  EXPECT_EQ(parse_ok(named("Pod", "pod-0.db")).size(), 1u);
  EXPECT_EQ(parse_ok(named("Pod", "0pod")).size(), 1u);
  EXPECT_EQ(parse_ok(named("Endpoints", "a.b")).size(), 1u);
  EXPECT_EQ(parse_ok(named("Node", "node-1.example.com")).size(), 1u);
  EXPECT_EQ(parse_ok(named("EndpointSlice", "a.b-x1", "discovery.k8s.io/v1")).size(), 1u);
  auto msg = parse_err(named("Pod", std::string(254, 'a')));
  EXPECT_TRUE(has(msg, "must be no more than 253 characters")) << msg;
  msg = parse_err(named("EndpointSlice", "a..b", "discovery.k8s.io/v1"));
  EXPECT_TRUE(has(msg, "RFC 1123 subdomain")) << msg;
  msg = parse_err("apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: a.b}\n");
  EXPECT_TRUE(has(msg, "metadata.namespace: Invalid value: \"a.b\"")) << msg;
  msg = parse_err(
      "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: " + std::string(64, 'a') + "}\n");
  EXPECT_TRUE(has(msg, "metadata.namespace")) << msg;
}

TEST(ManifestNames, NamesAreStringsNotNumbers) {
  auto msg = parse_err("apiVersion: v1\nkind: Pod\nmetadata: {name: 123}\n");
  EXPECT_TRUE(has(msg, "metadata.name: must be a string, got 123")) << msg;
  msg = parse_err("apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: 7}\n");
  EXPECT_TRUE(has(msg, "metadata.namespace: must be a string, got 7")) << msg;
  // Quoted, a digit name is a string, and a fine Pod name.
  EXPECT_EQ(parse_ok("apiVersion: v1\nkind: Pod\nmetadata: {name: \"123\"}\n").size(), 1u);
  // From the API: a JSON number is not a name.
  for (const char* name : {"123", "true", "1.5"}) {
    auto obj = nlohmann::json::parse(
        std::string(R"({"apiVersion":"v1","kind":"Service","metadata":{"name":)") + name +
        R"(},"spec":{"ports":[{"port":80}]}})");
    auto r = parse_object(obj, "api");
    ASSERT_FALSE(r) << name;
    EXPECT_TRUE(has(r.message(), "metadata.name: must be a string")) << r.message();
  }
}

TEST(ManifestNames, PortNames) {
  auto msg = parse_err(R"(apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s, labels: {kubernetes.io/service-name: a}}
addressType: IPv4
ports: [{name: Http_1, port: 80}]
)");
  EXPECT_TRUE(has(msg, "ports[0].name: must be a lower-case DNS-1123 label")) << msg;
  msg = parse_err(R"(apiVersion: v1
kind: Endpoints
metadata: {name: s}
subsets: [{addresses: [{ip: 10.0.0.1}], ports: [{name: a.b, port: 80}]}]
)");
  EXPECT_TRUE(has(msg, "subsets[0].ports[0].name")) << msg;
  msg = parse_err(R"(apiVersion: v1
kind: Pod
metadata: {name: p}
spec: {containers: [{name: c, ports: [{name: http-port-too-long, containerPort: 80}]}]}
)");
  EXPECT_TRUE(has(msg, "spec.containers[0].ports[0].name: must be 1-15")) << msg;
  msg = parse_err(R"(apiVersion: v1
kind: Pod
metadata: {name: p}
spec: {containers: [{name: c, ports: [{name: "8080", containerPort: 80}]}]}
)");
  EXPECT_TRUE(has(msg, "at least one letter")) << msg;
}

}  // namespace
}  // namespace ferry::model
