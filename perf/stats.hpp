// Summaries shared by the ferry-perf benchmarks: the median, min and max of several runs,
// as the JSON object every result line carries.
#pragma once

#include <algorithm>
#include <nlohmann/json.hpp>
#include <vector>

namespace ferry::perf {

struct spread {
  double median = 0, min = 0, max = 0;
};

inline spread summarize(std::vector<double> v) {
  if (v.empty()) return {};
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

inline nlohmann::json to_json(const spread& s) {
  return {{"median", s.median}, {"min", s.min}, {"max", s.max}};
}

}  // namespace ferry::perf
