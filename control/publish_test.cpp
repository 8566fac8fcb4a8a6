// RCU publication under load: reader threads (standing in for workers) read every snapshot
// they find while the control thread publishes and frees thousands of them. Under ASan a
// snapshot freed before its grace period ends is a use-after-free report; in any build a
// reader must never see a half-built snapshot or a generation going backwards.
#include "publish.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <thread>
#include <vector>

namespace ferry::control {
namespace {

std::unique_ptr<snapshot> make_snapshot(uint64_t generation) {
  auto s = std::make_unique<snapshot>();
  s->generation = generation;
  std::vector<std::pair<uint64_t, std::shared_ptr<const service_port_entry>>> ports;
  for (uint32_t i = 0; i < 4; ++i) {
    auto e = std::make_shared<service_port_entry>();
    e->id = static_cast<uint32_t>(generation);  // every entry names its snapshot
    e->backends.assign(3, backend{static_cast<uint32_t>(generation), 80, 1});
    ports.emplace_back(service_key(i, 6, 80), std::move(e));
  }
  s->vips = sharded_map<std::shared_ptr<const service_port_entry>>::build(ports);
  return s;
}

TEST(Publish, ReadersNeverSeeAFreedOrPartialSnapshot) {
  constexpr unsigned kReaders = 2;
  size_t size = rte_rcu_qsbr_get_memsize(kReaders);
  auto* qsbr = static_cast<rte_rcu_qsbr*>(std::aligned_alloc(64, (size + 63) / 64 * 64));
  ASSERT_EQ(rte_rcu_qsbr_init(qsbr, kReaders), 0);
  std::atomic<const snapshot*> slot{nullptr};
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads{0}, errors{0};

  {
    publisher pub(slot, qsbr);
    pub.publish(make_snapshot(1));
    std::vector<std::thread> readers;
    for (unsigned id = 0; id < kReaders; ++id) {
      readers.emplace_back([&, id] {
        rte_rcu_qsbr_thread_register(qsbr, id);
        rte_rcu_qsbr_thread_online(qsbr, id);
        uint64_t last = 0;
        while (!stop.load(std::memory_order_relaxed)) {
          const snapshot* s = slot.load(std::memory_order_acquire);
          uint64_t g = s->generation;
          if (g < last || s->vips.size() != 4) errors++;
          for (uint32_t i = 0; i < 4; ++i) {
            const auto* e = s->vips.find(service_key(i, 6, 80));
            if (!e || (*e)->id != g || (*e)->backends.size() != 3 || (*e)->backends[2].ip != g) {
              errors++;
            }
          }
          last = g;
          reads++;
          rte_rcu_qsbr_quiescent(qsbr, id);
        }
        rte_rcu_qsbr_thread_offline(qsbr, id);
        rte_rcu_qsbr_thread_unregister(qsbr, id);
      });
    }
    // Publish only while both readers are online and reading.
    while (reads.load() < 1000) std::this_thread::yield();
    // Each publish waits a grace period; with readers spinning on two shared cores that is
    // a scheduler slice or so, hence a modest count.
    for (uint64_t g = 2; g <= 600; ++g) pub.publish(make_snapshot(g));
    uint64_t during = reads.load();
    stop = true;
    for (auto& t : readers) t.join();
    EXPECT_EQ(pub.current()->generation, 600u);
    EXPECT_GT(during, 1000u);
  }
  EXPECT_EQ(errors.load(), 0u);
  EXPECT_GT(reads.load(), 1000u);
  EXPECT_EQ(slot.load(), nullptr);  // the publisher frees the last one on the way out
  std::free(qsbr);
}

}  // namespace
}  // namespace ferry::control
