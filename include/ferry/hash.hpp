// Fixed-seed hashes shared by the control thread (Maglev permutations) and the workers (flow
// hashing). They must give the same answers on every node and across restarts, so they never
// take a random seed. Pure functions, thread-safe.
#pragma once

#include <cstdint>

namespace ferry {

/// 64-bit finalizer (murmur3 fmix64): full avalanche for one word.
constexpr uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

/// Hash of two words with a seed; used for 5-tuples and backend identities.
constexpr uint64_t hash2(uint64_t a, uint64_t b, uint64_t seed) {
  return mix64(a ^ mix64(b ^ seed) ^ (seed * 0x9e3779b97f4a7c15ULL));
}

constexpr uint64_t kMaglevOffsetSeed = 0x6665727279000001ULL;  // "ferry" + 1
constexpr uint64_t kMaglevSkipSeed = 0x6665727279000002ULL;
constexpr uint64_t kFlowSeed = 0x6665727279000003ULL;

/// The flow hash Maglev and the connection table use: src/dst address, ports and protocol.
constexpr uint64_t hash_tuple(uint32_t src_ip, uint32_t dst_ip, uint16_t src_port,
                              uint16_t dst_port, uint8_t proto) {
  return hash2((uint64_t{src_ip} << 32) | dst_ip,
               (uint64_t{src_port} << 24) | (uint64_t{dst_port} << 8) | proto, kFlowSeed);
}

}  // namespace ferry
