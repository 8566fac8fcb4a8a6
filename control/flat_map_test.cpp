// flat_map and sharded_map: the snapshot lookup tables. Patching a copy (insert_or_assign,
// erase with backward shift) must leave exactly what a fresh build of the same items holds,
// and a sharded copy must share the shards it did not touch.
#include "ferry/flat_map.hpp"

#include <gtest/gtest.h>

#include <map>
#include <random>

namespace ferry {
namespace {

TEST(FlatMap, PatchedCopyMatchesAReferenceMapUnderRandomOperations) {
  std::mt19937_64 rng(7);
  flat_map<uint64_t> m;
  std::map<uint64_t, uint64_t> ref;
  for (int step = 0; step < 200000; ++step) {
    // A small key space, so erases hit present keys and probe chains collide and wrap.
    uint64_t key = rng() % 3000;
    if (rng() % 3 == 0) {
      m.erase(key);
      ref.erase(key);
    } else {
      m.insert_or_assign(key, step);
      ref[key] = static_cast<uint64_t>(step);
    }
    if (step % 997 == 0) {
      ASSERT_EQ(m.size(), ref.size());
      for (uint64_t k = 0; k < 3000; ++k) {
        auto it = ref.find(k);
        const uint64_t* v = m.find(k);
        if (it == ref.end()) {
          ASSERT_EQ(v, nullptr) << k;
        } else {
          ASSERT_NE(v, nullptr) << k;
          ASSERT_EQ(*v, it->second) << k;
        }
      }
    }
  }
}

TEST(FlatMap, EraseOnEmptyAndMissingKeysIsHarmless) {
  flat_map<int> m;
  m.erase(5);
  EXPECT_EQ(m.find(5), nullptr);
  m.insert_or_assign(5, 1);
  m.erase(6);
  EXPECT_EQ(m.size(), 1u);
  EXPECT_EQ(*m.find(5), 1);
}

TEST(ShardedMap, BuildFindsEveryKeyAndSetSharesUntouchedShards) {
  std::vector<std::pair<uint64_t, int>> items;
  for (int i = 0; i < 5000; ++i) items.emplace_back(uint64_t(i) * 7919, i);
  auto a = sharded_map<int>::build(items);
  EXPECT_EQ(a.size(), 5000u);
  for (const auto& [k, v] : items) ASSERT_EQ(*a.find(k), v);
  EXPECT_EQ(a.find(1), nullptr);

  sharded_map<int> b = a;  // a new snapshot: shares every shard
  size_t s = sharded_map<int>::shard_of(items[0].first);
  auto copy = std::make_shared<flat_map<int>>(b.at(s));
  copy->insert_or_assign(items[0].first, -1);
  copy->insert_or_assign(1, 42);
  b.set(s, std::move(copy));
  EXPECT_EQ(*b.find(items[0].first), -1);
  EXPECT_EQ(*a.find(items[0].first), 0);  // the old snapshot is untouched
  EXPECT_EQ(b.size(), 5001u);
  EXPECT_EQ(a.size(), 5000u);
  for (size_t i = 0; i < sharded_map<int>::kShards; ++i) {
    if (i != s) {
      EXPECT_EQ(&a.at(i), &b.at(i)) << i;
    }
  }
}

}  // namespace
}  // namespace ferry
