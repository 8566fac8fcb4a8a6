// libFuzzer target: any bytes as a frame into the worker's packet path, on an offline
// dataplane with a real snapshot. The bytes after the frame are poisoned, so ASan reports a
// parser that reads past the end of the packet (not only past the end of the buffer).
#include <rte_eal.h>
#include <sanitizer/asan_interface.h>

#include <cstdint>
#include <cstdio>
#include <cstring>

#include "compile.hpp"
#include "offline.hpp"

namespace {

using namespace ferry;

struct harness {
  std::unique_ptr<dp::offline_dataplane> od;
  std::unique_ptr<const snapshot> snap;

  harness() {
    node_config cfg;
    cfg.ports = {{"eth0", "", {0xc61200fe, 24}}, {"eth1", "", {0xc61201fe, 24}}};
    const rte_ether_addr macs[2] = {{{2, 0, 0, 0, 0, 1}}, {{2, 0, 0, 0, 0, 2}}};
    od = std::make_unique<dp::offline_dataplane>(cfg, macs);
    od->learn(0, 0xc6120001, {{2, 0xc1, 0, 0, 0, 1}});
    od->learn(1, 0xc612010b, {{2, 0xb0, 0, 0, 0, 1}});
    // Every kind of frontend: ClusterIP, NodePort (SNAT to a remote pod), an LB address of
    // the pool with source ranges (answered by ARP), an externalIP, ClientIP affinity, and
    // a Local policy with no local endpoint; TCP, UDP and SCTP (its port changed: CRC32c).
    control::store st(control::service_ranges{.service_cidr = {0xc6130000, 16},
                                              .load_balancer_pool = {{0xc61200f0, 29}}});
    auto objs = model::parse_manifests(R"(
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {clusterIP: 198.19.0.10, ports: [{name: t, port: 80, targetPort: 9376}, {name: u, port: 53, protocol: UDP}, {name: s, port: 3868, targetPort: 3869, protocol: SCTP}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: web}
subsets: [{addresses: [{ip: 198.18.1.11}, {ip: 198.18.1.77}], ports: [{name: t, port: 9376}, {name: u, port: 53, protocol: UDP}, {name: s, port: 3869, protocol: SCTP}]}]
---
apiVersion: v1
kind: Service
metadata: {name: empty}
spec: {clusterIP: 198.19.0.11, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: edge}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.12
  sessionAffinity: ClientIP
  externalIPs: [198.18.0.77]
  loadBalancerSourceRanges: [198.18.0.0/28]
  ports: [{name: t, port: 80, targetPort: 9376, nodePort: 30080}, {name: u, port: 53, protocol: UDP, nodePort: 30053}, {name: s, port: 3868, targetPort: 3869, protocol: SCTP, nodePort: 30868}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: edge}
subsets: [{addresses: [{ip: 198.18.1.11, nodeName: other}, {ip: 198.18.1.77, nodeName: fuzz}], ports: [{name: t, port: 9376}, {name: u, port: 53, protocol: UDP}, {name: s, port: 3869, protocol: SCTP}]}]
---
apiVersion: v1
kind: Service
metadata: {name: local}
spec: {type: NodePort, clusterIP: 198.19.0.13, externalTrafficPolicy: Local, ports: [{port: 80, nodePort: 30081}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: local}
subsets: [{addresses: [{ip: 198.18.1.11, nodeName: other}], ports: [{port: 80}]}]
)",
                                       "fuzz");
    if (!objs) {
      std::fprintf(stderr, "fuzz_packet: %s\n", objs.message().c_str());
      std::abort();
    }
    if (!st.apply(std::move(*objs), control::source::file)) std::abort();
    // And the cluster DNS on 198.19.0.53 (UDP answered here or forwarded to 198.18.1.11, TCP
    // to a port with no server).
    od->dp.dns_addresses = {0xc6130035};
    control::compiler c(65537, 64, "fuzz", {{0xc61200f0, 29}});
    c.enable_dns(dns_config{.addresses = {0xc6130035}, .upstreams = {{0xc612010b, 53}}},
                 {0xc6130000, 16});
    snap = std::move(*c.compile(st));
  }
};

harness* h = nullptr;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  static std::string args[] = {"fuzz",       "--no-huge",   "-m",      "256",
                               "--no-pci",   "-l",          "0",       "--file-prefix",
                               "ferry-fuzz", "--log-level", "*:error", "--no-telemetry"};
  static char* argv[std::size(args)];
  for (size_t i = 0; i < std::size(args); ++i) argv[i] = args[i].data();
  if (rte_eal_init(static_cast<int>(std::size(args)), argv) < 0) std::abort();
  h = new harness;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 1600) return 0;
  rte_mbuf* m = rte_pktmbuf_alloc(h->od->dp.pool);
  // First byte: the port it arrives on; the rest is the frame. Headroom and tailroom are
  // poisoned while the packet path runs: any read outside the frame is reported.
  uint16_t port = data[0] & 1;
  size_t len = size - 1;
  m->data_len = static_cast<uint16_t>(len);
  m->pkt_len = static_cast<uint32_t>(len);
  auto* frame = rte_pktmbuf_mtod(m, uint8_t*);
  std::memcpy(frame, data + 1, len);
  auto* buf = static_cast<uint8_t*>(m->buf_addr);
  size_t tail = m->buf_len - m->data_off - len;
  ASAN_POISON_MEMORY_REGION(buf, m->data_off);
  // Except for a query to the DNS address: the responder writes its answer there (its
  // reads are checked by fuzz_dns, which gives it no room at all).
  const uint8_t kDns[4] = {198, 19, 0, 53};
  if (len < 34 || std::memcmp(frame + 30, kDns, 4) != 0) {
    ASAN_POISON_MEMORY_REGION(frame + len, tail);
  }
  dp::worker& w = *h->od->w;
  w.now = rte_rdtsc();
  // A fragment that completes a datagram comes back as the datagram's first mbuf (m), and
  // a fragment may stay held in the reassembly table: this input's buffer is unpoisoned
  // whatever became of it (its mbuf is never unmapped, at worst back in the pool).
  const size_t buf_len = m->buf_len;
  dp::process_burst(w, h->snap.get(), &m, 1, port);
  ASAN_UNPOISON_MEMORY_REGION(buf, buf_len);
  h->od->drain_tx();
  dp::service_held(w);
  dp::expire_fragments(w);  // the worker loop's sweep of the reassembly table
  return 0;
}
