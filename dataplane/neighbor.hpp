// The neighbor (ARP) table: next-hop address -> MAC, per port, learned from ARP replies and
// from requests aimed at us. Shared by all workers, lock-free: an entry's key is claimed once
// with a CAS and never removed (a fixed-size table of next hops, which are few); its MAC and
// timestamps are single atomic words. An entry is usable while confirmed within `timeout`;
// after that packets wait for a fresh answer like unresolved ones (see docs/architecture.md).
#pragma once

#include <rte_ether.h>

#include <atomic>
#include <bit>
#include <cstdint>
#include <cstring>
#include <memory>

namespace ferry::dp {

class neighbor_table {
 public:
  static constexpr uint32_t kSize = 4096;  // power of two

  struct entry {
    std::atomic<uint64_t> key{0};        // (port << 32 | ip) + 1; 0: unused
    std::atomic<uint64_t> mac{0};        // 48-bit MAC; 0: never resolved
    std::atomic<uint64_t> confirmed{0};  // TSC of the last ARP answer
    std::atomic<uint64_t> requested{0};  // TSC of the last request we sent
  };

  explicit neighbor_table(uint64_t timeout_tsc) : timeout_(timeout_tsc) {}

  /// Finds the entry for (port, ip), creating it when create is set; nullptr when absent or
  /// when the table is full.
  entry* get(uint16_t port, uint32_t ip, bool create) {
    const uint64_t k = ((uint64_t{port} << 32) | ip) + 1;
    for (uint32_t n = 0, i = hash(k); n < kSize; ++n, i = (i + 1) & (kSize - 1)) {
      uint64_t cur = table_[i].key.load(std::memory_order_acquire);
      if (cur == k) return &table_[i];
      if (cur != 0) continue;
      if (!create) return nullptr;
      if (table_[i].key.compare_exchange_strong(cur, k, std::memory_order_acq_rel) || cur == k) {
        return &table_[i];
      }
    }
    return nullptr;
  }

  /// The MAC to use now, or false when unresolved or expired.
  bool resolve(const entry& e, uint64_t now, rte_ether_addr& out) const {
    uint64_t mac = e.mac.load(std::memory_order_acquire);
    uint64_t at = e.confirmed.load(std::memory_order_relaxed);
    if (!mac || (now > at && now - at > timeout_)) return false;
    static_assert(std::endian::native == std::endian::little);  // byte b is bits 8b..8b+7
    std::memcpy(out.addr_bytes, &mac, RTE_ETHER_ADDR_LEN);
    return true;
  }

  /// Records an answer.
  static void learn(entry& e, const rte_ether_addr& mac, uint64_t now) {
    uint64_t v = 0;
    for (int b = 0; b < 6; ++b) v |= uint64_t{mac.addr_bytes[b]} << (8 * b);
    e.confirmed.store(now, std::memory_order_relaxed);
    e.mac.store(v, std::memory_order_release);
  }

  /// True when this caller should send an ARP request now (at most one per interval).
  static bool should_request(entry& e, uint64_t now, uint64_t interval) {
    uint64_t last = e.requested.load(std::memory_order_relaxed);
    if (last && now > last && now - last < interval) return false;
    return e.requested.compare_exchange_strong(last, now, std::memory_order_relaxed);
  }

  uint64_t timeout() const { return timeout_; }

  /// Walks all used entries (control thread, for display).
  template <typename Fn>
  void for_each(Fn&& fn) const {
    for (const auto& e : table_) {
      if (uint64_t k = e.key.load(std::memory_order_acquire)) fn(k - 1, e);
    }
  }

 private:
  static uint32_t hash(uint64_t k) {
    k *= 0x9e3779b97f4a7c15ULL;
    return static_cast<uint32_t>(k >> 40) & (kSize - 1);
  }

  uint64_t timeout_;
  entry table_[kSize];
};

}  // namespace ferry::dp
