// flat_map<V>: an immutable open-addressing hash table from a 64-bit key to a small value.
// The control thread builds it (allocating) inside a snapshot; workers only call find(),
// which neither allocates nor writes. Safe for any number of concurrent readers once built.
//
// sharded_map<V>: the same, split into 256 flat_maps by key hash. Copying one copies 256
// shared pointers, so consecutive snapshots share every shard whose keys did not change and
// a change rebuilds only the shards it touches: O(keys per shard), not O(keys).
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <memory>
#include <optional>
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

  /// Control thread, on a copy not yet published: sets key's value, inserting it.
  void insert_or_assign(uint64_t key, V value) {
    if ((size_ + 1) * 2 > slots_.size()) rehash(std::max<size_t>(16, slots_.size() * 2));
    for (size_t i = slot_of(key) & mask_;; i = (i + 1) & mask_) {
      slot& s = slots_[i];
      if (!s.used) {
        s = slot{key, std::move(value), true};
        ++size_;
        return;
      }
      if (s.key == key) {
        s.value = std::move(value);
        return;
      }
    }
  }

  /// Control thread, on a copy not yet published: removes key (backward-shift deletion,
  /// so lookups need no tombstones).
  void erase(uint64_t key) {
    if (slots_.empty()) return;
    size_t i = slot_of(key) & mask_;
    while (slots_[i].used && slots_[i].key != key) i = (i + 1) & mask_;
    if (!slots_[i].used) return;
    for (size_t j = (i + 1) & mask_; slots_[j].used; j = (j + 1) & mask_) {
      // Slot j may move back to the hole at i unless its home lies cyclically in (i, j].
      size_t home = slot_of(slots_[j].key) & mask_;
      bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
      if (!stays) {
        slots_[i] = std::move(slots_[j]);
        i = j;
      }
    }
    slots_[i] = slot{};
    --size_;
  }

  /// Calls f(key, value) for every item, in slot order.
  template <typename F>
  void for_each(F&& f) const {
    for (const auto& s : slots_) {
      if (s.used) f(s.key, s.value);
    }
  }

 private:
  struct slot {
    uint64_t key = 0;
    V value{};
    bool used = false;
  };
  static size_t slot_of(uint64_t key) { return static_cast<size_t>(mix64(key)); }

  void rehash(size_t size) {
    std::vector<slot> old = std::move(slots_);
    slots_.assign(size, slot{});
    mask_ = size - 1;
    size_ = 0;
    for (auto& s : old) {
      if (s.used) insert_or_assign(s.key, std::move(s.value));
    }
  }

  std::vector<slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

template <typename V>
class sharded_map {
 public:
  static constexpr unsigned kShardBits = 8;
  static constexpr size_t kShards = size_t{1} << kShardBits;
  using shard = flat_map<V>;

  sharded_map() { shards_.fill(empty()); }

  /// All shards at once (a full build, and tests).
  static sharded_map build(std::span<const std::pair<uint64_t, V>> items) {
    std::array<std::vector<std::pair<uint64_t, V>>, kShards> split;
    for (const auto& item : items) split[shard_of(item.first)].push_back(item);
    sharded_map m;
    for (size_t i = 0; i < kShards; ++i) {
      if (!split[i].empty()) m.set(i, std::make_shared<const shard>(shard::build(split[i])));
    }
    return m;
  }

  const V* find(uint64_t key) const { return shards_[shard_of(key)]->find(key); }
  size_t size() const { return size_; }

  /// The shard a key lives in (top bits of the hash; flat_map probes with the low bits).
  static size_t shard_of(uint64_t key) {
    return static_cast<size_t>(mix64(key) >> (64 - kShardBits));
  }

  /// Control thread, before publication: replaces shard i.
  void set(size_t i, std::shared_ptr<const shard> s) {
    size_ = size_ - shards_[i]->size() + s->size();
    shards_[i] = std::move(s);
  }
  const shard& at(size_t i) const { return *shards_[i]; }

 private:
  static const std::shared_ptr<const shard>& empty() {
    static const auto e = std::make_shared<const shard>();
    return e;
  }

  std::array<std::shared_ptr<const shard>, kShards> shards_;
  size_t size_ = 0;
};

/// Control thread: copies each shard that holds a touched key once, sets or erases those keys
/// in the copy (value_of returns nullopt for "gone") and swaps it in; untouched shards stay
/// shared.
template <typename V, typename F>
void patch_shards(sharded_map<V>& table, std::vector<uint64_t>& keys, F value_of) {
  std::sort(keys.begin(), keys.end(), [](uint64_t a, uint64_t b) {
    return std::pair(sharded_map<V>::shard_of(a), a) < std::pair(sharded_map<V>::shard_of(b), b);
  });
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  for (size_t i = 0; i < keys.size();) {
    size_t s = sharded_map<V>::shard_of(keys[i]);
    auto copy = std::make_shared<flat_map<V>>(table.at(s));
    for (; i < keys.size() && sharded_map<V>::shard_of(keys[i]) == s; ++i) {
      if (auto v = value_of(keys[i])) {
        copy->insert_or_assign(keys[i], std::move(*v));
      } else {
        copy->erase(keys[i]);
      }
    }
    table.set(s, std::move(copy));
  }
  keys.clear();
}

}  // namespace ferry
