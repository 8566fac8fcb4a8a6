#include "store.hpp"

#include <gtest/gtest.h>

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
