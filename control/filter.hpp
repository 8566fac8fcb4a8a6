// The payload signature filter's control side: checks rules, compiles their patterns into one
// Hyperscan block-mode database, and builds the filter_set the snapshot carries (scope
// resolved against the compiler's frontends). Control thread only.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "compile.hpp"
#include "ferry/config.hpp"
#include "ferry/filter.hpp"
#include "ferry/result.hpp"

namespace ferry::control {

constexpr uint32_t kFilterMaxDepth = 65535;
/// The pattern flags a rule may name (Hyperscan's HS_FLAG_ of the same name).
inline constexpr const char* kFilterFlags[] = {"caseless", "dotall", "multiline", "utf8"};

/// Checks a rule's fields (not its pattern's syntax: compile_filters does that). The message
/// names the field ("depth: must be between 1 and 65535, got 0").
result<void> check_filter_rule(const filter_rule_config& r);

/// Compiles every rule's pattern into one database (expression id = index in rules;
/// HS_FLAG_SINGLEMATCH: a rule reports once per packet; no SOM: depth is checked on the end
/// offset) and allocates one scratch per worker (none when workers is 0: a check only). A
/// pattern Hyperscan refuses is reported as `filter "NAME": pattern "RE": <Hyperscan's message>`.
/// Empty rules: nullptr.
/// failed: set to the index of the refused rule (-1: none in particular).
result<std::shared_ptr<const filter_db>> compile_filters(
    const std::vector<filter_rule_config>& rules, unsigned workers, int* failed = nullptr);

/// The filter set for a database: per rule its scope (a Service resolved to the ids of the
/// frontends the compiler has for it now), action, depth and counter slot (slots[i]), and
/// the prefilter. nullptr when there are no rules.
std::shared_ptr<const filter_set> build_filter_set(std::shared_ptr<const filter_db> db,
                                                   const std::vector<filter_rule_config>& rules,
                                                   const std::vector<uint32_t>& slots,
                                                   const compiler& comp);

/// "all", or the scope's parts ("svc default/web tcp :80").
std::string filter_scope_text(const filter_rule_config& r);

}  // namespace ferry::control
