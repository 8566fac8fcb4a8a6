// ferryctl's output: how each verb's result (the JSON object ferryd answers) reads on a screen,
// in JSON or in YAML. Pure functions from JSON to text, so golden tests can pin every format
// without a ferryd (tools/cli_format_test.cpp, tests/golden/).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::cli {

using nlohmann::json;

enum class format { table, wide, json, yaml };

std::optional<format> parse_format(std::string_view name);

// What the renderers need beyond the result: the clock (relative times such as "12s ago"), so
// that tests are reproducible.
struct context {
  double now_unix = 0;  // seconds since the epoch
};

// JSON as ferryd sent it, pretty with 2 spaces, and the same document as YAML.
std::string to_json(const json& value);
std::string to_yaml(const json& value);

// ---- get ---------------------------------------------------------------------------------------

struct resource_info {
  std::string name;  // what the request names: "services"
  std::vector<std::string> aliases;
  bool namespaced = true;
  bool named = true;  // items carry a "name" that `get RESOURCE NAME...` filters on
};

// nullptr when the word names no resource.
const resource_info* find_resource(std::string_view word);
// "services/svc, endpoints/ep, ..." for messages.
std::string resource_list();

// Keeps the items whose name is one of `names` (in the order ferryd sent them); `missing` gets
// the names no item has.
json filter_by_name(const json& result, const std::vector<std::string>& names,
                    std::vector<std::string>& missing);

std::string render_get(const resource_info& r, const json& result, format f,
                       const context& ctx = {});

// ---- the other verbs (table or wide; json/yaml go through to_json/to_yaml) -------------------

std::string render_status(const json& result, format f, const context& ctx);
std::string render_describe_service(const json& result, format f);
std::string render_trace(const json& result, format f);
std::string render_weight(const json& result);
std::string render_flush(const json& result);
std::string render_changes(const json& result);
std::string render_reload(const json& result);
std::string render_log_level(const json& result);
std::string render_stats(const json& result, format f, const context& ctx);

// stats --watch: rates from two consecutive stats results taken `elapsed` seconds apart (counter
// deltas / elapsed). The object is what -o json prints; render_rates draws it like top.
json stats_rates(const json& before, const json& after, double elapsed);
std::string render_rates(const json& rates, format f, const std::string& node, const context& ctx);

// Dispatch for ferryctl and the golden tests: renders `result` of `verb` ("status",
// "get services" (any resource), "describe service", "trace", "weight", "flush", "apply",
// "delete", "stats", "reload", "log-level") in format f.
std::string render(const std::string& verb, const json& result, format f, const context& ctx = {});

}  // namespace ferry::cli
