// Per-source new-flow limit ([limits] new_flows_per_source / new_flows_burst): a token bucket
// per client address for new flows to service ports. Established flows never come here.
// The DNS responder's response rate limit ([dns] rate_limit) is a second table of the same
// kind, keyed by the source's prefix (the address with its host bits cleared).
//
// Concurrency contract: one table per worker, written and read only by that worker (no
// atomics). It is allocated once at start and never grows.
//
// The bucket is kept as GCRA's "theoretical arrival time" (one TSC value per source): a
// new flow is admitted when, after charging it one interval, the source is no more than a
// full burst ahead of now. That is the token bucket (rate, burst) with no division per
// packet. A slot whose time is already past is a full bucket, so reusing it loses nothing.
//
// The table is 4-way set-associative by client address (16-byte slots, one cache line per
// set). On a miss the slot with the oldest time is replaced: when that one is still
// limited (every source of the set is), its source loses its state and starts over with a
// full bucket. That is the collision cost: a few more flows let through, never fewer.
//
// RSS spreads one client's flows over the workers by the 5-tuple, so each worker enforces
// rate / workers (and burst / workers, at least one flow): together about the configured
// rate, whatever the number of workers.
#pragma once

#include <rte_malloc.h>

#include <algorithm>
#include <bit>
#include <cstdint>

#include "ferry/hash.hpp"

namespace ferry::dp {

class source_limiter {
 public:
  source_limiter() = default;
  source_limiter(const source_limiter&) = delete;
  source_limiter& operator=(const source_limiter&) = delete;
  ~source_limiter() { rte_free(slots_); }

  /// rate new flows per second per source (0: off) with a bucket of burst (0: rate), split
  /// over `workers`; `table_size` sources tracked (rounded up to a power of two, at least
  /// one set). False when the table cannot be allocated.
  bool init(uint32_t rate, uint32_t burst, uint32_t table_size, unsigned workers, uint64_t tsc_hz) {
    rte_free(slots_);
    slots_ = nullptr;
    set_mask_ = 0;
    if (!rate) return true;
    if (!burst) burst = rate;
    workers = std::max(workers, 1u);
    interval_ = tsc_hz * workers / rate;
    window_ = std::max(tsc_hz * burst / rate, interval_);
    const uint32_t sets = std::bit_ceil(std::max(table_size, kWays)) / kWays;
    slots_ = static_cast<slot*>(rte_zmalloc("source_limiter", sizeof(slot) * kWays * sets, 64));
    if (!slots_) return false;
    set_mask_ = sets - 1;
    return true;
  }

  bool enabled() const { return slots_ != nullptr; }

  /// Charges one new flow from src at TSC now; false when src is over its rate.
  bool admit(uint32_t src, uint64_t now) {
    slot* set = &slots_[(hash_tuple(src, 0, 0, 0, 0) & set_mask_) * kWays];
    slot* s = nullptr;
    slot* oldest = set;
    for (uint32_t i = 0; i < kWays; ++i) {
      if (set[i].ip == src) {
        s = &set[i];
        break;
      }
      if (set[i].tat < oldest->tat) oldest = &set[i];
    }
    if (!s) {
      s = oldest;
      s->ip = src;
      s->tat = 0;  // a full bucket
    }
    const uint64_t next = std::max(s->tat, now) + interval_;
    if (next - now > window_) return false;
    s->tat = next;
    return true;
  }

  /// Sources tracked (the table's slots).
  uint64_t capacity() const { return slots_ ? uint64_t{set_mask_ + 1} * kWays : 0; }

 private:
  static constexpr uint32_t kWays = 4;
  struct slot {
    uint32_t ip;  // 0: empty (0.0.0.0 is a martian source, never a client)
    uint32_t pad;
    uint64_t tat;  // TSC by which the source's bucket is full again
  };
  static_assert(sizeof(slot) * kWays == 64);

  slot* slots_ = nullptr;
  uint64_t set_mask_ = 0;
  uint64_t interval_ = 0;  // TSC per flow at this worker's share of the rate
  uint64_t window_ = 0;    // TSC: how far ahead of now a source may run (the burst)
};

}  // namespace ferry::dp
