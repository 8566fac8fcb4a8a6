// Publishing snapshots to the workers with RCU (DPDK QSBR).
//
// The control thread is the only writer of the slot. It stores the new snapshot with
// release (workers load it with acquire, so everything built before the store is visible),
// then waits for a grace period: every online worker has reported a quiescent state since
// the store, so none can still hold the old pointer, which is then freed.
#pragma once

#include <rte_rcu_qsbr.h>

#include <atomic>
#include <memory>

#include "ferry/snapshot.hpp"

namespace ferry::control {

class publisher {
 public:
  publisher(std::atomic<const snapshot*>& slot, rte_rcu_qsbr* qsbr) : slot_(slot), qsbr_(qsbr) {}
  ~publisher() { delete slot_.exchange(nullptr); }

  /// Makes next the current snapshot and frees the previous one after a grace period.
  void publish(std::unique_ptr<const snapshot> next) {
    const snapshot* old = slot_.load(std::memory_order_relaxed);
    slot_.store(next.release(), std::memory_order_release);
    if (old) {
      // What rte_rcu_qsbr_synchronize(qsbr_, RTE_QSBR_THRID_INVALID) does, spelled with the
      // header's inline functions so that the acquire loads of the workers' counters are
      // compiled into ferry: under ThreadSanitizer they are then seen, and order the reads
      // of old before its delete (inside librte_rcu, which is not instrumented, they are not).
      rte_rcu_qsbr_check(qsbr_, rte_rcu_qsbr_start(qsbr_), true);
      delete old;
    }
  }

  const snapshot* current() const { return slot_.load(std::memory_order_relaxed); }

 private:
  std::atomic<const snapshot*>& slot_;
  rte_rcu_qsbr* qsbr_;
};

}  // namespace ferry::control
