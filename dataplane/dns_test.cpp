// The DNS responder on encoded queries: a zone built by the control thread from manifests
// (control/dns_zone.cpp), queries as bytes in, responses decoded and compared.
#include "ferry/dns.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "dns_resolver.hpp"
#include "dns_zone.hpp"
#include "ferry/net.hpp"
#include "node.hpp"

namespace ferry {
namespace {

using bytes = std::vector<uint8_t>;

constexpr std::string_view kManifests = R"(apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  ports:
    - {name: http, port: 80, protocol: TCP}
    - {name: metrics, port: 9100, protocol: UDP}
    - {name: alt, port: 81}
    - {name: diameter, port: 3868, protocol: SCTP}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  ports: [{name: pg, port: 5432}, {name: sigtran, port: 2905, protocol: SCTP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: shop
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
ports: [{name: pg, port: 5432, protocol: TCP}, {name: sigtran, port: 2905, protocol: SCTP}]
endpoints:
  - {addresses: ["198.18.1.11"], hostname: db-0}
  - {addresses: ["198.18.1.12"], conditions: {ready: true}}
  - {addresses: ["198.18.1.13"], conditions: {ready: false}}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: shop}
spec: {clusterIP: None}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: shop}
spec: {type: ExternalName, externalName: db.example.com}
)";

// A query: id 0x1234, RD, one question; optionally an OPT record.
bytes query(const std::string& name, uint16_t type, int edns_size = -1, uint8_t edns_version = 0) {
  bytes q = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, static_cast<uint8_t>(edns_size >= 0)};
  size_t start = 0;
  while (start < name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string::npos) dot = name.size();
    q.push_back(static_cast<uint8_t>(dot - start));
    q.insert(q.end(), name.begin() + start, name.begin() + dot);
    start = dot + 1;
  }
  q.push_back(0);
  q.insert(q.end(), {static_cast<uint8_t>(type >> 8), static_cast<uint8_t>(type), 0, 1});
  if (edns_size >= 0) {
    q.insert(q.end(), {0, 0, 41, static_cast<uint8_t>(edns_size >> 8),
                       static_cast<uint8_t>(edns_size), 0, edns_version, 0, 0, 0, 0});
  }
  return q;
}

struct record {
  std::string name;
  uint16_t type;
  uint32_t ttl;
  std::string data;  // A: address; names: dotted; SRV: "prio weight port target"
};

struct response {
  uint16_t id, flags, rcode;
  uint16_t qd, an, ns, ar;
  std::string question;
  std::vector<record> answers, authority, additional;
  std::set<std::string> answer_set() const {
    std::set<std::string> s;
    for (const auto& r : answers) s.insert(r.name + " " + std::to_string(r.type) + " " + r.data);
    return s;
  }
};

uint16_t u16(const bytes& b, size_t at) {
  return static_cast<uint16_t>(b.at(at) << 8 | b.at(at + 1));
}

// Reads a (possibly compressed) name; test-only, bounded by a hop count.
std::string read_name(const bytes& b, size_t& at) {
  std::string out;
  size_t pos = at;
  bool jumped = false;
  for (int hops = 0; hops < 32; ++hops) {
    uint8_t l = b.at(pos);
    if ((l & 0xC0) == 0xC0) {
      if (!jumped) at = pos + 2;
      jumped = true;
      pos = u16(b, pos) & 0x3fff;
      continue;
    }
    if (l == 0) {
      if (!jumped) at = pos + 1;
      return out;
    }
    if (!out.empty()) out += '.';
    out.append(b.begin() + pos + 1, b.begin() + pos + 1 + l);
    pos += 1u + l;
  }
  ADD_FAILURE() << "name loops";
  return out;
}

record read_rr(const bytes& b, size_t& at) {
  record r;
  r.name = read_name(b, at);
  r.type = u16(b, at);
  r.ttl = static_cast<uint32_t>(u16(b, at + 4)) << 16 | u16(b, at + 6);
  uint16_t len = u16(b, at + 8);
  size_t data = at + 10;
  at = data + len;
  switch (r.type) {
    case dns::kTypeA:
      r.data = format_ipv4(static_cast<uint32_t>(u16(b, data)) << 16 | u16(b, data + 2));
      break;
    case dns::kTypeSrv: {
      size_t t = data + 6;
      r.data = std::to_string(u16(b, data)) + " " + std::to_string(u16(b, data + 2)) + " " +
               std::to_string(u16(b, data + 4)) + " " + read_name(b, t);
      break;
    }
    case dns::kTypeCname:
    case dns::kTypePtr:
    case dns::kTypeNs:
    case dns::kTypeSoa: {
      size_t t = data;
      r.data = read_name(b, t);
      break;
    }
    case dns::kTypeTxt:
      r.data.assign(b.begin() + data + 1, b.begin() + data + 1 + b.at(data));
      break;
    default:
      break;
  }
  return r;
}

response decode(const bytes& b) {
  response r{};
  r.id = u16(b, 0);
  r.flags = u16(b, 2);
  r.rcode = r.flags & 0xf;
  r.qd = u16(b, 4);
  r.an = u16(b, 6);
  r.ns = u16(b, 8);
  r.ar = u16(b, 10);
  size_t at = 12;
  if (r.qd) {
    r.question = read_name(b, at);
    at += 4;
  }
  for (int i = 0; i < r.an; ++i) r.answers.push_back(read_rr(b, at));
  for (int i = 0; i < r.ns; ++i) r.authority.push_back(read_rr(b, at));
  for (int i = 0; i < r.ar; ++i) r.additional.push_back(read_rr(b, at));
  EXPECT_EQ(at, b.size()) << "trailing bytes";
  return r;
}

class DnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_.service_cidr = {0x0a600000, 12};
    cfg_.dns.addresses = {0x0a60000a};
    node_ = std::make_unique<control::node>(
        cfg_, [&](std::unique_ptr<const snapshot> s) { snap_ = std::move(s); });
    apply(kManifests);
  }
  void apply(std::string_view text) {
    auto r = node_->apply({{"test", std::string(text)}}, control::source::socket);
    ASSERT_TRUE(r) << r.message();
  }

  // Runs the responder over UDP (or TCP) and decodes what it wrote.
  response ask(bytes q, dns::outcome want, size_t max_udp = 1472, bool udp = true,
               dns::chase outside = dns::chase::stop) {
    const size_t len = q.size();
    q.resize(4096);
    auto r = dns::answer(snap_->dns.get(), q.data(), len, q.size(), udp, max_udp, false, outside);
    last_target_at_ = r.target_at;
    EXPECT_EQ(r.how, want);
    q.resize(r.len);
    last_truncated_ = r.truncated;
    return decode(q);
  }

  node_config cfg_;
  std::unique_ptr<control::node> node_;
  std::unique_ptr<const snapshot> snap_;
  bool last_truncated_ = false;
  size_t last_target_at_ = 0;
};

constexpr uint16_t kAa = 0x0400, kTc = 0x0200, kQr = 0x8000;

TEST_F(DnsTest, Table) {
  struct row {
    std::string name;
    uint16_t type;
    dns::outcome how;
    std::set<std::string> answers;
  };
  const std::string svc = ".shop.svc.cluster.local";
  const std::vector<row> rows = {
      {"web" + svc, dns::kTypeA, dns::outcome::noerror, {"web" + svc + " 1 10.96.0.20"}},
      // Case as asked in the question and the answer's owner; matched without case.
      {"WeB.Shop.SVC.cluster.LOCAL",
       dns::kTypeA,
       dns::outcome::noerror,
       {"WeB.Shop.SVC.cluster.LOCAL 1 10.96.0.20"}},
      {"web" + svc, dns::kTypeAaaa, dns::outcome::nodata, {}},
      {"_http._tcp.web" + svc,
       dns::kTypeSrv,
       dns::outcome::noerror,
       {"_http._tcp.web" + svc + " 33 0 100 80 web" + svc}},
      {"_metrics._udp.web" + svc,
       dns::kTypeSrv,
       dns::outcome::noerror,
       {"_metrics._udp.web" + svc + " 33 0 100 9100 web" + svc}},
      {"_http._udp.web" + svc, dns::kTypeSrv, dns::outcome::nxdomain, {}},
      // SCTP ports too, under _sctp (the Kubernetes DNS specification, 2.4.2 and 2.5.2).
      {"_diameter._sctp.web" + svc,
       dns::kTypeSrv,
       dns::outcome::noerror,
       {"_diameter._sctp.web" + svc + " 33 0 100 3868 web" + svc}},
      {"_diameter._tcp.web" + svc, dns::kTypeSrv, dns::outcome::nxdomain, {}},
      {"_sigtran._sctp.db" + svc,
       dns::kTypeSrv,
       dns::outcome::noerror,
       {"_sigtran._sctp.db" + svc + " 33 0 50 2905 db-0.db" + svc,
        "_sigtran._sctp.db" + svc + " 33 0 50 2905 198-18-1-12.db" + svc}},
      {"_tcp.web" + svc, dns::kTypeSrv, dns::outcome::nodata, {}},  // empty non-terminal
      {"20.0.96.10.in-addr.arpa",
       dns::kTypePtr,
       dns::outcome::noerror,
       {"20.0.96.10.in-addr.arpa 12 web" + svc}},
      {"21.0.96.10.in-addr.arpa", dns::kTypePtr, dns::outcome::nxdomain, {}},
      // Headless: the ready endpoints, named by hostname or dashed address.
      {"db" + svc,
       dns::kTypeA,
       dns::outcome::noerror,
       {"db" + svc + " 1 198.18.1.11", "db" + svc + " 1 198.18.1.12"}},
      {"db-0.db" + svc, dns::kTypeA, dns::outcome::noerror, {"db-0.db" + svc + " 1 198.18.1.11"}},
      {"198-18-1-12.db" + svc,
       dns::kTypeA,
       dns::outcome::noerror,
       {"198-18-1-12.db" + svc + " 1 198.18.1.12"}},
      {"198-18-1-13.db" + svc, dns::kTypeA, dns::outcome::nxdomain, {}},  // not ready
      {"_pg._tcp.db" + svc,
       dns::kTypeSrv,
       dns::outcome::noerror,
       {"_pg._tcp.db" + svc + " 33 0 50 5432 db-0.db" + svc,
        "_pg._tcp.db" + svc + " 33 0 50 5432 198-18-1-12.db" + svc}},
      {"11.1.18.198.in-addr.arpa",
       dns::kTypePtr,
       dns::outcome::noerror,
       {"11.1.18.198.in-addr.arpa 12 db-0.db" + svc}},
      {"empty" + svc, dns::kTypeA, dns::outcome::nxdomain, {}},  // headless, no endpoints
      // ExternalName: a CNAME whatever the type asked.
      {"ext" + svc, dns::kTypeA, dns::outcome::noerror, {"ext" + svc + " 5 db.example.com"}},
      {"ext" + svc, dns::kTypeCname, dns::outcome::noerror, {"ext" + svc + " 5 db.example.com"}},
      {"dns-version.cluster.local",
       dns::kTypeTxt,
       dns::outcome::noerror,
       {"dns-version.cluster.local 16 1.1.0"}},
      {"cluster.local",
       dns::kTypeNs,
       dns::outcome::noerror,
       {"cluster.local 2 ns.dns.cluster.local"}},
      {"ns.dns.cluster.local",
       dns::kTypeA,
       dns::outcome::noerror,
       {"ns.dns.cluster.local 1 10.96.0.10"}},
      {"shop.svc.cluster.local", dns::kTypeA, dns::outcome::nodata, {}},
      {"nope.shop.svc.cluster.local", dns::kTypeA, dns::outcome::nxdomain, {}},
      // ndots:5 search-list expansions are misses inside the zone.
      {"web.shop.svc.cluster.local.shop.svc.cluster.local",
       dns::kTypeA,
       dns::outcome::nxdomain,
       {}},
      {"example.com", dns::kTypeA, dns::outcome::refused, {}},
      {"1.1.168.192.in-addr.arpa", dns::kTypePtr, dns::outcome::refused, {}},
      // A name that only ends like the zone is not in it.
      {"xcluster.local", dns::kTypeA, dns::outcome::refused, {}},
  };
  for (const auto& r : rows) {
    SCOPED_TRACE(r.name + " type " + std::to_string(r.type));
    response resp = ask(query(r.name, r.type), r.how);
    EXPECT_EQ(resp.id, 0x1234);
    EXPECT_TRUE(resp.flags & kQr);
    EXPECT_TRUE(resp.flags & 0x0100) << "RD copied";
    EXPECT_EQ(resp.question, r.name);
    EXPECT_EQ(resp.answer_set(), r.answers);
    for (const auto& a : resp.answers) EXPECT_EQ(a.ttl, 5u);
    const uint16_t want_rcode = r.how == dns::outcome::nxdomain  ? 3
                                : r.how == dns::outcome::refused ? 5
                                                                 : 0;
    EXPECT_EQ(resp.rcode, want_rcode);
    EXPECT_EQ(bool(resp.flags & kAa), r.how != dns::outcome::refused);
    if (r.how == dns::outcome::nxdomain || r.how == dns::outcome::nodata) {
      ASSERT_EQ(resp.authority.size(), 1u);
      EXPECT_EQ(resp.authority[0].type, dns::kTypeSoa);
      EXPECT_TRUE(resp.authority[0].name == "cluster.local" ||
                  resp.authority[0].name == "10.in-addr.arpa")
          << resp.authority[0].name;
    } else {
      EXPECT_TRUE(resp.authority.empty());
    }
  }
}

TEST_F(DnsTest, SrvAnswersCarryTargetAddresses) {
  response r =
      ask(query("_pg._tcp.db.shop.svc.cluster.local", dns::kTypeSrv), dns::outcome::noerror);
  std::set<std::string> extra;
  for (const auto& a : r.additional) extra.insert(a.name + " " + a.data);
  EXPECT_EQ(extra, (std::set<std::string>{"db-0.db.shop.svc.cluster.local 198.18.1.11",
                                          "198-18-1-12.db.shop.svc.cluster.local 198.18.1.12"}));
}

TEST_F(DnsTest, Edns) {
  response r = ask(query("web.shop.svc.cluster.local", dns::kTypeA, 4096), dns::outcome::noerror);
  ASSERT_EQ(r.additional.size(), 1u);
  EXPECT_EQ(r.additional[0].type, dns::kTypeOpt);
  EXPECT_EQ(r.additional[0].name, "");
  // The advertised size is ferry's: the OPT's class field.
  // Version 1: BADVERS (extended rcode 1 in the OPT TTL's top byte), no answers.
  r = ask(query("web.shop.svc.cluster.local", dns::kTypeA, 4096, 1), dns::outcome::badvers);
  EXPECT_TRUE(r.answers.empty());
  ASSERT_EQ(r.additional.size(), 1u);
  EXPECT_EQ(r.additional[0].ttl >> 24, 1u);
}

TEST_F(DnsTest, TruncatesToTheClientsSizeAndTcpCarriesAll) {
  // 60 ready endpoints behind one headless name: 60 x 16 bytes does not fit 512.
  std::string slice = R"(apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: big-1, namespace: shop, labels: {kubernetes.io/service-name: big}}
addressType: IPv4
endpoints:
)";
  for (int i = 1; i <= 60; ++i)
    slice += "  - addresses: [\"198.18.2." + std::to_string(i) + "\"]\n";
  apply(
      "apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: shop}\nspec: {clusterIP: "
      "None}\n---\n" +
      slice);
  const std::string name = "big.shop.svc.cluster.local";
  response r = ask(query(name, dns::kTypeA), dns::outcome::noerror);
  EXPECT_TRUE(r.flags & kTc);
  EXPECT_TRUE(last_truncated_);
  EXPECT_TRUE(r.answers.empty());
  EXPECT_EQ(r.question, name);
  // EDNS 4096 but the path's limit (max_udp) is 1472: 60 x 16 + header fits.
  r = ask(query(name, dns::kTypeA, 4096), dns::outcome::noerror);
  EXPECT_FALSE(r.flags & kTc);
  EXPECT_EQ(r.answers.size(), 60u);
  // EDNS 4096 over a path with room for 600 bytes: truncated again.
  r = ask(query(name, dns::kTypeA, 4096), dns::outcome::noerror, 600);
  EXPECT_TRUE(r.flags & kTc);
  // TCP: no UDP limit.
  r = ask(query(name, dns::kTypeA), dns::outcome::noerror, 0, false);
  EXPECT_FALSE(r.flags & kTc);
  EXPECT_EQ(r.answers.size(), 60u);
}

TEST_F(DnsTest, NameFollowsServiceUpdate) {
  apply(R"(apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: https, port: 443}]
)");
  EXPECT_EQ(
      ask(query("_https._tcp.web.shop.svc.cluster.local", dns::kTypeSrv), dns::outcome::noerror)
          .answers.size(),
      1u);
  ask(query("_http._tcp.web.shop.svc.cluster.local", dns::kTypeSrv), dns::outcome::nxdomain);
  auto r = node_->remove(
      {{"test", "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n"}});
  ASSERT_TRUE(r) << r.message();
  ask(query("web.shop.svc.cluster.local", dns::kTypeA), dns::outcome::nxdomain);
  ask(query("20.0.96.10.in-addr.arpa", dns::kTypePtr), dns::outcome::nxdomain);
  // The namespace still has Services: its name stays an empty non-terminal.
  ask(query("shop.svc.cluster.local", dns::kTypeA), dns::outcome::nodata);
}

// Malformed queries: FORMERR (header only) or a drop; never a read past the message.
TEST_F(DnsTest, Malformed) {
  struct row {
    const char* what;
    bytes q;
    dns::outcome how;
  };
  bytes good = query("web.shop.svc.cluster.local", dns::kTypeA);
  bytes two_questions = good;
  two_questions[5] = 2;
  bytes answer_count = good;
  answer_count[7] = 1;
  bytes pointer = {0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1};
  bytes self_loop = {0x12, 0x34, 1,   0,   0,   1,    0,  0, 0, 0, 0,
                     0,    3,    'w', 'e', 'b', 0xC0, 12, 0, 1, 0, 1};
  bytes label_past_end = {0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 40, 'w', 'e', 'b'};
  bytes no_type = good;
  no_type.resize(no_type.size() - 3);
  bytes long_name = {0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0};
  for (int i = 0; i < 5; ++i) {  // 5 x 64 bytes > 255
    long_name.push_back(63);
    long_name.insert(long_name.end(), 63, 'a');
  }
  long_name.insert(long_name.end(), {0, 0, 1, 0, 1});
  bytes bad_additional = good;
  bad_additional[11] = 1;  // an additional record that is not there
  bytes two_opts = query("web.shop.svc.cluster.local", dns::kTypeA, 1232);
  two_opts[11] = 2;
  two_opts.insert(two_opts.end(), {0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0});
  bytes response_bit = good;
  response_bit[2] |= 0x80;
  bytes notify = good;
  notify[2] = 0x20;  // opcode 4
  const std::vector<row> rows = {
      {"empty", {}, dns::outcome::drop},
      {"short header", {0x12, 0x34, 1, 0, 0, 1}, dns::outcome::drop},
      {"a response", response_bit, dns::outcome::drop},
      {"two questions", two_questions, dns::outcome::formerr},
      {"answers in a query", answer_count, dns::outcome::formerr},
      {"pointer in the question", pointer, dns::outcome::formerr},
      {"pointer loop", self_loop, dns::outcome::formerr},
      {"label past the end", label_past_end, dns::outcome::formerr},
      {"no type and class", no_type, dns::outcome::formerr},
      {"name over 255 bytes", long_name, dns::outcome::formerr},
      {"missing additional", bad_additional, dns::outcome::formerr},
      {"two OPT records", two_opts, dns::outcome::formerr},
      {"NOTIFY", notify, dns::outcome::notimp},
  };
  for (const auto& r : rows) {
    SCOPED_TRACE(r.what);
    bytes q = r.q;
    const size_t len = q.size();
    q.resize(len + 600, 0xEE);
    auto res = dns::answer(snap_->dns.get(), q.data(), len, q.size(), true, 1472);
    EXPECT_EQ(res.how, r.how);
    if (r.how == dns::outcome::drop) {
      EXPECT_EQ(res.len, 0u);
    } else {
      ASSERT_EQ(res.len, 12u);
      EXPECT_EQ(q[3] & 0xf, r.how == dns::outcome::formerr ? 1 : 4);
      EXPECT_EQ(q[0], 0x12);
    }
  }
}

TEST_F(DnsTest, OutsideTheZoneIsForwardedUntouchedWhenAsked) {
  bytes q = query("www.example.org", dns::kTypeA);
  const bytes before = q;
  q.resize(600);
  auto r = dns::answer(snap_->dns.get(), q.data(), before.size(), q.size(), true, 1472, true);
  EXPECT_EQ(r.how, dns::outcome::forward);
  EXPECT_EQ(r.len, 0u);
  EXPECT_TRUE(std::equal(before.begin(), before.end(), q.begin()));
  // Names of ours are still answered here, and EDNS version 1 gets BADVERS, not forwarded.
  q = query("web.shop.svc.cluster.local", dns::kTypeA);
  const size_t len = q.size();
  q.resize(600);
  EXPECT_EQ(dns::answer(snap_->dns.get(), q.data(), len, q.size(), true, 1472, true).how,
            dns::outcome::noerror);
  q = query("www.example.org", dns::kTypeA, 1232, 1);
  const size_t len1 = q.size();
  q.resize(600);
  EXPECT_EQ(dns::answer(snap_->dns.get(), q.data(), len1, q.size(), true, 1472, true).how,
            dns::outcome::badvers);
}

// RFC 1034 4.3.2, as CoreDNS answers ExternalName: a CNAME whose target is in the zone is
// followed in the same response, owner names pointing into the CNAME's data.
TEST_F(DnsTest, CnameIntoTheZoneIsFollowed) {
  apply(R"(apiVersion: v1
kind: Service
metadata: {name: alias, namespace: shop}
spec: {type: ExternalName, externalName: web.shop.svc.cluster.local.}
---
apiVersion: v1
kind: Service
metadata: {name: alias2, namespace: other}
spec: {type: ExternalName, externalName: alias.shop.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: dbalias, namespace: shop}
spec: {type: ExternalName, externalName: db.shop.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: dangling, namespace: shop}
spec: {type: ExternalName, externalName: gone.shop.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: toext, namespace: shop}
spec: {type: ExternalName, externalName: ext.shop.svc.cluster.local}
)");
  const std::string svc = ".shop.svc.cluster.local";
  auto r = ask(query("ALIAS" + svc, dns::kTypeA), dns::outcome::noerror);
  EXPECT_EQ(r.rcode, 0);
  EXPECT_TRUE(r.flags & kAa);
  ASSERT_EQ(r.answers.size(), 2u);
  EXPECT_EQ(r.answers[0].name, "ALIAS" + svc);
  EXPECT_EQ(r.answers[0].data, "web" + svc);
  EXPECT_EQ(r.answers[1].name, "web" + svc);
  EXPECT_EQ(r.answers[1].type, dns::kTypeA);
  EXPECT_EQ(r.answers[1].data, "10.96.0.20");

  // A chain of two, across namespaces; and into a headless Service's endpoints.
  r = ask(query("alias2.other.svc.cluster.local", dns::kTypeA), dns::outcome::noerror);
  EXPECT_EQ(r.answer_set(),
            (std::set<std::string>{"alias2.other.svc.cluster.local 5 alias" + svc,
                                   "alias" + svc + " 5 web" + svc, "web" + svc + " 1 10.96.0.20"}));
  r = ask(query("dbalias" + svc, dns::kTypeA), dns::outcome::noerror);
  EXPECT_EQ(r.answer_set(),
            (std::set<std::string>{"dbalias" + svc + " 5 db" + svc, "db" + svc + " 1 198.18.1.11",
                                   "db" + svc + " 1 198.18.1.12"}));

  // The last name decides the RCODE (RFC 6604), with its zone's SOA: NXDOMAIN and NODATA.
  r = ask(query("dangling" + svc, dns::kTypeA), dns::outcome::nxdomain);
  EXPECT_EQ(r.rcode, 3);
  ASSERT_EQ(r.answers.size(), 1u);
  ASSERT_EQ(r.authority.size(), 1u);
  EXPECT_EQ(r.authority[0].type, dns::kTypeSoa);
  EXPECT_EQ(r.authority[0].name, "cluster.local");
  r = ask(query("alias" + svc, dns::kTypeAaaa), dns::outcome::noerror);
  EXPECT_EQ(r.rcode, 0);
  EXPECT_EQ(r.answers.size(), 1u);
  ASSERT_EQ(r.authority.size(), 1u);
  EXPECT_EQ(r.authority[0].type, dns::kTypeSoa);

  // Asked for the CNAME itself: nothing is followed.
  r = ask(query("alias" + svc, dns::kTypeCname), dns::outcome::noerror);
  EXPECT_EQ(r.answers.size(), 1u);

  // Into the zone, then out of it: without upstreams the chain so far.
  r = ask(query("toext" + svc, dns::kTypeA), dns::outcome::noerror);
  EXPECT_EQ(r.answer_set(), (std::set<std::string>{"toext" + svc + " 5 ext" + svc,
                                                   "ext" + svc + " 5 db.example.com"}));
  // Over UDP a chain that does not fit is truncated whole.
  apply(R"(apiVersion: v1
kind: Service
metadata: {name: bigalias, namespace: shop}
spec: {type: ExternalName, externalName: big.shop.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: big, namespace: shop}
spec: {clusterIP: None}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: big-1, namespace: shop, labels: {kubernetes.io/service-name: big}}
addressType: IPv4
endpoints:
)" + [] {
    std::string eps;
    for (int i = 1; i <= 60; ++i)
      eps += "  - {addresses: [\"198.18.2." + std::to_string(i) + "\"]}\n";
    return eps;
  }());
  r = ask(query("bigalias" + svc, dns::kTypeA), dns::outcome::noerror, 512);
  EXPECT_TRUE(r.flags & kTc);
  EXPECT_TRUE(r.answers.empty());
  r = ask(query("bigalias" + svc, dns::kTypeA), dns::outcome::noerror, 0, false);
  EXPECT_EQ(r.answers.size(), 61u);
}

TEST_F(DnsTest, CnameLoopsEndAtTheBound) {
  apply(R"(apiVersion: v1
kind: Service
metadata: {name: a, namespace: loop}
spec: {type: ExternalName, externalName: b.loop.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: loop}
spec: {type: ExternalName, externalName: a.loop.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: self, namespace: loop}
spec: {type: ExternalName, externalName: self.loop.svc.cluster.local}
)");
  auto r = ask(query("a.loop.svc.cluster.local", dns::kTypeA), dns::outcome::noerror);
  EXPECT_EQ(r.answers.size(), 1 + dns::kMaxCnameChain);
  r = ask(query("self.loop.svc.cluster.local", dns::kTypeA), dns::outcome::noerror, 1472, false);
  EXPECT_EQ(r.answers.size(), 1 + dns::kMaxCnameChain);
  // A loop never counts as leaving the zone.
  bytes q = query("a.loop.svc.cluster.local", dns::kTypeA);
  const size_t len = q.size();
  q.resize(600);
  EXPECT_EQ(
      dns::answer(snap_->dns.get(), q.data(), len, q.size(), true, 1472, true, dns::chase::hand_off)
          .how,
      dns::outcome::noerror);
}

// A chain that leaves the zones: a worker hands the query on untouched; the DNS thread gets
// the chain written and where its last target is, to append what an upstream says.
TEST_F(DnsTest, CnameOutOfTheZoneIsHandedOn) {
  apply(R"(apiVersion: v1
kind: Service
metadata: {name: toext, namespace: shop}
spec: {type: ExternalName, externalName: ext.shop.svc.cluster.local}
)");
  for (const std::string name : {"ext", "toext"}) {
    bytes q = query(name + ".shop.svc.cluster.local", dns::kTypeA, 1232);
    const bytes before = q;
    q.resize(600);
    auto r = dns::answer(snap_->dns.get(), q.data(), before.size(), q.size(), true, 1472, true,
                         dns::chase::hand_off);
    EXPECT_EQ(r.how, dns::outcome::resolve);
    EXPECT_EQ(r.len, 0u);
    EXPECT_TRUE(std::equal(before.begin(), before.end(), q.begin()));
  }
  auto r = ask(query("toext.shop.svc.cluster.local", dns::kTypeA, 1232), dns::outcome::resolve,
               1472, true, dns::chase::write);
  EXPECT_EQ(r.answers.size(), 2u);
  ASSERT_GT(last_target_at_, 12u);
  bytes q = query("toext.shop.svc.cluster.local", dns::kTypeA, 1232);
  const size_t len = q.size();
  q.resize(4096);
  auto w =
      dns::answer(snap_->dns.get(), q.data(), len, q.size(), true, 1472, true, dns::chase::write);
  ASSERT_EQ(w.how, dns::outcome::resolve);
  EXPECT_EQ(w.limit, 1232u);
  EXPECT_EQ(std::string(q.begin() + w.target_at, q.begin() + w.target_at + 16),
            std::string("\2db\7example\3com\0", 16));
  // The CNAME itself asked: no hand-off.
  r = ask(query("ext.shop.svc.cluster.local", dns::kTypeCname), dns::outcome::noerror, 1472, true,
          dns::chase::hand_off);
  EXPECT_EQ(r.answers.size(), 1u);
}

// What the DNS thread does with an upstream's answer about an ExternalName target outside
// the zone: only the records hanging off the target are kept, TTLs capped, then appended
// after the chain with owners pointing at the CNAME's data.
TEST_F(DnsTest, UpstreamAnswerIsAppendedCapped) {
  const std::string target("\2db\7example\3com\0", 16);
  // id 0x4321, QR RD RA, the question, then: target CNAME x.cdn.net (compressed owner),
  // x.cdn.net A 192.0.2.7, an unrelated A (dropped), and an MX (not kept).
  bytes up = {0x43, 0x21, 0x81, 0x80, 0, 1, 0, 4, 0, 0, 0, 0};
  up.insert(up.end(), target.begin(), target.end());
  up.insert(up.end(), {0, 1, 0, 1});
  const size_t cname_at = up.size() + 12;
  up.insert(up.end(), {0xC0, 0x0C, 0, 5,   0,   1,   0, 0,   0x0e, 0x10, 0, 11,
                       1,    'x',  3, 'c', 'd', 'n', 3, 'n', 'e',  't',  0});
  up.insert(up.end(), {static_cast<uint8_t>(0xC0 | cname_at >> 8), static_cast<uint8_t>(cname_at),
                       0, 1, 0, 1, 0, 0, 0, 20, 0, 4, 192, 0, 2, 7});
  up.insert(up.end(), {1, 'y', 0, 0, 1, 0, 1, 0, 0, 0, 20, 0, 4, 6, 6, 6, 6});
  up.insert(up.end(), {0xC0, 0x0C, 0, 15, 0, 1, 0, 0, 0, 20, 0, 4, 0, 1, 0xC0, 0x0C});
  dns::upstream_answer a;
  ASSERT_TRUE(dns::parse_upstream(up.data(), up.size(), 0x4321, target, dns::kTypeA, 60, a));
  ASSERT_EQ(a.records.size(), 2u);
  EXPECT_EQ(a.records[0].ttl, 60u);  // 3600, capped
  EXPECT_EQ(a.records[1].ttl, 20u);
  EXPECT_EQ(a.ttl, 20u);
  EXPECT_EQ(a.capped, 1u);
  // Not the answer to that query: another id, another name, or a pointer that goes forward.
  EXPECT_FALSE(dns::parse_upstream(up.data(), up.size(), 0x4322, target, dns::kTypeA, 60, a));
  EXPECT_FALSE(dns::parse_upstream(up.data(), up.size(), 0x4321, std::string("\1x\0", 3),
                                   dns::kTypeA, 60, a));
  bytes loop = up;
  loop[12] = 0xC0;  // the question's name a pointer to itself
  loop[13] = 12;
  EXPECT_FALSE(dns::parse_upstream(loop.data(), loop.size(), 0x4321, target, dns::kTypeA, 60, a));
  for (size_t cut = 0; cut < up.size(); ++cut) {  // every truncation is refused, in bounds
    bytes part(up.begin(), up.begin() + static_cast<long>(cut));
    EXPECT_FALSE(dns::parse_upstream(part.data(), part.size(), 0x4321, target, dns::kTypeA, 60, a));
  }
  ASSERT_TRUE(dns::parse_upstream(up.data(), up.size(), 0x4321, target, dns::kTypeA, 60, a));
  {  // 100 records for the target: 64 kept
    bytes flood(up.begin(), up.begin() + 12 + static_cast<long>(target.size()) + 4);
    flood[7] = 100;
    for (int i = 0; i < 100; ++i) {
      flood.insert(flood.end(),
                   {0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 20, 0, 4, 10, 0, 0, static_cast<uint8_t>(i)});
    }
    dns::upstream_answer f;
    ASSERT_TRUE(
        dns::parse_upstream(flood.data(), flood.size(), 0x4321, target, dns::kTypeA, 60, f));
    EXPECT_EQ(f.records.size(), dns::kMaxUpstreamRecords);
  }

  bytes q = query("ext.shop.svc.cluster.local", dns::kTypeA, 1232);
  const size_t qlen = q.size();
  q.resize(4096);
  auto r =
      dns::answer(snap_->dns.get(), q.data(), qlen, q.size(), true, 1472, true, dns::chase::write);
  ASSERT_EQ(r.how, dns::outcome::resolve);
  q.resize(dns::complete(q.data(), r.len, q.size(), r, a, 5));
  const response got = decode(q);
  EXPECT_EQ(got.rcode, 0);
  ASSERT_EQ(got.answers.size(), 3u);
  EXPECT_EQ(got.answers[1].name, "db.example.com");
  EXPECT_EQ(got.answers[1].data, "x.cdn.net");
  EXPECT_EQ(got.answers[1].ttl, 55u);  // aged
  EXPECT_EQ(got.answers[2].name, "x.cdn.net");
  EXPECT_EQ(got.answers[2].data, "192.0.2.7");
  ASSERT_EQ(got.additional.size(), 1u);  // the OPT, still last
  EXPECT_EQ(got.additional[0].type, dns::kTypeOpt);

  // An answer that does not fit the client's size: TC and no records, as the responder does.
  dns::upstream_answer many = a;
  many.records.assign(40, a.records[1]);
  q = query("ext.shop.svc.cluster.local", dns::kTypeA);
  q.resize(4096);
  r = dns::answer(snap_->dns.get(), q.data(), 44, q.size(), true, 1472, true, dns::chase::write);
  ASSERT_EQ(r.how, dns::outcome::resolve);
  q.resize(dns::complete(q.data(), r.len, q.size(), r, many, 0));
  const response tc = decode(q);
  EXPECT_TRUE(tc.flags & kTc);
  EXPECT_TRUE(tc.answers.empty());
  // NXDOMAIN from upstream is the answer's RCODE; SERVFAIL keeps the chain.
  dns::upstream_answer nx;
  nx.rcode = 3;
  q = query("ext.shop.svc.cluster.local", dns::kTypeA);
  q.resize(4096);
  r = dns::answer(snap_->dns.get(), q.data(), 44, q.size(), true, 1472, true, dns::chase::write);
  q.resize(dns::complete(q.data(), r.len, q.size(), r, nx, 0));
  EXPECT_EQ(decode(q).rcode, 3);
  dns::servfail(q.data(), q.size());
  EXPECT_EQ(decode(q).rcode, 2);
}

// Response rate limiting's slip: TC, the question, nothing else; no well-formed query, no
// answer.
TEST_F(DnsTest, SlipKeepsTheQuestionOnly) {
  bytes q = query("web.shop.svc.cluster.local", dns::kTypeA, 1232);
  const size_t question_end = q.size() - 11;  // before the OPT
  ASSERT_EQ(dns::slip(q.data(), q.size()), question_end);
  q.resize(question_end);
  const response r = decode(q);
  EXPECT_EQ(r.flags, kQr | kTc | 0x0100);  // RD kept, no AA: nothing was looked up
  EXPECT_EQ(r.question, "web.shop.svc.cluster.local");
  EXPECT_EQ(r.an + r.ns + r.ar, 0);
  EXPECT_EQ(r.id, 0x1234);
  bytes resp = query("a.b", dns::kTypeA);
  resp[2] |= 0x80;  // a response
  EXPECT_EQ(dns::slip(resp.data(), resp.size()), 0u);
  bytes cut = query("a.b", dns::kTypeA);
  EXPECT_EQ(dns::slip(cut.data(), cut.size() - 1), 0u);  // no room for type and class
  EXPECT_EQ(dns::slip(cut.data(), 11), 0u);
  bytes pointer = query("a.b", dns::kTypeA);
  pointer[12] = 0xc0;
  EXPECT_EQ(dns::slip(pointer.data(), pointer.size()), 0u);
  bytes two = query("a.b", dns::kTypeA);
  two[5] = 2;
  EXPECT_EQ(dns::slip(two.data(), two.size()), 0u);
}

TEST(DnsWire, Names) {
  EXPECT_EQ(control::dns_wire("Web.Default."), std::string("\3web\7default\0", 13));
  EXPECT_EQ(control::dns_wire("a..b"), "");
  EXPECT_EQ(control::dns_wire(std::string(64, 'a')), "");
  EXPECT_EQ(control::dns_text(control::dns_wire("web.default.svc")), "web.default.svc");
  EXPECT_EQ(control::dns_text(control::dns_reverse(0x0a600014)), "20.0.96.10.in-addr.arpa");
}

}  // namespace
}  // namespace ferry
