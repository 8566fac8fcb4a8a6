// flat_map<V>: an immutable open-addressing hash table from a 64-bit key to a small value.
// The control thread builds it (allocating) inside a snapshot; workers only call find(),
// which neither allocates nor writes. Safe for any number of concurrent readers once built.
#pragma once

#include <bit>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "ferry/hash.hpp"

namespace ferry {

template <typename V>
class flat_map {
 public:
  flat_map() = default;

  /// Builds a table at most half full. Later duplicates of a key are ignored.
  static flat_map build(std::span<const std::pair<uint64_t, V>> items) {
    flat_map m;
    size_t size = std::bit_ceil(std::max<size_t>(16, items.size() * 2));
    m.slots_.resize(size);
    m.mask_ = size - 1;
    for (const auto& [key, value] : items) {
      for (size_t i = slot_of(key) & m.mask_;; i = (i + 1) & m.mask_) {
        slot& s = m.slots_[i];
        if (!s.used) {
          s = slot{key, value, true};
          ++m.size_;
          break;
        }
        if (s.key == key) break;
      }
    }
    return m;
  }

  /// Pointer to the value for key, or nullptr.
  const V* find(uint64_t key) const {
    if (slots_.empty()) return nullptr;
    for (size_t i = slot_of(key) & mask_;; i = (i + 1) & mask_) {
      const slot& s = slots_[i];
      if (!s.used) return nullptr;
      if (s.key == key) return &s.value;
    }
  }

  size_t size() const { return size_; }

 private:
  struct slot {
    uint64_t key = 0;
    V value{};
    bool used = false;
  };
  static size_t slot_of(uint64_t key) { return static_cast<size_t>(mix64(key)); }

  std::vector<slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

}  // namespace ferry
