// Internet checksum helpers: full computation (for packets ferry builds) and incremental
// update (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')) for fields ferry rewrites. All values
// are taken exactly as they sit in the header (network order): one's-complement sums do not
// care about byte order as long as every operand uses the same one. Pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace ferry::dp {

inline uint16_t csum_fold(uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}

/// One's-complement sum of a buffer (not inverted), continuing from `sum`.
inline uint64_t csum_add(const void* data, size_t len, uint64_t sum = 0) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (len >= 2) {
    uint16_t w;
    std::memcpy(&w, p, 2);
    sum += w;
    p += 2;
    len -= 2;
  }
  if (len) {
    uint16_t w = 0;
    std::memcpy(&w, p, 1);
    sum += w;
  }
  return sum;
}

/// Finished checksum of a buffer (what goes in the header).
inline uint16_t csum(const void* data, size_t len, uint64_t sum = 0) {
  return static_cast<uint16_t>(~csum_fold(csum_add(data, len, sum)));
}

/// New checksum after a 16-bit field changed from old_v to new_v.
inline uint16_t csum_update16(uint16_t check, uint16_t old_v, uint16_t new_v) {
  uint64_t sum = static_cast<uint16_t>(~check);
  sum += static_cast<uint16_t>(~old_v);
  sum += new_v;
  return static_cast<uint16_t>(~csum_fold(sum));
}

/// New checksum after a 32-bit field (an address) changed from old_v to new_v.
inline uint16_t csum_update32(uint16_t check, uint32_t old_v, uint32_t new_v) {
  uint64_t sum = static_cast<uint16_t>(~check);
  sum += static_cast<uint16_t>(~old_v) + static_cast<uint16_t>(~(old_v >> 16));
  sum += (new_v & 0xffff) + (new_v >> 16);
  return static_cast<uint16_t>(~csum_fold(sum));
}

}  // namespace ferry::dp
