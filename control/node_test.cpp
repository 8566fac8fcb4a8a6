// node: apply/delete drive an incremental compile (only the Services a change touches are
// resolved again). After every change the published snapshot must equal a full compile of
// the same store.
#include "node.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
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

std::vector<model::object> objects(const std::string& text) {
  auto r = model::parse_manifests(text, "test");
  EXPECT_TRUE(r) << r.message();
  return r ? std::move(*r) : std::vector<model::object>{};
}

// A node fed by the API, counting publishes.
struct api_node {
  node_config cfg = [] {
    node_config c;
    c.service_cidr = {0xc6130000, 16};
    return c;
  }();
  std::unique_ptr<const snapshot> last;
  int publishes = 0;
  node n{cfg, [this](std::unique_ptr<const snapshot> s) {
           last = std::move(s);
           ++publishes;
         }};

  void sync(kube::update u) {
    auto r = n.sync_api(std::move(u));
    ASSERT_TRUE(r) << r.message();
  }
  source from(const std::string& kind, const std::string& name) const {
    return n.objects().objects().at({kind, "default", name}).from;
  }
  bool has(const std::string& kind, const std::string& name) const {
    return n.objects().objects().count({kind, "default", name}) > 0;
  }
};

TEST(NodeApi, ARelistReplacesTheKindInOnePublishAndKeepsLocalObjects) {
  api_node a;
  ASSERT_TRUE(a.n.apply({{"local", service("local", "198.19.0.9")}}, source::socket));
  a.sync({.upserts = objects(service("a", "198.19.0.1") + service("b", "198.19.0.2")),
          .relisted = {"Service"}});
  int before = a.publishes;
  // The next list no longer has b: it goes, a local Service of the same kind stays.
  a.sync({.upserts = objects(service("a", "198.19.0.1")), .relisted = {"Service"}});
  EXPECT_EQ(a.publishes, before + 1);
  EXPECT_TRUE(a.has("Service", "a"));
  EXPECT_FALSE(a.has("Service", "b"));
  EXPECT_TRUE(a.has("Service", "local"));
  EXPECT_EQ(a.from("Service", "a"), source::api);
}

TEST(NodeApi, ARelistThatFindsNothingNewPublishesNothing) {
  api_node a;
  std::string text = service("a", "198.19.0.1") + slice("a-1", "a", {"10.0.0.1"});
  a.sync({.upserts = objects(text), .relisted = {"Service", "EndpointSlice"}});
  int before = a.publishes;
  const snapshot* snap = a.last.get();
  a.sync({.upserts = objects(text), .relisted = {"Service", "EndpointSlice"}});
  EXPECT_EQ(a.publishes, before);
  EXPECT_EQ(a.last.get(), snap);
}

TEST(NodeApi, DeletesTouchOnlyWhatTheApiHolds) {
  api_node a;
  ASSERT_TRUE(a.n.apply({{"local", service("local", "198.19.0.9")}}, source::file));
  a.sync({.upserts = objects(service("a", "198.19.0.1")), .relisted = {"Service"}});
  a.sync({.deletes = {{"Service", "default", "local"}, {"Service", "default", "a"}}});
  EXPECT_TRUE(a.has("Service", "local"));
  EXPECT_FALSE(a.has("Service", "a"));
}

TEST(NodeApi, TheApiWinsANameClashAndLocalChangesToItAreRefused) {
  api_node a;
  ASSERT_TRUE(a.n.apply({{"local", service("a", "198.19.0.9")}}, source::socket));
  a.sync({.upserts = objects(service("a", "198.19.0.1"))});
  EXPECT_EQ(a.from("Service", "a"), source::api);
  auto r = a.n.apply({{"local", service("a", "198.19.0.7")}}, source::socket);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.message(), "Service default/a is held by the Kubernetes API source; change it there");
  auto d = a.n.remove({{"local", service("a", "198.19.0.1")}});
  ASSERT_FALSE(d);
  EXPECT_TRUE(a.has("Service", "a"));
}

TEST(NodeApi, ARefusedObjectIsSkippedAndTheRestApplies) {
  api_node a;
  ASSERT_TRUE(a.n.apply({{"local", service("local", "198.19.0.9")}}, source::file));
  // "thief" wants the local Service's ClusterIP: refused alone, "ok" still goes in.
  a.sync({.upserts = objects(service("thief", "198.19.0.9") + service("ok", "198.19.0.2"))});
  EXPECT_FALSE(a.has("Service", "thief"));
  EXPECT_TRUE(a.has("Service", "ok"));
  EXPECT_EQ(a.n.api_refused(), 1u);
}

// issue 16, 9: an API update flooding a full service range with Services that need a
// ClusterIP is refused object by object in bounded time, and gives up at once when ferryd is
// stopping (changing nothing).
std::vector<model::object> flood_services(uint32_t n) {
  auto tmpl = objects(
      "apiVersion: v1\nkind: Service\nmetadata: {name: t}\nspec:\n"
      "  ports: [{port: 80, targetPort: 8080}]\n");
  std::vector<model::object> out;
  for (uint32_t i = 0; i < n; ++i) {
    model::object o = tmpl.at(0);
    std::get<model::service>(o).meta.name = "flood-" + std::to_string(i);
    out.push_back(std::move(o));
  }
  return out;
}

TEST(NodeApi, AFloodIntoAFullRangeIsRefusedQuicklyAndAStopInterruptsIt) {
  node_config cfg;
  cfg.service_cidr = {0xc6130000, 20};  // 4094 addresses
  node n{cfg, [](std::unique_ptr<const snapshot>) {}};
  auto has = [&](const std::string& kind, const std::string& name) {
    return n.objects().objects().count({kind, "default", name}) > 0;
  };
  // Fill the range: 4094 Services with explicit ClusterIPs, one update.
  auto fill = flood_services(4094);
  for (uint32_t i = 0; i < fill.size(); ++i) {
    auto& svc = std::get<model::service>(fill[i]);
    svc.meta.name = "fill-" + std::to_string(i);
    svc.cluster_ip = 0xc6130001 + i;
  }
  ASSERT_TRUE(n.sync_api({.upserts = std::move(fill)}));
  // 20,000 more that need one (each scanned the whole range: ~25 s in all), and an
  // EndpointSlice, which needs no address and goes in.
  auto flood = flood_services(20000);
  flood.push_back(objects(slice("ok-1", "fill-1", {"10.0.0.1"})).at(0));
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(n.sync_api({.upserts = flood}));
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("20,000 refusals at a full range: %.3f s\n", took);
  EXPECT_LT(took, 10.0) << "20,000 refusals";
  EXPECT_EQ(n.api_refused(), 20000u);
  EXPECT_TRUE(has("EndpointSlice", "ok-1"));
  EXPECT_FALSE(has("Service", "flood-0"));
  // ferryd stopping: the one-at-a-time pass gives up and nothing of the update is applied.
  std::atomic<bool> stop{true};
  n.set_stop(&stop);
  auto more = flood_services(10);
  more.push_back(objects(slice("ok-2", "fill-2", {"10.0.0.2"})).at(0));
  const size_t before = n.objects().objects().size();
  auto r = n.sync_api({.upserts = std::move(more)});
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("ferryd is stopping"), std::string::npos) << r.message();
  EXPECT_FALSE(has("EndpointSlice", "ok-2"));
  EXPECT_EQ(n.objects().objects().size(), before);
}

TEST(NodeApi, ThisNodesZoneRecompilesEveryService) {
  api_node a;
  a.cfg.node_name = "here";
  node n(a.cfg, [&](std::unique_ptr<const snapshot> s) { a.last = std::move(s); });
  auto hinted = service("a", "198.19.0.1") +
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: a-1\n"
                "  labels: {kubernetes.io/service-name: a}\naddressType: IPv4\n"
                "ports: [{port: 8080}]\nendpoints:\n"
                "  - {addresses: [\"10.0.0.1\"], hints: {forZones: [{name: z1}]}}\n"
                "  - {addresses: [\"10.0.0.2\"], hints: {forZones: [{name: z2}]}}\n---\n";
  auto node_in = [](const std::string& zone) {
    return "apiVersion: v1\nkind: Node\nmetadata:\n  name: here\n  labels: "
           "{topology.kubernetes.io/zone: " +
           zone + "}\n";
  };
  ASSERT_TRUE(n.sync_api({.upserts = objects(hinted + node_in("z1"))}));
  ASSERT_EQ(a.last->ports().size(), 1u);
  ASSERT_EQ(a.last->ports()[0]->backends.size(), 1u);
  EXPECT_EQ(a.last->ports()[0]->backends[0].ip, 0x0a000001u);
  ASSERT_TRUE(n.sync_api({.upserts = objects(node_in("z2"))}));
  ASSERT_EQ(a.last->ports()[0]->backends.size(), 1u);
  EXPECT_EQ(a.last->ports()[0]->backends[0].ip, 0x0a000002u);
}

TEST(NodeSocket, EnvAnswersTheVariablesInOrderAndNeedsANamespace) {
  node_config cfg;
  cfg.service_cidr = {0xc6130000, 16};
  node n(cfg, [](std::unique_ptr<const snapshot>) {});
  ASSERT_TRUE(n.apply({{"test", service("redis-master", "198.19.0.11")}}, source::socket));

  auto r = n.handle({{"op", "env"}, {"namespace", "default"}, {"service_links", true}});
  ASSERT_EQ(r["ok"], true) << r.dump();
  const auto& vars = r["result"]["variables"];
  ASSERT_EQ(vars.size(), 7u) << r.dump();
  EXPECT_EQ(vars[0],
            (nlohmann::json{{"name", "REDIS_MASTER_SERVICE_HOST"}, {"value", "198.19.0.11"}}));
  EXPECT_EQ(vars[2],
            (nlohmann::json{{"name", "REDIS_MASTER_PORT"}, {"value", "tcp://198.19.0.11:80"}}));
  // service_links defaults to true, as enableServiceLinks does.
  EXPECT_EQ(n.handle({{"op", "env"}, {"namespace", "default"}}), r);
  auto off = n.handle({{"op", "env"}, {"namespace", "default"}, {"service_links", false}});
  EXPECT_EQ(off["result"]["variables"], nlohmann::json::array()) << off.dump();

  for (const auto& bad :
       {nlohmann::json{{"op", "env"}}, nlohmann::json{{"op", "env"}, {"namespace", ""}},
        nlohmann::json{{"op", "env"}, {"namespace", 3}},
        nlohmann::json{{"op", "env"}, {"namespace", "a"}, {"service_links", 1}}}) {
    auto refused = n.handle(bad);
    EXPECT_EQ(refused["ok"], false) << bad.dump();
    EXPECT_NE(refused.value("error", "").find("bad request"), std::string::npos) << refused.dump();
  }
}

// Reload: file objects follow the files (upserts, and deletes of what no file names any more),
// socket objects stay, and a broken file changes nothing at all.
TEST(NodeReload, FollowsTheFilesKeepsSocketObjectsAndRefusesABrokenFileWhole) {
  char tmpl[] = "/tmp/ferry-reload-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
  };
  write("a.yaml", service("a", "198.19.0.10") + slice("a-1", "a", {"198.18.1.1"}));
  write("b.yaml", service("b", "198.19.0.11"));
  node_config cfg;
  cfg.service_cidr = {0xc6130000, 16};
  cfg.manifests = {dir};
  cfg.log_level = "info";
  int publishes = 0;
  node n(cfg, [&](std::unique_ptr<const snapshot>) { ++publishes; });
  ASSERT_TRUE(n.load_sources(cfg));
  ASSERT_TRUE(n.apply({{"sock", service("s", "198.19.0.12")}}, source::socket));
  auto has = [&](const std::string& kind, const std::string& name) {
    return n.objects().objects().count({kind, "default", name}) > 0;
  };

  // b leaves, a's slice changes, c arrives: one publish.
  std::filesystem::remove(dir + "/b.yaml");
  write("a.yaml", service("a", "198.19.0.10") + slice("a-1", "a", {"198.18.1.2"}));
  write("c.yaml", service("c", "198.19.0.13"));
  node_config fresh = cfg;
  fresh.log_level = "info";
  fresh.dns.ttl = 9;
  const int before = publishes;
  auto r = n.reload(fresh);
  ASSERT_TRUE(r) << r.message();
  EXPECT_EQ(publishes, before + 1);
  EXPECT_TRUE(has("Service", "a"));
  EXPECT_FALSE(has("Service", "b"));
  EXPECT_TRUE(has("Service", "c"));
  EXPECT_TRUE(has("Service", "s"));  // the socket's own
  std::map<std::string, std::string> actions;
  for (const auto& c : r->changes) actions[c.kind + "/" + c.name] = c.action;
  EXPECT_EQ(actions["Service/b"], "deleted");
  EXPECT_EQ(actions["Service/c"], "created");
  EXPECT_EQ(actions["EndpointSlice/a-1"], "configured");
  EXPECT_EQ(actions["Service/a"], "unchanged");
  EXPECT_EQ(r->restart_needed, std::vector<std::string>{"dns"});

  // A broken file: refused, nothing changes, nothing is published.
  write("d.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: d}\nspec: {ports: 7}\n");
  std::filesystem::remove(dir + "/c.yaml");
  const int after = publishes;
  auto bad = n.reload(fresh);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.message().find("d.yaml"), std::string::npos) << bad.message();
  EXPECT_EQ(publishes, after);
  EXPECT_TRUE(has("Service", "c"));
  EXPECT_FALSE(has("Service", "d"));
  std::filesystem::remove_all(dir);
}

TEST(NodeSocket, LogLevelSetsAndReportsThePrevious) {
  node_config cfg;
  node n(cfg, [](std::unique_ptr<const snapshot>) {});
  ASSERT_TRUE(set_log_level("info"));
  auto r = n.handle({{"op", "log_level"}, {"level", "debug"}});
  EXPECT_EQ(r,
            (nlohmann::json{{"ok", true}, {"result", {{"level", "debug"}, {"previous", "info"}}}}));
  EXPECT_EQ(log_level(), "debug");
  r = n.handle({{"op", "log_level"}});
  EXPECT_EQ(r["result"], (nlohmann::json{{"level", "debug"}, {"previous", "debug"}}));
  for (const auto& bad : {nlohmann::json("loud"), nlohmann::json(3), nlohmann::json("warning")}) {
    r = n.handle({{"op", "log_level"}, {"level", bad}});
    EXPECT_EQ(r["ok"], false) << r.dump();
    EXPECT_EQ(
        r["error"],
        "bad request: \"level\" must be one of trace, debug, info, warn, error, critical, off");
  }
  EXPECT_EQ(log_level(), "debug");
  ASSERT_TRUE(set_log_level("info"));
}

}  // namespace
}  // namespace ferry::control

namespace ferry::control {
namespace {

// The weight of each backend of the one service port of a snapshot, and its Maglev slots.
std::map<uint32_t, std::pair<uint16_t, size_t>> weights(const snapshot& s, uint32_t vip) {
  std::map<uint32_t, std::pair<uint16_t, size_t>> out;
  for (const auto* e : s.ports()) {
    if (e->vip != vip) continue;
    for (size_t i = 0; i < e->backends.size(); ++i) {
      size_t slots = std::count(e->maglev.begin(), e->maglev.end(), i);
      out[e->backends[i].ip] = {e->backends[i].weight, slots};
    }
  }
  return out;
}

TEST(NodeWeight, DrainSurvivesEndpointUpdatesAndRemovingItRestores) {
  api_node a;
  const std::string other = service("other", "198.19.0.2") + slice("o1", "other", {"10.0.0.1"});
  auto r = a.n.apply(
      {{"t", service("web", "198.19.0.1") + slice("w1", "web", {"10.0.0.1", "10.0.0.2"}) + other}},
      source::socket);
  ASSERT_TRUE(r) << r.message();
  const uint32_t ip1 = 0x0a000001, ip2 = 0x0a000002, vip = 0xc6130001;
  const std::string other_before = describe(*a.last);

  auto w = a.n.weight("default", "web", ip1, 0);
  ASSERT_TRUE(w) << w.message();
  EXPECT_EQ((*w)["previous"], nullptr);
  EXPECT_EQ((*w)["ports"], 1);
  auto bw = weights(*a.last, vip);
  EXPECT_EQ(bw[ip1], std::make_pair(uint16_t{0}, size_t{0}));
  EXPECT_EQ(bw[ip2].first, 1);
  EXPECT_EQ(bw[ip2].second, a.last->ports().front()->maglev.size());
  // Only web was recompiled: the other Service (same backend address) keeps its weight.
  EXPECT_EQ(weights(*a.last, 0xc6130002)[ip1].first, 1);

  // An endpoint update (a third pod) keeps the override.
  r = a.n.apply({{"t", slice("w1", "web", {"10.0.0.1", "10.0.0.2", "10.0.0.3"})}}, source::socket);
  ASSERT_TRUE(r) << r.message();
  bw = weights(*a.last, vip);
  EXPECT_EQ(bw.size(), 3u);
  EXPECT_EQ(bw[ip1].first, 0);
  auto eps = a.n.get("endpoints", "default")["items"];
  for (const auto& item : eps) {
    if (item["name"] != "web") continue;
    EXPECT_EQ(item["draining"], nlohmann::json::array({"10.0.0.1:8080"}));
    for (const auto& d : item["details"]) {
      EXPECT_EQ(d["drained"], d["address"] == "10.0.0.1");
      EXPECT_EQ(d["weight"], d["address"] == "10.0.0.1" ? 0 : 1);
    }
  }

  // A weight of 3 gets about three times the slots of a weight of 1.
  w = a.n.weight("default", "web", ip2, 3);
  ASSERT_TRUE(w) << w.message();
  bw = weights(*a.last, vip);
  EXPECT_EQ(bw[ip2].first, 3);
  EXPECT_NEAR(double(bw[ip2].second) / double(bw[0x0a000003].second), 3.0, 0.2);

  // Removing the override restores the configured weight.
  w = a.n.weight("default", "web", ip1, std::nullopt);
  ASSERT_TRUE(w) << w.message();
  EXPECT_EQ((*w)["previous"], 0);
  EXPECT_EQ(weights(*a.last, vip)[ip1].first, 1);
  auto other_line = [](const std::string& d) { return d.substr(d.find("default/other")); };
  EXPECT_EQ(other_line(describe(*a.last)), other_line(other_before));

  // Refusals name what is wrong.
  EXPECT_EQ(a.n.weight("default", "nope", ip1, 1).message(), "service \"default/nope\" not found");
  EXPECT_EQ(a.n.weight("default", "web", 0x0a000009, 1).message(),
            "address 10.0.0.9 is not an endpoint of service \"default/web\"");
}

TEST(NodeWeight, DescribeShowsSlotsAndOverride) {
  api_node a;
  auto r = a.n.apply(
      {{"t", service("web", "198.19.0.1") + slice("w1", "web", {"10.0.0.1", "10.0.0.2"})}},
      source::socket);
  ASSERT_TRUE(r) << r.message();
  ASSERT_TRUE(a.n.weight("default", "web", 0x0a000001, 0));
  auto d = a.n.describe("default", "web");
  ASSERT_TRUE(d) << d.message();
  ASSERT_EQ((*d)["ports"].size(), 1u);
  const auto& p = (*d)["ports"][0];
  EXPECT_EQ(p["vip"], "198.19.0.1");
  EXPECT_EQ((*d)["source"], "socket");
  const auto& b = p["backends"];
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0]["override"], 0);
  EXPECT_EQ(b[0]["configured_weight"], 1);
  EXPECT_EQ(b[0]["slots"], 0);
  EXPECT_EQ(b[1]["slots"], p["maglev_size"]);
  EXPECT_EQ(b[1]["share"], 1.0);
  EXPECT_EQ(a.n.describe("default", "nope").message(), "service \"default/nope\" not found");
  // Through the socket op.
  auto ans =
      a.n.handle({{"op", "weight"}, {"name", "web"}, {"address", "10.0.0.2"}, {"weight", 1001}});
  EXPECT_EQ(ans["ok"], false);
  EXPECT_NE(ans["error"].get<std::string>().find("0 to 1000"), std::string::npos);
}

// Payload signature filter.
filter_rule_config filter_rule(const std::string& name, const std::string& pattern) {
  filter_rule_config r;
  r.name = name;
  r.pattern = pattern;
  return r;
}

TEST(NodeFilter, AddDeleteListAndNothingHalfApplied) {
  node_config cfg;
  cfg.service_cidr = {0xc6130000, 16};
  cfg.filters = {filter_rule("from-config", "/evil")};
  std::unique_ptr<const snapshot> last;
  int published = 0;
  node n(
      cfg,
      [&](std::unique_ptr<const snapshot> s) {
        last = std::move(s);
        ++published;
      },
      2);
  std::map<uint32_t, uint64_t> counts;  // what the workers' slots hold
  n.set_filter_hits([&](uint32_t slot) { return counts[slot]; });
  ASSERT_TRUE(n.load_sources(cfg, false));
  ASSERT_TRUE(last && last->filters);
  EXPECT_EQ(last->filters->db->scratch.size(), 2u);
  ASSERT_EQ(last->filters->rules.size(), 1u);

  // A count rule over the socket op: a new snapshot with both rules.
  auto r = n.handle({{"op", "filter_add"},
                     {"name", "php"},
                     {"pattern", "\\.php"},
                     {"action", "count"},
                     {"depth", 64},
                     {"protocol", "tcp"},
                     {"port", 80}});
  ASSERT_TRUE(r["ok"]) << r.dump();
  ASSERT_EQ(last->filters->rules.size(), 2u);
  EXPECT_FALSE(last->filters->rules[1].drop);
  EXPECT_EQ(last->filters->rules[1].depth, 64u);
  const uint32_t php_slot = last->filters->rules[1].slot;
  counts[php_slot] = 5;
  auto list = n.handle({{"op", "filter_list"}});
  ASSERT_TRUE(list["ok"]);
  const auto& rules = list["result"]["rules"];
  ASSERT_EQ(rules.size(), 2u);
  EXPECT_EQ(rules[0]["source"], "config");
  EXPECT_EQ(rules[1]["source"], "socket");
  EXPECT_EQ(rules[1]["hits"], 5);
  EXPECT_EQ(rules[1]["scope"], "tcp :80");
  EXPECT_EQ(rules[1]["action"], "count");

  // Refused, and nothing changes: a bad pattern (Hyperscan's message, naming the rule), a
  // name in use, a bad field.
  const int before = published;
  const auto* set = last->filters.get();
  r = n.handle({{"op", "filter_add"}, {"name", "broken"}, {"pattern", "a(b"}});
  EXPECT_FALSE(r["ok"]);
  EXPECT_EQ(
      r["error"].get<std::string>().rfind("filter \"broken\": pattern \"a(b\": Missing close", 0),
      0u)
      << r.dump();
  r = n.handle({{"op", "filter_add"}, {"name", "php"}, {"pattern", "x"}});
  EXPECT_FALSE(r["ok"]);
  EXPECT_NE(r["error"].get<std::string>().find("already exists"), std::string::npos);
  r = n.handle({{"op", "filter_add"}, {"name", "deep"}, {"pattern", "x"}, {"depth", 70000}});
  EXPECT_EQ(r["error"], "filter \"deep\": depth: must be between 1 and 65535, got 70000");
  r = n.handle({{"op", "filter_add"}, {"name", "p"}, {"pattern", "x"}, {"protocol", "sctp"}});
  EXPECT_EQ(r["error"], "filter \"p\": protocol: \"sctp\" must be TCP or UDP");
  r = n.handle({{"op", "filter_add"}, {"name", "p"}, {"pattern", "x"}, {"depth", "64"}});
  EXPECT_EQ(r["error"], "bad request: \"depth\" must be an integer");
  r = n.handle({{"op", "filter_add"}, {"name", "p"}, {"pattern", "x"}, {"service", "web"}});
  EXPECT_EQ(r["error"], "filter \"p\": service: \"web\" is not NAMESPACE/NAME");
  EXPECT_EQ(published, before);
  EXPECT_EQ(last->filters.get(), set);
  EXPECT_EQ(n.filter_rules().size(), 2u);

  // Delete: the slot is freed; a rule that takes it later starts from 0, not the old 5.
  r = n.handle({{"op", "filter_del"}, {"name", "php"}});
  ASSERT_TRUE(r["ok"]) << r.dump();
  EXPECT_EQ(r["result"]["hits"], 5);
  EXPECT_EQ(last->filters->rules.size(), 1u);
  EXPECT_FALSE(n.handle({{"op", "filter_del"}, {"name", "php"}})["ok"]);
  ASSERT_TRUE(n.filter_add(filter_rule("again", "x")));
  EXPECT_EQ(n.filter_rules().back().slot, php_slot);
  EXPECT_EQ(n.filter_list()["rules"][1]["hits"], 0);
  counts[php_slot] = 7;
  EXPECT_EQ(n.filter_list()["rules"][1]["hits"], 2);

  // The last rule gone: no filter set at all (the workers' one pointer test).
  ASSERT_TRUE(n.filter_del("again"));
  ASSERT_TRUE(n.filter_del("from-config"));
  EXPECT_FALSE(last->filters);
}

// Reload: the config's [[filter]] tables follow the file live (changed, added, deleted rules,
// counter slots kept by name); rules added over the socket stay; a refused set (a bad
// pattern, a name the socket holds) changes nothing, the manifests included.
TEST(NodeReload, FilterTablesFollowTheFileAndSocketRulesStay) {
  char tmpl[] = "/tmp/ferry-reload-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  std::ofstream(dir + "/a.yaml") << service("a", "198.19.0.10");
  node_config cfg;
  cfg.service_cidr = {0xc6130000, 16};
  cfg.manifests = {dir};
  cfg.source = dir + "/ferry.toml";
  cfg.filters = {filter_rule("admin", "/admin"), filter_rule("gone", "/old")};
  std::unique_ptr<const snapshot> last;
  int published = 0;
  node n(cfg, [&](std::unique_ptr<const snapshot> s) {
    last = std::move(s);
    ++published;
  });
  ASSERT_TRUE(n.load_sources(cfg, false));
  ASSERT_TRUE(n.filter_add(filter_rule("sock", "/sock")));
  const uint32_t admin_slot = n.filter_rules()[0].slot;
  auto names = [&] {
    std::vector<std::string> out;
    for (const auto& f : n.filter_rules()) out.push_back(f.rule.name);
    return out;
  };

  node_config fresh = cfg;
  fresh.filters = {filter_rule("admin", "/admin/"), filter_rule("php", "\\.php")};
  auto r = n.reload(fresh);
  ASSERT_TRUE(r) << r.message();
  EXPECT_TRUE(r->restart_needed.empty());
  std::map<std::string, std::string> actions;
  for (const auto& c : r->changes) actions[c.kind + "/" + c.name] = c.action;
  EXPECT_EQ(actions["Filter/admin"], "configured");
  EXPECT_EQ(actions["Filter/php"], "created");
  EXPECT_EQ(actions["Filter/gone"], "deleted");
  EXPECT_EQ(actions.count("Filter/sock"), 0u);  // the socket's own, untouched
  EXPECT_EQ(names(), (std::vector<std::string>{"admin", "php", "sock"}));
  EXPECT_EQ(n.filter_rules()[0].rule.pattern, "/admin/");
  EXPECT_EQ(n.filter_rules()[0].slot, admin_slot);
  ASSERT_TRUE(last && last->filters);
  EXPECT_EQ(last->filters->rules.size(), 3u);

  // The same file again: nothing published.
  int before = published;
  r = n.reload(fresh);
  ASSERT_TRUE(r) << r.message();
  EXPECT_EQ(published, before);
  EXPECT_EQ(r->changes.back().action, "unchanged");

  // Refused whole: a bad pattern, and a name the socket holds; the manifest change with
  // them is not applied either.
  std::ofstream(dir + "/b.yaml") << service("b", "198.19.0.11");
  node_config bad = fresh;
  bad.filters.push_back(filter_rule("broken", "a(b"));
  auto refused = n.reload(bad);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.message().find("\"broken\""), std::string::npos) << refused.message();
  EXPECT_NE(refused.message().find("Missing close"), std::string::npos) << refused.message();
  bad.filters = {filter_rule("sock", "/x")};
  refused = n.reload(bad);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.message(), dir + "/ferry.toml: filter[0] (sock): a rule of that name was " +
                                   "added over the socket; delete it (ferryctl filter del sock) " +
                                   "or rename this one");
  EXPECT_EQ(published, before);
  EXPECT_EQ(names(), (std::vector<std::string>{"admin", "php", "sock"}));
  EXPECT_EQ(n.objects().objects().count({"Service", "default", "b"}), 0u);

  // No [[filter]] left: only the socket's rule.
  fresh.filters.clear();
  ASSERT_TRUE(n.reload(fresh));
  EXPECT_EQ(names(), std::vector<std::string>{"sock"});
  EXPECT_EQ(last->filters->rules.size(), 1u);
  std::filesystem::remove_all(dir);
}

TEST(NodeFilter, ServiceScopeFollowsTheServicesFrontends) {
  node_config cfg;
  cfg.service_cidr = {0xc6130000, 16};
  std::unique_ptr<const snapshot> last;
  node n(cfg, [&](std::unique_ptr<const snapshot> s) { last = std::move(s); });
  ASSERT_TRUE(n.load_sources(cfg, false));
  auto scoped = filter_rule("web-only", "x");
  scoped.service = "default/web";
  ASSERT_TRUE(n.filter_add(scoped));
  EXPECT_TRUE(last->filters->rules[0].service_ids.empty());  // no such Service yet
  auto frontend_ids = [&] {
    std::vector<uint32_t> ids;
    for (const auto* e : last->ports()) {
      if (e->name == "default/web" || e->name.rfind("default/web:", 0) == 0) ids.push_back(e->id);
    }
    std::sort(ids.begin(), ids.end());
    return ids;
  };
  ASSERT_TRUE(n.apply({{"t", service("other", "198.19.0.1") + service("web", "198.19.0.2")}},
                      source::socket));
  ASSERT_EQ(frontend_ids().size(), 1u);
  EXPECT_EQ(last->filters->rules[0].service_ids, frontend_ids());
  EXPECT_EQ(last->filters->service_ids, frontend_ids());
  // The Service recreated (new frontend id): the scope follows; the database is the same.
  const auto* db = last->filters->db.get();
  ASSERT_TRUE(n.remove({{"t", service("web", "198.19.0.2")}}));
  EXPECT_TRUE(last->filters->rules[0].service_ids.empty());
  ASSERT_TRUE(n.apply({{"t", service("web", "198.19.0.3")}}, source::socket));
  EXPECT_EQ(last->filters->rules[0].service_ids, frontend_ids());
  EXPECT_EQ(last->filters->db.get(), db);
  // An unrelated change keeps the filter set itself.
  const auto* set = last->filters.get();
  ASSERT_TRUE(n.apply({{"t", service("third", "198.19.0.4")}}, source::socket));
  EXPECT_EQ(last->filters.get(), set);
}

// Removed-backend grace: a backend that leaves a frontend has its flows flushed once the
// grace is over, unless it came back; UDP ones at once; a drain (weight 0) is not a removal.
TEST(NodeGrace, RemovedBackendIsFlushedAfterTheGraceUnlessItCameBack) {
  node_config cfg;
  cfg.service_cidr = {0xc6130000, 16};
  cfg.conntrack.removed_backend_grace = 30;
  std::unique_ptr<const snapshot> last;
  node n(cfg, [&](std::unique_ptr<const snapshot> s) { last = std::move(s); });
  std::vector<std::vector<backend_change>> flushed;
  n.set_backend_flush([&](const std::vector<backend_change>& gone) -> uint64_t {
    flushed.push_back(gone);
    return gone.size() * 10;
  });
  using namespace std::chrono_literals;
  const std::string udp_svc =
      "apiVersion: v1\nkind: Service\nmetadata: {name: dns}\nspec:\n  clusterIP: 198.19.0.5\n"
      "  ports: [{protocol: UDP, port: 53, targetPort: 5353}]\n---\n";
  auto udp_slice = [](const std::vector<std::string>& ips) {
    std::string out =
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: d1\n"
        "  labels: {kubernetes.io/service-name: dns}\naddressType: IPv4\n"
        "ports: [{protocol: UDP, port: 5353}]\nendpoints:\n";
    for (const auto& ip : ips) out += "  - addresses: [\"" + ip + "\"]\n";
    return out + "---\n";
  };
  auto apply = [&](const std::string& text) {
    auto r = n.apply({{"t", text}}, source::socket);
    ASSERT_TRUE(r) << r.message();
  };
  apply(service("web", "198.19.0.1") + slice("w1", "web", {"10.0.0.1", "10.0.0.2"}) + udp_svc +
        udp_slice({"10.0.0.1", "10.0.0.2"}));
  EXPECT_EQ(n.pending_backend_flushes(), 0u);
  EXPECT_TRUE(flushed.empty());

  // 10.0.0.2 leaves web: nothing yet, then its flows once 30 s have passed.
  auto t0 = std::chrono::steady_clock::now();
  apply(slice("w1", "web", {"10.0.0.1"}));
  EXPECT_EQ(n.pending_backend_flushes(), 1u);
  EXPECT_EQ(n.tick(t0 + 29s), 0u);
  EXPECT_TRUE(flushed.empty());
  // Removed again meanwhile (an update that still lacks it): the first deadline stands.
  apply(slice("w1", "web", {"10.0.0.1", "10.0.0.3"}));
  EXPECT_EQ(n.pending_backend_flushes(), 1u);
  EXPECT_EQ(n.tick(std::chrono::steady_clock::now() + 31s), 10u);
  ASSERT_EQ(flushed.size(), 1u);
  ASSERT_EQ(flushed[0].size(), 1u);
  EXPECT_EQ(flushed[0][0].vip, 0xc6130001u);
  EXPECT_EQ(flushed[0][0].vport, 80);
  EXPECT_EQ(flushed[0][0].ip, 0x0a000002u);
  EXPECT_EQ(flushed[0][0].port, 8080);
  EXPECT_EQ(flushed[0][0].proto, kProtoTcp);
  EXPECT_EQ(flushed[0][0].name, "default/web");
  EXPECT_EQ(n.pending_backend_flushes(), 0u);
  EXPECT_EQ(n.tick(std::chrono::steady_clock::now() + 3600s), 0u);  // once only

  // Came back within the grace: nothing is flushed.
  apply(slice("w1", "web", {"10.0.0.1"}));
  EXPECT_EQ(n.pending_backend_flushes(), 1u);  // 10.0.0.3
  apply(slice("w1", "web", {"10.0.0.1", "10.0.0.3"}));
  EXPECT_EQ(n.pending_backend_flushes(), 0u);
  EXPECT_EQ(n.tick(std::chrono::steady_clock::now() + 31s), 0u);
  EXPECT_EQ(flushed.size(), 1u);

  // A drain keeps the backend in the frontend: not a removal.
  ASSERT_TRUE(n.weight("default", "web", 0x0a000003, 0));
  EXPECT_EQ(n.pending_backend_flushes(), 0u);

  // UDP: flushed as the change is published, no grace.
  apply(udp_slice({"10.0.0.1"}));
  ASSERT_EQ(flushed.size(), 2u);
  ASSERT_EQ(flushed[1].size(), 1u);
  EXPECT_EQ(flushed[1][0].vip, 0xc6130005u);
  EXPECT_EQ(flushed[1][0].vport, 53);
  EXPECT_EQ(flushed[1][0].proto, kProtoUdp);
  EXPECT_EQ(flushed[1][0].ip, 0x0a000002u);
  EXPECT_EQ(flushed[1][0].port, 5353);
  EXPECT_EQ(n.pending_backend_flushes(), 0u);

  // The Service deleted: every backend of its frontend waits out the grace.
  auto del = n.remove({{"t", service("web", "198.19.0.1")}});
  ASSERT_TRUE(del) << del.message();
  EXPECT_EQ(n.pending_backend_flushes(), 2u);
  EXPECT_EQ(n.tick(std::chrono::steady_clock::now() + 31s), 20u);
  ASSERT_EQ(flushed.size(), 3u);
  EXPECT_EQ(flushed[2].size(), 2u);

  // Deleted and created again within the grace, with the same endpoints: they came back to
  // the same frontend (address, protocol, port), whatever counter slot it got this time.
  apply(service("web", "198.19.0.1"));
  del = n.remove({{"t", service("web", "198.19.0.1") + udp_svc}});
  ASSERT_TRUE(del) << del.message();
  EXPECT_EQ(n.pending_backend_flushes(), 2u);
  EXPECT_EQ(flushed.size(), 4u);  // dns's UDP backend: at once
  apply(udp_svc + service("web", "198.19.0.1"));
  EXPECT_EQ(n.pending_backend_flushes(), 0u);
  EXPECT_EQ(n.tick(std::chrono::steady_clock::now() + 31s), 0u);
}

TEST(NodeGrace, ZeroGraceFlushesAtOnceAndNoFlusherTracksNothing) {
  node_config cfg;
  cfg.service_cidr = {0xc6130000, 16};
  cfg.conntrack.removed_backend_grace = 0;
  node n(cfg, [](std::unique_ptr<const snapshot>) {});
  auto r =
      n.apply({{"t", service("web", "198.19.0.1") + slice("w1", "web", {"10.0.0.1", "10.0.0.2"})}},
              source::socket);
  ASSERT_TRUE(r) << r.message();
  r = n.apply({{"t", slice("w1", "web", {"10.0.0.1"})}}, source::socket);
  ASSERT_TRUE(r);
  EXPECT_EQ(n.pending_backend_flushes(), 0u);  // no flusher installed: nothing tracked
  size_t calls = 0;
  n.set_backend_flush([&](const std::vector<backend_change>& gone) -> uint64_t {
    ++calls;
    EXPECT_EQ(gone.size(), 1u);
    return 1;
  });
  r = n.apply({{"t", slice("w1", "web", {"10.0.0.2"})}}, source::socket);
  ASSERT_TRUE(r);
  EXPECT_EQ(calls, 1u);
  EXPECT_EQ(n.pending_backend_flushes(), 0u);
}

// A client's value nested far deeper than any request needs (200,000 levels: 400 KB) must
// never be printed whole: dump() recurses once per level and overflows the stack. Handlers name
// the type instead, whether the value arrives through the socket (which refuses the depth
// first) or straight from another caller.
TEST(NodeSocket, DeepValuesAreNamedByTheirTypeNotPrinted) {
  constexpr size_t kDeep = 200000;
  auto deep = [] {
    return nlohmann::json::parse(std::string(kDeep, '[') + std::string(kDeep, ']'));
  };
  api_node a;
  ASSERT_TRUE(a.n.apply({{"t", service("web", "198.19.0.1") + slice("w1", "web", {"10.0.0.2"})}},
                        source::socket));

  // Built by moving: an initializer list would copy the deep value (a recursion per level).
  nlohmann::json req = {{"op", "weight"}, {"name", "web"}, {"address", "10.0.0.2"}};
  req["weight"] = deep();
  auto ans = a.n.handle(req);
  EXPECT_EQ(ans["error"],
            "bad request: \"weight\" must be an integer from 0 to 1000, or null, not an array");
  req["weight"] = 2000;
  EXPECT_EQ(a.n.handle(req)["error"],
            "bad request: \"weight\" must be an integer from 0 to 1000, or null, not 2000");

  // flush logs its filters; the request's other fields are the client's and never printed.
  a.n.set_view("flush", [&](const nlohmann::json&) { return nlohmann::json{{"flushed", 3}}; });
  req = {{"op", "flush"}, {"protocol", "udp"}};
  req["all"] = deep();
  ans = a.n.handle(req);
  EXPECT_EQ(ans["ok"], true) << ans["error"];
  EXPECT_EQ(ans["result"]["flushed"], 3);
  req = {{"op", "flush"}};
  req["service"] = deep();  // a filter of the wrong type, as the view would refuse it
  EXPECT_EQ(a.n.handle(req)["ok"], true);
}

}  // namespace
}  // namespace ferry::control
