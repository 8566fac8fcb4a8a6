// Loading the node configuration from TOML. Control thread only.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "ferry/config.hpp"
#include "ferry/result.hpp"

namespace ferry::control {

/// Parses TOML text; `source` names it in errors ("node.toml: port[1].address: ...").
/// Unknown keys are errors (a typo must not silently fall back to a default).
result<node_config> parse_config(std::string_view text, const std::string& source);

/// Reads and parses a file.
result<node_config> load_config(const std::string& path);

/// The config keys (as "table.key") whose values differ between a running config and a
/// reloaded one and that only a restart applies. Empty when the reload can apply everything.
std::vector<std::string> restart_needed(const node_config& running, const node_config& fresh);

/// The log levels [log] level and the log_level op take, lowest first.
inline constexpr const char* kLogLevels[] = {"trace", "debug",    "info", "warn",
                                             "error", "critical", "off"};

/// The source name of default_config() (node_config::source).
inline const std::string& default_config_source() {
  static const std::string name = "<built-in default>";
  return name;
}

/// The built-in demo default: two af_packet ports (fe0, fe1) and the seed's services.
result<node_config> default_config();

}  // namespace ferry::control
