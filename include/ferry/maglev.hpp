// Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of M slots (M prime)
// filled from per-backend permutations, so a flow hash picks a backend with one memory access
// and removing one of N backends moves only about 1/N of flows. Permutations come from a
// fixed-seed hash of the backend's address and port: every node (and a restarted one) with
// the same backends builds the same table.
//
// Built by the control thread at publish time; the finished table is immutable and read by
// workers without synchronisation (it is reached through an RCU-published snapshot).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace ferry {

struct maglev_backend {
  uint32_t ip = 0;  // host order
  uint16_t port = 0;
  uint32_t weight = 1;  // relative share of slots; 0 = drain (no new flows)
};

constexpr uint32_t kMaglevSlotsPerBackend = 100;  // keeps imbalance under 1%
constexpr uint32_t kMaglevMinSize = 251;
constexpr uint32_t kMaglevDefaultMaxSize = 655373;
constexpr uint16_t kMaglevNoBackend = 0xffff;

/// Smallest prime M >= max(kMaglevMinSize, kMaglevSlotsPerBackend * backends), capped at the
/// largest prime <= max_size.
uint32_t maglev_table_size(size_t backends, uint32_t max_size = kMaglevDefaultMaxSize);

/// Fills a table of size m (prime) with indices into backends. Backends of weight 0 get no
/// slots; when every weight is 0 (or there are none) every slot is kMaglevNoBackend.
/// At most 65535 backends.
std::vector<uint16_t> maglev_build(std::span<const maglev_backend> backends, uint32_t m);

bool is_prime(uint32_t n);

}  // namespace ferry
