// libFuzzer target: DNS queries (the UDP payload a worker hands the responder, or one TCP
// message) against the built-in demo's zone plus a headless Service with many endpoints and
// ExternalName chains (into the zone, out of it, a loop). The same bytes are also read as an
// upstream's answer about an ExternalName target (dns_resolver.hpp) and appended.
// Each query is answered twice: in a buffer exactly its size (ASan reports any access past
// it), then with room after it, which the response must stay inside.
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "config.hpp"
#include "dns_resolver.hpp"
#include "ferry/dns.hpp"
#include "node.hpp"

namespace {

constexpr const char* kExtra = R"(apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec:
  clusterIP: None
  ports: [{name: pg, port: 5432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: data, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: pg, port: 5432, protocol: TCP}]
endpoints:
  - {addresses: ["198.18.1.11"], hostname: db-0}
  - {addresses: ["198.18.1.12"]}
  - {addresses: ["198.18.1.13"]}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: data}
spec: {type: ExternalName, externalName: db.example.com}
---
apiVersion: v1
kind: Service
metadata: {name: alias, namespace: data}
spec: {type: ExternalName, externalName: db.data.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: toext, namespace: data}
spec: {type: ExternalName, externalName: ext.data.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: loop-a, namespace: data}
spec: {type: ExternalName, externalName: loop-b.data.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: loop-b, namespace: data}
spec: {type: ExternalName, externalName: loop-a.data.svc.cluster.local}
)";

const ferry::dns::zone* zone() {
  static std::unique_ptr<const ferry::snapshot> snap;
  static ferry::node_config cfg = *ferry::control::default_config();
  static ferry::control::node n(
      cfg, [](std::unique_ptr<const ferry::snapshot> s) { snap = std::move(s); });
  static bool loaded = [] {
    if (!n.load_sources(cfg) || !n.apply({{"fuzz", kExtra}}, ferry::control::source::socket)) {
      __builtin_trap();  // a broken harness must not pass quietly
    }
    return true;
  }();
  (void)loaded;
  return snap->dns.get();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const ferry::dns::zone* z = zone();
  // The first byte picks the transport and the room the answer may use.
  if (size < 1) return 0;
  const bool udp = data[0] & 1;
  const size_t room = (data[0] >> 1) * 16;
  ++data;
  --size;
  // Exactly the query, in a buffer of its own: any read (or write) past it is an ASan report.
  std::vector<uint8_t> exact(data, data + size);
  auto r = ferry::dns::answer(z, exact.data(), size, size, udp, 512);
  if (r.len > size) __builtin_trap();
  // With room after it: the answer must stay inside the room it was given.
  std::vector<uint8_t> buf(data, data + size);
  buf.resize(size + room);
  r = ferry::dns::answer(z, buf.data(), size, buf.size(), udp, 512 + room);
  if (r.len > buf.size()) __builtin_trap();
  if (r.len && (r.len < ferry::dns::kHeaderSize || !(buf[2] & 0x80))) __builtin_trap();
  // As the DNS thread does: the chain written, then the target's records appended.
  buf.assign(data, data + size);
  buf.resize(size + room);
  r = ferry::dns::answer(z, buf.data(), size, buf.size(), udp, 512 + room, true,
                         ferry::dns::chase::write);
  if (r.len > buf.size()) __builtin_trap();
  // The input as an upstream's answer about the first target the demo zone leaves by.
  static const std::string name("\2db\7example\3com\0", 16);
  ferry::dns::upstream_answer a;
  const uint16_t id = size >= 2 ? static_cast<uint16_t>(data[0] << 8 | data[1]) : 0;
  if (!ferry::dns::parse_upstream(exact.data(), size, id, name, ferry::dns::kTypeA, 60, a)) {
    return 0;
  }
  if (a.records.size() > ferry::dns::kMaxUpstreamRecords) __builtin_trap();
  static const uint8_t query[] = {0,   1,   1,   0,   0,   1,   0,   0,   0,   0,   0,
                                  0,   3,   'e', 'x', 't', 4,   'd', 'a', 't', 'a', 3,
                                  's', 'v', 'c', 7,   'c', 'l', 'u', 's', 't', 'e', 'r',
                                  5,   'l', 'o', 'c', 'a', 'l', 0,   0,   1,   0,   1};
  std::vector<uint8_t> resp(query, query + sizeof(query));
  resp.resize(sizeof(query) + room + 64);
  r = ferry::dns::answer(z, resp.data(), sizeof(query), resp.size(), true, 512 + room, true,
                         ferry::dns::chase::write);
  if (r.how != ferry::dns::outcome::resolve) __builtin_trap();
  const size_t len = ferry::dns::complete(resp.data(), r.len, resp.size(), r, a, 1);
  if (len > resp.size() || len > r.limit) __builtin_trap();
  // Response rate limiting's slip, over the query as it came: never longer than it, and a
  // response with TC when there is one.
  std::vector<uint8_t> again(data, data + size);
  const size_t slipped = ferry::dns::slip(again.data(), size);
  if (slipped > size ||
      (slipped && (slipped < ferry::dns::kHeaderSize + 5 || (again[2] & 0x82) != 0x82))) {
    __builtin_trap();
  }
  return 0;
}
