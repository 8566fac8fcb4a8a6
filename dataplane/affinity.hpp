// sessionAffinity: ClientIP memory: the backend a client last got from a service port, and
// when. kube-proxy's iptables mode keeps the same thing in the `recent` module, refreshed by
// every new connection; ferry refreshes it on every new flow.
//
// Concurrency contract: shared by all workers, lock-free and lossy, like a cache. A slot is
// two atomic words, key and value, each written and read whole (relaxed value, release key /
// acquire key). Two workers writing one slot at once can leave one's key with the other's
// value; that only moves a client to a different backend, and a reader never trusts a value
// blindly: the backend must still be an active backend of the service port it asks for
// (service_port_entry::active), so a stale or torn slot can never send traffic anywhere the
// service does not allow. Eviction: an empty slot, else the least recently used of the 4 in
// the bucket. Memory: 16 bytes per slot, fixed at start.
#pragma once

#include <atomic>
#include <bit>
#include <cstdint>
#include <memory>

#include "ferry/hash.hpp"

namespace ferry::dp {

class affinity_table {
 public:
  /// Times are in kTick-second units kept in 16 bits: they wrap after 36 hours, beyond the
  /// API's largest timeout (86400 s), so an age is right for any entry used within that.
  static constexpr uint32_t kTickSeconds = 2;

  explicit affinity_table(uint32_t capacity)
      : buckets_(std::bit_ceil(std::max<uint32_t>(capacity / kWays, 1))),
        table_(new bucket[buckets_]) {}

  static uint64_t key(uint32_t client, uint64_t service) {
    return hash2(client, service, 0x5a) | 1;
  }

  /// The backend remembered for key if it was used at most timeout_ticks ago.
  bool find(uint64_t k, uint16_t now, uint16_t timeout_ticks, uint32_t& ip, uint16_t& port) const {
    const bucket& b = table_[k & (buckets_ - 1)];
    for (const auto& s : b.slots) {
      // acquire: pairs with the release store in remember(), so the value read next is at
      // least as new as the key.
      if (s.key.load(std::memory_order_acquire) != k) continue;
      uint64_t v = s.value.load(std::memory_order_relaxed);
      if (static_cast<uint16_t>(now - static_cast<uint16_t>(v)) > timeout_ticks) return false;
      ip = static_cast<uint32_t>(v >> 32);
      port = static_cast<uint16_t>(v >> 16);
      return true;
    }
    return false;
  }

  /// Records that key's client now uses ip:port.
  void remember(uint64_t k, uint32_t ip, uint16_t port, uint16_t now) {
    bucket& b = table_[k & (buckets_ - 1)];
    const uint64_t v = uint64_t{ip} << 32 | uint64_t{port} << 16 | now;
    slot* victim = &b.slots[0];
    uint16_t oldest = 0;
    for (auto& s : b.slots) {
      uint64_t sk = s.key.load(std::memory_order_relaxed);
      if (sk == k) {
        s.value.store(v, std::memory_order_relaxed);
        return;
      }
      auto age = static_cast<uint16_t>(
          now - static_cast<uint16_t>(s.value.load(std::memory_order_relaxed)));
      if (sk == 0) age = UINT16_MAX;
      if (age >= oldest) {
        oldest = age;
        victim = &s;
      }
    }
    victim->value.store(v, std::memory_order_relaxed);
    // release: a reader that sees this key also sees the value stored above.
    victim->key.store(k, std::memory_order_release);
  }

  size_t memory_bytes() const { return buckets_ * sizeof(bucket); }

 private:
  static constexpr uint32_t kWays = 4;
  struct slot {
    std::atomic<uint64_t> key{0};    // 0: empty (keys always have the low bit set)
    std::atomic<uint64_t> value{0};  // backend ip << 32 | port << 16 | last use (ticks)
  };
  struct alignas(64) bucket {
    slot slots[kWays];
  };
  size_t buckets_;
  std::unique_ptr<bucket[]> table_;
};

}  // namespace ferry::dp
