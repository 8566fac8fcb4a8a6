#include "store.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "ferry/net.hpp"
#include "model.hpp"

namespace ferry::control {
namespace {

constexpr std::string_view kSeedService = R"(apiVersion: v1
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
  - addresses: ["198.18.1.12"]
)";

uint32_t ip(const char* text) { return *parse_ipv4(text); }

ipv4_prefix cidr() { return *parse_ipv4_prefix("198.19.0.0/16"); }

bool has(const std::string& msg, std::string_view part) {
  return msg.find(part) != std::string::npos;
}

std::vector<model::object> parse(std::string_view text) {
  auto r = model::parse_manifests(text, "test.yaml");
  EXPECT_TRUE(r.ok()) << r.message();
  if (!r.ok()) return {};
  return std::move(r).value();
}

// A Service named `name` on port 80; `cluster_ip` empty leaves spec.clusterIP out.
std::string service_yaml(std::string_view name, std::string_view cluster_ip = "",
                         std::string_view port = "80") {
  std::string text =
      "apiVersion: v1\nkind: Service\nmetadata:\n  name: " + std::string(name) + "\nspec:\n";
  if (!cluster_ip.empty()) text += "  clusterIP: " + std::string(cluster_ip) + "\n";
  text += "  selector:\n    app: " + std::string(name) + "\n";
  text += "  ports:\n    - port: " + std::string(port) + "\n";
  return text;
}

std::vector<std::string> actions(const std::vector<change>& changes) {
  std::vector<std::string> out;
  for (const auto& c : changes) out.push_back(c.action);
  return out;
}

const model::service* find_service(const store& st, const std::string& name,
                                   const std::string& ns = "default") {
  auto it = st.objects().find(store::key{"Service", ns, name});
  if (it == st.objects().end()) return nullptr;
  return std::get_if<model::service>(&it->second.obj);
}

// Applies text that must succeed and returns the actions.
std::vector<std::string> apply_ok(store& st, std::string_view text, source from = source::file) {
  auto r = st.apply(parse(text), from);
  EXPECT_TRUE(r.ok()) << r.message();
  if (!r.ok()) return {};
  return actions(*r);
}

// Compares the stored objects (not their sources) of two snapshots of store::objects().
bool same_objects(const std::map<store::key, stored_object>& a,
                  const std::map<store::key, stored_object>& b) {
  if (a.size() != b.size()) return false;
  for (auto ia = a.begin(), ib = b.begin(); ia != a.end(); ++ia, ++ib) {
    if (ia->first != ib->first || !(ia->second.obj == ib->second.obj) ||
        ia->second.from != ib->second.from) {
      return false;
    }
  }
  return true;
}

TEST(source_name, names_every_source) {
  EXPECT_STREQ(source_name(source::file), "file");
  EXPECT_STREQ(source_name(source::socket), "socket");
  EXPECT_STREQ(source_name(source::api), "api");
  EXPECT_STREQ(source_name(source::builtin), "builtin");
}

TEST(key_of, is_kind_namespace_name) {
  auto objs = parse(kSeedSlice);
  ASSERT_EQ(objs.size(), 1u);
  EXPECT_EQ(key_of(objs[0]), (store::key{"EndpointSlice", "default", "my-service-abc12"}));
}

TEST(store, starts_empty) {
  store st(cidr());
  EXPECT_TRUE(st.objects().empty());
  EXPECT_EQ(st.version(), 0u);
}

TEST(store, apply_reports_created) {
  store st(cidr());
  auto r =
      st.apply(parse(std::string(kSeedService) + "---\n" + std::string(kSeedSlice)), source::file);
  ASSERT_TRUE(r.ok()) << r.message();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].kind, "Service");
  EXPECT_EQ((*r)[0].ns, "default");
  EXPECT_EQ((*r)[0].name, "my-service");
  EXPECT_EQ((*r)[0].action, "created");
  EXPECT_EQ((*r)[1].kind, "EndpointSlice");
  EXPECT_EQ((*r)[1].name, "my-service-abc12");
  EXPECT_EQ((*r)[1].action, "created");
  EXPECT_EQ(st.objects().size(), 2u);
}

TEST(store, apply_remembers_the_source) {
  store st(cidr());
  apply_ok(st, kSeedSlice, source::socket);
  auto it = st.objects().find(store::key{"EndpointSlice", "default", "my-service-abc12"});
  ASSERT_NE(it, st.objects().end());
  EXPECT_EQ(it->second.from, source::socket);
}

TEST(store, reapply_of_same_object_is_unchanged) {
  store st(cidr());
  apply_ok(st, kSeedSlice);
  EXPECT_EQ(apply_ok(st, kSeedSlice), std::vector<std::string>{"unchanged"});
}

TEST(store, reapply_of_changed_object_is_configured) {
  store st(cidr());
  apply_ok(st, kSeedSlice);
  std::string changed(kSeedSlice);
  changed += "  - addresses: [\"198.18.1.13\"]\n";
  EXPECT_EQ(apply_ok(st, changed), std::vector<std::string>{"configured"});
  auto it = st.objects().find(store::key{"EndpointSlice", "default", "my-service-abc12"});
  ASSERT_NE(it, st.objects().end());
  EXPECT_EQ(std::get<model::endpoint_slice>(it->second.obj).group.endpoints.size(), 3u);
}

TEST(store, reports_each_object_of_a_batch) {
  store st(cidr());
  apply_ok(st, service_yaml("a", "198.19.0.5"));
  auto got =
      apply_ok(st, service_yaml("a", "198.19.0.5") + "---\n" + service_yaml("b", "198.19.0.6") +
                       "---\n" + service_yaml("c", "198.19.0.7", "81"));
  EXPECT_EQ(got, (std::vector<std::string>{"unchanged", "created", "created"}));
  apply_ok(st, service_yaml("c", "198.19.0.7", "82"));
  auto c = find_service(st, "c");
  ASSERT_NE(c, nullptr);
  ASSERT_EQ(c->ports.size(), 1u);
  EXPECT_EQ(c->ports[0].port, 82);
}

TEST(store, same_name_in_other_namespace_is_another_object) {
  store st(cidr());
  apply_ok(st, kSeedSlice);
  std::string other(kSeedSlice);
  other.replace(other.find("  name: my-service-abc12"), 0, "  namespace: prod\n");
  EXPECT_EQ(apply_ok(st, other), std::vector<std::string>{"created"});
  EXPECT_EQ(st.objects().size(), 2u);
}

TEST(store, service_without_cluster_ip_gets_one_in_the_service_cidr) {
  store st(cidr());
  apply_ok(st, kSeedService);
  auto svc = find_service(st, "my-service");
  ASSERT_NE(svc, nullptr);
  ASSERT_TRUE(svc->cluster_ip);
  EXPECT_TRUE(cidr().contains(*svc->cluster_ip)) << format_ipv4(*svc->cluster_ip);
  EXPECT_NE(*svc->cluster_ip, ip("198.19.0.0")) << "network address";
  EXPECT_NE(*svc->cluster_ip, ip("198.19.255.255")) << "broadcast address";
}

TEST(store, allocated_cluster_ip_is_kept_when_reapplied_without_one) {
  store st(cidr());
  apply_ok(st, kSeedService);
  auto first = find_service(st, "my-service");
  ASSERT_NE(first, nullptr);
  ASSERT_TRUE(first->cluster_ip);
  uint32_t allocated = *first->cluster_ip;
  uint64_t version = st.version();

  // The manifest still has no clusterIP: the store must not treat that as a change.
  EXPECT_EQ(apply_ok(st, kSeedService), std::vector<std::string>{"unchanged"});
  EXPECT_EQ(st.version(), version);
  auto again = find_service(st, "my-service");
  ASSERT_NE(again, nullptr);
  ASSERT_TRUE(again->cluster_ip);
  EXPECT_EQ(*again->cluster_ip, allocated);
}

TEST(store, allocated_cluster_ip_is_kept_when_the_service_changes) {
  store st(cidr());
  apply_ok(st, service_yaml("web"));
  uint32_t allocated = *find_service(st, "web")->cluster_ip;
  EXPECT_EQ(apply_ok(st, service_yaml("web", "", "8080")), std::vector<std::string>{"configured"});
  auto svc = find_service(st, "web");
  ASSERT_TRUE(svc->cluster_ip);
  EXPECT_EQ(*svc->cluster_ip, allocated);
  EXPECT_EQ(svc->ports[0].port, 8080);
}

TEST(store, allocations_are_distinct) {
  store st(cidr());
  std::string text;
  for (int i = 0; i < 20; ++i) {
    if (i) text += "---\n";
    text += service_yaml("svc-" + std::to_string(i));
  }
  apply_ok(st, text);
  std::set<uint32_t> seen;
  for (int i = 0; i < 20; ++i) {
    auto svc = find_service(st, "svc-" + std::to_string(i));
    ASSERT_NE(svc, nullptr);
    ASSERT_TRUE(svc->cluster_ip);
    EXPECT_TRUE(cidr().contains(*svc->cluster_ip));
    EXPECT_TRUE(seen.insert(*svc->cluster_ip).second) << format_ipv4(*svc->cluster_ip);
  }
}

TEST(store, allocation_avoids_addresses_already_taken) {
  // A /30 has two usable addresses; with one taken by hand the other must be picked.
  store st(*parse_ipv4_prefix("10.1.0.0/30"));
  apply_ok(st, service_yaml("fixed", "10.1.0.1"));
  apply_ok(st, service_yaml("auto"));
  auto svc = find_service(st, "auto");
  ASSERT_NE(svc, nullptr);
  ASSERT_TRUE(svc->cluster_ip);
  EXPECT_EQ(*svc->cluster_ip, ip("10.1.0.2"));
}

TEST(store, exhausted_service_cidr_is_refused) {
  store st(*parse_ipv4_prefix("10.1.0.0/30"));
  apply_ok(st, service_yaml("a") + "---\n" + service_yaml("b"));
  auto before = st.objects();
  uint64_t version = st.version();
  auto r = st.apply(parse(service_yaml("c")), source::file);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "default/c")) << r.message();
  EXPECT_TRUE(has(r.message(), "no free address")) << r.message();
  EXPECT_TRUE(same_objects(st.objects(), before));
  EXPECT_EQ(st.version(), version);
}

// issue 16, 9: a full service range refuses each Service that needs a ClusterIP at once (the
// range is counted, not scanned), and a Service deleted frees its address again.
std::vector<model::object> services_named(const std::string& prefix, uint32_t n,
                                          uint32_t first_ip = 0) {
  auto tmpl = parse(service_yaml("tmpl"));
  std::vector<model::object> out;
  out.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    model::object o = tmpl.at(0);
    auto& svc = std::get<model::service>(o);
    svc.meta.name = prefix + std::to_string(i);
    if (first_ip) svc.cluster_ip = first_ip + i;
    out.push_back(std::move(o));
  }
  return out;
}

TEST(store, refusals_at_a_full_range_take_constant_time) {
  // A /16 filled with explicit ClusterIPs: 65534 Services.
  store st(cidr());
  ASSERT_TRUE(st.apply(services_named("fill-", 65534, ip("198.19.0.1")), source::api).ok());
  const uint64_t version = st.version();
  // 10,000 Services that need one: each refused (scanning the range took ~30 ms each).
  auto flood = services_named("flood-", 10000);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto& o : flood) {
    auto r = st.apply({o}, source::api);
    ASSERT_FALSE(r.ok());
    ASSERT_TRUE(has(r.message(), "no free address left in 198.19.0.0/16")) << r.message();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("10,000 refusals at a full /16: %.3f s\n", seconds);
  EXPECT_LT(seconds, 2.0) << "10,000 refusals";
  EXPECT_EQ(st.version(), version);
  // A Service deleted frees its address: the next one gets exactly it.
  st.remove(std::vector<store::key>{{"Service", "default", "fill-1234"}});
  apply_ok(st, service_yaml("late"));
  ASSERT_TRUE(find_service(st, "late")->cluster_ip);
  EXPECT_EQ(*find_service(st, "late")->cluster_ip, ip("198.19.0.1") + 1234);
  EXPECT_FALSE(st.apply(parse(service_yaml("later")), source::api).ok());
}

TEST(store, a_full_small_range_refuses_100k_services_quickly) {
  store st(*parse_ipv4_prefix("10.1.0.0/28"));
  ASSERT_TRUE(st.apply(services_named("fill-", 14), source::api).ok());
  auto flood = services_named("flood-", 100000);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto& o : flood) ASSERT_FALSE(st.apply({o}, source::api).ok());
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  // Addresses taken by externalIPs or within one batch count too: one batch of 15 is refused.
  store st2(*parse_ipv4_prefix("10.1.0.0/28"));
  auto r = st2.apply(services_named("b-", 15), source::api);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "no free address")) << r.message();
  EXPECT_TRUE(st2.apply(services_named("b-", 14), source::api).ok());
}

TEST(store, single_address_service_cidr_allocates_that_address) {
  store st(*parse_ipv4_prefix("10.1.0.7/32"));
  apply_ok(st, service_yaml("only"));
  auto svc = find_service(st, "only");
  ASSERT_NE(svc, nullptr);
  ASSERT_TRUE(svc->cluster_ip);
  EXPECT_EQ(*svc->cluster_ip, ip("10.1.0.7"));
  auto r = st.apply(parse(service_yaml("second")), source::file);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "10.1.0.7/32")) << r.message();
}

TEST(store, zero_length_service_cidr_allocates_an_address) {
  // The CIDR size must be computed without a 32-bit shift by 32.
  store st(*parse_ipv4_prefix("0.0.0.0/0"));
  apply_ok(st, service_yaml("web"));
  auto svc = find_service(st, "web");
  ASSERT_NE(svc, nullptr);
  ASSERT_TRUE(svc->cluster_ip);
  EXPECT_NE(*svc->cluster_ip, 0u);
  EXPECT_NE(*svc->cluster_ip, 0xffffffffu);
}

TEST(store, explicit_cluster_ip_is_kept) {
  store st(cidr());
  apply_ok(st, service_yaml("web", "198.19.7.10"));
  auto svc = find_service(st, "web");
  ASSERT_TRUE(svc->cluster_ip);
  EXPECT_EQ(*svc->cluster_ip, ip("198.19.7.10"));
}

TEST(store, cluster_ip_outside_the_service_range_is_refused) {
  store st(cidr());
  auto r = st.apply(parse(service_yaml("web", "10.96.0.10")), source::file);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.message(),
            "Service default/web: spec.clusterIP: 10.96.0.10 is not in the service range "
            "198.19.0.0/16 ([services] service_cidr)");
  EXPECT_TRUE(st.objects().empty());
}

TEST(store, explicit_cluster_ip_is_kept_when_reapplied_without_one) {
  store st(cidr());
  apply_ok(st, service_yaml("web", "198.19.0.10"));
  EXPECT_EQ(apply_ok(st, service_yaml("web")), std::vector<std::string>{"unchanged"});
  EXPECT_EQ(*find_service(st, "web")->cluster_ip, ip("198.19.0.10"));
}

TEST(store, headless_service_made_normal_gets_an_address) {
  store st(cidr());
  apply_ok(st, service_yaml("web", "None"));
  EXPECT_EQ(apply_ok(st, service_yaml("web")), std::vector<std::string>{"configured"});
  auto svc = find_service(st, "web");
  ASSERT_TRUE(svc->cluster_ip);
  EXPECT_TRUE(cidr().contains(*svc->cluster_ip));
  EXPECT_FALSE(svc->headless);
}

TEST(store, taken_cluster_ip_is_refused_naming_both_services) {
  store st(cidr());
  apply_ok(st, service_yaml("first", "198.19.0.10"));
  auto before = st.objects();
  uint64_t version = st.version();

  auto r = st.apply(parse(service_yaml("second", "198.19.0.10")), source::file);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "default/second")) << r.message();
  EXPECT_TRUE(has(r.message(), "default/first")) << r.message();
  EXPECT_TRUE(has(r.message(), "198.19.0.10")) << r.message();
  EXPECT_TRUE(has(r.message(), "already allocated")) << r.message();
  EXPECT_TRUE(same_objects(st.objects(), before));
  EXPECT_EQ(st.version(), version);
  EXPECT_EQ(find_service(st, "second"), nullptr);
}

TEST(store, taken_allocated_cluster_ip_is_refused) {
  store st(cidr());
  apply_ok(st, service_yaml("auto"));
  std::string taken = format_ipv4(*find_service(st, "auto")->cluster_ip);
  auto r = st.apply(parse(service_yaml("manual", taken)), source::file);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "default/manual")) << r.message();
  EXPECT_TRUE(has(r.message(), "default/auto")) << r.message();
}

TEST(store, service_may_keep_its_own_cluster_ip) {
  store st(cidr());
  apply_ok(st, service_yaml("web", "198.19.0.10"));
  EXPECT_EQ(apply_ok(st, service_yaml("web", "198.19.0.10", "81")),
            std::vector<std::string>{"configured"});
}

TEST(store, service_may_move_to_another_cluster_ip) {
  store st(cidr());
  apply_ok(st, service_yaml("web", "198.19.0.10"));
  apply_ok(st, service_yaml("web", "198.19.0.11"));
  EXPECT_EQ(*find_service(st, "web")->cluster_ip, ip("198.19.0.11"));
  // The old address is free again.
  apply_ok(st, service_yaml("other", "198.19.0.10"));
  EXPECT_EQ(*find_service(st, "other")->cluster_ip, ip("198.19.0.10"));
}

TEST(store, cluster_ip_of_a_removed_service_is_free_again) {
  store st(cidr());
  apply_ok(st, service_yaml("first", "198.19.0.10"));
  st.remove(parse(service_yaml("first")));
  apply_ok(st, service_yaml("second", "198.19.0.10"));
  EXPECT_EQ(*find_service(st, "second")->cluster_ip, ip("198.19.0.10"));
}

TEST(store, conflict_within_one_batch_is_refused) {
  store st(cidr());
  auto r =
      st.apply(parse(service_yaml("a", "198.19.0.10") + "---\n" + service_yaml("b", "198.19.0.10")),
               source::file);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "default/b")) << r.message();
  EXPECT_TRUE(has(r.message(), "default/a")) << r.message();
  EXPECT_TRUE(st.objects().empty());
  EXPECT_EQ(st.version(), 0u);
}

TEST(store, batch_with_one_bad_object_changes_nothing) {
  store st(cidr());
  apply_ok(st, service_yaml("first", "198.19.0.10") + "---\n" + std::string(kSeedSlice));
  auto before = st.objects();
  uint64_t version = st.version();

  std::string changed_slice(kSeedSlice);
  changed_slice += "  - addresses: [\"198.18.1.13\"]\n";
  // A new object, a change and a refused Service in one batch: none of it may land.
  auto r = st.apply(parse(service_yaml("fresh") + "---\n" + changed_slice + "---\n" +
                          service_yaml("first", "198.19.0.11", "81") + "---\n" +
                          service_yaml("thief", "198.19.0.11")),
                    source::socket);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "default/thief")) << r.message();
  EXPECT_TRUE(same_objects(st.objects(), before));
  EXPECT_EQ(st.version(), version);
  EXPECT_EQ(find_service(st, "fresh"), nullptr);
  EXPECT_EQ(*find_service(st, "first")->cluster_ip, ip("198.19.0.10"));
}

TEST(store, headless_service_gets_no_address) {
  store st(cidr());
  apply_ok(st, service_yaml("headless", "None"));
  auto svc = find_service(st, "headless");
  ASSERT_NE(svc, nullptr);
  EXPECT_TRUE(svc->headless);
  EXPECT_FALSE(svc->cluster_ip);
  EXPECT_EQ(apply_ok(st, service_yaml("headless", "None")), std::vector<std::string>{"unchanged"});
  EXPECT_FALSE(find_service(st, "headless")->cluster_ip);
}

TEST(store, headless_services_do_not_conflict) {
  store st(cidr());
  EXPECT_EQ(apply_ok(st, service_yaml("h1", "None") + "---\n" + service_yaml("h2", "None")),
            (std::vector<std::string>{"created", "created"}));
}

TEST(store, external_name_service_gets_no_address) {
  store st(cidr());
  apply_ok(st, R"(apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  type: ExternalName
  externalName: db.example.com
)");
  auto svc = find_service(st, "db");
  ASSERT_NE(svc, nullptr);
  EXPECT_FALSE(svc->cluster_ip);
}

TEST(store, remove_reports_deleted_and_not_found) {
  store st(cidr());
  apply_ok(st, std::string(kSeedService) + "---\n" + std::string(kSeedSlice));
  auto changes = st.remove(parse(std::string(kSeedSlice) + "---\n" + service_yaml("ghost")));
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(changes[0].kind, "EndpointSlice");
  EXPECT_EQ(changes[0].name, "my-service-abc12");
  EXPECT_EQ(changes[0].action, "deleted");
  EXPECT_EQ(changes[1].kind, "Service");
  EXPECT_EQ(changes[1].name, "ghost");
  EXPECT_EQ(changes[1].action, "not found");
  EXPECT_EQ(st.objects().size(), 1u);
  EXPECT_NE(find_service(st, "my-service"), nullptr);
}

TEST(store, remove_matches_by_kind_namespace_and_name_only) {
  store st(cidr());
  apply_ok(st, service_yaml("web", "198.19.0.10"));
  // Different body, same identity: still removed.
  auto changes = st.remove(parse(service_yaml("web", "198.19.0.99", "443")));
  EXPECT_EQ(actions(changes), std::vector<std::string>{"deleted"});
  EXPECT_TRUE(st.objects().empty());
}

TEST(store, version_bumps_only_on_real_changes) {
  store st(cidr());
  EXPECT_EQ(st.version(), 0u);
  apply_ok(st, kSeedService);
  uint64_t v1 = st.version();
  EXPECT_GT(v1, 0u);

  apply_ok(st, kSeedService);  // unchanged
  EXPECT_EQ(st.version(), v1);

  apply_ok(st, kSeedSlice);  // created
  uint64_t v2 = st.version();
  EXPECT_GT(v2, v1);

  std::string changed(kSeedSlice);
  changed += "  - addresses: [\"198.18.1.13\"]\n";
  apply_ok(st, changed);  // configured
  uint64_t v3 = st.version();
  EXPECT_GT(v3, v2);

  EXPECT_EQ(actions(st.remove(parse(service_yaml("ghost")))),
            std::vector<std::string>{"not found"});
  EXPECT_EQ(st.version(), v3);

  std::string taken = format_ipv4(*find_service(st, "my-service")->cluster_ip);
  EXPECT_FALSE(st.apply(parse(service_yaml("thief", taken)), source::file).ok());
  EXPECT_EQ(st.version(), v3);

  EXPECT_EQ(actions(st.remove(parse(changed))), std::vector<std::string>{"deleted"});
  EXPECT_GT(st.version(), v3);
}

TEST(store, version_does_not_bump_for_an_unchanged_batch) {
  store st(cidr());
  std::string both = std::string(kSeedService) + "---\n" + std::string(kSeedSlice);
  apply_ok(st, both);
  uint64_t v = st.version();
  EXPECT_EQ(apply_ok(st, both), (std::vector<std::string>{"unchanged", "unchanged"}));
  EXPECT_EQ(st.version(), v);
}

TEST(store, reapply_from_another_source_is_unchanged_but_records_the_source) {
  store st(cidr());
  apply_ok(st, kSeedSlice, source::file);
  EXPECT_EQ(apply_ok(st, kSeedSlice, source::socket), std::vector<std::string>{"unchanged"});
  auto it = st.objects().find(store::key{"EndpointSlice", "default", "my-service-abc12"});
  ASSERT_NE(it, st.objects().end());
  EXPECT_EQ(it->second.from, source::socket);
}

}  // namespace
}  // namespace ferry::control

namespace ferry::control {
namespace {

TEST(store, revert_puts_back_what_an_apply_replaced) {
  store st(cidr());
  apply_ok(st, service_yaml("web", "198.19.0.10"));
  auto before = st.objects();
  store::undo_log undo;
  ASSERT_TRUE(st.apply(parse(service_yaml("web", "198.19.0.20")), source::socket, &undo));
  ASSERT_TRUE(st.apply(parse(service_yaml("api", "198.19.0.10")), source::socket, &undo));
  st.revert(std::move(undo));
  EXPECT_EQ(st.objects().size(), before.size());
  EXPECT_EQ(*find_service(st, "web")->cluster_ip, ip("198.19.0.10"));
  // The address index followed: .10 is web's again, .20 is free.
  EXPECT_FALSE(st.apply(parse(service_yaml("api", "198.19.0.10")), source::socket));
  EXPECT_TRUE(st.apply(parse(service_yaml("api", "198.19.0.20")), source::socket));
}

TEST(store, one_batch_may_move_an_address_between_services) {
  store st(cidr());
  apply_ok(st, service_yaml("a", "198.19.0.10"));
  // b takes a's address while a moves away, in the same batch.
  std::string batch = service_yaml("a", "198.19.0.11") + "---\n" + service_yaml("b", "198.19.0.10");
  ASSERT_TRUE(st.apply(parse(batch), source::socket));
  EXPECT_EQ(*find_service(st, "b")->cluster_ip, ip("198.19.0.10"));
  EXPECT_EQ(*find_service(st, "a")->cluster_ip, ip("198.19.0.11"));
  // Deleting a frees .11 for someone else.
  st.remove(parse(service_yaml("a", "198.19.0.11")));
  EXPECT_TRUE(st.apply(parse(service_yaml("c", "198.19.0.11")), source::socket));
}

}  // namespace
}  // namespace ferry::control

// ---- Service semantics: nodePorts, load balancer addresses, frontend conflicts ----------------

namespace ferry::control {
namespace {

// A Service `name` of `type` with `spec` (extra spec lines, indented two spaces), the ports
// given as YAML list items (one TCP port 80 by default) and `status` (lines indented two
// spaces, or empty for none).
std::string typed_service_yaml(std::string_view name, std::string_view type,
                               std::string_view spec = "",
                               std::string_view ports = "    - port: 80\n",
                               std::string_view status = "") {
  std::string text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: " + std::string(name) +
                     "\nspec:\n  type: " + std::string(type) +
                     "\n  selector:\n    app: " + std::string(name) + "\n" + std::string(spec) +
                     "  ports:\n" + std::string(ports);
  if (!status.empty()) text += "status:\n" + std::string(status);
  return text;
}

std::string batch(std::initializer_list<std::string> docs) {
  std::string out;
  for (const auto& d : docs) out += (out.empty() ? "" : "---\n") + d;
  return out;
}

// Applies text that must be refused, checks the store did not move, returns the message.
std::string refused(store& st, std::string_view text) {
  auto before = st.objects();
  uint64_t version = st.version();
  auto r = st.apply(parse(text), source::socket);
  EXPECT_FALSE(r.ok()) << "accepted:\n" << text;
  EXPECT_TRUE(same_objects(st.objects(), before)) << "a refused batch changed the store";
  EXPECT_EQ(st.version(), version);
  return r.ok() ? "" : r.message();
}

uint16_t node_port_of(const store& st, const std::string& name, size_t i = 0) {
  const auto* svc = find_service(st, name);
  EXPECT_NE(svc, nullptr) << name;
  if (!svc || svc->ports.size() <= i) return 0;
  return svc->ports[i].node_port;
}

service_ranges with_pool(const char* pool) {
  return service_ranges{.service_cidr = cidr(), .load_balancer_pool = {*parse_ipv4_prefix(pool)}};
}

// ---- nodePorts

TEST(store_node_ports, node_port_and_load_balancer_services_get_one_in_the_default_range) {
  store st(cidr());
  apply_ok(st,
           batch({typed_service_yaml("np", "NodePort"), typed_service_yaml("lb", "LoadBalancer"),
                  typed_service_yaml("plain", "ClusterIP")}));
  for (const char* name : {"np", "lb"}) {
    uint16_t port = node_port_of(st, name);
    EXPECT_GE(port, 30000) << name;
    EXPECT_LE(port, 32767) << name;
  }
  EXPECT_NE(node_port_of(st, "np"), node_port_of(st, "lb"));
  EXPECT_EQ(node_port_of(st, "plain"), 0) << "a ClusterIP Service has no nodePort";
}

TEST(store_node_ports, every_port_of_a_service_gets_its_own) {
  store st(cidr());
  apply_ok(st, typed_service_yaml("dns", "NodePort", "",
                                  "    - {name: dns-udp, port: 53, protocol: UDP}\n"
                                  "    - {name: dns-tcp, port: 53, protocol: TCP}\n"
                                  "    - {name: metrics, port: 9153}\n"));
  std::set<uint16_t> ports{node_port_of(st, "dns", 0), node_port_of(st, "dns", 1),
                           node_port_of(st, "dns", 2)};
  EXPECT_EQ(ports.size(), 3u);
  EXPECT_EQ(ports.count(0), 0u);
}

TEST(store_node_ports, allocated_node_port_is_kept_when_reapplied_without_it) {
  store st(cidr());
  const std::string text = typed_service_yaml("np", "NodePort");
  apply_ok(st, text);
  uint16_t first = node_port_of(st, "np");
  ASSERT_NE(first, 0);
  uint64_t version = st.version();
  EXPECT_EQ(apply_ok(st, text), std::vector<std::string>{"unchanged"});
  EXPECT_EQ(st.version(), version);
  EXPECT_EQ(node_port_of(st, "np"), first);
  // A change elsewhere in the Service keeps it too.
  EXPECT_EQ(apply_ok(st, typed_service_yaml("np", "NodePort", "  sessionAffinity: ClientIP\n")),
            std::vector<std::string>{"configured"});
  EXPECT_EQ(node_port_of(st, "np"), first);
}

TEST(store_node_ports, explicit_node_port_is_kept) {
  store st(cidr());
  apply_ok(st, typed_service_yaml("np", "NodePort", "", "    - {port: 80, nodePort: 30080}\n"));
  EXPECT_EQ(node_port_of(st, "np"), 30080);
}

TEST(store_node_ports, node_port_outside_the_range_is_refused) {
  store st(cidr());
  EXPECT_EQ(
      refused(st, typed_service_yaml("web", "NodePort", "", "    - {port: 80, nodePort: 40000}\n")),
      "Service default/web: spec.ports[0].nodePort: 40000 is outside the node port range "
      "30000-32767 ([services] node_port_range)");
  EXPECT_TRUE(st.objects().empty());
  // The edges of the range are inside it.
  apply_ok(
      st,
      batch({typed_service_yaml("low", "NodePort", "", "    - {port: 80, nodePort: 30000}\n"),
             typed_service_yaml("high", "NodePort", "", "    - {port: 80, nodePort: 32767}\n")}));
  EXPECT_FALSE(st.apply(
      parse(typed_service_yaml("below", "NodePort", "", "    - {port: 80, nodePort: 29999}\n")),
      source::file));
}

TEST(store_node_ports, node_port_taken_by_another_service_is_refused_naming_both) {
  store st(cidr());
  apply_ok(st, typed_service_yaml("other", "NodePort", "", "    - {port: 80, nodePort: 30080}\n"));
  EXPECT_EQ(refused(st, typed_service_yaml("web", "LoadBalancer", "",
                                           "    - {port: 8080, nodePort: 30080}\n")),
            "Service default/web: spec.ports[0].nodePort: node port 30080/TCP is already used by "
            "Service default/other");
  EXPECT_EQ(find_service(st, "web"), nullptr);
}

// A nodePort number is one Service's whatever the protocol: SCTP too, both ways.
TEST(store_node_ports, sctp_node_port_is_one_services_whatever_the_protocol) {
  store st(cidr());
  apply_ok(st, typed_service_yaml("other", "NodePort", "", "    - {port: 80, nodePort: 30080}\n"));
  EXPECT_EQ(
      refused(st, typed_service_yaml("diameter", "NodePort", "",
                                     "    - {port: 3868, protocol: SCTP, nodePort: 30080}\n")),
      "Service default/diameter: spec.ports[0].nodePort: node port 30080/SCTP is already "
      "used by Service default/other");
  apply_ok(st, typed_service_yaml("diameter", "NodePort", "",
                                  "    - {port: 3868, protocol: SCTP, nodePort: 30868}\n"));
  EXPECT_EQ(node_port_of(st, "diameter"), 30868);
  // Held over SCTP only: a TCP or UDP port of another Service may not take the number.
  for (const char* proto : {"TCP", "UDP"}) {
    auto msg = refused(st, typed_service_yaml("web", "NodePort", "",
                                              std::string("    - {port: 80, protocol: ") + proto +
                                                  ", nodePort: 30868}\n"));
    EXPECT_TRUE(has(msg, "already used by Service default/diameter")) << msg;
  }
  // The same Service may use it for TCP as well.
  apply_ok(st, typed_service_yaml("diameter", "NodePort", "",
                                  "    - {name: s, port: 3868, protocol: SCTP, nodePort: 30868}\n"
                                  "    - {name: t, port: 3868, protocol: TCP, nodePort: 30868}\n"));
}

TEST(store_node_ports, node_port_taken_by_an_allocation_is_refused) {
  store st(cidr());
  apply_ok(st, typed_service_yaml("auto", "NodePort"));
  std::string taken = std::to_string(node_port_of(st, "auto"));
  auto msg = refused(st, typed_service_yaml("manual", "NodePort", "",
                                            "    - {port: 81, nodePort: " + taken + "}\n"));
  EXPECT_TRUE(has(msg, "default/manual")) << msg;
  EXPECT_TRUE(has(msg, "already used by Service default/auto")) << msg;
}

TEST(store_node_ports, node_port_of_a_removed_service_is_free_again) {
  store st(cidr());
  apply_ok(st, typed_service_yaml("first", "NodePort", "", "    - {port: 80, nodePort: 30080}\n"));
  st.remove(parse(typed_service_yaml("first", "NodePort")));
  apply_ok(st, typed_service_yaml("second", "NodePort", "", "    - {port: 80, nodePort: 30080}\n"));
  EXPECT_EQ(node_port_of(st, "second"), 30080);
}

TEST(store_node_ports, custom_range_is_used_and_enforced) {
  store st(service_ranges{.service_cidr = cidr(), .node_port_min = 31000, .node_port_max = 31009});
  std::string text;
  for (int i = 0; i < 10; ++i) {
    if (i) text += "---\n";
    text += typed_service_yaml("np-" + std::to_string(i), "NodePort");
  }
  apply_ok(st, text);
  std::set<uint16_t> seen;
  for (int i = 0; i < 10; ++i) {
    uint16_t port = node_port_of(st, "np-" + std::to_string(i));
    EXPECT_GE(port, 31000);
    EXPECT_LE(port, 31009);
    seen.insert(port);
  }
  EXPECT_EQ(seen.size(), 10u) << "every port of the range, each once";
  EXPECT_EQ(refused(st, typed_service_yaml("fixed", "NodePort", "",
                                           "    - {port: 80, nodePort: 30080}\n")),
            "Service default/fixed: spec.ports[0].nodePort: 30080 is outside the node port range "
            "31000-31009 ([services] node_port_range)");
}

TEST(store_node_ports, load_balancer_without_node_port_allocation_gets_none) {
  store st(with_pool("203.0.113.0/29"));
  apply_ok(st,
           typed_service_yaml("lb", "LoadBalancer", "  allocateLoadBalancerNodePorts: false\n"));
  EXPECT_EQ(node_port_of(st, "lb"), 0);
  EXPECT_EQ(apply_ok(st, typed_service_yaml("lb", "LoadBalancer",
                                            "  allocateLoadBalancerNodePorts: false\n")),
            std::vector<std::string>{"unchanged"});
  EXPECT_EQ(node_port_of(st, "lb"), 0);
  // Turned back on, it gets one.
  apply_ok(st, typed_service_yaml("lb", "LoadBalancer"));
  EXPECT_GE(node_port_of(st, "lb"), 30000);
}

TEST(store_node_ports, exhausted_range_is_refused) {
  store st(service_ranges{.service_cidr = cidr(), .node_port_min = 30000, .node_port_max = 30001});
  apply_ok(st, batch({typed_service_yaml("a", "NodePort"), typed_service_yaml("b", "NodePort")}));
  EXPECT_EQ((std::set<uint16_t>{node_port_of(st, "a"), node_port_of(st, "b")}),
            (std::set<uint16_t>{30000, 30001}));
  EXPECT_EQ(refused(st, typed_service_yaml("c", "NodePort")),
            "Service default/c: spec.ports[0].nodePort: no free port left in the node port range "
            "30000-30001");
  // A ClusterIP Service needs none.
  apply_ok(st, typed_service_yaml("d", "ClusterIP"));
  // A number is handed out once, whatever the protocol: UDP finds the range full too.
  auto msg =
      refused(st, typed_service_yaml("e", "NodePort", "", "    - {port: 53, protocol: UDP}\n"));
  EXPECT_TRUE(has(msg, "no free port left")) << msg;
}

TEST(store_node_ports, explicit_node_port_on_another_protocol_is_refused) {
  store st(cidr());
  apply_ok(st, typed_service_yaml("a", "NodePort", "", "    - {port: 53, nodePort: 30053}\n"));
  EXPECT_EQ(refused(st, typed_service_yaml("b", "NodePort", "",
                                           "    - {port: 53, protocol: UDP, nodePort: 30053}\n")),
            "Service default/b: spec.ports[0].nodePort: node port 30053/UDP is already used by "
            "Service default/a");
  // One Service may use one number for TCP and UDP.
  apply_ok(st, typed_service_yaml("dns", "NodePort", "",
                                  "    - {name: tcp, port: 53, nodePort: 30054}\n"
                                  "    - {name: udp, port: 53, protocol: UDP, nodePort: 30054}\n"));
}

TEST(store_node_ports, explicit_node_ports_are_reserved_before_allocating) {
  store st(service_ranges{.service_cidr = cidr(), .node_port_min = 30000, .node_port_max = 30001});
  apply_ok(st, typed_service_yaml("a", "NodePort", "",
                                  "    - {name: x, port: 80}\n"
                                  "    - {name: y, port: 81, nodePort: 30001}\n"));
  EXPECT_EQ(node_port_of(st, "a", 0), 30000);
  EXPECT_EQ(node_port_of(st, "a", 1), 30001);
}

// ---- load balancer addresses

TEST(store_load_balancer, pool_never_hands_a_service_its_own_addresses) {
  // Whatever the name hashes to, the pick skips the Service's own externalIP.
  for (int i = 0; i < 12; ++i) {
    store st(with_pool("203.0.113.4/30"));
    std::string name = "lb-" + std::to_string(i);
    apply_ok(st, typed_service_yaml(name, "LoadBalancer", "  externalIPs: [203.0.113.5]\n"));
    const auto* svc = find_service(st, name);
    ASSERT_NE(svc, nullptr);
    ASSERT_EQ(svc->lb_ingress.size(), 1u) << name;
    EXPECT_EQ(format_ipv4(svc->lb_ingress[0]), "203.0.113.6") << name;
  }
}

TEST(store_load_balancer, address_comes_from_the_pool) {
  store st(with_pool("203.0.113.0/29"));
  apply_ok(st, typed_service_yaml("lb", "LoadBalancer"));
  const auto* svc = find_service(st, "lb");
  ASSERT_NE(svc, nullptr);
  ASSERT_EQ(svc->lb_ingress.size(), 1u);
  EXPECT_TRUE(svc->lb_allocated);
  uint32_t addr = svc->lb_ingress[0];
  EXPECT_GT(addr, ip("203.0.113.0")) << format_ipv4(addr) << " is the network address";
  EXPECT_LT(addr, ip("203.0.113.7")) << format_ipv4(addr) << " is the broadcast address";
  EXPECT_EQ(svc->lb_addresses(), std::vector<uint32_t>{addr});
}

TEST(store_load_balancer, allocated_address_is_kept_when_reapplied) {
  store st(with_pool("203.0.113.0/24"));
  const std::string text = typed_service_yaml("lb", "LoadBalancer");
  apply_ok(st, text);
  auto first = find_service(st, "lb")->lb_ingress;
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(apply_ok(st, text), std::vector<std::string>{"unchanged"});
  EXPECT_EQ(find_service(st, "lb")->lb_ingress, first);
  apply_ok(st, typed_service_yaml("lb", "LoadBalancer", "", "    - port: 443\n"));
  EXPECT_EQ(find_service(st, "lb")->lb_ingress, first);
  EXPECT_TRUE(find_service(st, "lb")->lb_allocated);
}

TEST(store_load_balancer, services_get_different_addresses_until_the_pool_is_used_up) {
  // A /30 has two usable addresses.
  store st(with_pool("203.0.113.4/30"));
  apply_ok(st, typed_service_yaml("a", "LoadBalancer"));
  apply_ok(st, typed_service_yaml("b", "LoadBalancer"));
  const auto* a = find_service(st, "a");
  const auto* b = find_service(st, "b");
  ASSERT_EQ(a->lb_ingress.size(), 1u);
  ASSERT_EQ(b->lb_ingress.size(), 1u);
  EXPECT_EQ((std::set<uint32_t>{a->lb_ingress[0], b->lb_ingress[0]}),
            (std::set<uint32_t>{ip("203.0.113.5"), ip("203.0.113.6")}));
  // The third one waits, and is still accepted.
  EXPECT_EQ(apply_ok(st, typed_service_yaml("c", "LoadBalancer")),
            std::vector<std::string>{"created"});
  EXPECT_TRUE(find_service(st, "c")->lb_addresses().empty());
  EXPECT_FALSE(find_service(st, "c")->lb_allocated);
}

TEST(store_load_balancer, services_of_one_batch_get_different_addresses) {
  store st(with_pool("203.0.113.4/30"));
  apply_ok(st, batch({typed_service_yaml("a", "LoadBalancer"),
                      typed_service_yaml("b", "LoadBalancer")}));
  ASSERT_EQ(find_service(st, "a")->lb_ingress.size(), 1u);
  ASSERT_EQ(find_service(st, "b")->lb_ingress.size(), 1u);
  EXPECT_NE(find_service(st, "a")->lb_ingress[0], find_service(st, "b")->lb_ingress[0]);
}

TEST(store_load_balancer, status_ingress_or_load_balancer_ip_is_not_replaced) {
  store st(with_pool("203.0.113.0/24"));
  apply_ok(
      st, batch({typed_service_yaml("with-status", "LoadBalancer", "", "    - port: 80\n",
                                    "  loadBalancer:\n    ingress:\n"
                                    "      - ip: 192.0.2.10\n"),
                 typed_service_yaml("with-ip", "LoadBalancer", "  loadBalancerIP: 192.0.2.20\n")}));
  const auto* s = find_service(st, "with-status");
  EXPECT_EQ(s->lb_ingress, std::vector<uint32_t>{ip("192.0.2.10")});
  EXPECT_FALSE(s->lb_allocated);
  const auto* i = find_service(st, "with-ip");
  EXPECT_TRUE(i->lb_ingress.empty());
  EXPECT_FALSE(i->lb_allocated);
  EXPECT_EQ(i->lb_addresses(), std::vector<uint32_t>{ip("192.0.2.20")});
}

TEST(store_load_balancer, without_a_pool_the_service_stays_pending) {
  store st(cidr());
  EXPECT_EQ(apply_ok(st, typed_service_yaml("lb", "LoadBalancer")),
            std::vector<std::string>{"created"});
  const auto* svc = find_service(st, "lb");
  ASSERT_NE(svc, nullptr);
  EXPECT_TRUE(svc->lb_addresses().empty());
  EXPECT_FALSE(svc->lb_allocated);
  EXPECT_TRUE(svc->cluster_ip);
  EXPECT_GE(node_port_of(st, "lb"), 30000) << "pending, but its nodePort works";
}

TEST(store_load_balancer, pool_skips_addresses_in_use) {
  // 203.0.113.5 is an externalIP of another Service: the only other usable one is picked.
  store st(with_pool("203.0.113.4/30"));
  apply_ok(st, typed_service_yaml("ext", "ClusterIP", "  externalIPs: [203.0.113.5]\n"));
  apply_ok(st, typed_service_yaml("lb", "LoadBalancer"));
  EXPECT_EQ(find_service(st, "lb")->lb_ingress, std::vector<uint32_t>{ip("203.0.113.6")});
}

// ---- frontend conflicts

TEST(store_frontends, external_ip_on_the_same_port_is_refused_naming_both) {
  store st(cidr());
  apply_ok(st, typed_service_yaml("a", "ClusterIP", "  externalIPs: [203.0.113.10]\n"));
  EXPECT_EQ(refused(st, typed_service_yaml("b", "ClusterIP",
                                           "  externalIPs: [203.0.113.9, 203.0.113.10]\n")),
            "Service default/b: spec.externalIPs[1]: 203.0.113.10:80/TCP is already used by "
            "Service default/a");
  auto msg = refused(st, typed_service_yaml("c", "NodePort", "  externalIPs: [203.0.113.10]\n"));
  EXPECT_TRUE(has(msg, "Service default/c: spec.externalIPs[0]: 203.0.113.10:80/TCP")) << msg;
  EXPECT_TRUE(has(msg, "Service default/a")) << msg;
}

TEST(store_frontends, external_ip_on_another_port_or_protocol_is_fine) {
  store st(cidr());
  apply_ok(st, typed_service_yaml("a", "ClusterIP", "  externalIPs: [203.0.113.10]\n"));
  EXPECT_EQ(
      apply_ok(st, batch({typed_service_yaml("b", "ClusterIP", "  externalIPs: [203.0.113.10]\n",
                                             "    - port: 443\n"),
                          typed_service_yaml("c", "ClusterIP", "  externalIPs: [203.0.113.10]\n",
                                             "    - {port: 80, protocol: UDP}\n")})),
      (std::vector<std::string>{"created", "created"}));
}

TEST(store_frontends, external_ip_equal_to_another_cluster_ip_on_the_same_port_is_refused) {
  store st(cidr());
  apply_ok(st, service_yaml("a", "198.19.0.10"));
  EXPECT_EQ(refused(st, typed_service_yaml("b", "ClusterIP", "  externalIPs: [198.19.0.10]\n")),
            "Service default/b: spec.externalIPs[0]: 198.19.0.10:80/TCP is already used by "
            "Service default/a");
  // On another port it is another frontend.
  apply_ok(st, typed_service_yaml("c", "ClusterIP", "  externalIPs: [198.19.0.10]\n",
                                  "    - port: 8080\n"));
}

TEST(store_frontends, load_balancer_address_on_the_same_port_is_refused) {
  store st(cidr());
  apply_ok(st, typed_service_yaml("a", "LoadBalancer", "  loadBalancerIP: 203.0.113.30\n"));
  auto msg = refused(st, typed_service_yaml("b", "LoadBalancer", "", "    - port: 80\n",
                                            "  loadBalancer:\n    ingress:\n"
                                            "      - ip: 203.0.113.30\n"));
  EXPECT_TRUE(has(msg,
                  "Service default/b: status.loadBalancer.ingress: 203.0.113.30:80/TCP is "
                  "already used by Service default/a"))
      << msg;
}

TEST(store_frontends, conflict_in_a_batch_refuses_all_of_it) {
  store st(cidr());
  apply_ok(st, typed_service_yaml("a", "ClusterIP", "  externalIPs: [203.0.113.10]\n"));
  auto msg =
      refused(st, batch({typed_service_yaml("fresh", "NodePort"),
                         typed_service_yaml("a", "ClusterIP", "  externalIPs: [203.0.113.10]\n",
                                            "    - port: 81\n"),
                         typed_service_yaml("b", "ClusterIP", "  externalIPs: [203.0.113.11]\n"),
                         typed_service_yaml("c", "ClusterIP", "  externalIPs: [203.0.113.11]\n")}));
  EXPECT_EQ(msg,
            "Service default/c: spec.externalIPs[0]: 203.0.113.11:80/TCP is already used by "
            "Service default/b");
  EXPECT_EQ(find_service(st, "fresh"), nullptr);
  EXPECT_EQ(find_service(st, "b"), nullptr);
  EXPECT_EQ(find_service(st, "a")->ports[0].port, 80);
}

TEST(store_frontends, one_batch_may_move_an_external_ip_between_services) {
  store st(cidr());
  apply_ok(st, typed_service_yaml("a", "ClusterIP", "  externalIPs: [203.0.113.10]\n"));
  EXPECT_EQ(
      apply_ok(st,
               batch({typed_service_yaml("a", "ClusterIP"),
                      typed_service_yaml("b", "ClusterIP", "  externalIPs: [203.0.113.10]\n")})),
      (std::vector<std::string>{"configured", "created"}));
  EXPECT_TRUE(find_service(st, "a")->external_ips.empty());
  EXPECT_EQ(find_service(st, "b")->external_ips, std::vector<uint32_t>{ip("203.0.113.10")});
  // The index followed: b holds it now, a may not take it back.
  auto msg = refused(st, typed_service_yaml("a", "ClusterIP", "  externalIPs: [203.0.113.10]\n"));
  EXPECT_TRUE(has(msg, "already used by Service default/b")) << msg;
}

TEST(store_frontends, one_batch_may_move_a_node_port_between_services) {
  store st(cidr());
  apply_ok(st, typed_service_yaml("a", "NodePort", "", "    - {port: 80, nodePort: 30080}\n"));
  apply_ok(st,
           batch({typed_service_yaml("a", "ClusterIP"),
                  typed_service_yaml("b", "NodePort", "", "    - {port: 80, nodePort: 30080}\n")}));
  EXPECT_EQ(node_port_of(st, "a"), 0);
  EXPECT_EQ(node_port_of(st, "b"), 30080);
}

TEST(store_frontends, removed_service_frees_its_external_ip) {
  store st(cidr());
  apply_ok(st, typed_service_yaml("a", "ClusterIP", "  externalIPs: [203.0.113.10]\n"));
  st.remove(parse(typed_service_yaml("a", "ClusterIP")));
  apply_ok(st, typed_service_yaml("b", "ClusterIP", "  externalIPs: [203.0.113.10]\n"));
}

}  // namespace
}  // namespace ferry::control
