#include "filter.hpp"

#include <algorithm>

#include "ferry/net.hpp"

namespace ferry::control {

result<void> check_filter_rule(const filter_rule_config& r) {
  if (r.name.empty()) return make_error("name: required");
  if (r.name.size() > 63 || std::any_of(r.name.begin(), r.name.end(), [](char c) {
        return !(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.');
      })) {
    return make_error("name: \"" + r.name + "\" must be 1-63 letters, digits, '-', '_' or '.'");
  }
  if (r.pattern.empty()) return make_error("pattern: required");
  if (r.depth < 1 || r.depth > kFilterMaxDepth) {
    return make_error("depth: must be between 1 and " + std::to_string(kFilterMaxDepth) + ", got " +
                      std::to_string(r.depth));
  }
  for (const auto& f : r.flags) {
    if (std::find_if(std::begin(kFilterFlags), std::end(kFilterFlags),
                     [&](const char* k) { return f == k; }) == std::end(kFilterFlags)) {
      return make_error("flags: unknown flag \"" + f + "\" (caseless, dotall, multiline, utf8)");
    }
  }
  if (r.proto != 0 && r.proto != 6 && r.proto != 17) return make_error("protocol: TCP or UDP");
  if (!r.service.empty()) {
    const auto slash = r.service.find('/');
    if (slash == std::string::npos || slash == 0 || slash + 1 == r.service.size() ||
        r.service.find('/', slash + 1) != std::string::npos) {
      return make_error("service: \"" + r.service + "\" is not NAMESPACE/NAME");
    }
  }
  return {};
}

namespace {

unsigned hs_flags(const filter_rule_config& r) {
  unsigned f = HS_FLAG_SINGLEMATCH;
  for (const auto& name : r.flags) {
    if (name == "caseless") f |= HS_FLAG_CASELESS;
    if (name == "dotall") f |= HS_FLAG_DOTALL;
    if (name == "multiline") f |= HS_FLAG_MULTILINE;
    if (name == "utf8") f |= HS_FLAG_UTF8;
  }
  return f;
}

}  // namespace

result<std::shared_ptr<const filter_db>> compile_filters(
    const std::vector<filter_rule_config>& rules, unsigned workers, int* failed) {
  if (failed) *failed = -1;
  if (rules.empty()) return std::shared_ptr<const filter_db>();
  std::vector<const char*> patterns;
  std::vector<unsigned> flags, ids;
  for (size_t i = 0; i < rules.size(); ++i) {
    patterns.push_back(rules[i].pattern.c_str());
    flags.push_back(hs_flags(rules[i]));
    ids.push_back(static_cast<unsigned>(i));
  }
  auto out = std::make_shared<filter_db>();
  hs_compile_error_t* err = nullptr;
  if (hs_compile_multi(patterns.data(), flags.data(), ids.data(),
                       static_cast<unsigned>(rules.size()), HS_MODE_BLOCK, nullptr, &out->db,
                       &err) != HS_SUCCESS) {
    std::string msg = err && err->message ? err->message : "compile failed";
    std::string who;
    if (err && err->expression >= 0 && static_cast<size_t>(err->expression) < rules.size()) {
      const auto& r = rules[static_cast<size_t>(err->expression)];
      who = "filter \"" + r.name + "\": pattern \"" + r.pattern + "\": ";
      if (failed) *failed = err->expression;
    } else {
      who = "filters: ";  // not one expression's fault (the database as a whole is too large)
    }
    hs_free_compile_error(err);
    return make_error(who + msg);
  }
  for (unsigned i = 0; i < workers; ++i) {
    hs_scratch_t* s = nullptr;
    const hs_error_t rc =
        i == 0 ? hs_alloc_scratch(out->db, &s) : hs_clone_scratch(out->scratch[0], &s);
    if (rc != HS_SUCCESS) return make_error("filters: cannot allocate Hyperscan scratch space");
    out->scratch.push_back(s);
  }
  return std::shared_ptr<const filter_db>(std::move(out));
}

std::shared_ptr<const filter_set> build_filter_set(std::shared_ptr<const filter_db> db,
                                                   const std::vector<filter_rule_config>& rules,
                                                   const std::vector<uint32_t>& slots,
                                                   const compiler& comp) {
  if (rules.empty() || !db) return nullptr;
  auto fs = std::make_shared<filter_set>();
  fs->db = std::move(db);
  for (size_t i = 0; i < rules.size(); ++i) {
    const auto& r = rules[i];
    filter_rule_entry e;
    e.slot = slots[i];
    e.depth = r.depth;
    e.drop = r.drop;
    e.proto = r.proto;
    e.port = r.port;
    e.vip = r.vip;
    if (!r.service.empty()) {
      e.by_service = true;
      const auto slash = r.service.find('/');
      for (const auto& f :
           comp.entries_of({r.service.substr(0, slash), r.service.substr(slash + 1)})) {
        e.service_ids.push_back(f->id);
      }
      std::sort(e.service_ids.begin(), e.service_ids.end());
    }
    fs->max_depth = std::max(fs->max_depth, r.depth);
    // Prefilter: each rule adds the most specific key it has (a packet it applies to has
    // that key); a rule with none covers its protocols.
    if (e.by_service) {
      fs->service_ids.insert(fs->service_ids.end(), e.service_ids.begin(), e.service_ids.end());
    } else if (e.port) {
      fs->ports.push_back(e.port);
    } else if (e.vip) {
      fs->vips.push_back(e.vip);
    } else {
      fs->wide_protos |= e.proto ? filter_set::proto_bit(e.proto) : 3;
    }
    fs->rules.push_back(std::move(e));
  }
  auto tidy = [](auto& v) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
  };
  tidy(fs->service_ids);
  tidy(fs->ports);
  tidy(fs->vips);
  return fs;
}

std::string filter_scope_text(const filter_rule_config& r) {
  std::string out;
  auto add = [&](const std::string& part) {
    if (!out.empty()) out += ' ';
    out += part;
  };
  if (!r.service.empty()) add("svc " + r.service);
  if (r.vip) add(format_ipv4(r.vip));
  if (r.proto) add(r.proto == 6 ? "tcp" : "udp");
  if (r.port) {
    std::string port = ":";  // not ":" + to_string: GCC 12 reports a false -Wrestrict there
    port += std::to_string(r.port);
    add(port);
  }
  return out.empty() ? "all" : out;
}

}  // namespace ferry::control
