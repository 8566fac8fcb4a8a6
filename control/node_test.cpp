// node: apply/delete drive an incremental compile (only the Services a change touches are
// resolved again). After every change the published snapshot must equal a full compile of
// the same store.
#include "node.hpp"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <tuple>
#include <vector>

namespace ferry::control {
namespace {

// Everything a worker reads from a snapshot, in comparable form.
std::string describe(const snapshot& s) {
  std::string out;
  for (const auto* e : s.ports()) {
    out += e->name + " " + std::to_string(service_key(e->vip, e->proto, e->port)) +
           " ext=" + std::to_string(e->external) + " snat=" + std::to_string(e->snat_remote) +
           " drop=" + std::to_string(e->drop_empty) + " announce=" + std::to_string(e->announce) +
           " aff=" + std::to_string(e->affinity_timeout) + "/" + std::to_string(e->affinity_key) +
           " ranges=" + std::to_string(e->source_ranges.size()) + " [";
    for (const auto& b : e->backends) {
      out += std::to_string(b.ip) + ":" + std::to_string(b.port) + "/" + std::to_string(b.weight) +
             (b.local ? "L " : " ");
    }
    out += "] maglev=" +
           std::to_string(std::hash<std::string_view>{}(std::string_view(
               reinterpret_cast<const char*>(e->maglev.data()), e->maglev.size() * 2))) +
           "\n";
  }
  out += "announced:";
  for (uint32_t ip : s.announced ? *s.announced : std::vector<uint32_t>{}) {
    out += " " + std::to_string(ip);
  }
  return out;
}

std::string typed(const std::string& name, const std::string& ip, const std::string& spec) {
  return "apiVersion: v1\nkind: Service\nmetadata: {name: " + name +
         "}\nspec:\n  clusterIP: " + ip + "\n" + spec +
         "  ports: [{port: 80, targetPort: 8080}]\n---\n";
}

std::string slice_on(const std::string& name, const std::string& svc,
                     const std::vector<std::pair<std::string, std::string>>& ips) {
  std::string out =
      "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: " + name +
      "\n  labels: {kubernetes.io/service-name: " + svc +
      "}\naddressType: IPv4\nports: [{port: 8080}]\nendpoints:\n";
  for (const auto& [ip, node] : ips)
    out += "  - {addresses: [\"" + ip + "\"], nodeName: " + node + "}\n";
  return out + "---\n";
}

std::string service(const std::string& name, const std::string& ip,
                    const std::string& selector = "") {
  return "apiVersion: v1\nkind: Service\nmetadata: {name: " + name +
         "}\nspec:\n  clusterIP: " + ip + "\n" +
         (selector.empty() ? "" : "  selector: {app: " + selector + "}\n") +
         "  ports: [{port: 80, targetPort: 8080}]\n---\n";
}

std::string slice(const std::string& name, const std::string& svc,
                  const std::vector<std::string>& ips) {
  std::string out =
      "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: " + name +
      "\n  labels: {kubernetes.io/service-name: " + svc +
      "}\naddressType: IPv4\nports: [{port: 8080}]\nendpoints:\n";
  for (const auto& ip : ips) out += "  - addresses: [\"" + ip + "\"]\n";
  return out + "---\n";
}

std::string pod(const std::string& name, const std::string& app, const std::string& ip) {
  return "apiVersion: v1\nkind: Pod\nmetadata: {name: " + name + ", labels: {app: " + app +
         "}}\nstatus:\n  podIP: " + ip + "\n  conditions: [{type: Ready, status: \"True\"}]\n---\n";
}

TEST(Node, IncrementalCompileMatchesAFullCompile) {
  node_config cfg;
  cfg.service_cidr = {0xc6130000, 16};
  cfg.node_name = "here";
  cfg.load_balancer_pool = {{0xcb007100, 28}};
  std::unique_ptr<const snapshot> last;
  node n(cfg, [&](std::unique_ptr<const snapshot> s) { last = std::move(s); });
  auto expect_full = [&](const char* step) {
    SCOPED_TRACE(step);
    ASSERT_TRUE(last);
    auto full =
        compiler(cfg.maglev_max_size, cfg.max_service_ports, cfg.node_name, cfg.load_balancer_pool)
            .compile(n.objects());
    ASSERT_TRUE(full);
    EXPECT_EQ(describe(*last), describe(**full));
  };
  auto apply = [&](const std::string& text) {
    auto r = n.apply({{"test", text}}, source::socket);
    ASSERT_TRUE(r) << r.message();
  };

  apply(service("a", "198.19.0.1") + slice("a-1", "a", {"10.0.0.1", "10.0.0.2"}) +
        service("b", "198.19.0.2") + slice("b-1", "b", {"10.0.1.1"}) +
        service("c", "198.19.0.3", "web"));
  expect_full("initial load");
  apply(slice("a-1", "a", {"10.0.0.1", "10.0.0.3"}));
  expect_full("one endpoint replaced");
  apply(slice("a-1", "b", {"10.0.0.9"}));
  expect_full("a slice moves from a to b");
  apply(pod("p1", "web", "10.0.2.1") + pod("p2", "other", "10.0.2.2"));
  expect_full("pods feed the selector service");
  apply(slice("c-1", "c", {"10.0.3.1"}));
  expect_full("an EndpointSlice takes over from the pods");
  ASSERT_TRUE(n.remove({{"test", service("b", "198.19.0.2")}}));
  expect_full("service removed");
  ASSERT_TRUE(n.remove({{"test", slice("a-1", "b", {})}}));
  expect_full("slice removed");
  apply(service("b", "198.19.0.2") + service("a", "198.19.0.4"));
  expect_full("service re-added and another moved");

  // Service types and policies: every frontend and flag must follow changes too.
  apply(typed("d", "198.19.0.5",
              "  type: LoadBalancer\n  externalTrafficPolicy: Local\n"
              "  externalIPs: [203.0.113.200]\n  loadBalancerSourceRanges: [10.0.0.0/8]\n") +
        slice_on("d-1", "d", {{"10.0.4.1", "here"}, {"10.0.4.2", "there"}}));
  expect_full("a LoadBalancer with a Local policy");
  apply(slice_on("d-1", "d", {{"10.0.4.2", "there"}}));
  expect_full("its local endpoint goes");
  apply(typed("d", "198.19.0.5",
              "  type: NodePort\n  sessionAffinity: ClientIP\n  internalTrafficPolicy: Local\n"));
  expect_full("LoadBalancer becomes a NodePort with affinity");
  apply(typed("d", "198.19.0.5", ""));
  expect_full("and a plain ClusterIP");
  ASSERT_TRUE(n.remove({{"test", typed("d", "198.19.0.5", "")}}));
  expect_full("and gone");
}

}  // namespace
}  // namespace ferry::control
