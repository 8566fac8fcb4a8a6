// libFuzzer target: DNS queries (the UDP payload a worker hands the responder, or one TCP
// message) against the built-in demo's zone plus a headless Service with many endpoints.
// Each query is answered twice: in a buffer exactly its size (ASan reports any access past
// it), then with room after it, which the response must stay inside.
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "config.hpp"
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
