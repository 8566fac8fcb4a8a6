// envvars: golden outputs, written as kubelet writes them (pkg/kubelet/envvars/envvars.go and
// getServiceEnvVarMap in pkg/kubelet/kubelet_pods.go), one "NAME=VALUE" line per variable.
#include "envvars.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "builtin.hpp"
#include "ferry/net.hpp"
#include "model.hpp"
#include "store.hpp"

namespace ferry::control {
namespace {

std::string lines(const std::vector<env_var>& vars) {
  std::string out;
  for (const auto& v : vars) out += v.name + "=" + v.value + "\n";
  return out;
}

// A store holding the objects of `yaml`, with ClusterIPs from 10.0.0.0/8 as in the seed.
store store_of(std::string_view yaml, std::string_view cidr = "10.0.0.0/8") {
  store st(*parse_ipv4_prefix(cidr));
  auto objs = model::parse_manifests(yaml, "test.yaml");
  EXPECT_TRUE(objs.ok()) << objs.message();
  if (!objs.ok()) return st;
  auto r = st.apply(std::move(*objs), source::file);
  EXPECT_TRUE(r.ok()) << r.message();
  return st;
}

std::string env_of(std::string_view yaml, const std::string& ns, bool links = true) {
  return lines(service_environment(store_of(yaml), ns, links));
}

constexpr std::string_view kRedisMaster = R"(apiVersion: v1
kind: Service
metadata:
  name: redis-master
spec:
  clusterIP: 10.0.0.11
  ports:
    - protocol: TCP
      port: 6379
      targetPort: 6379
---
)";

constexpr std::string_view kKubernetes = R"(apiVersion: v1
kind: Service
metadata:
  name: kubernetes
  namespace: default
spec:
  clusterIP: 10.0.0.1
  ports:
    - {name: https, protocol: TCP, port: 443, targetPort: 6443}
---
)";

constexpr std::string_view kKubernetesVars = R"(KUBERNETES_SERVICE_HOST=10.0.0.1
KUBERNETES_SERVICE_PORT=443
KUBERNETES_SERVICE_PORT_HTTPS=443
KUBERNETES_PORT=tcp://10.0.0.1:443
KUBERNETES_PORT_443_TCP=tcp://10.0.0.1:443
KUBERNETES_PORT_443_TCP_PROTO=tcp
KUBERNETES_PORT_443_TCP_PORT=443
KUBERNETES_PORT_443_TCP_ADDR=10.0.0.1
)";

TEST(envvars, seed_example) {
  EXPECT_EQ(env_of(kRedisMaster, "default"), R"(REDIS_MASTER_SERVICE_HOST=10.0.0.11
REDIS_MASTER_SERVICE_PORT=6379
REDIS_MASTER_PORT=tcp://10.0.0.11:6379
REDIS_MASTER_PORT_6379_TCP=tcp://10.0.0.11:6379
REDIS_MASTER_PORT_6379_TCP_PROTO=tcp
REDIS_MASTER_PORT_6379_TCP_PORT=6379
REDIS_MASTER_PORT_6379_TCP_ADDR=10.0.0.11
)");
}

TEST(envvars, builtin_demo_redis_master) {
  store st(*parse_ipv4_prefix("198.19.0.0/16"));
  auto objs = model::parse_manifests(kDefaultManifests, "<built-in manifests>");
  ASSERT_TRUE(objs.ok()) << objs.message();
  ASSERT_TRUE(st.apply(std::move(*objs), source::builtin).ok());
  const std::string env = lines(service_environment(st, "default", true));
  EXPECT_NE(env.find(R"(REDIS_MASTER_SERVICE_HOST=198.19.0.11
REDIS_MASTER_SERVICE_PORT=6379
REDIS_MASTER_PORT=tcp://198.19.0.11:6379
REDIS_MASTER_PORT_6379_TCP=tcp://198.19.0.11:6379
REDIS_MASTER_PORT_6379_TCP_PROTO=tcp
REDIS_MASTER_PORT_6379_TCP_PORT=6379
REDIS_MASTER_PORT_6379_TCP_ADDR=198.19.0.11
)"),
            std::string::npos)
      << env;
  // my-service sorts first.
  EXPECT_EQ(env.rfind("MY_SERVICE_SERVICE_HOST=198.19.0.10\n", 0), 0u) << env;
}

TEST(envvars, named_ports_and_dashes) {
  // kube-dns as clusters run it: the first port under _SERVICE_PORT, every named one (dashes
  // become underscores) under _SERVICE_PORT_<NAME>, then the links of each port in order.
  constexpr std::string_view kube_dns = R"(apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec:
  clusterIP: 10.0.0.10
  ports:
    - {name: dns, protocol: UDP, port: 53}
    - {name: dns-tcp, protocol: TCP, port: 53}
    - {name: metrics, protocol: TCP, port: 9153}
)";
  EXPECT_EQ(env_of(kube_dns, "kube-system"), R"(KUBE_DNS_SERVICE_HOST=10.0.0.10
KUBE_DNS_SERVICE_PORT=53
KUBE_DNS_SERVICE_PORT_DNS=53
KUBE_DNS_SERVICE_PORT_DNS_TCP=53
KUBE_DNS_SERVICE_PORT_METRICS=9153
KUBE_DNS_PORT=udp://10.0.0.10:53
KUBE_DNS_PORT_53_UDP=udp://10.0.0.10:53
KUBE_DNS_PORT_53_UDP_PROTO=udp
KUBE_DNS_PORT_53_UDP_PORT=53
KUBE_DNS_PORT_53_UDP_ADDR=10.0.0.10
KUBE_DNS_PORT_53_TCP=tcp://10.0.0.10:53
KUBE_DNS_PORT_53_TCP_PROTO=tcp
KUBE_DNS_PORT_53_TCP_PORT=53
KUBE_DNS_PORT_53_TCP_ADDR=10.0.0.10
KUBE_DNS_PORT_9153_TCP=tcp://10.0.0.10:9153
KUBE_DNS_PORT_9153_TCP_PROTO=tcp
KUBE_DNS_PORT_9153_TCP_PORT=9153
KUBE_DNS_PORT_9153_TCP_ADDR=10.0.0.10
)");
}

TEST(envvars, several_ports_and_udp) {
  constexpr std::string_view yaml = R"(apiVersion: v1
kind: Service
metadata: {name: my-web-app}
spec:
  clusterIP: 10.0.0.20
  ports:
    - {name: http-alt, port: 8080}
    - {name: syslog, protocol: UDP, port: 514}
)";
  EXPECT_EQ(env_of(yaml, "default"), R"(MY_WEB_APP_SERVICE_HOST=10.0.0.20
MY_WEB_APP_SERVICE_PORT=8080
MY_WEB_APP_SERVICE_PORT_HTTP_ALT=8080
MY_WEB_APP_SERVICE_PORT_SYSLOG=514
MY_WEB_APP_PORT=tcp://10.0.0.20:8080
MY_WEB_APP_PORT_8080_TCP=tcp://10.0.0.20:8080
MY_WEB_APP_PORT_8080_TCP_PROTO=tcp
MY_WEB_APP_PORT_8080_TCP_PORT=8080
MY_WEB_APP_PORT_8080_TCP_ADDR=10.0.0.20
MY_WEB_APP_PORT_514_UDP=udp://10.0.0.20:514
MY_WEB_APP_PORT_514_UDP_PROTO=udp
MY_WEB_APP_PORT_514_UDP_PORT=514
MY_WEB_APP_PORT_514_UDP_ADDR=10.0.0.20
)");
}

TEST(envvars, sctp_first_port) {
  // Straight from the model: a first port in SCTP gives the first-port link in sctp:// too.
  model::service svc;
  svc.meta.name = "diameter";
  svc.ports.push_back({.name = "diameter", .protocol = 132, .port = 3868});
  svc.ports.push_back({.name = "metrics", .protocol = 6, .port = 9090});
  EXPECT_EQ(lines(service_variables(svc, "10.0.0.21")), R"(DIAMETER_SERVICE_HOST=10.0.0.21
DIAMETER_SERVICE_PORT=3868
DIAMETER_SERVICE_PORT_DIAMETER=3868
DIAMETER_SERVICE_PORT_METRICS=9090
DIAMETER_PORT=sctp://10.0.0.21:3868
DIAMETER_PORT_3868_SCTP=sctp://10.0.0.21:3868
DIAMETER_PORT_3868_SCTP_PROTO=sctp
DIAMETER_PORT_3868_SCTP_PORT=3868
DIAMETER_PORT_3868_SCTP_ADDR=10.0.0.21
DIAMETER_PORT_9090_TCP=tcp://10.0.0.21:9090
DIAMETER_PORT_9090_TCP_PROTO=tcp
DIAMETER_PORT_9090_TCP_PORT=9090
DIAMETER_PORT_9090_TCP_ADDR=10.0.0.21
)");
}

// An SCTP Service from a manifest keeps its variables (kubelet gives SCTP ports the same forms
// as TCP and UDP: _SCTP and sctp://).
TEST(envvars, sctp_service_from_a_manifest) {
  constexpr std::string_view yaml = R"(apiVersion: v1
kind: Service
metadata: {name: diameter}
spec:
  clusterIP: 10.0.0.21
  ports: [{name: diameter, port: 3868, protocol: SCTP}, {name: metrics, port: 9090}]
)";
  EXPECT_EQ(env_of(yaml, "default"), R"(DIAMETER_SERVICE_HOST=10.0.0.21
DIAMETER_SERVICE_PORT=3868
DIAMETER_SERVICE_PORT_DIAMETER=3868
DIAMETER_SERVICE_PORT_METRICS=9090
DIAMETER_PORT=sctp://10.0.0.21:3868
DIAMETER_PORT_3868_SCTP=sctp://10.0.0.21:3868
DIAMETER_PORT_3868_SCTP_PROTO=sctp
DIAMETER_PORT_3868_SCTP_PORT=3868
DIAMETER_PORT_3868_SCTP_ADDR=10.0.0.21
DIAMETER_PORT_9090_TCP=tcp://10.0.0.21:9090
DIAMETER_PORT_9090_TCP_PROTO=tcp
DIAMETER_PORT_9090_TCP_PORT=9090
DIAMETER_PORT_9090_TCP_ADDR=10.0.0.21
)");
}

TEST(envvars, headless_and_external_name_have_none) {
  constexpr std::string_view yaml = R"(apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  ports: [{port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: upstream}
spec:
  type: ExternalName
  externalName: example.com
  ports: [{port: 443}]
)";
  EXPECT_EQ(env_of(yaml, "default"), "");
}

TEST(envvars, service_without_ports_is_skipped) {
  model::service svc;
  svc.meta.name = "bare";
  svc.cluster_ip = *parse_ipv4("10.0.0.5");
  EXPECT_TRUE(service_variables(svc, "10.0.0.5").empty());
}

TEST(envvars, only_the_pods_namespace) {
  const std::string yaml = std::string(kRedisMaster) + R"(apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  clusterIP: 10.0.0.30
  ports: [{port: 80}]
)";
  EXPECT_EQ(env_of(yaml, "shop"), R"(CART_SERVICE_HOST=10.0.0.30
CART_SERVICE_PORT=80
CART_PORT=tcp://10.0.0.30:80
CART_PORT_80_TCP=tcp://10.0.0.30:80
CART_PORT_80_TCP_PROTO=tcp
CART_PORT_80_TCP_PORT=80
CART_PORT_80_TCP_ADDR=10.0.0.30
)");
  EXPECT_EQ(env_of(yaml, "empty"), "");
}

TEST(envvars, default_kubernetes_from_another_namespace) {
  const std::string yaml = std::string(kKubernetes) + std::string(kRedisMaster) + R"(apiVersion: v1
kind: Service
metadata: {name: zoo, namespace: shop}
spec:
  clusterIP: 10.0.0.31
  ports: [{port: 2181}]
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  clusterIP: 10.0.0.30
  ports: [{port: 80}]
)";
  // By name: cart, kubernetes, zoo; nothing else from default.
  EXPECT_EQ(env_of(yaml, "shop"), R"(CART_SERVICE_HOST=10.0.0.30
CART_SERVICE_PORT=80
CART_PORT=tcp://10.0.0.30:80
CART_PORT_80_TCP=tcp://10.0.0.30:80
CART_PORT_80_TCP_PROTO=tcp
CART_PORT_80_TCP_PORT=80
CART_PORT_80_TCP_ADDR=10.0.0.30
)" + std::string(kKubernetesVars) + R"(ZOO_SERVICE_HOST=10.0.0.31
ZOO_SERVICE_PORT=2181
ZOO_PORT=tcp://10.0.0.31:2181
ZOO_PORT_2181_TCP=tcp://10.0.0.31:2181
ZOO_PORT_2181_TCP_PROTO=tcp
ZOO_PORT_2181_TCP_PORT=2181
ZOO_PORT_2181_TCP_ADDR=10.0.0.31
)");
  // A namespace without Services still sees the API server.
  EXPECT_EQ(env_of(yaml, "empty"), kKubernetesVars);
}

TEST(envvars, no_service_links_keeps_only_default_kubernetes) {
  const std::string yaml = std::string(kKubernetes) + std::string(kRedisMaster);
  EXPECT_EQ(env_of(yaml, "default", false), kKubernetesVars);
  EXPECT_EQ(env_of(yaml, "shop", false), kKubernetesVars);
  EXPECT_EQ(env_of(kRedisMaster, "default", false), "");
}

TEST(envvars, own_kubernetes_service_wins_with_links) {
  const std::string yaml = std::string(kKubernetes) + R"(apiVersion: v1
kind: Service
metadata: {name: kubernetes, namespace: shop}
spec:
  clusterIP: 10.0.0.40
  ports: [{port: 8080}]
)";
  EXPECT_EQ(env_of(yaml, "shop"), R"(KUBERNETES_SERVICE_HOST=10.0.0.40
KUBERNETES_SERVICE_PORT=8080
KUBERNETES_PORT=tcp://10.0.0.40:8080
KUBERNETES_PORT_8080_TCP=tcp://10.0.0.40:8080
KUBERNETES_PORT_8080_TCP_PROTO=tcp
KUBERNETES_PORT_8080_TCP_PORT=8080
KUBERNETES_PORT_8080_TCP_ADDR=10.0.0.40
)");
  // Without links the namespace's own is not linked, so the master Service is.
  EXPECT_EQ(env_of(yaml, "shop", false), kKubernetesVars);
}

TEST(envvars, headless_kubernetes_in_namespace_leaves_the_master) {
  const std::string yaml = std::string(kKubernetes) + R"(apiVersion: v1
kind: Service
metadata: {name: kubernetes, namespace: shop}
spec:
  clusterIP: None
  ports: [{port: 8080}]
)";
  EXPECT_EQ(env_of(yaml, "shop"), kKubernetesVars);
}

TEST(envvars, a_name_two_services_produce_takes_the_later_value) {
  // "a" port 80 makes A_PORT_80_TCP_PORT=80; "a-port-80-tcp" makes it its first-port link.
  constexpr std::string_view yaml = R"(apiVersion: v1
kind: Service
metadata: {name: a}
spec:
  clusterIP: 10.0.0.50
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: a-port-80-tcp}
spec:
  clusterIP: 10.0.0.51
  ports: [{port: 81}]
)";
  const auto vars = service_environment(store_of(yaml), "default", true);
  int seen = 0;
  for (const auto& v : vars) {
    if (v.name == "A_PORT_80_TCP_PORT") {
      ++seen;
      EXPECT_EQ(v.value, "tcp://10.0.0.51:81");
    }
  }
  EXPECT_EQ(seen, 1) << lines(vars);
  EXPECT_EQ(vars.size(), 7u + 7u - 1u) << lines(vars);
}

TEST(envvars, join_host_port_brackets_ipv6) {
  EXPECT_EQ(join_host_port("10.0.0.11", 6379), "10.0.0.11:6379");
  EXPECT_EQ(join_host_port("fd00::11", 6379), "[fd00::11]:6379");
  EXPECT_EQ(join_host_port("::1", 0), "[::1]:0");
}

TEST(envvars, ipv6_cluster_ip) {
  model::service svc;
  svc.meta.name = "redis-master";
  svc.ports.push_back({.name = "", .protocol = 6, .port = 6379});
  EXPECT_EQ(lines(service_variables(svc, "fd00:10:96::11")),
            R"(REDIS_MASTER_SERVICE_HOST=fd00:10:96::11
REDIS_MASTER_SERVICE_PORT=6379
REDIS_MASTER_PORT=tcp://[fd00:10:96::11]:6379
REDIS_MASTER_PORT_6379_TCP=tcp://[fd00:10:96::11]:6379
REDIS_MASTER_PORT_6379_TCP_PROTO=tcp
REDIS_MASTER_PORT_6379_TCP_PORT=6379
REDIS_MASTER_PORT_6379_TCP_ADDR=fd00:10:96::11
)");
}

TEST(envvars, variable_names) {
  EXPECT_EQ(env_variable_name("redis-master"), "REDIS_MASTER");
  EXPECT_EQ(env_variable_name("a-b-c9"), "A_B_C9");
}

}  // namespace
}  // namespace ferry::control
