#include "ferry/maglev.hpp"

#include <algorithm>

#include "ferry/hash.hpp"

namespace ferry {

bool is_prime(uint32_t n) {
  if (n < 2) return false;
  if (n % 2 == 0) return n == 2;
  for (uint32_t d = 3; uint64_t{d} * d <= n; d += 2) {
    if (n % d == 0) return false;
  }
  return true;
}

uint32_t maglev_table_size(size_t backends, uint32_t max_size) {
  uint64_t want = std::max<uint64_t>(kMaglevMinSize, uint64_t{kMaglevSlotsPerBackend} * backends);
  // The cap is the same for every table of a node: find its prime once (a load builds
  // thousands of tables).
  thread_local uint32_t last_max = 0, last_cap = 0;
  if (max_size != last_max) {
    last_max = max_size;
    last_cap = std::max(max_size, kMaglevMinSize);
    while (!is_prime(last_cap)) --last_cap;
  }
  const uint32_t cap = last_cap;
  if (want >= cap) return cap;
  auto m = static_cast<uint32_t>(want);
  while (!is_prime(m)) ++m;
  return std::min(m, cap);
}

std::vector<uint16_t> maglev_build(std::span<const maglev_backend> backends, uint32_t m) {
  std::vector<uint16_t> table(m, kMaglevNoBackend);
  const size_t n = std::min<size_t>(backends.size(), 0xffff);
  uint32_t max_weight = 0;
  for (size_t i = 0; i < n; ++i) max_weight = std::max(max_weight, backends[i].weight);
  if (max_weight == 0) return table;

  // Per backend: permutation (offset, skip) and the next position in it. Weights are honoured
  // by credit: each round a backend earns its weight and places one slot per max_weight
  // earned, so shares are proportional to weights (the unweighted case is plain Maglev).
  struct state {
    uint32_t pos, skip;  // pos: the backend's next preferred slot, (offset + j * skip) % m
    uint64_t credit;
  };
  std::vector<state> perm(n);
  for (size_t i = 0; i < n; ++i) {
    uint64_t id = (uint64_t{backends[i].ip} << 16) | backends[i].port;
    perm[i].pos = static_cast<uint32_t>(hash2(id, 0, kMaglevOffsetSeed) % m);
    perm[i].skip = static_cast<uint32_t>(hash2(id, 0, kMaglevSkipSeed) % (m - 1)) + 1;
    perm[i].credit = 0;
  }

  auto advance = [m](state& s) {
    s.pos += s.skip;
    if (s.pos >= m) s.pos -= m;
  };
  uint32_t filled = 0;
  while (true) {
    for (size_t i = 0; i < n; ++i) {
      state& s = perm[i];
      s.credit += backends[i].weight;
      while (s.credit >= max_weight) {
        s.credit -= max_weight;
        while (table[s.pos] != kMaglevNoBackend) advance(s);
        table[s.pos] = static_cast<uint16_t>(i);
        advance(s);
        if (++filled == m) return table;
      }
    }
  }
}

}  // namespace ferry
