// Table-driven tests of the packet path: a packet in, the exact packet out (or a counted
// drop). No I/O: outputs are read from the worker's TX batches before they are flushed.
#include <gtest/gtest.h>
#include <rte_cycles.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>

#include <algorithm>
#include <map>
#include <optional>
#include <string>

#include "compile.hpp"
#include "filter.hpp"
#include "inspect.hpp"
#include "offline.hpp"
#include "packet_builder.hpp"
#include "sctp.hpp"
#include "test_eal.hpp"

namespace ferry::dp {
namespace {

using namespace ferry::dp::testing;

const mac kPort0{0x02, 0, 0, 0, 0, 0x01}, kPort1{0x02, 0, 0, 0, 0, 0x02};
const mac kClientMac{0x02, 0xc1, 0, 0, 0, 0x01}, kPodMac{0x02, 0xb0, 0, 0, 0, 0x11};
const mac kLateMac{0x02, 0xb0, 0, 0, 0, 0x99}, kZero{},
    kBroadcast{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
constexpr uint32_t kClient = 0xc6120001;          // 198.18.0.1
constexpr uint32_t kNode0 = 0xc61200fe;           // 198.18.0.254
constexpr uint32_t kNode1 = 0xc61201fe;           // 198.18.1.254
constexpr uint32_t kPod = 0xc612010b;             // 198.18.1.11
constexpr uint32_t kLatePod = 0xc6120163;         // 198.18.1.99, not yet in the ARP table
constexpr uint32_t kVip = 0xc6130a00 + 10;        // 198.19.10.10
constexpr uint32_t kUdpVip = 0xc6130a00 + 20;     // 198.19.10.20
constexpr uint32_t kEmptyVip = 0xc6130a00 + 30;   // 198.19.10.30
constexpr uint32_t kLateVip = 0xc6130a00 + 40;    // 198.19.10.40
constexpr uint32_t kOffnetVip = 0xc6130a00 + 50;  // backend outside every route

const char* kManifests = R"yaml(
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 198.19.10.10
  ports: [{port: 80, targetPort: 9376}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: web}
subsets: [{addresses: [{ip: 198.18.1.11}], ports: [{port: 9376}]}]
---
apiVersion: v1
kind: Service
metadata: {name: dns}
spec:
  clusterIP: 198.19.10.20
  ports: [{port: 53, targetPort: 9376, protocol: UDP}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: dns}
subsets: [{addresses: [{ip: 198.18.1.11}], ports: [{port: 9376, protocol: UDP}]}]
---
apiVersion: v1
kind: Service
metadata: {name: empty}
spec:
  clusterIP: 198.19.10.30
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: late}
spec:
  clusterIP: 198.19.10.40
  ports: [{port: 80}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: late}
subsets: [{addresses: [{ip: 198.18.1.99}], ports: [{port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: offnet}
spec:
  clusterIP: 198.19.10.50
  ports: [{port: 80}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: offnet}
subsets: [{addresses: [{ip: 198.18.7.7}], ports: [{port: 80}]}]
)yaml";

rte_ether_addr to_ether(const mac& m) {
  rte_ether_addr a;
  std::memcpy(a.addr_bytes, m.data(), 6);
  return a;
}

struct output {
  uint16_t port;
  bytes frame;
};

class pipeline : public ::testing::Test {
 protected:
  void SetUp() override {
    node_config cfg;
    cfg.ports = {{"eth0", "fake0", {kNode0, 24}}, {"eth1", "fake1", {kNode1, 24}}};
    const rte_ether_addr macs[2] = {to_ether(kPort0), to_ether(kPort1)};
    od_ = std::make_unique<offline_dataplane>(cfg, macs);
    od_->learn(0, kClient, to_ether(kClientMac));
    od_->learn(1, kPod, to_ether(kPodMac));
    w_ = od_->w;
    dp_ = &od_->dp;

    control::store st(ipv4_prefix{0xc6130000, 16});
    auto objs = model::parse_manifests(kManifests, "test");
    ASSERT_TRUE(objs) << objs.message();
    ASSERT_TRUE(st.apply(std::move(*objs), control::source::file));
    auto snap = control::compiler(65537, 64).compile(st);
    ASSERT_TRUE(snap) << snap.message();
    snap_ = std::move(*snap);
  }

  // Runs one frame through the pipeline; returns what came out (and takes it off the
  // TX batches).
  // ol_flags: what the NIC would have said about it (RX offload flags).
  std::vector<output> run(const bytes& in, uint16_t port, uint64_t ol_flags = 0) {
    rte_mbuf* m = rte_pktmbuf_alloc(dp_->pool);
    std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(in.size())), in.data(), in.size());
    m->ol_flags = ol_flags;
    w_->now = rte_rdtsc() + skew_;
    process_burst(*w_, snap_.get(), &m, 1, port);
    return take();
  }

  std::vector<output> take() {
    std::vector<output> out;
    for (uint16_t p = 0; p < kMaxPorts; ++p) {
      for (uint16_t i = 0; i < w_->tx[p].n; ++i) {
        rte_mbuf* m = w_->tx[p].pkts[i];
        bytes frame(m->pkt_len);  // chained mbufs (reassembled, fragmented) read whole
        const void* d = rte_pktmbuf_read(m, 0, m->pkt_len, frame.data());
        if (d != frame.data()) std::memcpy(frame.data(), d, m->pkt_len);
        out.push_back({p, frame});
      }
    }
    od_->drain_tx();
    return out;
  }

  uint64_t drops(drop d) const { return w_->counters.drops[static_cast<size_t>(d)].get(); }

  // Replaces the snapshot with one built from these manifests, as node `node_name`.
  void use(const char* manifests, const std::string& node_name = "edge-1") {
    control::store st(control::service_ranges{.service_cidr = {0xc6130000, 16},
                                              .load_balancer_pool = {{0xc61200c8, 29}}});
    auto objs = model::parse_manifests(manifests, "test");
    ASSERT_TRUE(objs) << objs.message();
    auto applied = st.apply(std::move(*objs), control::source::file);
    ASSERT_TRUE(applied) << applied.message();
    auto snap = control::compiler(65537, 64, node_name, {{0xc61200c8, 29}}).compile(st);
    ASSERT_TRUE(snap) << snap.message();
    snap_ = std::move(*snap);
  }

  // Payload signature filter: the setup's snapshot with these rules (slot = index).
  void with_filters(const std::vector<filter_rule_config>& rules) {
    control::store st(ipv4_prefix{0xc6130000, 16});
    auto objs = model::parse_manifests(kManifests, "test");
    ASSERT_TRUE(st.apply(std::move(*objs), control::source::file));
    control::compiler comp(65537, 64);
    auto snap = comp.compile(st);
    ASSERT_TRUE(snap) << snap.message();
    auto db = control::compile_filters(rules, 1);
    ASSERT_TRUE(db) << db.message();
    std::vector<uint32_t> slots;
    for (uint32_t i = 0; i < rules.size(); ++i) slots.push_back(i);
    (*snap)->filters = control::build_filter_set(*db, rules, slots, comp);
    snap_ = std::move(*snap);
  }
  uint64_t hits(uint32_t slot) const { return w_->counters.filter_hits[slot].get(); }

  // A fresh offline dataplane with these options (same ports, MACs, neighbors, snapshot).
  void rebuild(const offline_options& o) {
    od_.reset();
    node_config cfg;
    cfg.ports = {{"eth0", "fake0", {kNode0, 24}}, {"eth1", "fake1", {kNode1, 24}}};
    const rte_ether_addr macs[2] = {to_ether(kPort0), to_ether(kPort1)};
    od_ = std::make_unique<offline_dataplane>(cfg, macs, o);
    od_->learn(0, kClient, to_ether(kClientMac));
    od_->learn(1, kPod, to_ether(kPodMac));
    w_ = od_->w;
    dp_ = &od_->dp;
  }

  uint64_t skew_ = 0;  // added to the worker's clock in run(): time passing
  std::unique_ptr<offline_dataplane> od_;
  dataplane* dp_ = nullptr;
  worker* w_ = nullptr;
  std::unique_ptr<const snapshot> snap_;
};

// The forwarding table: each row is a packet in and the exact packet that must leave,
// in order (rows share connection state, as a real conversation does).
struct row {
  const char* name;
  bytes in;
  uint16_t in_port;
  uint16_t out_port;
  bytes out;
};

TEST_F(pipeline, TranslatesAConversation) {
  ip_opts out_ttl{.ttl = 63};
  ip_opts options{.ihl = 7};
  ip_opts options_out{.ttl = 63, .ihl = 7};
  const row rows[] = {
      {"SYN to the VIP is DNATed to the pod",
       tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x02), 0, 1,
       tcp(kPodMac, kPort1, kClient, 40000, kPod, 9376, 0x02, "", out_ttl)},
      {"SYN-ACK from the pod is un-NATed to the VIP",
       tcp(kPort1, kPodMac, kPod, 9376, kClient, 40000, 0x12), 1, 0,
       tcp(kClientMac, kPort0, kVip, 80, kClient, 40000, 0x12, "", out_ttl)},
      {"data follows the flow",
       tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x18, "GET / HTTP/1.1\r\n\r\n"), 0, 1,
       tcp(kPodMac, kPort1, kClient, 40000, kPod, 9376, 0x18, "GET / HTTP/1.1\r\n\r\n", out_ttl)},
      {"reply data", tcp(kPort1, kPodMac, kPod, 9376, kClient, 40000, 0x18, "my-app-1\n"), 1, 0,
       tcp(kClientMac, kPort0, kVip, 80, kClient, 40000, 0x18, "my-app-1\n", out_ttl)},
      {"IPv4 options: addresses found past the options, checksums right",
       tcp(kPort0, kClientMac, kClient, 40001, kVip, 80, 0x02, "", options), 0, 1,
       tcp(kPodMac, kPort1, kClient, 40001, kPod, 9376, 0x02, "", options_out)},
      {"UDP with checksum", udp(kPort0, kClientMac, kClient, 5000, kUdpVip, 53, "query"), 0, 1,
       udp(kPodMac, kPort1, kClient, 5000, kPod, 9376, "query", true, out_ttl)},
      {"UDP reply", udp(kPort1, kPodMac, kPod, 9376, kClient, 5000, "answer"), 1, 0,
       udp(kClientMac, kPort0, kUdpVip, 53, kClient, 5000, "answer", true, out_ttl)},
      {"UDP checksum 0 stays 0",
       udp(kPort0, kClientMac, kClient, 5001, kUdpVip, 53, "query", false), 0, 1,
       udp(kPodMac, kPort1, kClient, 5001, kPod, 9376, "query", false, out_ttl)},
      {"reply without an entry is un-NATed statelessly",
       tcp(kPort1, kPodMac, kPod, 9376, kClient, 41000, 0x10), 1, 0,
       tcp(kClientMac, kPort0, kVip, 80, kClient, 41000, 0x10, "", out_ttl)},
      {"mid-stream ACK without an entry (after a restart) goes by Maglev, no entry",
       tcp(kPort0, kClientMac, kClient, 42000, kVip, 80, 0x10), 0, 1,
       tcp(kPodMac, kPort1, kClient, 42000, kPod, 9376, 0x10, "", out_ttl)},
      {"ARP request for the node is answered",
       arp(kBroadcast, kClientMac, 1, kClientMac, kClient, kZero, kNode0), 0, 0,
       arp(kClientMac, kPort0, 2, kPort0, kNode0, kClientMac, kClient)},
  };
  for (const auto& r : rows) {
    SCOPED_TRACE(r.name);
    auto out = run(r.in, r.in_port);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].port, r.out_port);
    EXPECT_EQ(out[0].frame, r.out);
  }
  // 2 TCP SYN, 2 UDP, and 1 made from the backend's ACK (the stateless reply); the
  // mid-stream ACK from the client makes none.
  EXPECT_EQ(w_->counters.flows_created.get(), 5u);
  EXPECT_EQ(w_->counters.flows_picked_up.get(), 1u);
  EXPECT_EQ(w_->counters.stateless_reply.get(), 1u);
  EXPECT_EQ(w_->counters.ack_stateless.get(), 1u);
  for (size_t d = 0; d < kNumDrops; ++d)
    EXPECT_EQ(w_->counters.drops[d].get(), 0u) << kDropNames[d];
}

TEST_F(pipeline, EstablishedFlowKeepsItsBackendWhenEndpointsChange) {
  run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x02), 0);
  // The service loses every endpoint: the existing flow still goes to its pod.
  control::store st(ipv4_prefix{0xc6130000, 16});
  auto objs = model::parse_manifests(
      "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  clusterIP: 198.19.10.10\n"
      "  ports: [{port: 80, targetPort: 9376}]\n",
      "test");
  ASSERT_TRUE(st.apply(std::move(*objs), control::source::file));
  snap_ = std::move(*control::compiler(65537, 64).compile(st));
  auto out = run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x10), 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame, tcp(kPodMac, kPort1, kClient, 40000, kPod, 9376, 0x10, "", {.ttl = 63}));
  // A new flow is refused.
  out = run(tcp(kPort0, kClientMac, kClient, 40001, kVip, 80, 0x02), 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame[14 + 9], kProtoIcmp);
}

// ---- SCTP: NAT with the CRC32c summed again when a port changes; associations tracked -----

const char* kSctpManifests = R"yaml(
apiVersion: v1
kind: Service
metadata: {name: diameter}
spec:
  clusterIP: 198.19.10.60
  ports: [{port: 3868, targetPort: 3869, protocol: SCTP}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: diameter}
subsets: [{addresses: [{ip: 198.18.1.11}], ports: [{port: 3869, protocol: SCTP}]}]
---
apiVersion: v1
kind: Service
metadata: {name: sigtran}
spec:
  clusterIP: 198.19.10.61
  ports: [{port: 2905, protocol: SCTP}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: sigtran}
subsets: [{addresses: [{ip: 198.18.1.11}], ports: [{port: 2905, protocol: SCTP}]}]
)yaml";
constexpr uint32_t kSctpVip = 0xc6130a00 + 60;  // 198.19.10.60:3868 -> pod:3869
constexpr uint32_t kSameVip = 0xc6130a00 + 61;  // 198.19.10.61:2905 -> pod:2905

namespace chunk {
constexpr uint8_t kData = 0, kInit = 1, kInitAck = 2, kSack = 3, kHeartbeat = 4, kAbort = 6,
                  kShutdown = 7, kShutdownAck = 8, kCookieEcho = 10, kCookieAck = 11,
                  kShutdownComplete = 14;
}
// An INIT (or INIT ACK) with its tag, window, streams and TSN.
bytes init_chunk(uint8_t type, uint32_t tag) {
  bytes v(16, 0);
  put32(v, 0, tag);
  put32(v, 4, 65535);
  put16(v, 8, 10);
  put16(v, 10, 10);
  put32(v, 12, 1);
  return sctp_chunk(type, v);
}
bytes data_chunk(const std::string& text) {
  bytes v(12, 0);
  put32(v, 0, 1);  // TSN
  v.insert(v.end(), text.begin(), text.end());
  return sctp_chunk(chunk::kData, v, 0x03);
}

class sctp_flows : public pipeline {
 protected:
  void SetUp() override {
    pipeline::SetUp();
    use(kSctpManifests);
  }
  flow_entry* entry(uint32_t vip, uint16_t vport, uint16_t sport) const {
    flow_key k{kClient, vip, sport, vport, kProtoSctp};
    return dp_->ct->lookup(k, conntrack::hash(k)).entry;
  }
  // The state of the client's association from sport to diameter; free when it has no entry.
  flow_state state(uint16_t sport) const {
    const flow_entry* e = entry(kSctpVip, 3868, sport);
    return e ? e->state.load() : flow_state::free;
  }
  // Client -> VIP:3868 and what the pod must get (pod:3869), and the pod's answer both ways.
  static bytes to_vip(uint16_t sport, uint32_t tag, const bytes& chunks, uint32_t delta = 0) {
    return sctp_packet(kPort0, kClientMac, kClient, sport, kSctpVip, 3868, tag, chunks, {}, delta);
  }
  static bytes at_pod(uint16_t sport, uint32_t tag, const bytes& chunks) {
    return sctp_packet(kPodMac, kPort1, kClient, sport, kPod, 3869, tag, chunks, {.ttl = 63});
  }
  static bytes from_pod(uint16_t sport, uint32_t tag, const bytes& chunks) {
    return sctp_packet(kPort1, kPodMac, kPod, 3869, kClient, sport, tag, chunks);
  }
  static bytes at_client(uint16_t sport, uint32_t tag, const bytes& chunks) {
    return sctp_packet(kClientMac, kPort0, kSctpVip, 3868, kClient, sport, tag, chunks,
                       {.ttl = 63});
  }
};

TEST_F(sctp_flows, AnAssociationIsNatedWithItsChecksumAndTrackedToTheEnd) {
  const uint32_t ctag = 0x11223344, ptag = 0x55667788;
  struct step {
    const char* name;
    bool forward;
    uint32_t tag;
    bytes chunks;
    flow_state after;
  };
  const step steps[] = {
      {"INIT is DNATed to the pod's port, CRC32c summed again", true, 0,
       init_chunk(chunk::kInit, ctag), flow_state::sctp_init},
      {"INIT ACK comes back un-NATed", false, ctag,
       init_chunk(chunk::kInitAck, ptag) /* a state cookie would follow */, flow_state::sctp_init},
      {"COOKIE ECHO", true, ptag, sctp_chunk(chunk::kCookieEcho, bytes(24, 0xc0)),
       flow_state::sctp_init},
      {"COOKIE ACK: established", false, ctag, sctp_chunk(chunk::kCookieAck),
       flow_state::sctp_established},
      {"DATA", true, ptag, data_chunk("CER diameter"), flow_state::sctp_established},
      {"SACK + DATA back", false, ctag,
       [] {
         bytes c = sctp_chunk(chunk::kSack, bytes(12, 0));
         bytes d = data_chunk("CEA!");
         c.insert(c.end(), d.begin(), d.end());
         return c;
       }(),
       flow_state::sctp_established},
      {"HEARTBEAT", true, ptag, sctp_chunk(chunk::kHeartbeat, bytes(8, 0x42)),
       flow_state::sctp_established},
      {"SHUTDOWN: closing", true, ptag, sctp_chunk(chunk::kShutdown, bytes(4, 0)),
       flow_state::sctp_closing},
      {"SHUTDOWN ACK", false, ctag, sctp_chunk(chunk::kShutdownAck), flow_state::sctp_closing},
      {"SHUTDOWN COMPLETE", true, ptag, sctp_chunk(chunk::kShutdownComplete, {}, 0),
       flow_state::sctp_closing},
  };
  // What trace says first: Maglev's pod, at the target port.
  dp_->snap.store(snap_.get());
  trace_result t = trace(*dp_, kProtoSctp, kClient, 40000, kSctpVip, 3868);
  EXPECT_STREQ(t.verdict, "forward");
  EXPECT_STREQ(t.decision, "maglev");
  EXPECT_EQ(t.nat_dst_ip, kPod);
  EXPECT_EQ(t.nat_dst_port, 3869);
  for (const auto& st : steps) {
    SCOPED_TRACE(st.name);
    if (st.after == flow_state::sctp_closing && st.forward) {
      // Before SHUTDOWN: trace shows the association.
      t = trace(*dp_, kProtoSctp, kClient, 40000, kSctpVip, 3868);
      EXPECT_STREQ(t.decision, "existing_flow");
      ASSERT_TRUE(t.flow.has_value());
      EXPECT_STREQ(t.flow->state, flow_state_name(state(40000)));
    }
    auto out =
        run(st.forward ? to_vip(40000, st.tag, st.chunks) : from_pod(40000, st.tag, st.chunks),
            st.forward ? 0 : 1);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].port, st.forward ? 1 : 0);
    EXPECT_EQ(out[0].frame,
              st.forward ? at_pod(40000, st.tag, st.chunks) : at_client(40000, st.tag, st.chunks));
    EXPECT_EQ(state(40000), st.after) << flow_state_name(state(40000));
  }
  EXPECT_STREQ(flow_state_name(flow_state::sctp_closing), "SCTP_CLOSING");
  EXPECT_EQ(w_->counters.flows_created.get(), 1u);
  for (size_t d = 0; d < kNumDrops; ++d)
    EXPECT_EQ(w_->counters.drops[d].get(), 0u) << kDropNames[d];
  // sctp_closing_timeout (10 s) by default.
  const uint64_t later = rte_rdtsc() + 11 * dp_->tsc_hz;
  dp_->ct->sweep(w_->ct, later, dp_->ct->capacity());
  EXPECT_EQ(entry(kSctpVip, 3868, 40000), nullptr);
  dp_->snap.store(nullptr);
}

TEST_F(sctp_flows, SamePortsKeepTheChecksumAsItCame) {
  // No port changes: the CRC32c (no pseudo-header) is left alone, and is still right.
  const bytes init = init_chunk(chunk::kInit, 7);
  auto out = run(sctp_packet(kPort0, kClientMac, kClient, 40000, kSameVip, 2905, 0, init), 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame,
            sctp_packet(kPodMac, kPort1, kClient, 40000, kPod, 2905, 0, init, {.ttl = 63}));
}

TEST_F(sctp_flows, AbortClosesAndASpoofedInitStaysEmbryonic) {
  run(to_vip(40001, 0, init_chunk(chunk::kInit, 1)), 0);
  run(from_pod(40001, 1, init_chunk(chunk::kInitAck, 2)), 1);
  // Only the INIT ACK came back (a spoofed source never echoes the cookie): embryonic.
  EXPECT_EQ(state(40001), flow_state::sctp_init);
  EXPECT_EQ(dp_->ct->embryonic(0), 1u);
  run(to_vip(40001, 2, sctp_chunk(chunk::kCookieEcho, bytes(8, 1))), 0);
  run(from_pod(40001, 1, sctp_chunk(chunk::kCookieAck)), 1);
  EXPECT_EQ(dp_->ct->embryonic(0), 0u);
  // ABORT from the pod: closing.
  auto out = run(from_pod(40001, 1, sctp_chunk(chunk::kAbort)), 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame, at_client(40001, 1, sctp_chunk(chunk::kAbort)));
  EXPECT_EQ(state(40001), flow_state::sctp_closing);
  // A new INIT on the same ports reuses the entry, embryonic again.
  run(to_vip(40001, 0, init_chunk(chunk::kInit, 3)), 0);
  EXPECT_EQ(state(40001), flow_state::sctp_init);
  EXPECT_EQ(dp_->ct->embryonic(0), 1u);
  // sctp_init_timeout (5 s) by default.
  const uint64_t later = rte_rdtsc() + 6 * dp_->tsc_hz;
  dp_->ct->sweep(w_->ct, later, dp_->ct->capacity());
  EXPECT_EQ(entry(kSctpVip, 3868, 40001), nullptr);
  EXPECT_EQ(dp_->ct->embryonic(0), 0u);
  // Without an entry, DATA goes by Maglev and makes none; an ABORT neither.
  out = run(to_vip(40002, 9, data_chunk("x")), 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame, at_pod(40002, 9, data_chunk("x")));
  run(to_vip(40003, 9, sctp_chunk(chunk::kAbort)), 0);
  EXPECT_EQ(entry(kSctpVip, 3868, 40002), nullptr);
  EXPECT_EQ(entry(kSctpVip, 3868, 40003), nullptr);
}

TEST_F(sctp_flows, BadChecksumsAndChunksAreDropped) {
  struct bad {
    const char* name;
    bytes in;
    drop why;
  };
  bytes zero_len = init_chunk(chunk::kInit, 1);
  put16(zero_len, 2, 0);
  const bad rows[] = {
      {"wrong CRC32c, port rewritten", to_vip(40010, 0, init_chunk(chunk::kInit, 1), 1),
       drop::l4_bad_checksum},
      {"wrong CRC32c, same port",
       sctp_packet(kPort0, kClientMac, kClient, 40011, kSameVip, 2905, 0,
                   init_chunk(chunk::kInit, 1), {}, 0x80000000),
       drop::l4_bad_checksum},
      {"the CRC of the Internet checksum's byte order",
       [] {
         bytes b = to_vip(40012, 0, init_chunk(chunk::kInit, 1));
         std::reverse(b.begin() + 34 + 8, b.begin() + 34 + 12);
         return b;
       }(),
       drop::l4_bad_checksum},
      {"no chunk", to_vip(40013, 0, {}), drop::l4_truncated},
      {"a chunk shorter than its header", to_vip(40014, 0, zero_len), drop::l4_bad_length},
  };
  for (const auto& r : rows) {
    SCOPED_TRACE(r.name);
    const uint64_t before = drops(r.why);
    EXPECT_TRUE(run(r.in, 0).empty());
    EXPECT_EQ(drops(r.why), before + 1);
  }
  EXPECT_EQ(w_->counters.flows_created.get(), 0u);
  // The NIC's verdict, when it gave one, stands for ours.
  auto out = run(to_vip(40015, 0, init_chunk(chunk::kInit, 1), 1), 0, RTE_MBUF_F_RX_L4_CKSUM_GOOD);
  EXPECT_EQ(out.size(), 1u);
}

TEST_F(sctp_flows, ChainedMbufsAreSummedOverEverySegment) {
  const bytes chunks = data_chunk(std::string(700, 'd'));
  const bytes in = to_vip(40020, 5, chunks);
  // Split after the first chunk's header: the rest of the packet in a second segment.
  const size_t first = 14 + 20 + 12 + 16 + 3;
  rte_mbuf* a = rte_pktmbuf_alloc(dp_->pool);
  rte_mbuf* b = rte_pktmbuf_alloc(dp_->pool);
  std::memcpy(rte_pktmbuf_append(a, first), in.data(), first);
  std::memcpy(rte_pktmbuf_append(b, static_cast<uint16_t>(in.size() - first)), in.data() + first,
              in.size() - first);
  ASSERT_EQ(rte_pktmbuf_chain(a, b), 0);
  w_->now = rte_rdtsc();
  process_burst(*w_, snap_.get(), &a, 1, 0);
  auto out = take();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame, at_pod(40020, 5, chunks));
  // And a wrong checksum is found past the first segment too.
  bytes spoiled = in;
  spoiled.back() ^= 1;
  a = rte_pktmbuf_alloc(dp_->pool);
  b = rte_pktmbuf_alloc(dp_->pool);
  std::memcpy(rte_pktmbuf_append(a, first), spoiled.data(), first);
  std::memcpy(rte_pktmbuf_append(b, static_cast<uint16_t>(in.size() - first)),
              spoiled.data() + first, in.size() - first);
  ASSERT_EQ(rte_pktmbuf_chain(a, b), 0);
  const uint64_t before = drops(drop::l4_bad_checksum);
  process_burst(*w_, snap_.get(), &a, 1, 0);
  EXPECT_TRUE(take().empty());
  EXPECT_EQ(drops(drop::l4_bad_checksum), before + 1);
}

// The CRC32c the packet path computes (rte_hash_crc) agrees with scapy's: the INIT scapy
// builds as SCTP(sport=40000, dport=3868)/SCTPChunkInit(init_tag=0x11223344, a_rwnd=65535,
// n_out_streams=10, n_in_streams=10, init_tsn=1) carries bytes 4c 6a c8 63.
TEST_F(sctp_flows, ChecksumAgreesWithScapy) {
  const bytes frame = to_vip(40000, 0, init_chunk(chunk::kInit, 0x11223344));
  ASSERT_EQ(frame[14 + 9], 132);
  // Swapped port (3868): scapy's bytes for that packet.
  bytes l4(frame.begin() + 34, frame.end());
  EXPECT_EQ(l4[8], 0x4c);
  EXPECT_EQ(l4[9], 0x6a);
  EXPECT_EQ(l4[10], 0xc8);
  EXPECT_EQ(l4[11], 0x63);
  rte_mbuf* m = rte_pktmbuf_alloc(dp_->pool);
  std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(l4.size())), l4.data(), l4.size());
  EXPECT_EQ(sctp::crc32c(m, 0, static_cast<uint32_t>(l4.size())), 0x63c86a4cu);
  EXPECT_EQ(sctp::stored_crc(l4.data()), 0x63c86a4cu);
  rte_pktmbuf_free(m);
}

struct drop_row {
  const char* name;
  bytes in;
  uint16_t in_port;
  drop reason;
  uint64_t ol_flags = 0;  // RX offload flags the NIC set
};

// The frame with byte `at` (from the start of the frame) set to v.
bytes with(bytes b, size_t at, uint8_t v) {
  b.at(at) = v;
  return b;
}

// The frame with its 16-bit field at `at` set to v (host order in, network order out).
bytes with16(bytes b, size_t at, uint16_t v) {
  b.at(at) = static_cast<uint8_t>(v >> 8);
  b.at(at + 1) = static_cast<uint8_t>(v);
  return b;
}

// The frame with an 802.1Q/802.1ad tag (TPID `tpid`, VLAN 5) after the MAC addresses.
bytes tagged(bytes b, uint16_t tpid) {
  const uint8_t tag[4] = {static_cast<uint8_t>(tpid >> 8), static_cast<uint8_t>(tpid), 0, 5};
  b.insert(b.begin() + 12, tag, tag + 4);
  return b;
}

constexpr size_t kIp = 14, kL4 = 14 + 20;  // header offsets in an option-less frame

TEST_F(pipeline, DropsWhatIsNotOursWithAReason) {
  bytes short_frame(10, 0xaa);
  bytes ipv6 = ether(kPort0, kClientMac, 0x86dd);
  ipv6.resize(60);
  bytes gre = ipv4(kPort0, kClientMac, kClient, kVip, 47, bytes(24, 0), -1);
  bytes ip_header_cut = tcp(kPort0, kClientMac, kClient, 1, kVip, 80, 0x02);
  ip_header_cut.resize(14 + 12);
  bytes ihl_past_frame = udp(kPort0, kClientMac, kClient, 1, kVip, 80, "");
  ihl_past_frame[14] = 0x4f;  // 60-byte header claimed in a 42-byte frame
  const drop_row rows[] = {
      {"10-byte frame", short_frame, 0, drop::eth_truncated},
      {"IPv6", ipv6, 0, drop::eth_unsupported},
      {"our own frame", tcp(kPort0, kPort0, kClient, 1, kVip, 80, 0x02), 0, drop::own_source_mac},
      {"IP header cut", ip_header_cut, 0, drop::ip_truncated},
      {"version 6 in an IPv4 frame",
       tcp(kPort0, kClientMac, kClient, 1, kVip, 80, 0x02, "", {.version = 6}), 0,
       drop::ip_bad_version},
      {"IHL 4", tcp(kPort0, kClientMac, kClient, 1, kVip, 80, 0x02, "", {.ihl = 4}), 0,
       drop::ip_bad_ihl},
      {"IHL 15 past the frame", ihl_past_frame, 0, drop::ip_bad_ihl},
      {"total length past the frame",
       tcp(kPort0, kClientMac, kClient, 1, kVip, 80, 0x02, "", {.total_length_delta = 100}), 0,
       drop::ip_bad_length},
      {"first fragment of 20 bytes (MF: a multiple of 8 is due)",
       tcp(kPort0, kClientMac, kClient, 1, kVip, 80, 0x02, "", {.frag = 0x2000}), 0,
       drop::frag_malformed},
      {"fragment reaching past 65535",
       udp(kPort0, kClientMac, kClient, 1, kVip, 80, std::string(100, 'x'), true, {.frag = 8180}),
       0, drop::frag_oversized},
      {"TCP header cut by the IP length",
       tcp(kPort0, kClientMac, kClient, 1, kVip, 80, 0x02, "", {.total_length_delta = -15}), 0,
       drop::l4_truncated},
      {"UDP header cut",
       udp(kPort0, kClientMac, kClient, 1, kUdpVip, 53, "", true, {.total_length_delta = -4}), 0,
       drop::l4_truncated},
      {"GRE to a VIP", gre, 0, drop::l4_unsupported},
      {"no service there", tcp(kPort0, kClientMac, kClient, 1, 0xc6130909, 80, 0x02), 0,
       drop::not_service},
      {"UDP to the node itself", udp(kPort0, kClientMac, kClient, 1, kNode0, 53, "q"), 0,
       drop::local_unhandled},
      {"ARP for someone else",
       arp(kBroadcast, kClientMac, 1, kClientMac, kClient, kZero, 0xc612004d), 0,
       drop::arp_not_ours},
      {"backend off every route", tcp(kPort0, kClientMac, kClient, 1, kOffnetVip, 80, 0x02), 0,
       drop::no_route},
      {"TCP data offset 4",
       with(tcp(kPort0, kClientMac, kClient, 1, kVip, 80, 0x02), kL4 + 12, 0x40), 0,
       drop::l4_bad_length},
      {"TCP data offset 0", with(tcp(kPort0, kClientMac, kClient, 1, kVip, 80, 0x02), kL4 + 12, 0),
       0, drop::l4_bad_length},
      {"IPv4 header checksum wrong",
       with16(tcp(kPort0, kClientMac, kClient, 1, kVip, 80, 0x02), kIp + 10, 0x1234), 0,
       drop::ip_bad_checksum},
      {"IPv4 option byte changed under the checksum",
       with(tcp(kPort0, kClientMac, kClient, 1, kVip, 80, 0x02, "", {.ihl = 7}), kIp + 25, 0), 0,
       drop::ip_bad_checksum},
      {"NIC says the IPv4 checksum is bad", tcp(kPort0, kClientMac, kClient, 1, kVip, 80, 0x02), 0,
       drop::ip_bad_checksum, RTE_MBUF_F_RX_IP_CKSUM_BAD},
      {"NIC says the TCP checksum is bad", tcp(kPort0, kClientMac, kClient, 1, kVip, 80, 0x02), 0,
       drop::l4_bad_checksum, RTE_MBUF_F_RX_IP_CKSUM_GOOD | RTE_MBUF_F_RX_L4_CKSUM_BAD},
      {"UDP length 0", with16(udp(kPort0, kClientMac, kClient, 1, kUdpVip, 53, "q"), kL4 + 4, 0), 0,
       drop::l4_bad_length},
      {"UDP length 7", with16(udp(kPort0, kClientMac, kClient, 1, kUdpVip, 53, "q"), kL4 + 4, 7), 0,
       drop::l4_bad_length},
      {"UDP length past the IP payload",
       with16(udp(kPort0, kClientMac, kClient, 1, kUdpVip, 53, "q"), kL4 + 4, 10), 0,
       drop::l4_bad_length},
      {"TCP source port 0", tcp(kPort0, kClientMac, kClient, 0, kVip, 80, 0x02), 0,
       drop::port_zero},
      {"TCP destination port 0", tcp(kPort0, kClientMac, kClient, 40000, kVip, 0, 0x02), 0,
       drop::port_zero},
      {"UDP source port 0", udp(kPort0, kClientMac, kClient, 0, kUdpVip, 53, "q"), 0,
       drop::port_zero},
      {"UDP destination port 0", udp(kPort0, kClientMac, kClient, 40000, kUdpVip, 0, "q"), 0,
       drop::port_zero},
      {"source 0.0.0.0", tcp(kPort0, kClientMac, 0, 40000, kVip, 80, 0x02), 0, drop::src_martian},
      {"source 127.0.0.1", tcp(kPort0, kClientMac, 0x7f000001, 40000, kVip, 80, 0x02), 0,
       drop::src_martian},
      {"source multicast", udp(kPort0, kClientMac, 0xe0000001, 40000, kUdpVip, 53, "q"), 0,
       drop::src_martian},
      {"source 255.255.255.255", udp(kPort0, kClientMac, 0xffffffff, 40000, kUdpVip, 53, "q"), 0,
       drop::src_martian},
      {"source the subnet's broadcast", tcp(kPort0, kClientMac, 0xc61200ff, 40000, kVip, 80, 0x02),
       0, drop::src_martian},
      {"ping from 127.0.0.1 to the node",
       ipv4(kPort0, kClientMac, 0x7f000001, kNode0, 1, bytes{8, 0, 0xf7, 0xff, 0, 0, 0, 0}, -1), 0,
       drop::src_martian},
      {"land: TCP VIP:80 to itself", tcp(kPort0, kClientMac, kVip, 80, kVip, 80, 0x02), 0,
       drop::land},
      {"land: UDP from the VIP to itself", udp(kPort0, kClientMac, kUdpVip, 4000, kUdpVip, 53, "q"),
       0, drop::land},
      {"802.1Q tagged", tagged(tcp(kPort0, kClientMac, kClient, 1, kVip, 80, 0x02), 0x8100), 0,
       drop::vlan_unsupported},
      {"802.1ad tagged", tagged(tcp(kPort0, kClientMac, kClient, 1, kVip, 80, 0x02), 0x88a8), 0,
       drop::vlan_unsupported},
      {"tag stripped by the NIC", tcp(kPort0, kClientMac, kClient, 1, kVip, 80, 0x02), 0,
       drop::vlan_unsupported, RTE_MBUF_F_RX_VLAN | RTE_MBUF_F_RX_VLAN_STRIPPED},
  };
  for (const auto& r : rows) {
    SCOPED_TRACE(r.name);
    uint64_t before = drops(r.reason);
    uint64_t flows = w_->counters.flows_created.get();
    auto out = run(r.in, r.in_port, r.ol_flags);
    EXPECT_TRUE(out.empty());
    EXPECT_EQ(drops(r.reason), before + 1);
    // No flow for a bad packet (no_route comes after the flow is made, at the way out).
    if (r.reason != drop::no_route) {
      EXPECT_EQ(w_->counters.flows_created.get(), flows);
    }
  }
}

// Only the IPv4 header checksum is checked in software, and only when the NIC gave no
// verdict. A TCP/UDP checksum is left to the backend's stack (as IPVS and kube-proxy do):
// translated incrementally, a wrong one stays wrong, and the backend drops the segment.
TEST_F(pipeline, ChecksumsFollowTheNicAndOnlyTheIpHeaderIsChecked) {
  bytes syn = tcp(kPort0, kClientMac, kClient, 40100, kVip, 80, 0x02);
  bytes bad_l4 = with16(syn, kL4 + 16, 0x1234);
  auto out = run(bad_l4, 0);
  ASSERT_EQ(out.size(), 1u);
  const bytes& f = out[0].frame;
  // The IP header is right after translation; the TCP checksum is still wrong.
  EXPECT_EQ(csum(&f[kIp], 20), 0);
  std::vector<uint8_t> pseudo = {f[kIp + 12], f[kIp + 13], f[kIp + 14], f[kIp + 15],
                                 f[kIp + 16], f[kIp + 17], f[kIp + 18], f[kIp + 19],
                                 0,           6,           0,           20};
  EXPECT_NE(csum(&f[kL4], f.size() - kL4, csum_add(pseudo.data(), pseudo.size())), 0);
  // A NIC that verified the header (GOOD, or NONE: header intact, sum not) is believed.
  bytes bad_ip = with16(tcp(kPort0, kClientMac, kClient, 40101, kVip, 80, 0x02), kIp + 10, 1);
  EXPECT_EQ(run(bad_ip, 0, RTE_MBUF_F_RX_IP_CKSUM_GOOD).size(), 1u);
  bytes bad_ip2 = with16(tcp(kPort0, kClientMac, kClient, 40102, kVip, 80, 0x02), kIp + 10, 1);
  EXPECT_EQ(run(bad_ip2, 0, RTE_MBUF_F_RX_IP_CKSUM_NONE).size(), 1u);
  // An L4 verdict of NONE (data intact, sum not) is no reason to drop either.
  bytes fine = tcp(kPort0, kClientMac, kClient, 40103, kVip, 80, 0x02);
  EXPECT_EQ(run(fine, 0, RTE_MBUF_F_RX_L4_CKSUM_NONE).size(), 1u);
  EXPECT_EQ(drops(drop::ip_bad_checksum), 0u);
  EXPECT_EQ(drops(drop::l4_bad_checksum), 0u);
}

// The header check against the reference checksum over many headers (the carries of the
// sum taken every way): a right one always passes, one bit flipped anywhere in bytes 8..19
// (TTL to the destination; a one-bit change always changes the sum) never does.
TEST_F(pipeline, IpHeaderCheckMatchesTheChecksumAcrossManyHeaders) {
  uint32_t x = 12345;
  auto next = [&x] { return x = x * 1664525u + 1013904223u; };
  constexpr uint32_t kNowhere = 0xc6130909;  // no service: nothing is made for these
  for (int i = 0; i < 4000; ++i) {
    const uint32_t src = next(), dst = kNowhere ^ (next() & 0xff);
    const auto ttl = static_cast<uint8_t>(next() | 2);
    const auto ihl = static_cast<uint8_t>(5 + next() % 3);
    const auto frag = static_cast<uint16_t>(next());  // high bits of the first 8-byte word
    bytes ok = udp(kPort0, kClientMac, src, 1000, dst, 2000, "x", false,
                   {.ttl = ttl, .frag = frag, .ihl = ihl});
    const uint32_t r = next();
    bytes bad = ok;
    bad[kIp + 8 + (r >> 8) % 12] ^= static_cast<uint8_t>(1u << (r & 7));
    const uint64_t before = drops(drop::ip_bad_checksum);
    run(ok, 0);
    ASSERT_EQ(drops(drop::ip_bad_checksum), before) << i;
    run(bad, 0);
    ASSERT_EQ(drops(drop::ip_bad_checksum), before + 1) << i;
  }
}

TEST_F(pipeline, NoEndpointsAnswersPortUnreachableRateLimited) {
  bytes syn = tcp(kPort0, kClientMac, kClient, 40000, kEmptyVip, 80, 0x02);
  auto out = run(syn, 0);
  ASSERT_EQ(out.size(), 1u);
  // ICMP type 3 code 3 from the VIP, quoting the SYN's IP header and first 8 bytes.
  bytes icmp(8, 0);
  icmp[0] = 3;
  icmp[1] = 3;
  icmp.insert(icmp.end(), syn.begin() + 14, syn.begin() + 14 + 28);
  uint16_t c = csum(icmp.data(), icmp.size());
  std::memcpy(&icmp[2], &c, 2);
  EXPECT_EQ(out[0].port, 0);
  EXPECT_EQ(out[0].frame, ipv4(kClientMac, kPort0, kEmptyVip, kClient, 1, icmp, -1, {.id = 0}));
  EXPECT_EQ(drops(drop::no_endpoints), 1u);
  // icmp_rate = 2 per second: the bucket holds 2, so the third answer is suppressed.
  EXPECT_EQ(run(syn, 0).size(), 1u);
  EXPECT_TRUE(run(syn, 0).empty());
  EXPECT_EQ(drops(drop::icmp_rate_limited), 1u);
}

TEST_F(pipeline, AnswersPingForNodeAddresses) {
  bytes echo = {8, 0, 0, 0, 0x12, 0x34, 0, 1, 'p', 'i', 'n', 'g'};
  uint16_t c = csum(echo.data(), echo.size());
  std::memcpy(&echo[2], &c, 2);
  bytes reply = echo;
  reply[0] = 0;
  reply[2] = reply[3] = 0;
  c = csum(reply.data(), reply.size());
  std::memcpy(&reply[2], &c, 2);
  auto out = run(ipv4(kPort0, kClientMac, kClient, kNode0, 1, echo, -1, {.ttl = 9}), 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame, ipv4(kClientMac, kPort0, kNode0, kClient, 1, reply, -1));
}

TEST_F(pipeline, HoldsPacketsUntilTheNextHopAnswersArp) {
  auto out = run(tcp(kPort0, kClientMac, kClient, 40000, kLateVip, 80, 0x02), 0);
  // Only an ARP request leaves; the SYN waits.
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].port, 1);
  EXPECT_EQ(out[0].frame, arp(kBroadcast, kPort1, 1, kPort1, kNode1, kZero, kLatePod));
  EXPECT_EQ(w_->n_held, 1);
  // The answer arrives: the parked SYN goes out to the learnt MAC.
  EXPECT_TRUE(run(arp(kPort1, kLateMac, 2, kLateMac, kLatePod, kPort1, kNode1), 1).empty());
  service_held(*w_);
  out = take();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame,
            tcp(kLateMac, kPort1, kClient, 40000, kLatePod, 80, 0x02, "", {.ttl = 63}));
  EXPECT_EQ(w_->n_held, 0);
}

TEST_F(pipeline, DropsHeldPacketsWhenArpGoesUnanswered) {
  run(tcp(kPort0, kClientMac, kClient, 40000, kLateVip, 80, 0x02), 0);
  ASSERT_EQ(w_->n_held, 1);
  w_->now += 2 * dp_->hold_tsc;
  service_held(*w_);
  EXPECT_EQ(w_->n_held, 0);
  EXPECT_EQ(drops(drop::neighbor_timeout), 1u);
}

TEST_F(pipeline, BurstOfMixedPackets) {
  // A whole burst in one call: each packet gets its own verdict.
  rte_mbuf* pkts[3];
  bytes frames[3] = {tcp(kPort0, kClientMac, kClient, 1, kVip, 80, 0x02), bytes(5, 0),
                     udp(kPort0, kClientMac, kClient, 2, kUdpVip, 53, "q")};
  for (int i = 0; i < 3; ++i) {
    pkts[i] = rte_pktmbuf_alloc(dp_->pool);
    std::memcpy(rte_pktmbuf_append(pkts[i], static_cast<uint16_t>(frames[i].size())),
                frames[i].data(), frames[i].size());
  }
  w_->now = rte_rdtsc();
  process_burst(*w_, snap_.get(), pkts, 3, 0);
  EXPECT_EQ(take().size(), 2u);
  EXPECT_EQ(drops(drop::eth_truncated), 1u);
}

}  // namespace
}  // namespace ferry::dp

namespace ferry::dp {
namespace {

using namespace ferry::dp::testing;

TEST_F(pipeline, MasqueradesAPodReachingAServiceOnItsOwnSubnet) {
  const uint32_t other_pod = 0xc6120132;  // 198.18.1.50, on eth1 like the backend
  const mac other_mac{0x02, 0xb0, 0, 0, 0, 0x50};
  od_->learn(1, other_pod, to_ether(other_mac));
  auto out = run(tcp(kPort1, other_mac, other_pod, 45000, kVip, 80, 0x02), 1);
  ASSERT_EQ(out.size(), 1u);
  // The backend sees the node (198.18.1.254) as the source, on a port ferryd picked.
  uint16_t snat_port = static_cast<uint16_t>(out[0].frame[34] << 8 | out[0].frame[35]);
  EXPECT_GE(snat_port, 32768);
  EXPECT_EQ(out[0].frame,
            tcp(kPodMac, kPort1, kNode1, snat_port, kPod, 9376, 0x02, "", {.ttl = 63}));
  // The reply comes back to the node address and goes to the pod as from the VIP.
  out = run(tcp(kPort1, kPodMac, kPod, 9376, kNode1, snat_port, 0x12), 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame,
            tcp(other_mac, kPort1, kVip, 80, other_pod, 45000, 0x12, "", {.ttl = 63}));
  // Hairpin: the backend reaching its own Service is masqueraded too.
  out = run(tcp(kPort1, kPodMac, kPod, 46000, kVip, 80, 0x02), 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame[26], 198);  // source 198.18.1.254, not the pod itself
  EXPECT_EQ(out[0].frame[29], 254);
}

TEST_F(pipeline, FullTableStillForwardsByMaglevAndCountsIt) {
  conntrack& ct = *dp_->ct;
  for (uint32_t i = 0; i < ct.capacity(); ++i) {
    flow_key k{0xc6120002, kVip, static_cast<uint16_t>(1024 + i), 80, kProtoTcp};
    ASSERT_NE(ct.insert(w_->ct, k, {kPod, 9376}, 0, flow_state::tcp_established, 0), nullptr);
  }
  auto out = run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x02), 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame, tcp(kPodMac, kPort1, kClient, 40000, kPod, 9376, 0x02, "", {.ttl = 63}));
  EXPECT_EQ(w_->counters.flows_table_full.get(), 1u);
  EXPECT_EQ(w_->counters.stateless_forward.get(), 1u);
  // Its reply has no entry either: un-NATed from the backend table.
  out = run(tcp(kPort1, kPodMac, kPod, 9376, kClient, 40000, 0x12), 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame, tcp(kClientMac, kPort0, kVip, 80, kClient, 40000, 0x12, "", {.ttl = 63}));
  EXPECT_EQ(w_->counters.stateless_reply.get(), 1u);
}

TEST_F(pipeline, WhatExceedsTheOutgoingMtuLeavesInFragmentsUnlessDontFragment) {
  // DF: not forwarded; the client hears fragmentation needed (the ICMP tests check it).
  auto out = run(udp(kPort0, kClientMac, kClient, 5000, kUdpVip, 53, std::string(1500, 'x'), true,
                     {.frag = RTE_IPV4_HDR_DF_FLAG}),
                 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].port, 0);
  EXPECT_EQ(drops(drop::frag_needed), 1u);
  // Without DF it leaves in two fragments (the fragment tests below check their bytes).
  EXPECT_EQ(
      run(udp(kPort0, kClientMac, kClient, 5002, kUdpVip, 53, std::string(1500, 'x')), 0).size(),
      2u);
  EXPECT_EQ(drops(drop::mtu_exceeded), 0u);
  // 1472 bytes of payload is exactly a 1500-byte IP packet: it fits.
  EXPECT_EQ(
      run(udp(kPort0, kClientMac, kClient, 5001, kUdpVip, 53, std::string(1472, 'x')), 0).size(),
      1u);
}

// ---- IPv4 fragments -----------------------------------------------------------

// One fragment of `frame` (Ethernet + IPv4 without options), as a sender makes it: IP payload
// bytes [off, off + len), MF as given, the header copied (ID kept), length and checksum redone.
bytes piece(const bytes& frame, size_t off, size_t len, bool more) {
  bytes b(frame.begin(), frame.begin() + kL4);
  b.insert(b.end(), frame.begin() + static_cast<long>(kL4 + off),
           frame.begin() + static_cast<long>(kL4 + off + len));
  put16(b, kIp + 2, static_cast<uint16_t>(20 + len));
  put16(b, kIp + 6, static_cast<uint16_t>((more ? 0x2000 : 0) | off / 8));
  b[kIp + 10] = b[kIp + 11] = 0;
  const uint16_t c = csum(&b[kIp], 20);
  std::memcpy(&b[kIp + 10], &c, 2);
  return b;
}

// What a receiver rebuilds from fragments sent on `port` (in any order), checking each one on
// the way: valid header checksum, within a 1500-byte MTU, the IP ID of the original.
bytes rebuilt(const std::vector<output>& frags, uint16_t port, uint16_t id = 0x1234) {
  bytes head, payload;
  for (const auto& f : frags) {
    EXPECT_EQ(f.port, port);
    EXPECT_LE(f.frame.size(), 14u + 1500u);
    const uint8_t* ip = &f.frame[kIp];
    EXPECT_EQ(csum(ip, 20), 0) << "header checksum";
    EXPECT_EQ(ip[4] << 8 | ip[5], id);
    const size_t off = ((ip[6] << 8 | ip[7]) & 0x1fff) * 8u;
    const size_t len = (ip[2] << 8 | ip[3]) - 20u;
    EXPECT_EQ(f.frame.size(), kL4 + len);
    if (payload.size() < off + len) payload.resize(off + len);
    std::memcpy(&payload[off], &f.frame[kL4], len);
    if (off == 0) head.assign(f.frame.begin(), f.frame.begin() + kL4);
  }
  if (head.empty()) return {};
  put16(head, kIp + 2, static_cast<uint16_t>(20 + payload.size()));
  put16(head, kIp + 6, 0);
  head[kIp + 10] = head[kIp + 11] = 0;
  const uint16_t c = csum(&head[kIp], 20);
  std::memcpy(&head[kIp + 10], &c, 2);
  head.insert(head.end(), payload.begin(), payload.end());
  return head;
}

std::string pattern(size_t n) {
  std::string s(n, 0);
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + i * 7 % 26);
  return s;
}

// 3000 bytes of UDP payload: 3008 bytes of IP payload, 1480 + 1480 + 48 on a 1500 MTU.
const std::string kBig = pattern(3000);

TEST_F(pipeline, ReassemblesInOrderFragmentsTranslatesAndFragmentsForTheMtu) {
  const bytes in = udp(kPort0, kClientMac, kClient, 40000, kUdpVip, 53, kBig);
  EXPECT_TRUE(run(piece(in, 0, 1480, true), 0).empty());
  EXPECT_TRUE(run(piece(in, 1480, 1480, true), 0).empty());
  EXPECT_EQ(w_->counters.frag_held.get(), 2u);
  auto out = run(piece(in, 2960, 48, false), 0);
  // The NATed datagram, checksums computed from scratch, rebuilt from what left: 3036 bytes
  // of IP do not fit eth1's 1500, so three fragments.
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(rebuilt(out, 1),
            udp(kPodMac, kPort1, kClient, 40000, kPod, 9376, kBig, true, {.ttl = 63}));
  EXPECT_EQ(w_->counters.frag_received.get(), 3u);
  EXPECT_EQ(w_->counters.frag_reassembled.get(), 1u);
  EXPECT_EQ(w_->counters.frag_held.get(), 0u);
  EXPECT_EQ(w_->counters.frag_fragmented.get(), 1u);
  EXPECT_EQ(w_->counters.frag_sent.get(), 3u);
  EXPECT_EQ(w_->counters.flows_created.get(), 1u);
}

TEST_F(pipeline, ReassemblesOutOfOrderIntoOneChainedPacketWithRightChecksums) {
  dp_->ports[1].mtu = 9000;  // the whole datagram leaves as it is: a chain of three mbufs
  const bytes in = udp(kPort0, kClientMac, kClient, 40001, kUdpVip, 53, kBig);
  EXPECT_TRUE(run(piece(in, 2960, 48, false), 0).empty());
  EXPECT_TRUE(run(piece(in, 0, 1480, true), 0).empty());
  auto out = run(piece(in, 1480, 1480, true), 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].port, 1);
  EXPECT_EQ(out[0].frame,
            udp(kPodMac, kPort1, kClient, 40001, kPod, 9376, kBig, true, {.ttl = 63}));
  EXPECT_EQ(w_->counters.frag_fragmented.get(), 0u);
}

TEST_F(pipeline, ReassemblesAFragmentedReplyAndUnNatsIt) {
  ASSERT_EQ(run(udp(kPort0, kClientMac, kClient, 40002, kUdpVip, 53, "q"), 0).size(), 1u);
  const bytes reply = udp(kPort1, kPodMac, kPod, 9376, kClient, 40002, kBig, true, {.id = 0x4321});
  EXPECT_TRUE(run(piece(reply, 1480, 1480, true), 1).empty());
  EXPECT_TRUE(run(piece(reply, 0, 1480, true), 1).empty());
  auto out = run(piece(reply, 2960, 48, false), 1);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(rebuilt(out, 0, 0x4321), udp(kClientMac, kPort0, kUdpVip, 53, kClient, 40002, kBig,
                                         true, {.ttl = 63, .id = 0x4321}));
}

TEST_F(pipeline, DuplicateOrOverlappingFragmentsDropTheDatagram) {
  const bytes in = udp(kPort0, kClientMac, kClient, 40003, kUdpVip, 53, kBig);
  // The first fragment twice: rte_ip_frag gives the datagram up (both counted).
  EXPECT_TRUE(run(piece(in, 0, 1480, true), 0).empty());
  EXPECT_TRUE(run(piece(in, 0, 1480, true), 0).empty());
  EXPECT_EQ(drops(drop::frag_overlap), 2u);
  EXPECT_EQ(w_->counters.frag_held.get(), 0u);
  // The rest starts a datagram that can no longer complete.
  EXPECT_TRUE(run(piece(in, 1480, 1480, true), 0).empty());
  EXPECT_TRUE(run(piece(in, 2960, 48, false), 0).empty());
  EXPECT_EQ(w_->counters.frag_held.get(), 2u);
  EXPECT_EQ(w_->counters.frag_reassembled.get(), 0u);

  // Overlapping pieces (the second starts 488 bytes inside the first): nothing forwarded.
  const bytes other =
      udp(kPort0, kClientMac, kClient, 40004, kUdpVip, 53, kBig, true, {.id = 0x5555});
  EXPECT_TRUE(run(piece(other, 0, 1480, true), 0).empty());
  EXPECT_TRUE(run(piece(other, 992, 1480, true), 0).empty());
  EXPECT_TRUE(run(piece(other, 2472, 536, false), 0).empty());
  EXPECT_EQ(drops(drop::frag_overlap), 5u);
  EXPECT_EQ(w_->counters.frag_reassembled.get(), 0u);
  EXPECT_EQ(w_->counters.flows_created.get(), 0u);
}

TEST_F(pipeline, IncompleteDatagramsTimeOut) {
  const bytes in = udp(kPort0, kClientMac, kClient, 40005, kUdpVip, 53, kBig);
  EXPECT_TRUE(run(piece(in, 0, 1480, true), 0).empty());
  EXPECT_TRUE(run(piece(in, 1480, 1480, true), 0).empty());
  // The worker loop's sweep, timeout_ms (2 s) later.
  w_->now = rte_rdtsc() + dp_->frag_timeout_tsc + dp_->tsc_hz / 10;
  expire_fragments(*w_);
  EXPECT_EQ(drops(drop::frag_timeout), 2u);
  EXPECT_EQ(w_->counters.frag_held.get(), 0u);
  // A fragment of a timed-out datagram found by a lookup before the sweep: the old part is
  // counted, the new fragment starts over.
  EXPECT_TRUE(run(piece(in, 0, 1480, true), 0).empty());
  skew_ = dp_->frag_timeout_tsc + dp_->tsc_hz / 10;
  EXPECT_TRUE(run(piece(in, 2960, 48, false), 0).empty());
  EXPECT_EQ(drops(drop::frag_timeout), 3u);
  EXPECT_EQ(w_->counters.frag_held.get(), 1u);
}

TEST_F(pipeline, EightFragmentsReassembleANinthIsTooMany) {
  ASSERT_EQ(kMaxFragments, 8u);  // DPDK's build setting; the docs quote it
  // 64 bytes of IP payload in eight 8-byte fragments: reassembled.
  const bytes eight = udp(kPort0, kClientMac, kClient, 40006, kUdpVip, 53, pattern(56));
  std::vector<output> out;
  for (size_t i = 0; i < 8; ++i) out = run(piece(eight, i * 8, 8, i < 7), 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame,
            udp(kPodMac, kPort1, kClient, 40006, kPod, 9376, pattern(56), true, {.ttl = 63}));
  // 80 bytes in ten: the seventh middle fragment has no slot; the datagram is dropped.
  const bytes ten =
      udp(kPort0, kClientMac, kClient, 40007, kUdpVip, 53, pattern(72), true, {.id = 0x7777});
  for (size_t i = 0; i < 8; ++i) EXPECT_TRUE(run(piece(ten, i * 8, 8, true), 0).empty());
  EXPECT_EQ(drops(drop::frag_too_many), 8u);
  EXPECT_EQ(w_->counters.frag_held.get(), 0u);
}

// Two bursts (two ports in one loop iteration, say) of fragments that each make rte_ip_frag
// give a datagram up: 64 x 8 mbufs for a death row of 288 before the loop frees it; it is
// freed early instead of overrun.
TEST_F(pipeline, BurstsOfFailingDatagramsDoNotOverrunTheDeathRow) {
  const unsigned before = rte_mempool_avail_count(dp_->pool);
  constexpr uint16_t kTrains = 2 * kBurst;
  std::vector<bytes> last;
  for (uint16_t t = 0; t < kTrains; ++t) {
    const bytes ten = udp(kPort0, kClientMac, kClient, 40010, kUdpVip, 53, pattern(72), true,
                          {.id = static_cast<uint16_t>(100 + t)});
    for (size_t i = 0; i < 7; ++i) EXPECT_TRUE(run(piece(ten, i * 8, 8, true), 0).empty());
    last.push_back(piece(ten, 7 * 8, 8, true));
  }
  EXPECT_EQ(w_->counters.frag_held.get(), kTrains * 7u);
  w_->now = rte_rdtsc();
  for (uint16_t b = 0; b < 2; ++b) {
    rte_mbuf* pkts[kBurst];
    for (uint16_t t = 0; t < kBurst; ++t) {
      const bytes& f = last[b * kBurst + t];
      pkts[t] = rte_pktmbuf_alloc(dp_->pool);
      std::memcpy(rte_pktmbuf_append(pkts[t], static_cast<uint16_t>(f.size())), f.data(), f.size());
    }
    process_burst(*w_, snap_.get(), pkts, kBurst, b);
  }
  EXPECT_LE(w_->frag.dr.cnt, uint32_t{RTE_IP_FRAG_DEATH_ROW_MBUF_LEN});
  EXPECT_TRUE(take().empty());
  EXPECT_EQ(drops(drop::frag_too_many), kTrains * 8u);
  EXPECT_EQ(w_->counters.frag_held.get(), 0u);
  expire_fragments(*w_);  // frees what is left on the death row
  EXPECT_EQ(rte_mempool_avail_count(dp_->pool), before);
}

TEST_F(pipeline, FragmentLimitsAreCountedDrops) {
  const bytes in = udp(kPort0, kClientMac, kClient, 40008, kUdpVip, 53, kBig);
  // Held fragments are capped (max_held): the pool stays for normal traffic.
  dp_->frag_max_held = 2;
  for (uint16_t id = 1; id <= 3; ++id) {
    const bytes d = udp(kPort0, kClientMac, kClient, 40008, kUdpVip, 53, kBig, true, {.id = id});
    EXPECT_TRUE(run(piece(d, 0, 1480, true), 0).empty());
  }
  EXPECT_EQ(drops(drop::frag_no_room), 1u);
  EXPECT_EQ(w_->counters.frag_held.get(), 2u);
  // Normal traffic is untouched by held fragments.
  EXPECT_EQ(run(udp(kPort0, kClientMac, kClient, 40009, kUdpVip, 53, "q"), 0).size(), 1u);

  // max_size: a fragment reaching past it.
  rebuild({.fragments = {.max_size = 2000}});
  EXPECT_TRUE(run(piece(in, 1480, 1480, true), 0).empty());
  EXPECT_EQ(drops(drop::frag_oversized), 1u);
  EXPECT_TRUE(run(piece(in, 0, 1480, true), 0).empty());  // 1500 bytes: within
  EXPECT_EQ(w_->counters.frag_held.get(), 1u);

  // max_datagrams: a third incomplete datagram finds no entry.
  rebuild({.fragments = {.max_datagrams = 2}});
  for (uint16_t id = 1; id <= 3; ++id) {
    const bytes d = udp(kPort0, kClientMac, kClient, 40008, kUdpVip, 53, kBig, true, {.id = id});
    EXPECT_TRUE(run(piece(d, 0, 1480, true), 0).empty());
  }
  EXPECT_EQ(drops(drop::frag_table_full), 1u);
  EXPECT_EQ(w_->counters.frag_held.get(), 2u);

  // enabled = false: every fragment dropped as before.
  rebuild({.fragments = {.enabled = false}});
  EXPECT_TRUE(run(piece(in, 0, 1480, true), 0).empty());
  EXPECT_EQ(drops(drop::ip_fragment), 1u);
}

// Random fragments (offsets, lengths, flags, IDs, bytes): nothing crashes, nothing leaks.
TEST_F(pipeline, RandomFragmentsNeverCrashOrLeak) {
  const unsigned before = rte_mempool_avail_count(dp_->pool);
  dp_->frag_max_held = 256;
  uint64_t x = 88172645463325252ull;
  auto next = [&] {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  for (int i = 0; i < 20000; ++i) {
    const size_t len = 8 * (next() % 40) + next() % 9;
    const bytes d = udp(kPort0, kClientMac, kClient, static_cast<uint16_t>(40000 + next() % 4),
                        next() % 2 ? kUdpVip : kVip, 53, pattern(1500), true,
                        {.id = static_cast<uint16_t>(next() % 16)});
    const size_t room = d.size() - kL4;  // IP payload bytes of the datagram
    const size_t off = 8 * (next() % (room / 8));
    bytes f = piece(d, off, std::min(len, room - off), next() % 3 != 0);
    if (next() % 5 == 0) skew_ += dp_->tsc_hz / 4;
    run(f, static_cast<uint16_t>(next() % 2));
    if (next() % 50 == 0) expire_fragments(*w_);
    ASSERT_LE(w_->counters.frag_held.get(), 256u);
  }
  w_->now = rte_rdtsc() + skew_ + 2 * dp_->frag_timeout_tsc;
  expire_fragments(*w_);
  EXPECT_EQ(w_->counters.frag_held.get(), 0u);
  EXPECT_EQ(rte_mempool_avail_count(dp_->pool), before);
  // And a well-formed datagram still makes it through afterwards.
  skew_ = 0;
  const bytes in = udp(kPort0, kClientMac, kClient, 41000, kUdpVip, 53, kBig, true, {.id = 999});
  run(piece(in, 1480, 1480, true), 0);
  run(piece(in, 0, 1480, true), 0);
  auto out = run(piece(in, 2960, 48, false), 0);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(rebuilt(out, 1, 999),
            udp(kPodMac, kPort1, kClient, 41000, kPod, 9376, kBig, true, {.ttl = 63, .id = 999}));
}

// A NodePort Service whose pod runs on another node, and one whose pod runs here.
std::string node_port_service(const char* name, int node_port, const char* policy,
                              const char* pod_node) {
  return std::string("apiVersion: v1\nkind: Service\nmetadata: {name: ") + name +
         "}\nspec:\n  type: NodePort\n  externalTrafficPolicy: " + policy +
         "\n  ports: [{port: 80, targetPort: 9376, nodePort: " + std::to_string(node_port) +
         "}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: " +
         name + "-1\n  labels: {kubernetes.io/service-name: " + name +
         "}\naddressType: IPv4\nports: [{name: \"\", port: 9376}]\nendpoints:\n"
         "- {addresses: [198.18.1.11], nodeName: " +
         pod_node + "}\n---\n";
}

uint16_t src_port_of(const bytes& frame) {
  return static_cast<uint16_t>(frame[34] << 8 | frame[35]);
}

TEST_F(pipeline, NodePortWithPolicyClusterSnatsToTheNodeAddress) {
  use(node_port_service("np", 30080, "Cluster", "edge-2").c_str());
  // To the node's address on eth0, port 30080: DNATed to the pod, and since the pod is on
  // another node, SNATed to the address ferryd leaves eth1 with.
  auto out = run(tcp(kPort0, kClientMac, kClient, 40000, kNode0, 30080, 0x02), 0);
  ASSERT_EQ(out.size(), 1u);
  uint16_t snat_port = src_port_of(out[0].frame);
  EXPECT_GE(snat_port, 32768);
  EXPECT_EQ(out[0].frame,
            tcp(kPodMac, kPort1, kNode1, snat_port, kPod, 9376, 0x02, "", {.ttl = 63}));
  EXPECT_EQ(w_->counters.snat_flows.get(), 1u);
  // The answer comes back to the node and leaves as from the node address and NodePort.
  out = run(tcp(kPort1, kPodMac, kPod, 9376, kNode1, snat_port, 0x12), 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame,
            tcp(kClientMac, kPort0, kNode0, 30080, kClient, 40000, 0x12, "", {.ttl = 63}));
  // The same NodePort answers on the other node address too; other ports there are not ours.
  EXPECT_EQ(run(tcp(kPort0, kClientMac, kClient, 40001, kNode1, 30080, 0x02), 0).size(), 1u);
  EXPECT_TRUE(run(tcp(kPort0, kClientMac, kClient, 40002, kNode0, 30081, 0x02), 0).empty());
  EXPECT_EQ(drops(drop::local_unhandled), 1u);
}

TEST_F(pipeline, PolicyLocalKeepsTheClientAddressAndDropsWithoutLocalEndpoints) {
  use((node_port_service("here", 30081, "Local", "edge-1") +
       node_port_service("away", 30082, "Local", "edge-2") +
       node_port_service("cluster-here", 30083, "Cluster", "edge-1"))
          .c_str());
  auto out = run(tcp(kPort0, kClientMac, kClient, 40000, kNode0, 30081, 0x02), 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame, tcp(kPodMac, kPort1, kClient, 40000, kPod, 9376, 0x02, "", {.ttl = 63}));
  // Policy Cluster with the endpoint on this node: no SNAT either.
  out = run(tcp(kPort0, kClientMac, kClient, 40001, kNode0, 30083, 0x02), 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame, tcp(kPodMac, kPort1, kClient, 40001, kPod, 9376, 0x02, "", {.ttl = 63}));
  // Local with the only endpoint elsewhere: dropped and counted, not rejected.
  EXPECT_TRUE(run(tcp(kPort0, kClientMac, kClient, 40002, kNode0, 30082, 0x02), 0).empty());
  EXPECT_EQ(drops(drop::no_local_endpoints), 1u);
  EXPECT_EQ(w_->counters.icmp_unreach_sent.get(), 0u);
  // Its ClusterIP (internalTrafficPolicy Cluster) still reaches the remote endpoint.
  const auto* away = snap_->vips.find(service_key(0, kProtoTcp, 30082));
  ASSERT_NE(away, nullptr);
  EXPECT_FALSE((*away)->has_active);
  EXPECT_TRUE((*away)->drop_empty);
}

// A client reuses its source port for a second frontend of the same backend: both flows
// would have one reply key (pod:9376 -> client:40000), and the first flow's entry would
// take the second's replies. The second flow keeps the client's address and gets another
// source port, as Linux conntrack resolves the clash; replies go back to each frontend.
TEST_F(pipeline, ASecondFrontendOfTheSameBackendFromTheSamePortGetsAnotherPort) {
  use((node_port_service("here", 30081, "Local", "edge-1") +
       node_port_service("cluster-here", 30083, "Cluster", "edge-1"))
          .c_str());
  const ip_opts t63{.ttl = 63};
  auto out = run(tcp(kPort0, kClientMac, kClient, 40000, kNode0, 30081, 0x02), 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame, tcp(kPodMac, kPort1, kClient, 40000, kPod, 9376, 0x02, "", t63));
  out = run(tcp(kPort0, kClientMac, kClient, 40000, kNode0, 30083, 0x02), 0);
  ASSERT_EQ(out.size(), 1u);
  const uint16_t remapped = src_port_of(out[0].frame);
  EXPECT_NE(remapped, 40000);
  EXPECT_EQ(out[0].frame, tcp(kPodMac, kPort1, kClient, remapped, kPod, 9376, 0x02, "", t63));
  EXPECT_EQ(w_->counters.port_remapped.get(), 1u);
  EXPECT_EQ(w_->counters.snat_flows.get(), 0u);  // not masqueraded: the address is the client's
  // Each SYN-ACK leaves from its own frontend, to the client's own port.
  out = run(tcp(kPort1, kPodMac, kPod, 9376, kClient, remapped, 0x12), 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame, tcp(kClientMac, kPort0, kNode0, 30083, kClient, 40000, 0x12, "", t63));
  out = run(tcp(kPort1, kPodMac, kPod, 9376, kClient, 40000, 0x12), 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame, tcp(kClientMac, kPort0, kNode0, 30081, kClient, 40000, 0x12, "", t63));
  // The second flow's data keeps its port; the first's is untouched.
  out = run(tcp(kPort0, kClientMac, kClient, 40000, kNode0, 30083, 0x18, "GET /"), 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame, tcp(kPodMac, kPort1, kClient, remapped, kPod, 9376, 0x18, "GET /", t63));
  EXPECT_EQ(w_->counters.port_remapped.get(), 1u);
  EXPECT_EQ(w_->counters.flows_created.get(), 2u);
  // ferryctl trace says so for a third flow from that port (the NodePort on the other
  // node address: a new forward key, the same reply key).
  dp_->snap.store(snap_.get());
  const trace_result t = trace(*dp_, kProtoTcp, kClient, 40000, kNode1, 30083);
  EXPECT_TRUE(t.src_port_chosen_later) << t.reason;
  EXPECT_EQ(t.nat_src_ip, kClient) << t.reason;
}

const char* kLoadBalancer = R"yaml(
apiVersion: v1
kind: Service
metadata: {name: lb}
spec:
  type: LoadBalancer
  loadBalancerSourceRanges: [198.18.0.0/28]
  externalIPs: [198.18.0.77]
  ports: [{port: 80, targetPort: 9376, nodePort: 30090}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: lb}
subsets: [{addresses: [{ip: 198.18.1.11, nodeName: edge-1}], ports: [{port: 9376}]}]
)yaml";

TEST_F(pipeline, LoadBalancerAddressIsAnnouncedAndFilteredBySourceRanges) {
  use(kLoadBalancer);
  // The pool 198.18.0.200/29 gave the Service an address; ferryd answers ARP for it on
  // eth0 (its subnet), not on eth1, and not for the externalIP (the administrator routes
  // those, as with kube-proxy: another host may own that address on the subnet).
  const auto* e = snap_->vips.find(service_key(0, kProtoTcp, 30090));
  ASSERT_NE(e, nullptr);
  uint32_t lb_ip = 0;
  for (const auto* entry : snap_->ports()) {
    if (entry->external && entry->vip && entry->vip != 0xc612004d) lb_ip = entry->vip;
  }
  ASSERT_GE(lb_ip, 0xc61200c9u);
  ASSERT_LE(lb_ip, 0xc61200ceu);
  auto out = run(arp(kBroadcast, kClientMac, 1, kClientMac, kClient, kZero, lb_ip), 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame, arp(kClientMac, kPort0, 2, kPort0, lb_ip, kClientMac, kClient));
  EXPECT_TRUE(
      run(arp(kBroadcast, kClientMac, 1, kClientMac, kClient, kZero, 0xc612004d), 0).empty());
  EXPECT_TRUE(run(arp(kBroadcast, kPodMac, 1, kPodMac, kPod, kZero, lb_ip), 1).empty());

  // 198.18.0.1 is inside 198.18.0.0/28: served. 198.18.0.33 is not: dropped at the LB
  // address, but its NodePort and the externalIP are not filtered (as in kube-proxy).
  out = run(tcp(kPort0, kClientMac, kClient, 40000, lb_ip, 80, 0x02), 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame, tcp(kPodMac, kPort1, kClient, 40000, kPod, 9376, 0x02, "", {.ttl = 63}));
  const uint32_t outsider = 0xc6120021;
  od_->learn(0, outsider, to_ether(kClientMac));
  EXPECT_TRUE(run(tcp(kPort0, kClientMac, outsider, 40001, lb_ip, 80, 0x02), 0).empty());
  EXPECT_EQ(drops(drop::source_denied), 1u);
  EXPECT_EQ(run(tcp(kPort0, kClientMac, outsider, 40002, kNode0, 30090, 0x02), 0).size(), 1u);
  EXPECT_EQ(run(tcp(kPort0, kClientMac, outsider, 40003, 0xc612004d, 80, 0x02), 0).size(), 1u);
}

const char* kSticky = R"yaml(
apiVersion: v1
kind: Service
metadata: {name: sticky}
spec:
  clusterIP: 198.19.10.60
  sessionAffinity: ClientIP
  ports: [{port: 80, targetPort: 9376}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: sticky-1
  labels: {kubernetes.io/service-name: sticky}
addressType: IPv4
ports: [{name: "", port: 9376}]
endpoints:
)yaml";

std::string sticky_with(const std::vector<std::pair<uint32_t, bool>>& pods) {
  std::string out = kSticky;
  for (auto [ip, ready] : pods) {
    out += "- {addresses: [" + format_ipv4(ip) +
           "], conditions: {ready: " + (ready ? "true" : "false") + "}}\n";
  }
  return out;
}

TEST_F(pipeline, ClientIpAffinityKeepsAClientOnItsBackendAcrossChanges) {
  constexpr uint32_t kVipSticky = 0xc6130a3c;  // 198.19.10.60
  std::vector<uint32_t> pods;
  for (uint32_t i = 0; i < 8; ++i) {
    pods.push_back(0xc6120120 + i);  // 198.18.1.32 ...
    od_->learn(1, pods.back(), to_ether(kPodMac));
  }
  auto backend_of = [&](uint16_t sport) {
    auto out = run(tcp(kPort0, kClientMac, kClient, sport, kVipSticky, 80, 0x02), 0);
    EXPECT_EQ(out.size(), 1u);
    if (out.empty()) return 0u;
    const bytes& f = out[0].frame;
    return uint32_t{f[30]} << 24 | uint32_t{f[31]} << 16 | uint32_t{f[32]} << 8 | f[33];
  };
  std::vector<std::pair<uint32_t, bool>> four;
  for (size_t i = 0; i < 4; ++i) four.push_back({pods[i], true});
  use(sticky_with(four).c_str());
  // Twenty connections from one client (different source ports) land on one backend.
  const uint32_t first = backend_of(50000);
  for (uint16_t i = 1; i < 20; ++i) EXPECT_EQ(backend_of(static_cast<uint16_t>(50000 + i)), first);

  // Four more endpoints: Maglev alone would move many clients; this one stays.
  std::vector<std::pair<uint32_t, bool>> eight;
  for (auto p : pods) eight.push_back({p, true});
  use(sticky_with(eight).c_str());
  const auto* entry = snap_->vips.find(service_key(kVipSticky, kProtoTcp, 80));
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ(backend_of(50100), first);
  EXPECT_GE(w_->counters.affinity_reused.get(), 20u);

  // Its backend stops being ready: the client moves, and then sticks to the new one.
  for (auto& p : eight) p.second = p.first != first;
  use(sticky_with(eight).c_str());
  const uint32_t second = backend_of(50200);
  EXPECT_NE(second, first);
  EXPECT_NE(second, 0u);
  EXPECT_EQ(backend_of(50201), second);
}

TEST(affinity_table, RemembersWithinTheTimeoutAndEvictsTheOldest) {
  affinity_table t(1024);
  const uint64_t k = affinity_table::key(0xc6120001, 42);
  uint32_t ip = 0;
  uint16_t port = 0;
  EXPECT_FALSE(t.find(k, 100, 10, ip, port));
  t.remember(k, 0xc612010b, 9376, 100);
  ASSERT_TRUE(t.find(k, 110, 10, ip, port));
  EXPECT_EQ(ip, 0xc612010bu);
  EXPECT_EQ(port, 9376);
  EXPECT_FALSE(t.find(k, 111, 10, ip, port));  // timed out
  // Ticks wrap in 16 bits: an age across the wrap is still right.
  t.remember(k, 0xc612010c, 80, 65530);
  ASSERT_TRUE(t.find(k, 4, 10, ip, port));
  EXPECT_EQ(ip, 0xc612010cu);
  // Five clients in one 4-way bucket: the least recently used one goes.
  affinity_table small(4);
  for (uint32_t c = 1; c <= 5; ++c) {
    small.remember(affinity_table::key(c, 1), c, 1, static_cast<uint16_t>(c));
  }
  EXPECT_FALSE(small.find(affinity_table::key(1, 1), 5, 100, ip, port));
  for (uint32_t c = 2; c <= 5; ++c)
    EXPECT_TRUE(small.find(affinity_table::key(c, 1), 5, 100, ip, port));
}

// `ferryctl trace` decides with the packet path's own functions: for many new flows the
// backend it names is the one the flow then gets; it creates nothing; and it reports an
// existing flow (until that flow is flushed).
TEST_F(pipeline, TraceNamesTheBackendTheFlowGetsAndCreatesNothing) {
  use(R"yaml(
apiVersion: v1
kind: Service
metadata: {name: many}
spec:
  clusterIP: 198.19.10.60
  ports: [{name: http, port: 80, targetPort: 9376}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: many}
subsets: [{addresses: [{ip: 198.18.1.11}, {ip: 198.18.1.12}, {ip: 198.18.1.13}],
           ports: [{name: http, port: 9376}]}]
)yaml");
  dp_->snap.store(snap_.get());
  constexpr uint32_t kManyVip = 0xc6130a00 + 60;
  for (uint16_t sport = 20000; sport < 20060; ++sport) {
    SCOPED_TRACE(sport);
    const uint64_t created = w_->counters.flows_created.get();
    auto t = trace(*dp_, kProtoTcp, kClient, sport, kManyVip, 80);
    ASSERT_STREQ(t.decision, "maglev");
    ASSERT_STREQ(t.verdict, "forward");
    ASSERT_NE(t.chosen, nullptr);
    ASSERT_EQ(t.nat_src_ip, kClient);  // not masqueraded: client and pod on different ports
    EXPECT_EQ(w_->counters.flows_created.get(), created);  // nothing made
    run(tcp(kPort0, kClientMac, kClient, sport, kManyVip, 80, 0x02), 0);
    flow_filter f;
    f.client_ip = kClient;
    f.client_port = sport;
    uint64_t active = 0, matched = 0;
    auto flows = list_flows(*dp_, f, 10, active, matched);
    ASSERT_EQ(flows.size(), 1u);
    EXPECT_EQ(flows[0].backend_ip, t.chosen->ip);
    auto again = trace(*dp_, kProtoTcp, kClient, sport, kManyVip, 80);
    EXPECT_STREQ(again.decision, "existing_flow");
    EXPECT_EQ(again.nat_dst_ip, t.chosen->ip);
    EXPECT_EQ(flush_flows(*dp_, f), 1u);
    EXPECT_STREQ(trace(*dp_, kProtoTcp, kClient, sport, kManyVip, 80).decision, "maglev");
  }
  // The snapshot of SetUp: no endpoints (reject), a backend without a route (drop), a pod
  // on the client's own subnet (hairpin: masqueraded to the node, port chosen later).
  use(kManifests);
  dp_->snap.store(snap_.get());
  auto empty = trace(*dp_, kProtoTcp, kClient, 1000, kEmptyVip, 80);
  EXPECT_STREQ(empty.decision, "no_endpoints");
  EXPECT_STREQ(empty.verdict, "reject");
  EXPECT_STREQ(trace(*dp_, kProtoTcp, kClient, 1000, kOffnetVip, 80).verdict, "drop");
  auto hairpin = trace(*dp_, kProtoTcp, kPod, 1000, kVip, 80);
  EXPECT_STREQ(hairpin.verdict, "forward");
  EXPECT_EQ(hairpin.nat_src_ip, kNode1);
  EXPECT_TRUE(hairpin.src_port_chosen_later);
  EXPECT_EQ(w_->counters.drops[static_cast<size_t>(drop::no_endpoints)].get(), 0u);
  EXPECT_STREQ(trace(*dp_, kProtoTcp, kClient, 1, kNode0, 22).verdict, "drop");
  EXPECT_EQ(trace(*dp_, kProtoTcp, kClient, 1, kNode0, 22).match,
            trace_result::match_kind::node_address);
  // The new-flow checks come before the service lookup, as in the packet path.
  for (auto [src, sport, dst, why] : {std::tuple{0xe0000001u, uint16_t{1000}, kVip, "src_martian"},
                                      std::tuple{kVip, uint16_t{1000}, kVip, "land"},
                                      std::tuple{kClient, uint16_t{0}, kVip, "port_zero"}}) {
    auto r = trace(*dp_, kProtoTcp, src, sport, dst, 80);
    EXPECT_STREQ(r.decision, "refused") << why;
    EXPECT_STREQ(r.verdict, "drop") << why;
    EXPECT_NE(r.reason.find(why), std::string::npos) << r.reason;
  }
  dp_->snap.store(nullptr);
}

// Payload signature filter.
filter_rule_config filter_rule(std::string name, std::string pattern, bool drop = true) {
  filter_rule_config r;
  r.name = std::move(name);
  r.pattern = std::move(pattern);
  r.drop = drop;
  return r;
}

TEST_F(pipeline, FilterDropRuleDropsAndCountRuleForwardsAndCounts) {
  with_filters({filter_rule("evil", "GET /evil", true), filter_rule("php", "\\.php", false)});
  const ip_opts out_ttl{.ttl = 63};
  ASSERT_EQ(run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x02), 0).size(), 1u);
  // Established flow, payload with the drop pattern: dropped with its reason, rule counted.
  auto out =
      run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x18, "GET /evil HTTP/1.1\r\n"), 0);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(drops(drop::filter_drop), 1u);
  EXPECT_EQ(hits(0), 1u);
  // The count rule: forwarded unchanged (translated as usual) and counted.
  const std::string php = "GET /a.php?id=1 HTTP/1.1\r\n";
  out = run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x18, php), 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame, tcp(kPodMac, kPort1, kClient, 40000, kPod, 9376, 0x18, php, out_ttl));
  EXPECT_EQ(hits(1), 1u);
  EXPECT_EQ(hits(0), 1u);
  // A new UDP flow is scanned too (before any entry is made: a dropped one makes none).
  const uint64_t created = w_->counters.flows_created.get();
  EXPECT_TRUE(run(udp(kPort0, kClientMac, kClient, 5000, kUdpVip, 53, "xGET /evil"), 0).empty());
  EXPECT_EQ(drops(drop::filter_drop), 2u);
  EXPECT_EQ(w_->counters.flows_created.get(), created);
  // Replies are not scanned.
  out = run(tcp(kPort1, kPodMac, kPod, 9376, kClient, 40000, 0x18, "GET /evil"), 1);
  EXPECT_EQ(out.size(), 1u);
  EXPECT_EQ(drops(drop::filter_drop), 2u);
  // Clean payload: forwarded, nothing counted.
  EXPECT_EQ(
      run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x18, "GET / HTTP/1.1"), 0).size(), 1u);
  EXPECT_EQ(hits(0) + hits(1), 3u);  // evil twice (TCP, UDP), php once
}

TEST_F(pipeline, FilterDepthIsEachRulesOwn) {
  auto shallow = filter_rule("shallow", "EVIL");
  shallow.depth = 8;
  auto deep = filter_rule("deep", "MARK", false);
  deep.depth = 100;
  with_filters({shallow, deep});
  ASSERT_EQ(run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x02), 0).size(), 1u);
  // EVIL ends at byte 10, past the shallow rule's 8: forwarded; MARK at 20 is within 100.
  EXPECT_EQ(run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x18, "123456EVILxxxxxxMARK"), 0)
                .size(),
            1u);
  EXPECT_EQ(hits(0), 0u);
  EXPECT_EQ(hits(1), 1u);
  // Within the depth (ends at byte 8 exactly): dropped.
  EXPECT_TRUE(run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x18, "1234EVIL"), 0).empty());
  EXPECT_EQ(hits(0), 1u);
  // Nothing is scanned past the largest depth: MARK ending at 104 is not seen.
  EXPECT_EQ(
      run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x18, std::string(100, 'x') + "MARK"),
          0)
          .size(),
      1u);
  EXPECT_EQ(hits(1), 1u);
}

TEST_F(pipeline, FilterScopeLimitsWhatIsScanned) {
  auto by_port = filter_rule("port81", "EVIL");
  by_port.port = 81;
  auto by_udp = filter_rule("udp", "EVIL");
  by_udp.proto = kProtoUdp;
  auto by_vip = filter_rule("vip", "VIPONLY");
  by_vip.vip = kVip;
  auto by_service = filter_rule("svc", "SVCONLY");
  by_service.service = "default/dns";
  with_filters({by_port, by_udp, by_vip, by_service});
  ASSERT_EQ(snap_->filters->rules[3].service_ids.size(), 1u);  // dns has one frontend
  ASSERT_EQ(run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x02), 0).size(), 1u);
  // TCP to port 80: neither the port 81 rule nor the UDP rule applies.
  EXPECT_EQ(run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x18, "EVIL SVCONLY"), 0).size(),
            1u);
  // The VIP rule does.
  EXPECT_TRUE(run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x18, "VIPONLY"), 0).empty());
  // UDP to the dns Service: the UDP rule and the Service rule apply, the VIP rule does not.
  EXPECT_EQ(run(udp(kPort0, kClientMac, kClient, 5000, kUdpVip, 53, "VIPONLY"), 0).size(), 1u);
  EXPECT_TRUE(run(udp(kPort0, kClientMac, kClient, 5001, kUdpVip, 53, "SVCONLY"), 0).empty());
  EXPECT_TRUE(run(udp(kPort0, kClientMac, kClient, 5002, kUdpVip, 53, "EVIL"), 0).empty());
  EXPECT_EQ(hits(0), 0u);
  EXPECT_EQ(hits(1), 1u);
  EXPECT_EQ(hits(2), 1u);
  EXPECT_EQ(hits(3), 1u);
}

TEST_F(pipeline, FilterRulesChangeWhileAFlowRuns) {
  ASSERT_EQ(run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x02), 0).size(), 1u);
  const bytes evil = tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x18, "GET /evil");
  EXPECT_EQ(run(evil, 0).size(), 1u);  // no rules: forwarded
  with_filters({filter_rule("evil", "/evil")});
  EXPECT_TRUE(run(evil, 0).empty());  // the same flow, the new snapshot's rule
  with_filters({filter_rule("other", "/other")});
  EXPECT_EQ(run(evil, 0).size(), 1u);  // rule gone: forwarded again
  EXPECT_EQ(drops(drop::filter_drop), 1u);
}

// [limits] new_flows_per_source: a token bucket per client address for new flows only.
TEST_F(pipeline, NewFlowsPerSourceAreLimitedByRateAndBurst) {
  // 10 flows/s with a burst of 3, one worker.
  ASSERT_TRUE(w_->limiter.init(10, 3, 64, 1, dp_->tsc_hz));
  const uint64_t t0 = rte_rdtsc();
  auto at = [&](const bytes& in, uint16_t port, uint64_t now) {
    rte_mbuf* m = rte_pktmbuf_alloc(dp_->pool);
    std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(in.size())), in.data(), in.size());
    w_->now = now;
    process_burst(*w_, snap_.get(), &m, 1, port);
    return take().size();
  };
  auto syn = [&](uint32_t src, uint16_t sport, uint64_t now) {
    return at(tcp(kPort0, kClientMac, src, sport, kVip, 80, 0x02), 0, now);
  };
  // The burst: three new flows at once, the fourth refused.
  EXPECT_EQ(syn(kClient, 41000, t0), 1u);
  EXPECT_EQ(syn(kClient, 41001, t0), 1u);
  EXPECT_EQ(syn(kClient, 41002, t0), 1u);
  EXPECT_EQ(syn(kClient, 41003, t0), 0u);
  EXPECT_EQ(drops(drop::source_rate_limited), 1u);
  // Established flows are never limited: the first flow's data still passes.
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(at(tcp(kPort0, kClientMac, kClient, 41000, kVip, 80, 0x18, "x"), 0, t0), 1u);
  }
  // Another source has its own bucket.
  const uint32_t other = kClient + 1;
  od_->learn(0, other, to_ether(kClientMac));
  EXPECT_EQ(syn(other, 41000, t0), 1u);
  EXPECT_EQ(syn(other, 41001, t0), 1u);
  EXPECT_EQ(drops(drop::source_rate_limited), 1u);
  // A tenth of a second later one token came back: one flow, then refused again.
  const uint64_t tenth = dp_->tsc_hz / 10;
  EXPECT_EQ(syn(kClient, 41004, t0 + tenth + 1), 1u);
  EXPECT_EQ(syn(kClient, 41005, t0 + tenth + 1), 0u);
  EXPECT_EQ(drops(drop::source_rate_limited), 2u);
  // Seconds later the bucket is full again, but holds no more than the burst.
  const uint64_t later = t0 + 2 * dp_->tsc_hz;
  for (uint16_t i = 0; i < 3; ++i) EXPECT_EQ(syn(kClient, 42000 + i, later), 1u) << i;
  EXPECT_EQ(syn(kClient, 42003, later), 0u);
  EXPECT_EQ(drops(drop::source_rate_limited), 3u);
  // UDP new flows count too.
  EXPECT_EQ(at(udp(kPort0, kClientMac, kClient, 5000, kUdpVip, 53, "q"), 0, later), 0u);
  EXPECT_EQ(drops(drop::source_rate_limited), 4u);
}

TEST_F(pipeline, SourceLimitIsOffByDefaultSplitOverWorkersAndEvictsTheOldest) {
  EXPECT_FALSE(w_->limiter.enabled());
  for (uint16_t i = 0; i < 50; ++i) {
    const auto in =
        tcp(kPort0, kClientMac, kClient, static_cast<uint16_t>(43000 + i), kVip, 80, 0x02);
    EXPECT_EQ(run(in, 0).size(), 1u);
  }
  EXPECT_EQ(drops(drop::source_rate_limited), 0u);
  // Two workers share 10/s with a burst of 4: each admits 2 at once and one per 0.2 s
  // (a TSC of 1000 Hz here).
  source_limiter l;
  ASSERT_TRUE(l.init(10, 4, 16, 2, 1000));
  EXPECT_TRUE(l.admit(kClient, 5000));
  EXPECT_TRUE(l.admit(kClient, 5000));
  EXPECT_FALSE(l.admit(kClient, 5000));
  EXPECT_FALSE(l.admit(kClient, 5199));
  EXPECT_TRUE(l.admit(kClient, 5200));
  // A burst below the number of workers still lets one flow through per worker.
  ASSERT_TRUE(l.init(10, 1, 16, 4, 1000));
  EXPECT_TRUE(l.admit(kClient, 5000));
  EXPECT_FALSE(l.admit(kClient, 5000));
  // A table of one set: a fifth source evicts the oldest, which then starts with a full
  // bucket (a collision lets more through, never less).
  ASSERT_TRUE(l.init(1, 1, 4, 1, 1000));
  EXPECT_EQ(l.capacity(), 4u);
  for (uint32_t src = 1; src <= 4; ++src) EXPECT_TRUE(l.admit(src, 100 + src)) << src;
  for (uint32_t src = 1; src <= 4; ++src) EXPECT_FALSE(l.admit(src, 200)) << src;
  EXPECT_TRUE(l.admit(5, 200));   // replaces source 1 (the oldest)
  EXPECT_TRUE(l.admit(1, 200));   // forgotten: a full bucket again (replaces source 2)
  EXPECT_FALSE(l.admit(3, 200));  // still remembered
}

// The removed-backend grace flushes by frontend (address, protocol, port) and backend; a
// NodePort flow carries the node address the client used, its frontend has address 0.
TEST_F(pipeline, FlushBackendsMatchesTheFrontendAndNodePorts) {
  use(kLoadBalancer);
  EXPECT_EQ(run(tcp(kPort0, kClientMac, kClient, 44000, kNode0, 30090, 0x02), 0).size(), 1u);
  EXPECT_EQ(run(tcp(kPort0, kClientMac, kClient, 44001, 0xc612004d, 80, 0x02), 0).size(), 1u);
  EXPECT_EQ(flush_backends(*dp_, {{0, 30090, kProtoTcp, kPod, 9377}}), 0u);  // other backend
  EXPECT_EQ(flush_backends(*dp_, {{0, 30090, kProtoUdp, kPod, 9376}}), 0u);  // other protocol
  EXPECT_EQ(flush_backends(*dp_, {{0, 30091, kProtoTcp, kPod, 9376}}), 0u);  // other port
  EXPECT_EQ(flush_backends(*dp_, {{0, 30090, kProtoTcp, kPod, 9376}}), 1u);
  EXPECT_EQ(flush_backends(*dp_, {{0xc612004d, 80, kProtoTcp, kPod, 9376}}), 1u);
  // Flushed: the flows' next packets find no entry (a mid-stream ACK goes by Maglev without
  // one; a SYN makes a new entry).
  const uint64_t stateless = w_->counters.ack_stateless.get();
  EXPECT_EQ(run(tcp(kPort0, kClientMac, kClient, 44000, kNode0, 30090, 0x10), 0).size(), 1u);
  EXPECT_EQ(w_->counters.ack_stateless.get(), stateless + 1);
  const uint64_t created = w_->counters.flows_created.get();
  EXPECT_EQ(run(tcp(kPort0, kClientMac, kClient, 44001, 0xc612004d, 80, 0x02), 0).size(), 1u);
  EXPECT_EQ(w_->counters.flows_created.get(), created + 1);
}

// ---- ICMP ----------------------------------------------------------------------------

// An ICMP message (type, code, second word) quoting `quote`, its checksum filled.
bytes icmp_msg(uint8_t type, uint8_t code, uint32_t rest, const bytes& quote) {
  bytes b(8, 0);
  b[0] = type;
  b[1] = code;
  put32(b, 4, rest);
  b.insert(b.end(), quote.begin(), quote.end());
  const uint16_t c = csum(b.data(), b.size());
  std::memcpy(&b[2], &c, 2);
  return b;
}

// The first n bytes of a frame's IP packet: what an ICMP error quotes of it.
bytes ip_part(const bytes& frame, size_t n) {
  return bytes(frame.begin() + 14, frame.begin() + 14 + static_cast<std::ptrdiff_t>(n));
}

bytes echo_request() { return icmp_msg(8, 0, 0x12340001, {'p', 'i', 'n', 'g'}); }
bytes echo_reply() { return icmp_msg(0, 0, 0x12340001, {'p', 'i', 'n', 'g'}); }

TEST_F(pipeline, EchoToTheNodeIsRateLimited) {
  const bytes ping = ipv4(kPort0, kClientMac, kClient, kNode0, 1, echo_request(), -1);
  // echo_rate = 2 per second: two answers, then the bucket is empty.
  EXPECT_EQ(run(ping, 0).size(), 1u);
  EXPECT_EQ(run(ping, 0).size(), 1u);
  EXPECT_TRUE(run(ping, 0).empty());
  EXPECT_EQ(drops(drop::icmp_echo_rate_limited), 1u);
  EXPECT_EQ(w_->counters.icmp_echo_replies.get(), 2u);
  // echo_rate = 0: never answered.
  dp_->echo_rate = 0;
  w_->echo_bucket.start(0, rte_rdtsc());
  EXPECT_TRUE(run(ping, 0).empty());
  EXPECT_EQ(drops(drop::icmp_echo_rate_limited), 2u);
}

TEST_F(pipeline, ServiceAddressesAnswerPingOnlyWhenConfigured) {
  const bytes ping = ipv4(kPort0, kClientMac, kClient, kVip, 1, echo_request(), -1);
  // As Kubernetes says: a ClusterIP is not pingable. A named drop, nothing sent.
  EXPECT_TRUE(run(ping, 0).empty());
  EXPECT_EQ(drops(drop::icmp_to_service), 1u);
  // ICMP to an address that is no service's: not ferry's.
  EXPECT_TRUE(run(ipv4(kPort0, kClientMac, kClient, 0xc6136363, 1, echo_request(), -1), 0).empty());
  EXPECT_EQ(drops(drop::l4_unsupported), 1u);

  dp_->answer_service_echo = true;
  auto out = run(ping, 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].port, 0);
  EXPECT_EQ(out[0].frame, ipv4(kClientMac, kPort0, kVip, kClient, 1, echo_reply(), -1));
  // Any service address of the snapshot, endpoints or not; only echo.
  out = run(ipv4(kPort0, kClientMac, kClient, kEmptyVip, 1, echo_request(), -1), 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame, ipv4(kClientMac, kPort0, kEmptyVip, kClient, 1, echo_reply(), -1));
  EXPECT_TRUE(
      run(ipv4(kPort0, kClientMac, kClient, kVip, 1, icmp_msg(13, 0, 0, bytes(12, 0)), -1), 0)
          .empty());
  EXPECT_EQ(drops(drop::icmp_to_service), 2u);
  // The node's echo rate covers these too (2 tokens, both spent).
  EXPECT_TRUE(run(ping, 0).empty());
  EXPECT_EQ(drops(drop::icmp_echo_rate_limited), 1u);
}

TEST_F(pipeline, TimeExceededComesFromTheIngressAddressRateLimited) {
  const bytes syn = tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x02, "", {.ttl = 1});
  auto out = run(syn, 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].port, 0);
  EXPECT_EQ(out[0].frame, ipv4(kClientMac, kPort0, kNode0, kClient, 1,
                               icmp_msg(11, 0, 0, ip_part(syn, 28)), -1, {.id = 0}));
  EXPECT_EQ(drops(drop::ip_ttl_exceeded), 1u);
  EXPECT_EQ(w_->counters.icmp_time_exceeded_sent.get(), 1u);
  EXPECT_EQ(w_->counters.flows_created.get(), 0u);  // not forwarded: no flow

  // An established flow's reply with TTL 1 (TTL 0 too): from the pod side's node address.
  ASSERT_EQ(run(tcp(kPort0, kClientMac, kClient, 40001, kVip, 80, 0x02), 0).size(), 1u);
  const bytes reply = tcp(kPort1, kPodMac, kPod, 9376, kClient, 40001, 0x12, "", {.ttl = 0});
  out = run(reply, 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].port, 1);
  EXPECT_EQ(out[0].frame, ipv4(kPodMac, kPort1, kNode1, kPod, 1,
                               icmp_msg(11, 0, 0, ip_part(reply, 28)), -1, {.id = 0}));

  // Sent to the link-layer broadcast: dropped without an answer.
  EXPECT_TRUE(
      run(tcp(kBroadcast, kClientMac, kClient, 40002, kVip, 80, 0x02, "", {.ttl = 1}), 0).empty());
  EXPECT_EQ(drops(drop::ip_ttl_exceeded), 3u);
  EXPECT_EQ(drops(drop::icmp_error_rate_limited), 0u);
  // error_rate = 2 per second: the third answer is suppressed.
  EXPECT_TRUE(run(syn, 0).empty());
  EXPECT_EQ(drops(drop::icmp_error_rate_limited), 1u);
  EXPECT_EQ(drops(drop::ip_ttl_exceeded), 4u);
  // TTL 1 to the node itself is not forwarded: no time exceeded.
  EXPECT_TRUE(
      run(tcp(kPort0, kClientMac, kClient, 40003, kNode0, 22, 0x02, "", {.ttl = 1}), 0).empty());
  EXPECT_EQ(drops(drop::local_unhandled), 1u);
}

TEST_F(pipeline, FragmentationNeededQuotesThePacketAsTheClientSentIt) {
  constexpr uint16_t kDf = 0x4000;
  dp_->ports[1].mtu = 1000;  // towards the pods
  dp_->min_mtu = 1000;
  ASSERT_EQ(
      run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x02, "", {.frag = kDf}), 0).size(),
      1u);
  const bytes big = tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x18, std::string(1200, 'x'),
                        {.frag = kDf});
  auto out = run(big, 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].port, 0);
  // Type 3 code 4, next-hop MTU 1000, quoting the client's packet before any NAT.
  EXPECT_EQ(out[0].frame, ipv4(kClientMac, kPort0, kNode0, kClient, 1,
                               icmp_msg(3, 4, 1000, ip_part(big, 28)), -1, {.id = 0}));
  EXPECT_EQ(drops(drop::frag_needed), 1u);
  EXPECT_EQ(w_->counters.icmp_frag_needed_sent.get(), 1u);
  // Exactly the MTU fits.
  out = run(
      tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x18, std::string(960, 'x'), {.frag = kDf}),
      0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].port, 1);
  // Without DF it is not the sender's to fix: it leaves in fragments.
  out = run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x18, std::string(1200, 'x')), 0);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].port, 1);
  EXPECT_EQ(drops(drop::mtu_exceeded), 0u);
  EXPECT_EQ(drops(drop::frag_needed), 1u);
  // The pod's large reply goes out of a port with room (1500): forwarded.
  out = run(
      tcp(kPort1, kPodMac, kPod, 9376, kClient, 40000, 0x10, std::string(1200, 'y'), {.frag = kDf}),
      1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].port, 0);
  // A new UDP flow's first packet too big: answered, and no flow made for it.
  const uint64_t flows = w_->counters.flows_created.get();
  const bytes dgram = udp(kPort0, kClientMac, kClient, 5000, kUdpVip, 53, std::string(1100, 'q'),
                          true, {.frag = kDf});
  out = run(dgram, 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame, ipv4(kClientMac, kPort0, kNode0, kClient, 1,
                               icmp_msg(3, 4, 1000, ip_part(dgram, 28)), -1, {.id = 0}));
  EXPECT_EQ(w_->counters.flows_created.get(), flows);
}

// Expected outputs are built whole by the packet builder (every checksum summed from
// scratch), so a wrong incremental update in the translation shows as a byte difference.
TEST_F(pipeline, TranslatesIcmpErrorsAboutAFlowBothWays) {
  const ip_opts t63{.ttl = 63};
  ASSERT_EQ(run(udp(kPort0, kClientMac, kClient, 5000, kUdpVip, 53, "query"), 0).size(), 1u);
  const bytes pod_got = udp(kPodMac, kPort1, kClient, 5000, kPod, 9376, "query", true, t63);
  const bytes client_sent = udp(kPort0, kClientMac, kClient, 5000, kUdpVip, 53, "query", true, t63);
  const row rows[] = {
      {"the pod's port unreachable goes to the client from the VIP, about what it sent",
       ipv4(kPort1, kPodMac, kPod, kClient, 1, icmp_msg(3, 3, 0, ip_part(pod_got, 28)), -1), 1, 0,
       ipv4(kClientMac, kPort0, kUdpVip, kClient, 1, icmp_msg(3, 3, 0, ip_part(client_sent, 28)),
            -1, t63)},
      {"frag needed keeps its next-hop MTU",
       ipv4(kPort1, kPodMac, kPod, kClient, 1, icmp_msg(3, 4, 1400, ip_part(pod_got, 28)), -1), 1,
       0,
       ipv4(kClientMac, kPort0, kUdpVip, kClient, 1, icmp_msg(3, 4, 1400, ip_part(client_sent, 28)),
            -1, t63)},
      {"a router towards the pod keeps its own address (time exceeded)",
       ipv4(kPort1, kPodMac, 0xc6120101, kClient, 1, icmp_msg(11, 0, 0, ip_part(pod_got, 28)), -1),
       1, 0,
       ipv4(kClientMac, kPort0, 0xc6120101, kClient, 1,
            icmp_msg(11, 0, 0, ip_part(client_sent, 28)), -1, t63)},
      {"parameter problem keeps its pointer",
       ipv4(kPort1, kPodMac, kPod, kClient, 1, icmp_msg(12, 0, 0x08000000, ip_part(pod_got, 28)),
            -1),
       1, 0,
       ipv4(kClientMac, kPort0, kUdpVip, kClient, 1,
            icmp_msg(12, 0, 0x08000000, ip_part(client_sent, 28)), -1, t63)},
      {"a UDP checksum of 0 stays 0",
       ipv4(kPort1, kPodMac, kPod, kClient, 1,
            icmp_msg(
                3, 3, 0,
                ip_part(udp(kPodMac, kPort1, kClient, 5000, kPod, 9376, "query", false, t63), 28)),
            -1),
       1, 0,
       ipv4(kClientMac, kPort0, kUdpVip, kClient, 1,
            icmp_msg(
                3, 3, 0,
                ip_part(udp(kPort0, kClientMac, kClient, 5000, kUdpVip, 53, "query", false, t63),
                        28)),
            -1, t63)},
      {"the client's error about the reply it got goes to the pod, about what the pod sent",
       ipv4(kPort0, kClientMac, kClient, kUdpVip, 1,
            icmp_msg(
                3, 3, 0,
                ip_part(udp(kClientMac, kPort0, kUdpVip, 53, kClient, 5000, "answer", true, t63),
                        28)),
            -1),
       0, 1,
       ipv4(kPodMac, kPort1, kClient, kPod, 1,
            icmp_msg(
                3, 3, 0,
                ip_part(udp(kPort1, kPodMac, kPod, 9376, kClient, 5000, "answer", true, t63), 28)),
            -1, t63)},
  };
  uint64_t n = 0;
  for (const auto& r : rows) {
    SCOPED_TRACE(r.name);
    auto out = run(r.in, r.in_port);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].port, r.out_port);
    EXPECT_EQ(out[0].frame, r.out);
    EXPECT_EQ(w_->counters.icmp_errors_translated.get(), ++n);
  }

  // TCP: the quoted checksum is fixed when the quote holds it (whole header), and the
  // quote is left alone past its 8 bytes otherwise.
  ASSERT_EQ(run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x02), 0).size(), 1u);
  const bytes seg_pod = tcp(kPodMac, kPort1, kClient, 40000, kPod, 9376, 0x02, "", t63);
  const bytes seg_client = tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x02, "", t63);
  for (size_t quote : {28u, 40u}) {
    SCOPED_TRACE(quote);
    auto out = run(
        ipv4(kPort1, kPodMac, kPod, kClient, 1, icmp_msg(3, 1, 0, ip_part(seg_pod, quote)), -1), 1);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].frame, ipv4(kClientMac, kPort0, kVip, kClient, 1,
                                 icmp_msg(3, 1, 0, ip_part(seg_client, quote)), -1, t63));
  }
}

TEST_F(pipeline, TranslatesIcmpErrorsOfAMasqueradedFlow) {
  const uint32_t other_pod = 0xc6120132;  // 198.18.1.50, on eth1 like the backend
  const mac other_mac{0x02, 0xb0, 0, 0, 0, 0x50};
  const ip_opts t63{.ttl = 63};
  od_->learn(1, other_pod, to_ether(other_mac));
  auto out = run(tcp(kPort1, other_mac, other_pod, 45000, kVip, 80, 0x02), 1);
  ASSERT_EQ(out.size(), 1u);
  const auto snat_port = static_cast<uint16_t>(out[0].frame[34] << 8 | out[0].frame[35]);
  // The backend's error, to the node address, about the SYN it got from the node: to the
  // client, from the VIP, about the SYN the client sent.
  const bytes pod_got = tcp(kPodMac, kPort1, kNode1, snat_port, kPod, 9376, 0x02, "", t63);
  const bytes client_sent = tcp(kPort1, other_mac, other_pod, 45000, kVip, 80, 0x02, "", t63);
  out = run(ipv4(kPort1, kPodMac, kPod, kNode1, 1, icmp_msg(3, 3, 0, ip_part(pod_got, 40)), -1), 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].port, 1);
  EXPECT_EQ(out[0].frame, ipv4(other_mac, kPort1, kVip, other_pod, 1,
                               icmp_msg(3, 3, 0, ip_part(client_sent, 40)), -1, t63));
  // The client's error about the SYN-ACK it got (VIP -> client): to the backend, from the
  // node address it knows, about the SYN-ACK it sent to the node.
  const bytes client_got = tcp(other_mac, kPort1, kVip, 80, other_pod, 45000, 0x12, "", t63);
  const bytes pod_sent = tcp(kPort1, kPodMac, kPod, 9376, kNode1, snat_port, 0x12, "", t63);
  out = run(
      ipv4(kPort1, other_mac, other_pod, kVip, 1, icmp_msg(3, 3, 0, ip_part(client_got, 40)), -1),
      1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame, ipv4(kPodMac, kPort1, kNode1, kPod, 1,
                               icmp_msg(3, 3, 0, ip_part(pod_sent, 40)), -1, t63));
  EXPECT_EQ(w_->counters.icmp_errors_translated.get(), 2u);
}

// An ICMP error about an SCTP association (path MTU discovery matters to SCTP too) is
// translated back like TCP's and UDP's; the quoted CRC32c is left as quoted, as Linux does.
TEST_F(sctp_flows, IcmpErrorsAboutAnAssociationAreTranslated) {
  const bytes init = init_chunk(chunk::kInit, 1);
  ASSERT_EQ(run(to_vip(40030, 0, init), 0).size(), 1u);
  const bytes pod_got = at_pod(40030, 0, init);
  bytes client_sent =
      sctp_packet(kPort0, kClientMac, kClient, 40030, kSctpVip, 3868, 0, init, {.ttl = 63});
  std::copy(pod_got.begin() + 34 + 8, pod_got.begin() + 34 + 12, client_sent.begin() + 34 + 8);
  for (size_t n : {28u, 48u}) {
    SCOPED_TRACE(n);
    auto out = run(
        ipv4(kPort1, kPodMac, kPod, kClient, 1, icmp_msg(3, 4, 1400, ip_part(pod_got, n)), -1), 1);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].frame, ipv4(kClientMac, kPort0, kSctpVip, kClient, 1,
                                 icmp_msg(3, 4, 1400, ip_part(client_sent, n)), -1, {.ttl = 63}));
  }
  EXPECT_EQ(w_->counters.icmp_errors_translated.get(), 2u);
}

TEST_F(pipeline, DropsIcmpErrorsWithBadQuotesOrNoFlow) {
  ASSERT_EQ(run(udp(kPort0, kClientMac, kClient, 5000, kUdpVip, 53, "query"), 0).size(), 1u);
  const bytes pod_got = udp(kPodMac, kPort1, kClient, 5000, kPod, 9376, "query", true, {.ttl = 63});
  const bytes quote = ip_part(pod_got, 28);
  auto error = [](const bytes& msg, uint8_t ttl = 64) {
    return ipv4(kPort1, kPodMac, kPod, kClient, 1, msg, -1, {.ttl = ttl});
  };
  bytes bad_sum = icmp_msg(3, 3, 0, quote);
  bad_sum[2] ^= 1;
  const bytes about_icmp =
      ipv4(kPodMac, kPort1, kClient, kPod, 1, icmp_msg(3, 3, 0, ip_part(pod_got, 28)), -1);
  const drop_row rows[] = {
      {"quote shorter than a header and 8 bytes", error(icmp_msg(3, 3, 0, ip_part(pod_got, 27))), 1,
       drop::icmp_malformed},
      {"quoted IHL 4", error(icmp_msg(3, 3, 0, with(quote, 0, 0x44))), 1, drop::icmp_malformed},
      {"quoted IHL 6 past the quote", error(icmp_msg(3, 3, 0, with(quote, 0, 0x46))), 1,
       drop::icmp_malformed},
      {"quoted version 6", error(icmp_msg(3, 3, 0, with(quote, 0, 0x65))), 1, drop::icmp_malformed},
      {"ICMP checksum wrong", error(bad_sum), 1, drop::icmp_malformed},
      {"error cut to its header", error(bytes(icmp_msg(3, 3, 0, {}))), 1, drop::icmp_malformed},
      {"about an ICMP error", error(icmp_msg(3, 3, 0, ip_part(about_icmp, 28))), 1,
       drop::icmp_no_flow},
      {"about no flow (another port)",
       error(icmp_msg(3, 3, 0, ip_part(udp(kPodMac, kPort1, kClient, 5999, kPod, 9376, "q"), 28))),
       1, drop::icmp_no_flow},
      {"about a later fragment",
       error(icmp_msg(
           3, 3, 0,
           ip_part(udp(kPodMac, kPort1, kClient, 5000, kPod, 9376, "q", true, {.frag = 0x0010}),
                   28))),
       1, drop::icmp_no_flow},
      {"TTL 1: dropped, never answered", error(icmp_msg(3, 3, 0, quote), 1), 1,
       drop::ip_ttl_exceeded},
  };
  for (const auto& r : rows) {
    SCOPED_TRACE(r.name);
    uint64_t before = drops(r.reason);
    EXPECT_TRUE(run(r.in, r.in_port).empty());
    EXPECT_EQ(drops(r.reason), before + 1);
  }
  EXPECT_EQ(w_->counters.icmp_errors_translated.get(), 0u);
  EXPECT_EQ(w_->counters.icmp_time_exceeded_sent.get(), 0u);
}

// TCP abuse: SYN admission, ACKs without state, entries from backends' answers,
// RST and FIN timeouts.

const char* kThreePods = R"yaml(
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 198.19.10.10
  ports: [{port: 80, targetPort: 9376}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: web}
subsets: [{addresses: [{ip: 198.18.1.11}, {ip: 198.18.1.12}, {ip: 198.18.1.13}],
           ports: [{port: 9376}]}]
)yaml";

class tcp_abuse : public pipeline {
 protected:
  void SetUp() override {
    pipeline::SetUp();
    use(kThreePods);
    for (uint32_t i = 0; i < 3; ++i) {
      od_->learn(1, kPod + i, to_ether(pod_mac(i)));
    }
  }
  static mac pod_mac(uint32_t i) { return {0x02, 0xb0, 0, 0, 0, static_cast<uint8_t>(0x11 + i)}; }
  // The pod Maglev names for a client flow to the VIP (what an entry would have).
  uint32_t maglev_pod(uint32_t src, uint16_t sport) const {
    const auto* s = snap_->vips.find(service_key(kVip, kProtoTcp, 80));
    return (*s)->pick(conntrack::hash({src, kVip, sport, 80, kProtoTcp})).ip;
  }
  static uint32_t dst_of(const bytes& frame) {
    return uint32_t{frame[30]} << 24 | uint32_t{frame[31]} << 16 | uint32_t{frame[32]} << 8 |
           frame[33];
  }
  flow_entry* entry(uint32_t src, uint16_t sport) const {
    flow_key k{src, kVip, sport, 80, kProtoTcp};
    return dp_->ct->lookup(k, conntrack::hash(k)).entry;
  }
  // Sweeps the whole table as if `seconds` had passed since now.
  void sweep_after(double seconds) {
    const uint64_t later = rte_rdtsc() + static_cast<uint64_t>(seconds * dp_->tsc_hz);
    dp_->ct->sweep(w_->ct, later, dp_->ct->capacity());
  }
  // A SYN from a spoofed source 198.18.(2..).x, port p.
  static uint32_t spoofed(uint32_t i) { return 0xc6120200 + (i % 50000) + 1; }
  bytes syn_from(uint32_t src, uint16_t sport) const {
    return tcp(kPort0, kClientMac, src, sport, kVip, 80, 0x02);
  }
};

TEST_F(tcp_abuse, SynFloodPastTheCapGoesByMaglevWithoutEntriesAndEvictsNothing) {
  conntrack& ct = *dp_->ct;
  const uint32_t cap = ct.syn_max();
  ASSERT_EQ(cap, ct.capacity() / 8);  // default: an eighth of the table
  // An established flow first.
  run(syn_from(kClient, 40000), 0);
  const uint32_t pod = maglev_pod(kClient, 40000);
  run(tcp(kPort1, pod_mac(pod - kPod), pod, 9376, kClient, 40000, 0x12), 1);
  ASSERT_NE(entry(kClient, 40000), nullptr);
  EXPECT_EQ(entry(kClient, 40000)->state.load(), flow_state::tcp_syn_recv);
  run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x10), 0);
  ASSERT_EQ(entry(kClient, 40000)->state.load(), flow_state::tcp_established);
  // A flood of ten times the table's capacity from spoofed sources; the backends answer
  // each SYN with a SYN-ACK, which the spoofed sources never ACK.
  const uint32_t flood = 10 * ct.capacity();
  uint32_t wrong_backend = 0;
  for (uint32_t i = 0; i < flood; ++i) {
    const uint32_t src = spoofed(i);
    const auto sport = static_cast<uint16_t>(1024 + i / 50000);
    auto out = run(syn_from(src, sport), 0);
    ASSERT_EQ(out.size(), 1u) << i;
    const uint32_t to = dst_of(out[0].frame);
    wrong_backend += to != maglev_pod(src, sport);
    run(tcp(kPort1, pod_mac(to - kPod), to, 9376, src, sport, 0x12), 1);
  }
  // Embryonic entries stopped at the cap; the rest went statelessly to Maglev's pick.
  EXPECT_EQ(ct.embryonic(0), cap);
  EXPECT_EQ(w_->counters.flows_created.get(), 1u + cap);
  EXPECT_EQ(w_->counters.syn_stateless.get(), flood - cap);
  EXPECT_EQ(w_->counters.stateless_forward.get(), flood - cap);
  EXPECT_EQ(w_->counters.flows_table_full.get(), 0u);
  EXPECT_EQ(w_->counters.flows_picked_up.get(), 0u);  // SYN-ACKs make no entries
  EXPECT_EQ(wrong_backend, 0u);
  // The established flow is untouched and still forwards.
  ASSERT_NE(entry(kClient, 40000), nullptr);
  EXPECT_EQ(entry(kClient, 40000)->state.load(), flow_state::tcp_established);
  auto out = run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x18, "GET"), 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(dst_of(out[0].frame), pod);
  // After tcp_syn_timeout the embryonic entries go, and a SYN makes an entry again.
  sweep_after(6);
  EXPECT_EQ(ct.embryonic(0), 0u);
  EXPECT_NE(entry(kClient, 40000), nullptr);  // established: not expired
  run(syn_from(kClient, 40001), 0);
  EXPECT_NE(entry(kClient, 40001), nullptr);
  EXPECT_EQ(ct.embryonic(0), 1u);
  // The spoofed sources' SYN-ACKs had nowhere to go (no route to 198.18.2.0/24 and up).
  EXPECT_EQ(drops(drop::no_route), flood);
}

TEST_F(tcp_abuse, MasqueradedSynPastTheCapIsDroppedAsSynFlood) {
  conntrack& ct = *dp_->ct;
  for (uint32_t i = 0; i < ct.syn_max(); ++i) run(syn_from(spoofed(i), 1024), 0);
  ASSERT_EQ(ct.embryonic(0), ct.syn_max());
  // A pod on eth1 reaching the Service needs masquerade: no stateless path.
  const uint32_t other_pod = 0xc6120132;
  const mac other_mac{0x02, 0xb0, 0, 0, 0, 0x50};
  od_->learn(1, other_pod, to_ether(other_mac));
  EXPECT_TRUE(run(tcp(kPort1, other_mac, other_pod, 45000, kVip, 80, 0x02), 1).empty());
  EXPECT_EQ(drops(drop::syn_flood), 1u);
  EXPECT_EQ(drops(drop::snat_failed), 0u);
}

TEST_F(tcp_abuse, AckWithoutStateGoesByMaglevAndTheBackendsAnswerMakesTheEntry) {
  // The client's ACK (a flow ferryd has not seen: restarted, or admitted statelessly).
  const uint32_t pod = maglev_pod(kClient, 41000);
  auto out = run(tcp(kPort0, kClientMac, kClient, 41000, kVip, 80, 0x10), 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame,
            tcp(pod_mac(pod - kPod), kPort1, kClient, 41000, pod, 9376, 0x10, "", {.ttl = 63}));
  EXPECT_EQ(entry(kClient, 41000), nullptr);
  EXPECT_EQ(w_->counters.ack_stateless.get(), 1u);
  EXPECT_EQ(w_->counters.flows_created.get(), 0u);
  // A flood of them makes nothing either; RSTs for unknown flows neither.
  for (uint16_t p = 1; p <= 1000; ++p) {
    run(tcp(kPort0, kClientMac, spoofed(p), p, kVip, 80, 0x10), 0);
    run(tcp(kPort0, kClientMac, spoofed(p), p, kVip, 80, 0x04), 0);
  }
  EXPECT_EQ(w_->counters.flows_created.get(), 0u);
  // The backend answers them with RST, its SYN-ACK to a SYN let through statelessly:
  // un-NATed, but no entry.
  out = run(tcp(kPort1, pod_mac(pod - kPod), pod, 9376, kClient, 41000, 0x14), 1);
  ASSERT_EQ(out.size(), 1u);
  out = run(tcp(kPort1, pod_mac(pod - kPod), pod, 9376, kClient, 41000, 0x12), 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(w_->counters.flows_created.get(), 0u);
  // The backend's ACK proves the connection: the entry is made, ESTABLISHED, to this pod.
  out = run(tcp(kPort1, pod_mac(pod - kPod), pod, 9376, kClient, 41000, 0x10), 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame, tcp(kClientMac, kPort0, kVip, 80, kClient, 41000, 0x10, "", {.ttl = 63}));
  flow_entry* e = entry(kClient, 41000);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->state.load(), flow_state::tcp_established);
  EXPECT_EQ(e->backend_ip, pod);
  EXPECT_EQ(e->backend_port, 9376);
  EXPECT_EQ(e->vip, kVip);
  EXPECT_EQ(e->vport, 80);
  EXPECT_EQ(w_->counters.flows_picked_up.get(), 1u);
  // The client's next packets take the entry (the backend answered, whatever Maglev says now).
  const uint64_t stateless = w_->counters.stateless_forward.get();
  out = run(tcp(kPort0, kClientMac, kClient, 41000, kVip, 80, 0x18, "more"), 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(dst_of(out[0].frame), pod);
  EXPECT_EQ(w_->counters.stateless_forward.get(), stateless);
}

TEST_F(tcp_abuse, TheAnswerMakesNoEntryFromASharedBackend) {
  // The pod behind two ClusterIPs: which one did the client use?
  use(R"yaml(
apiVersion: v1
kind: Service
metadata: {name: a}
spec:
  clusterIP: 198.19.10.10
  ports: [{port: 80, targetPort: 9376}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: a}
subsets: [{addresses: [{ip: 198.18.1.11}], ports: [{port: 9376}]}]
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec:
  clusterIP: 198.19.10.11
  ports: [{port: 80, targetPort: 9376}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: b}
subsets: [{addresses: [{ip: 198.18.1.11}], ports: [{port: 9376}]}]
)yaml");
  auto out = run(tcp(kPort1, kPodMac, kPod, 9376, kClient, 41000, 0x10), 1);
  ASSERT_EQ(out.size(), 1u);  // still un-NATed statelessly (to the lowest ClusterIP)
  EXPECT_EQ(w_->counters.stateless_reply.get(), 1u);
  EXPECT_EQ(w_->counters.flows_created.get(), 0u);
  // One Service with a ClusterIP and a NodePort: shared too.
  use(node_port_service("np", 30080, "Local", "edge-1").c_str());
  out = run(tcp(kPort1, kPodMac, kPod, 9376, kClient, 41001, 0x10), 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(w_->counters.flows_created.get(), 0u);
}

TEST_F(tcp_abuse, MasqueradedAckWithoutStateWaitsEmbryonicForTheBackend) {
  // NodePort, policy Cluster, pod on another node: masqueraded, no stateless way back. A
  // mid-stream ACK makes a SYN_SENT entry (capped like a SYN); the answer decides.
  use(node_port_service("np", 30080, "Cluster", "edge-2").c_str());
  auto out = run(tcp(kPort0, kClientMac, kClient, 40000, kNode0, 30080, 0x10), 0);
  ASSERT_EQ(out.size(), 1u);
  const uint16_t snat_port = src_port_of(out[0].frame);
  flow_key k{kClient, kNode0, 40000, 30080, kProtoTcp};
  flow_entry* e = dp_->ct->lookup(k, conntrack::hash(k)).entry;
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->state.load(), flow_state::tcp_syn);
  EXPECT_EQ(dp_->ct->embryonic(0), 1u);
  EXPECT_EQ(w_->counters.flows_picked_up.get(), 1u);
  // The backend does know the connection: ESTABLISHED, no longer embryonic.
  out = run(tcp(kPort1, kPodMac, kPod, 9376, kNode1, snat_port, 0x10), 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(e->state.load(), flow_state::tcp_established);
  EXPECT_EQ(dp_->ct->embryonic(0), 0u);
  // A spoofed one: the backend answers RST, the entry goes to RESET (short timeout).
  out = run(tcp(kPort0, kClientMac, kClient, 40001, kNode0, 30080, 0x10), 0);
  ASSERT_EQ(out.size(), 1u);
  out = run(tcp(kPort1, kPodMac, kPod, 9376, kNode1, src_port_of(out[0].frame), 0x04), 1);
  flow_key k2{kClient, kNode0, 40001, 30080, kProtoTcp};
  flow_entry* e2 = dp_->ct->lookup(k2, conntrack::hash(k2)).entry;
  ASSERT_NE(e2, nullptr);
  EXPECT_EQ(e2->state.load(), flow_state::tcp_reset);
  EXPECT_EQ(dp_->ct->embryonic(0), 0u);
  // A backend's ACK to a node address:port with no entry (a masqueraded flow ferryd lost):
  // nothing to un-NAT it with, and no entry is made from it.
  const uint64_t created = w_->counters.flows_created.get();
  EXPECT_TRUE(run(tcp(kPort1, kPodMac, kPod, 9376, kNode1, 50000, 0x10), 1).empty());
  EXPECT_EQ(w_->counters.flows_created.get(), created);
  EXPECT_EQ(drops(drop::local_unhandled), 1u);
}

TEST_F(tcp_abuse, RstAndFinMoveEntriesToShortTimeouts) {
  auto open = [&](uint16_t sport) {
    run(syn_from(kClient, sport), 0);
    const uint32_t pod = maglev_pod(kClient, sport);
    run(tcp(kPort1, pod_mac(pod - kPod), pod, 9376, kClient, sport, 0x12), 1);
    run(tcp(kPort0, kClientMac, kClient, sport, kVip, 80, 0x10), 0);
    EXPECT_EQ(entry(kClient, sport)->state.load(), flow_state::tcp_established);
    return pod;
  };
  open(40000);
  const uint32_t pod1 = open(40001);
  open(40002);
  // RST from the client; RST from the backend; FIN from the client.
  run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x04), 0);
  run(tcp(kPort1, pod_mac(pod1 - kPod), pod1, 9376, kClient, 40001, 0x14), 1);
  run(tcp(kPort0, kClientMac, kClient, 40002, kVip, 80, 0x11), 0);
  EXPECT_EQ(entry(kClient, 40000)->state.load(), flow_state::tcp_reset);
  EXPECT_STREQ(flow_state_name(entry(kClient, 40001)->state.load()), "RESET");
  EXPECT_EQ(entry(kClient, 40002)->state.load(), flow_state::tcp_closing);
  // A FIN after a RST does not lengthen it.
  run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x11), 0);
  EXPECT_EQ(entry(kClient, 40000)->state.load(), flow_state::tcp_reset);
  // tcp_rst_timeout (2 s) and tcp_fin_timeout (30 s) by default.
  sweep_after(3);
  EXPECT_EQ(entry(kClient, 40000), nullptr);
  EXPECT_EQ(entry(kClient, 40001), nullptr);
  EXPECT_NE(entry(kClient, 40002), nullptr);
  sweep_after(31);
  EXPECT_EQ(entry(kClient, 40002), nullptr);
}

TEST_F(tcp_abuse, AResetEntryComesBackWhenTheBackendGoesOnAndASynReusesIt) {
  run(syn_from(kClient, 40000), 0);
  const uint32_t pod = maglev_pod(kClient, 40000);
  run(tcp(kPort1, pod_mac(pod - kPod), pod, 9376, kClient, 40000, 0x12), 1);
  flow_entry* e = entry(kClient, 40000);
  EXPECT_EQ(dp_->ct->embryonic(0), 1u);  // SYN_RECV: still embryonic
  run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x10), 0);
  EXPECT_EQ(e->state.load(), flow_state::tcp_established);
  EXPECT_EQ(dp_->ct->embryonic(0), 0u);
  // A RST from the client side (within the window: perhaps lost on its way) ...
  run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x04), 0);
  EXPECT_EQ(e->state.load(), flow_state::tcp_reset);
  // ... but the backend goes on: the connection lives.
  run(tcp(kPort1, pod_mac(pod - kPod), pod, 9376, kClient, 40000, 0x18, "data"), 1);
  EXPECT_EQ(e->state.load(), flow_state::tcp_established);
  // A closed entry and a new SYN on the same port: SYN_SENT again, counted embryonic.
  run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x04), 0);
  EXPECT_EQ(dp_->ct->embryonic(0), 0u);
  run(syn_from(kClient, 40000), 0);
  EXPECT_EQ(e->state.load(), flow_state::tcp_syn);
  EXPECT_EQ(dp_->ct->embryonic(0), 1u);
  run(tcp(kPort1, pod_mac(pod - kPod), pod, 9376, kClient, 40000, 0x12), 1);
  EXPECT_EQ(e->state.load(), flow_state::tcp_syn_recv);
  EXPECT_STREQ(flow_state_name(e->state.load()), "SYN_RECV");
  EXPECT_EQ(dp_->ct->embryonic(0), 1u);
  run(tcp(kPort0, kClientMac, kClient, 40000, kVip, 80, 0x10), 0);
  EXPECT_EQ(e->state.load(), flow_state::tcp_established);
  EXPECT_EQ(dp_->ct->embryonic(0), 0u);
}

// Blind RSTs (issue 16, 17): a RST moves an entry to RESET only when its sequence number is
// within [conntrack] tcp_rst_window (64 KiB) of where its sender is; others are dropped and
// counted (drops.tcp_rst_out_of_window), and the entry stays as it was. (The tracked end may
// lag by a quarter window, so the edges are not exact; tcp_rst_window = 0 is, see below.)
class tcp_rst : public tcp_abuse {
 protected:
  static constexpr uint32_t kClientIsn = 100000, kPodIsn = 500000;
  bytes from_client(uint16_t sport, uint8_t flags, uint32_t seq, uint32_t ack,
                    const std::string& data = "") const {
    return tcp_seq_ack(kPort0, kClientMac, kClient, sport, kVip, 80, flags, seq, ack, data);
  }
  bytes from_pod(uint16_t sport, uint8_t flags, uint32_t seq, uint32_t ack,
                 const std::string& data = "") const {
    const uint32_t pod = maglev_pod(kClient, sport);
    return tcp_seq_ack(kPort1, pod_mac(pod - kPod), pod, 9376, kClient, sport, flags, seq, ack,
                       data);
  }
  // A handshake and 5 bytes each way: the client is at kClientIsn + 6, the pod at kPodIsn + 6.
  flow_entry* established(uint16_t sport) {
    run(from_client(sport, 0x02, kClientIsn, 0), 0);
    run(from_pod(sport, 0x12, kPodIsn, kClientIsn + 1), 1);
    run(from_client(sport, 0x10, kClientIsn + 1, kPodIsn + 1), 0);
    run(from_client(sport, 0x18, kClientIsn + 1, kPodIsn + 1, "hello"), 0);
    run(from_pod(sport, 0x18, kPodIsn + 1, kClientIsn + 6, "world"), 1);
    flow_entry* e = entry(kClient, sport);
    EXPECT_NE(e, nullptr);
    if (e) {
      EXPECT_EQ(e->state.load(), flow_state::tcp_established);
    }
    return e;
  }
};

TEST_F(tcp_rst, ARstCountsOnlyWithinTheWindowOfItsSender) {
  const uint32_t c = kClientIsn + 6, s = kPodIsn + 6;
  struct row {
    const char* name;
    bool from_pod;
    uint8_t flags;
    uint32_t seq, ack;
    bool fits;
  } rows[] = {
      {"client RST at its end", false, 0x04, c, 0, true},
      {"client RST+ACK at its end", false, 0x14, c, s, true},
      {"client RST a little behind (answering an old segment)", false, 0x04, c - 3000, 0, true},
      {"client RST 60000 ahead (segments lost before ferry)", false, 0x04, c + 60000, 0, true},
      {"client RST 60000 behind", false, 0x04, c - 60000, 0, true},
      {"client RST 100000 behind", false, 0x04, c - 100000, 0, false},
      {"client RST 1 MiB ahead", false, 0x04, c + (1u << 20), 0, false},
      {"client RST half the space away", false, 0x04, c + 0x80000000u, 0, false},
      {"client RST with seq 0", false, 0x04, 0, 0, false},
      {"client RST with the pod's seq", false, 0x04, s, 0, false},
      {"pod RST at its end", true, 0x04, s, 0, true},
      {"pod RST+ACK at its end", true, 0x14, s, c, true},
      {"pod RST+ACK with seq 0 (a SYN's answer, not this flow's)", true, 0x14, 0, c, false},
      {"pod RST with the client's seq", true, 0x04, c, 0, false},
      {"pod RST 2^30 behind", true, 0x04, s - (1u << 30), 0, false},
  };
  uint16_t sport = 42000;
  uint64_t dropped = 0;
  for (const row& r : rows) {
    SCOPED_TRACE(r.name);
    flow_entry* e = established(++sport);
    ASSERT_NE(e, nullptr);
    auto out = r.from_pod ? run(from_pod(sport, r.flags, r.seq, r.ack), 1)
                          : run(from_client(sport, r.flags, r.seq, r.ack), 0);
    EXPECT_EQ(out.size(), r.fits ? 1u : 0u);
    EXPECT_EQ(e->state.load(), r.fits ? flow_state::tcp_reset : flow_state::tcp_established);
    dropped += !r.fits;
    EXPECT_EQ(drops(drop::tcp_rst_out_of_window), dropped);
  }
}

TEST_F(tcp_rst, InSynSentTheBackendsRstMustAcknowledgeTheSyn) {
  struct row {
    const char* name;
    bool from_pod;
    uint8_t flags;
    uint32_t seq, ack;
    bool fits;
  } rows[] = {
      {"pod refuses: RST+ACK acking the SYN", true, 0x14, 0, kClientIsn + 1, true},
      {"pod RST+ACK acking something else", true, 0x14, 0, kClientIsn + 2, false},
      {"pod RST+ACK acking the ISN itself", true, 0x14, 0, kClientIsn, false},
      {"pod RST without ACK", true, 0x04, kClientIsn + 1, 0, false},
      {"client gives up: RST after its SYN", false, 0x04, kClientIsn + 1, 0, true},
      {"client RST far away", false, 0x04, kClientIsn + 0x40000000u, 0, false},
  };
  uint16_t sport = 43000;
  for (const row& r : rows) {
    SCOPED_TRACE(r.name);
    run(from_client(++sport, 0x02, kClientIsn, 0), 0);
    flow_entry* e = entry(kClient, sport);
    ASSERT_NE(e, nullptr);
    auto out = r.from_pod ? run(from_pod(sport, r.flags, r.seq, r.ack), 1)
                          : run(from_client(sport, r.flags, r.seq, r.ack), 0);
    EXPECT_EQ(out.size(), r.fits ? 1u : 0u);
    EXPECT_EQ(e->state.load(), r.fits ? flow_state::tcp_reset : flow_state::tcp_syn);
  }
}

TEST_F(tcp_rst, TheEndsFollowTheStreamButNotAForgedLeap) {
  flow_entry* e = established(44000);
  ASSERT_NE(e, nullptr);
  // 200 KB from the client in 1000-byte segments: far past the first window.
  uint32_t c = kClientIsn + 6;
  const std::string k(1000, 'x');
  for (int i = 0; i < 200; ++i, c += 1000) {
    ASSERT_EQ(run(from_client(44000, 0x18, c, kPodIsn + 6, k), 0).size(), 1u);
  }
  // A forged segment 1 GiB ahead is forwarded (the pod discards it) but not followed ...
  EXPECT_EQ(run(from_client(44000, 0x18, c + (1u << 30), kPodIsn + 6, k), 0).size(), 1u);
  EXPECT_TRUE(run(from_client(44000, 0x04, c + (1u << 30) + 1000, 0), 0).empty());
  EXPECT_EQ(e->state.load(), flow_state::tcp_established);
  // ... and the client's own RST, where it really is, counts.
  EXPECT_EQ(run(from_client(44000, 0x04, c, 0), 0).size(), 1u);
  EXPECT_EQ(e->state.load(), flow_state::tcp_reset);
  // A new SYN on the reset entry starts from its new ISN; the pod's side is learned again.
  run(from_client(44000, 0x02, 7000000, 0), 0);
  ASSERT_EQ(e->state.load(), flow_state::tcp_syn);
  EXPECT_TRUE(run(from_pod(44000, 0x14, 0, kClientIsn + 1), 1).empty());
  EXPECT_EQ(e->state.load(), flow_state::tcp_syn);
  run(from_pod(44000, 0x12, 9000000, 7000001), 1);
  run(from_client(44000, 0x10, 7000001, 9000001), 0);
  ASSERT_EQ(e->state.load(), flow_state::tcp_established);
  EXPECT_TRUE(run(from_pod(44000, 0x04, kPodIsn + 6, 0), 1).empty());
  EXPECT_EQ(run(from_pod(44000, 0x04, 9000001, 0), 1).size(), 1u);
  EXPECT_EQ(e->state.load(), flow_state::tcp_reset);
  EXPECT_EQ(drops(drop::tcp_rst_out_of_window), 3u);
}

TEST_F(tcp_rst, AFlowPickedUpMidStreamLearnsBothEndsFromTheFirstAnswer) {
  // No entry (ferryd restarted): the pod's ACK makes one, at its seq and its ACK.
  const uint16_t sport = 45000;
  run(from_pod(sport, 0x10, 3000000000u, 123456), 1);
  flow_entry* e = entry(kClient, sport);
  ASSERT_NE(e, nullptr);
  ASSERT_EQ(e->state.load(), flow_state::tcp_established);
  EXPECT_TRUE(run(from_client(sport, 0x04, 123456 + 0x10000000, 0), 0).empty());
  EXPECT_TRUE(run(from_pod(sport, 0x04, 123456, 0), 1).empty());
  EXPECT_EQ(e->state.load(), flow_state::tcp_established);
  EXPECT_EQ(run(from_client(sport, 0x04, 123456, 0), 0).size(), 1u);
  EXPECT_EQ(e->state.load(), flow_state::tcp_reset);
}

TEST_F(tcp_rst, AWindowOfZeroAcceptsOnlyTheExactEnd) {
  conntrack_config cfg;
  cfg.tcp_rst_window = 0;
  dp_->ct = std::make_unique<conntrack>(4096, 1, dp_->qsbr, dp_->tsc_hz, cfg);
  dp_->ct->init_worker(w_->ct, 0, 0);
  flow_entry* e = established(46000);
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(run(from_client(46000, 0x04, kClientIsn + 5, 0), 0).empty());
  EXPECT_TRUE(run(from_client(46000, 0x04, kClientIsn + 7, 0), 0).empty());
  EXPECT_EQ(e->state.load(), flow_state::tcp_established);
  EXPECT_EQ(run(from_client(46000, 0x04, kClientIsn + 6, 0), 0).size(), 1u);
  EXPECT_EQ(e->state.load(), flow_state::tcp_reset);
}

// ---- Cluster DNS over UDP on the workers --------------------------------------------------

constexpr uint32_t kDns = 0xc6130035;  // 198.19.0.53

// A query for name (type A, id 0x4242, RD), as a stub resolver sends it.
std::string dns_query(const std::string& name) {
  std::string q = {0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
  size_t start = 0;
  while (start < name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string::npos) dot = name.size();
    q.push_back(static_cast<char>(dot - start));
    q.append(name, start, dot - start);
    start = dot + 1;
  }
  q.append(std::string("\0\0\1\0\1", 5));
  return q;
}

class pipeline_dns : public pipeline {
 protected:
  // The setup's Services with the cluster DNS on kDns (names outside the zone go to kPod).
  void SetUp() override {
    pipeline::SetUp();
    dp_->dns_addresses = {kDns};
    control::store st(ipv4_prefix{0xc6130000, 16});
    auto objs = model::parse_manifests(kManifests, "test");
    ASSERT_TRUE(st.apply(std::move(*objs), control::source::file));
    control::compiler comp(65537, 64);
    comp.enable_dns(dns_config{.addresses = {kDns}, .upstreams = {{kPod, 53}}}, {0xc6130000, 16});
    auto snap = comp.compile(st);
    ASSERT_TRUE(snap) << snap.message();
    snap_ = std::move(*snap);
  }
  std::vector<output> ask(uint32_t src, const std::string& name, uint64_t now = 0,
                          const ip_opts& o = {}) {
    const bool pod_side = (src & 0xffffff00) == (kPod & 0xffffff00);
    const auto in =
        udp(pod_side ? kPort1 : kPort0, pod_side ? kPodMac : kClientMac, src,
            static_cast<uint16_t>(33000 + asked_++), kDns, 53, dns_query(name), true, o);
    rte_mbuf* m = rte_pktmbuf_alloc(dp_->pool);
    std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(in.size())), in.data(), in.size());
    w_->now = now ? now : rte_rdtsc();
    process_burst(*w_, snap_.get(), &m, 1, pod_side ? 1 : 0);
    return take();
  }
  static uint16_t flags(const output& o) {
    return static_cast<uint16_t>(o.frame[44] << 8 | o.frame[45]);
  }
  static uint16_t ancount(const output& o) {
    return static_cast<uint16_t>(o.frame[48] << 8 | o.frame[49]);
  }
  uint64_t dns_count(dns::outcome o) const {
    return w_->counters.dns[static_cast<size_t>(o)].get();
  }
  unsigned asked_ = 0;
};

const std::string kWebName = "web.default.svc.cluster.local";

// [dns] rate_limit: a token bucket per source /24; over it, every slip-th answer goes out with
// TC and the question only, the others are dropped (dns_rate_limited).
TEST_F(pipeline_dns, AnswersAreRateLimitedPerSourcePrefixWithSlip) {
  dp_->dns_rrl_slip = 2;
  dp_->dns_rrl_mask = 0xffffff00;
  ASSERT_TRUE(w_->dns_limiter.init(4, 0, 64, 1, dp_->tsc_hz));  // 4/s, a burst of 4
  od_->learn(0, kClient + 1, to_ether(kClientMac));
  const uint64_t t0 = rte_rdtsc();
  const size_t query_frame = 14 + 20 + 8 + dns_query(kWebName).size();
  for (int i = 0; i < 4; ++i) {
    auto out = ask(kClient, kWebName, t0);
    ASSERT_EQ(out.size(), 1u) << i;
    EXPECT_EQ(flags(out[0]) & 0x0200, 0) << i;  // no TC
    EXPECT_EQ(ancount(out[0]), 1u) << i;
  }
  for (int i = 0; i < 8; ++i) {
    // Another address of the same /24 shares the bucket.
    auto out = ask(i == 7 ? kClient + 1 : kClient, kWebName, t0);
    if (i % 2 == 0) {
      EXPECT_TRUE(out.empty()) << i;
      continue;
    }
    ASSERT_EQ(out.size(), 1u) << i;
    EXPECT_EQ(flags(out[0]), 0x8000 | 0x0200 | 0x0100) << i;  // QR, TC, RD: a slip
    EXPECT_EQ(ancount(out[0]), 0u);
    EXPECT_EQ(out[0].frame.size(), query_frame);  // no bigger than the query
  }
  EXPECT_EQ(drops(drop::dns_rate_limited), 4u);
  EXPECT_EQ(w_->counters.dns_slipped.get(), 4u);
  EXPECT_EQ(dns_count(dns::outcome::noerror), 4u);  // the slipped ones are not looked up
  // Another /24 has its own bucket.
  auto out = ask(kPod, kWebName, t0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(ancount(out[0]), 1u);
  // An exempt prefix is answered whatever its rate, and its answers are not counted
  // against the prefix around it.
  dp_->dns_rrl_exempt = {{kPod, 32}};
  for (int i = 0; i < 10; ++i) {
    out = ask(kPod, kWebName, t0);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(ancount(out[0]), 1u);
  }
  dp_->dns_rrl_exempt = {{kClient, 24}};
  for (int i = 0; i < 3; ++i) {
    out = ask(kClient, kWebName, t0);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(ancount(out[0]), 1u);
  }
  dp_->dns_rrl_exempt.clear();
  od_->learn(1, kPod + 1, to_ether(kPodMac));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(ancount(ask(kPod + 1, kWebName, t0).at(0)), 1u) << i;
  // Half a second later, two tokens are back; slip 0 drops everything over.
  dp_->dns_rrl_slip = 0;
  const uint64_t later = t0 + dp_->tsc_hz / 2 + dp_->tsc_hz / 100;
  EXPECT_EQ(ask(kClient, kWebName, later).size(), 1u);
  EXPECT_EQ(ask(kClient, kWebName, later).size(), 1u);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(ask(kClient, kWebName, later).empty());
  EXPECT_EQ(drops(drop::dns_rate_limited), 8u);
}

TEST_F(pipeline_dns, RateLimitIsOffWithoutRate) {
  EXPECT_FALSE(w_->dns_limiter.enabled());  // the offline dataplane had no DNS at start
  for (int i = 0; i < 50; ++i) EXPECT_EQ(ask(kClient, kWebName).size(), 1u);
  EXPECT_EQ(drops(drop::dns_rate_limited), 0u);
}

// The answer leaves with a plain IP header, whatever options the query carried (a source
// route must not steer it): the same frame as the answer to the query without options.
TEST_F(pipeline_dns, AnswersCarryNoIpOptions) {
  auto plain = ask(kClient, kWebName);
  asked_ = 0;  // the same source port again
  auto with_options = ask(kClient, kWebName, 0, ip_opts{.ihl = 8});
  ASSERT_EQ(plain.size(), 1u);
  ASSERT_EQ(with_options.size(), 1u);
  EXPECT_EQ(with_options[0].frame[14], 0x45);
  EXPECT_EQ(with_options[0].frame, plain[0].frame);
}

// A query, or any new flow, whose source is one of ferry's own addresses is a martian.
TEST_F(pipeline_dns, OwnAddressesAsSourceAreDropped) {
  EXPECT_TRUE(ask(kNode0, kWebName).empty());
  EXPECT_TRUE(ask(kNode1, kWebName).empty());
  EXPECT_EQ(drops(drop::src_own_address), 2u);
  EXPECT_EQ(dns_count(dns::outcome::noerror), 0u);
  // From a DNS address or a service address to a Service, and to a node address.
  EXPECT_TRUE(run(tcp(kPort0, kClientMac, kDns, 40000, kVip, 80, 0x02), 0).empty());
  EXPECT_TRUE(run(tcp(kPort0, kClientMac, kUdpVip, 40000, kVip, 80, 0x02), 0).empty());
  EXPECT_TRUE(run(udp(kPort0, kClientMac, kVip, 40000, kUdpVip, 53, "x"), 0).empty());
  EXPECT_TRUE(run(udp(kPort0, kClientMac, kNode1, 40000, kNode0, 7, "x"), 0).empty());
  EXPECT_EQ(drops(drop::src_own_address), 6u);
  // A client's own query is still answered.
  EXPECT_EQ(ask(kClient, kWebName).size(), 1u);
}

// [dns] forward_sources: names outside the zone go upstream only for those sources; the
// rest get REFUSED (not an open resolver).
TEST_F(pipeline_dns, ForwardsOnlyForConfiguredSources) {
  auto out = ask(kClient, "www.example.org");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].port, 1u);  // to the upstream
  EXPECT_EQ(dns_count(dns::outcome::forward), 1u);
  dp_->dns_forward_sources = {{kPod, 24}};
  out = ask(kClient, "www.example.org");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].port, 0u);         // answered
  EXPECT_EQ(flags(out[0]) & 0xf, 5);  // REFUSED
  EXPECT_EQ(dns_count(dns::outcome::refused), 1u);
  // Names of ours are answered for everyone.
  out = ask(kClient, kWebName);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(ancount(out[0]), 1u);
  dp_->dns_forward_sources = {{kClient, 24}};
  out = ask(kClient, "www.example.org");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].port, 1u);
}

}  // namespace
}  // namespace ferry::dp

FERRY_TEST_MAIN_WITH_EAL()
