#include "conntrack.hpp"

#include <gtest/gtest.h>
#include <rte_malloc.h>

#include <atomic>
#include <thread>

#include "test_eal.hpp"

namespace ferry::dp {
namespace {

constexpr uint64_t kHz = 1000000;  // a fake TSC: one tick per microsecond

struct fixture : ::testing::Test {
  void SetUp() override { make(1024, 1); }
  void TearDown() override {
    ct.reset();
    rte_free(qsbr);
  }
  void make(uint32_t capacity, unsigned workers) {
    ct.reset();
    rte_free(qsbr);
    qsbr = static_cast<rte_rcu_qsbr*>(rte_zmalloc(nullptr, rte_rcu_qsbr_get_memsize(workers), 64));
    ASSERT_EQ(rte_rcu_qsbr_init(qsbr, workers), 0);
    for (unsigned i = 0; i < workers; ++i) {
      rte_rcu_qsbr_thread_register(qsbr, i);
      rte_rcu_qsbr_thread_online(qsbr, i);
    }
    conntrack_config cfg;
    cfg.tcp_syn_timeout = 5;
    cfg.tcp_established_timeout = 100;
    cfg.tcp_closing_timeout = 2;
    cfg.tcp_rst_timeout = 1;
    cfg.syn_max = syn_max;
    cfg.udp_timeout = 10;
    ct = std::make_unique<conntrack>(capacity, workers, qsbr, kHz, cfg);
    ws.assign(workers, {});
    for (unsigned i = 0; i < workers; ++i) ct->init_worker(ws[i], i, i);
  }
  // Everyone has passed a quiescent state: entries waiting for a grace period may go.
  void quiesce() {
    for (unsigned i = 0; i < ws.size(); ++i) rte_rcu_qsbr_quiescent(qsbr, i);
  }

  uint32_t syn_max = 0;  // make()'s [conntrack] syn_max
  rte_rcu_qsbr* qsbr = nullptr;
  std::unique_ptr<conntrack> ct;
  std::vector<conntrack_worker> ws;
};

flow_key client(uint32_t i) { return {0xc6120001 + i, 0xc6130a00, uint16_t(40000 + i), 80, 6}; }

TEST_F(fixture, FindsBothDirections) {
  flow_key fwd = client(1);
  flow_entry* e = ct->insert(ws[0], fwd, {0xc612010b, 9376}, 7, flow_state::tcp_syn, 100);
  ASSERT_NE(e, nullptr);
  auto hit = ct->lookup(fwd, conntrack::hash(fwd));
  EXPECT_EQ(hit.entry, e);
  EXPECT_EQ(hit.dir, flow_dir::forward);
  flow_key rev{0xc612010b, fwd.src_ip, 9376, fwd.src_port, 6};
  hit = ct->lookup(rev, conntrack::hash(rev));
  EXPECT_EQ(hit.entry, e);
  EXPECT_EQ(hit.dir, flow_dir::reply);
  EXPECT_EQ(e->service_id, 7u);
  // Same ports, other protocol or other port: different flows.
  flow_key udp = fwd;
  udp.proto = 17;
  EXPECT_EQ(ct->lookup(udp, conntrack::hash(udp)).entry, nullptr);
  flow_key other = fwd;
  other.src_port++;
  EXPECT_EQ(ct->lookup(other, conntrack::hash(other)).entry, nullptr);
}

// Blind RSTs: the sequence ends an entry starts from, how they follow the stream (written
// only every quarter window, never dragged by a segment far ahead), and the RST window.
TEST_F(fixture, SequenceEndsFollowTheStreamWithinTheWindow) {
  flow_entry* e = ct->insert(ws[0], client(1), {0xc612010b, 9376}, 7, flow_state::tcp_established,
                             100, {.forward = 1000, .reply = 0});
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(conntrack::tcp_end(*e, flow_dir::forward), 1000u);
  EXPECT_EQ(conntrack::tcp_end(*e, flow_dir::reply), 0u);
  // Unknown: any RST goes; the first segment sets it.
  EXPECT_TRUE(ct->tcp_rst_ok(*e, flow_dir::reply, 123));
  ct->tcp_advance(*e, flow_dir::reply, 0xfffff000u);
  EXPECT_EQ(conntrack::tcp_end(*e, flow_dir::reply), 0xfffff000u);
  // Small steps are not written (up to a quarter window, 16384); a bigger one is, across
  // the wrap of the sequence space.
  ct->tcp_advance(*e, flow_dir::reply, 0xfffff000u + 16384);
  EXPECT_EQ(conntrack::tcp_end(*e, flow_dir::reply), 0xfffff000u);
  ct->tcp_advance(*e, flow_dir::reply, 0xfffff000u + 16385);
  EXPECT_EQ(conntrack::tcp_end(*e, flow_dir::reply), 0x00003001u);
  // Far ahead (past a window, a tick and a segment), or behind: not followed.
  ct->tcp_advance(*e, flow_dir::forward, 1000 + 16384 + 65536 + 65536);
  ct->tcp_advance(*e, flow_dir::forward, 500);
  EXPECT_EQ(conntrack::tcp_end(*e, flow_dir::forward), 1000u);
  // The RST window: 64 KiB below, 64 KiB and the tick above, modulo 2^32.
  EXPECT_TRUE(ct->tcp_rst_ok(*e, flow_dir::forward, 1000));
  EXPECT_TRUE(ct->tcp_rst_ok(*e, flow_dir::forward, 1000u - 65536));
  EXPECT_FALSE(ct->tcp_rst_ok(*e, flow_dir::forward, 1000u - 65537));
  EXPECT_TRUE(ct->tcp_rst_ok(*e, flow_dir::forward, 1000 + 65536 + 16384));
  EXPECT_FALSE(ct->tcp_rst_ok(*e, flow_dir::forward, 1000 + 65536 + 16385));
  EXPECT_FALSE(ct->tcp_rst_ok(*e, flow_dir::forward, 1000 + 0x80000000u));
  // A new SYN on a reused entry restarts both sides.
  conntrack::tcp_restart(*e, 777);
  EXPECT_EQ(conntrack::tcp_end(*e, flow_dir::forward), 777u);
  EXPECT_EQ(conntrack::tcp_end(*e, flow_dir::reply), 0u);
}

TEST_F(fixture, ExpiresPerStateAndRecyclesAfterGracePeriod) {
  flow_key a = client(1), b = client(2);
  ASSERT_NE(ct->insert(ws[0], a, {1, 1}, 0, flow_state::tcp_closing, 0), nullptr);      // 2 s
  ASSERT_NE(ct->insert(ws[0], b, {2, 2}, 0, flow_state::tcp_established, 0), nullptr);  // 100 s
  size_t free_before = ws[0].free.size();
  EXPECT_EQ(ct->sweep(ws[0], 1 * kHz, 2048), 0u);
  EXPECT_EQ(ct->sweep(ws[0], 3 * kHz, 2048), 1u);
  EXPECT_EQ(ct->lookup(a, conntrack::hash(a)).entry, nullptr);
  EXPECT_NE(ct->lookup(b, conntrack::hash(b)).entry, nullptr);
  // Not reusable until every reader has been quiescent.
  EXPECT_EQ(ws[0].free.size(), free_before);
  quiesce();
  ct->sweep(ws[0], 3 * kHz, 0);
  EXPECT_EQ(ws[0].free.size(), free_before + 1);
}

TEST_F(fixture, FlushHidesAtOnceAndTheOwnerRecyclesWithoutCountingExpiry) {
  flow_key a = client(1), b = client(2);
  flow_entry* ea = ct->insert(ws[0], a, {0xc612010b, 9376}, 3, flow_state::udp, 0);
  ASSERT_NE(ea, nullptr);
  ASSERT_NE(ct->insert(ws[0], b, {0xc612010c, 9376}, 4, flow_state::udp, 0), nullptr);
  size_t free_before = ws[0].free.size();
  // Only the matching flow; both of its keys are gone for lookups at once.
  EXPECT_EQ(ct->flush([](const flow_entry& e) { return e.service_id == 3; }), 1u);
  EXPECT_EQ(ct->lookup(a, conntrack::hash(a)).entry, nullptr);
  flow_key rev{0xc612010b, a.src_ip, 9376, a.src_port, 6};
  EXPECT_EQ(ct->lookup(rev, conntrack::hash(rev)).entry, nullptr);
  EXPECT_NE(ct->lookup(b, conntrack::hash(b)).entry, nullptr);
  // Flushing again finds nothing left to flush.
  EXPECT_EQ(ct->flush([](const flow_entry& e) { return e.service_id == 3; }), 0u);
  // The next packet makes a new entry for the same key, which lookups find.
  flow_entry* again = ct->insert(ws[0], a, {0xc612010d, 9376}, 3, flow_state::udp, 1);
  ASSERT_NE(again, nullptr);
  EXPECT_NE(again, ea);
  EXPECT_EQ(ct->lookup(a, conntrack::hash(a)).entry, again);
  // The owner's sweep unlinks the flushed entry long before its timeout, without counting
  // it as expired, and recycles it after a grace period.
  EXPECT_EQ(ct->sweep(ws[0], 2, 2048), 0u);
  EXPECT_EQ(ea->state.load(), flow_state::free);
  quiesce();
  ct->sweep(ws[0], 2, 0);
  EXPECT_EQ(ws[0].free.size(), free_before);  // one recycled, one taken by `again`
  EXPECT_EQ(ct->lookup(a, conntrack::hash(a)).entry, again);
}

TEST_F(fixture, TouchKeepsAFlowAlive) {
  flow_key a = client(1);
  flow_entry* e = ct->insert(ws[0], a, {1, 1}, 0, flow_state::udp, 0);  // 10 s
  ct->touch(*e, 8 * kHz);
  EXPECT_EQ(ct->sweep(ws[0], 15 * kHz, 2048), 0u);
  EXPECT_EQ(ct->sweep(ws[0], 19 * kHz, 2048), 1u);
}

TEST_F(fixture, CapacityIsExactAndSplitBetweenWorkers) {
  make(3000, 2);  // not a power of two: entries are not rounded up, the index is
  EXPECT_EQ(ct->capacity(), 3000u);
  EXPECT_EQ(ct->memory_bytes(), 3000u * sizeof(flow_entry) + 2048u * 64);
  uint32_t inserted[2] = {0, 0};
  for (uint32_t i = 0; i < 4000; ++i) {
    unsigned w = i % 2;
    inserted[w] += ct->insert(ws[w], client(i), {1, 1}, 0, flow_state::udp, 0) != nullptr;
  }
  EXPECT_EQ(inserted[0], 1500u);
  EXPECT_EQ(inserted[1], 1500u);
}

TEST_F(fixture, FullTableReturnsNullAndRecovers) {
  uint32_t inserted = 0;
  for (uint32_t i = 0; i < 5000; ++i) {
    inserted += ct->insert(ws[0], client(i), {1, 1}, 0, flow_state::udp, 0) != nullptr;
  }
  EXPECT_EQ(inserted, ct->capacity());
  EXPECT_EQ(ct->insert(ws[0], client(9999), {1, 1}, 0, flow_state::udp, 0), nullptr);
  // Everything expires; after a grace period the table takes new flows again.
  ct->sweep(ws[0], 11 * kHz, ct->capacity());
  quiesce();
  ct->sweep(ws[0], 11 * kHz, 0);
  EXPECT_NE(ct->insert(ws[0], client(9999), {1, 1}, 0, flow_state::udp, 11 * kHz), nullptr);
}

TEST_F(fixture, TombstonesDoNotHideLaterFlows) {
  // Churn far more flows than the capacity through the same table; every live flow must
  // stay findable (slots are reused, lookups stop only at empty slots).
  uint64_t now = 0;
  for (uint32_t round = 0; round < 20; ++round) {
    for (uint32_t i = 0; i < 800; ++i) {
      flow_key k = client(round * 1000 + i);
      ASSERT_NE(ct->insert(ws[0], k, {1, 1}, 0, flow_state::tcp_closing, now), nullptr)
          << "round " << round << " flow " << i;
    }
    for (uint32_t i = 0; i < 800; ++i) {
      flow_key k = client(round * 1000 + i);
      ASSERT_NE(ct->lookup(k, conntrack::hash(k)).entry, nullptr);
    }
    now += 3 * kHz;  // all expire
    ct->sweep(ws[0], now, ct->capacity());
    quiesce();
    ct->sweep(ws[0], now, 0);
  }
}

TEST_F(fixture, WorkersOwnDisjointShares) {
  make(1024, 2);
  flow_entry* a = ct->insert(ws[0], client(1), {1, 1}, 0, flow_state::udp, 0);
  flow_entry* b = ct->insert(ws[1], client(2), {1, 1}, 0, flow_state::udp, 0);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->owner, 0);
  EXPECT_EQ(b->owner, 1);
  // Either worker finds the other's flow.
  flow_key k = client(2);
  EXPECT_EQ(ct->lookup(k, conntrack::hash(k)).entry, b);
}

// Two threads, each inserting its own flows and looking up the other's replies while both
// sweep: every flow the other side has published must be found with the right backend.
TEST_F(fixture, ConcurrentInsertLookupAcrossWorkers) {
  make(1 << 16, 2);
  std::atomic<uint32_t> published[2] = {0, 0};
  std::atomic<bool> failed{false};
  auto run = [&](unsigned me) {
    unsigned other = 1 - me;
    for (uint32_t i = 0; i < 20000; ++i) {
      flow_key k = client(me * 100000 + i);
      uint32_t backend = 0x0a000000 + me * 100000 + i;
      if (!ct->insert(ws[me], k, {backend, 9376}, 0, flow_state::tcp_established, 1)) {
        failed = true;
        return;
      }
      published[me].store(i + 1, std::memory_order_release);
      uint32_t seen = published[other].load(std::memory_order_acquire);
      if (seen) {
        uint32_t j = seen - 1;
        flow_key o = client(other * 100000 + j);
        flow_key rev{0x0a000000 + other * 100000 + j, o.src_ip, 9376, o.src_port, 6};
        auto hit = ct->lookup(rev, conntrack::hash(rev));
        if (!hit.entry || hit.dir != flow_dir::reply || hit.entry->vip != o.dst_ip) failed = true;
      }
      // The flows the other side may be inserting right now, not announced yet: only the
      // index's release/acquire orders their fields before this lookup (what the
      // ThreadSanitizer run checks). Any flow found must be whole.
      for (uint32_t j = seen; j < seen + 2; ++j) {
        flow_key o = client(other * 100000 + j);
        auto hit = ct->lookup(o, conntrack::hash(o));
        if (hit.entry && (hit.dir != flow_dir::forward ||
                          hit.entry->backend_ip != 0x0a000000 + other * 100000 + j)) {
          failed = true;
        }
      }
      ct->sweep(ws[me], 2, 16);
      rte_rcu_qsbr_quiescent(qsbr, me);
    }
  };
  std::thread t0(run, 0), t1(run, 1);
  t0.join();
  t1.join();
  EXPECT_FALSE(failed.load());
}

// TCP abuse: the embryonic (SYN_SENT) ledger stays exact whoever moves an entry.
TEST_F(fixture, EmbryonicCountFollowsEveryMoveOnAnyWorker) {
  syn_max = 100;
  make(1024, 2);
  EXPECT_EQ(ct->syn_max(), 50u);  // split between the workers
  std::vector<flow_entry*> e;
  for (uint32_t i = 0; i < 50; ++i) {
    ASSERT_TRUE(ct->syn_admit(ws[0]));
    e.push_back(ct->insert(ws[0], client(i), {1, 1}, 0, flow_state::tcp_syn, 0));
    ASSERT_NE(e.back(), nullptr);
  }
  EXPECT_EQ(ct->embryonic(0), 50u);
  EXPECT_FALSE(ct->syn_admit(ws[0]));
  EXPECT_TRUE(ct->syn_admit(ws[1]));  // each worker has its own share
  EXPECT_EQ(ct->embryonic(1), 0u);
  // Other states do not count.
  ASSERT_NE(ct->insert(ws[0], client(100), {1, 1}, 0, flow_state::tcp_established, 0), nullptr);
  EXPECT_EQ(ct->embryonic(0), 50u);
  // Worker 1 sees the backend's answer to one of worker 0's entries.
  EXPECT_TRUE(ct->set_state(1, *e[0], flow_state::tcp_syn, flow_state::tcp_established));
  EXPECT_EQ(ct->embryonic(0), 49u);
  EXPECT_TRUE(ct->syn_admit(ws[0]));
  // Worker 0 saw it too, from its stale load: its move fails and counts nothing.
  EXPECT_FALSE(ct->set_state(0, *e[0], flow_state::tcp_syn, flow_state::tcp_reset));
  EXPECT_EQ(e[0]->state.load(), flow_state::tcp_established);
  EXPECT_EQ(ct->embryonic(0), 49u);
  // Into SYN_SENT again (a SYN reusing a closed entry), on worker 1.
  ct->set_state(1, *e[0], flow_state::tcp_established, flow_state::tcp_reset);
  EXPECT_TRUE(ct->set_state(1, *e[0], flow_state::tcp_reset, flow_state::tcp_syn));
  EXPECT_EQ(ct->embryonic(0), 50u);
  // Expiry of SYN_SENT entries (5 s) counts them out; the established one stays.
  EXPECT_EQ(ct->sweep(ws[0], 6 * kHz, 1024), 50u);
  EXPECT_EQ(ct->embryonic(0), 0u);
  flow_key k = client(100);
  EXPECT_NE(ct->lookup(k, conntrack::hash(k)).entry, nullptr);
  // A flushed SYN_SENT entry counts out when the owner unlinks it.
  ASSERT_NE(ct->insert(ws[1], client(200), {1, 1}, 0, flow_state::tcp_syn, 6 * kHz), nullptr);
  EXPECT_EQ(ct->embryonic(1), 1u);
  EXPECT_EQ(ct->flush([](const flow_entry& x) { return x.client_port == 40200; }), 1u);
  ct->sweep(ws[1], 6 * kHz, 1024);
  EXPECT_EQ(ct->embryonic(1), 0u);
}

TEST_F(fixture, SynFloodOfTenTimesTheCapacityEvictsNoEstablishedFlow) {
  // What the pipeline does per SYN: an entry only while under the cap.
  const uint32_t established = 300;
  for (uint32_t i = 0; i < established; ++i) {
    ASSERT_NE(ct->insert(ws[0], client(i), {1, 1}, 0, flow_state::tcp_established, 0), nullptr);
  }
  uint64_t now = 0;
  uint32_t admitted = 0, max_embryonic = 0;
  for (uint32_t i = 0; i < 10 * ct->capacity(); ++i) {
    now += kHz / 1000;  // 1000 SYNs a second of fake time: the sweep runs through it
    if (ct->syn_admit(ws[0])) {
      admitted +=
          ct->insert(ws[0], client(100000 + i), {2, 2}, 0, flow_state::tcp_syn, now) != nullptr;
    }
    max_embryonic = std::max(max_embryonic, ct->embryonic(0));
    ct->sweep_paced(ws[0], now);
    quiesce();
  }
  EXPECT_LE(max_embryonic, ct->syn_max());
  EXPECT_GT(admitted, ct->syn_max());  // the cap frees up as SYN_SENT entries time out
  for (uint32_t i = 0; i < established; ++i) {
    flow_key k = client(i);
    ASSERT_NE(ct->lookup(k, conntrack::hash(k)).entry, nullptr) << i;
  }
}

TEST_F(fixture, ResetAndClosingHaveTheirOwnTimeouts) {
  flow_key a = client(1), b = client(2);
  ASSERT_NE(ct->insert(ws[0], a, {1, 1}, 0, flow_state::tcp_reset, 0), nullptr);    // 1 s
  ASSERT_NE(ct->insert(ws[0], b, {1, 1}, 0, flow_state::tcp_closing, 0), nullptr);  // 2 s
  EXPECT_EQ(ct->sweep(ws[0], kHz + kHz / 2, 2048), 1u);
  EXPECT_EQ(ct->lookup(a, conntrack::hash(a)).entry, nullptr);
  EXPECT_NE(ct->lookup(b, conntrack::hash(b)).entry, nullptr);
  EXPECT_EQ(ct->sweep(ws[0], 3 * kHz, 2048), 1u);
  EXPECT_STREQ(flow_state_name(flow_state::tcp_reset), "RESET");
}

// Two workers race to move the same SYN_SENT entries out (the backend's answer seen on both),
// while the owner's sweep expires them: each leaves the count exactly once.
TEST_F(fixture, EmbryonicLedgerCountsRacingMovesOnce) {
  make(1 << 14, 2);
  for (int round = 0; round < 20; ++round) {
    std::vector<flow_entry*> es;
    for (uint32_t i = 0; i < 2000; ++i) {
      flow_entry* e = ct->insert(ws[0], client(round * 10000 + i), {1, 1}, 0, flow_state::tcp_syn,
                                 uint64_t(round) * 100 * kHz);
      ASSERT_NE(e, nullptr);
      es.push_back(e);
    }
    ASSERT_EQ(ct->embryonic(0), 2000u);
    std::atomic<uint32_t> wins{0};
    auto mover = [&](unsigned by) {
      for (flow_entry* e : es) {
        if (ct->set_state(by, *e, flow_state::tcp_syn, flow_state::tcp_established)) ++wins;
      }
    };
    // Worker 0 also sweeps, with every SYN_SENT entry past its timeout, while worker 1 moves.
    std::thread t1(mover, 1);
    ct->sweep(ws[0], (uint64_t(round) * 100 + 50) * kHz, ct->capacity());
    mover(0);
    t1.join();
    EXPECT_EQ(ct->embryonic(0), 0u) << "round " << round;
    EXPECT_LE(wins.load(), 2000u);
    // Clean up: everything expires (established after 100 s), and is recycled.
    ct->sweep(ws[0], (uint64_t(round) * 100 + 99) * kHz + 200 * kHz, ct->capacity());
    quiesce();
    ct->sweep(ws[0], (uint64_t(round) * 100 + 99) * kHz + 200 * kHz, 0);
  }
}

}  // namespace
}  // namespace ferry::dp

FERRY_TEST_MAIN_WITH_EAL()
