// The payload signature filter's compile side: rule checks, Hyperscan compile (errors name
// the rule), the prefilter, and what a scan with the compiled database reports.
#include "filter.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace ferry::control {
namespace {

filter_rule_config rule(std::string name, std::string pattern) {
  filter_rule_config r;
  r.name = std::move(name);
  r.pattern = std::move(pattern);
  return r;
}

// Ids of the rules whose pattern matches data (every match, ends included).
std::vector<std::pair<unsigned, unsigned long long>> scan(const filter_db& db,
                                                          const std::string& data) {
  std::vector<std::pair<unsigned, unsigned long long>> out;
  auto cb = [](unsigned id, unsigned long long, unsigned long long to, unsigned, void* ctx) {
    static_cast<decltype(out)*>(ctx)->emplace_back(id, to);
    return 0;
  };
  EXPECT_EQ(
      hs_scan(db.db, data.data(), static_cast<unsigned>(data.size()), 0, db.scratch[0], cb, &out),
      HS_SUCCESS);
  return out;
}

TEST(FilterCompile, GoodRulesCompileWithAScratchPerWorker) {
  auto caseless = rule("sqli", R"(GET /[a-z]+\.php\?id=[0-9]+')");
  caseless.flags = {"caseless"};
  auto db = compile_filters({rule("evil", "/evil"), caseless}, 3);
  ASSERT_TRUE(db) << db.message();
  ASSERT_TRUE(*db);
  EXPECT_EQ((*db)->scratch.size(), 3u);
  for (auto* s : (*db)->scratch) EXPECT_NE(s, nullptr);
  // Each rule reports once (SINGLEMATCH) with its first end; the flag applies to its rule.
  auto hits = scan(**db, "get /x.PHP?id=12' /evil /evil");
  ASSERT_EQ(hits.size(), 2u);
  EXPECT_EQ(hits[0], std::make_pair(1u, 17ull));
  EXPECT_EQ(hits[1], std::make_pair(0u, 23ull));
  EXPECT_TRUE(scan(**db, "GET /evi l").empty());
}

TEST(FilterCompile, ABadPatternIsRefusedWithHyperscansMessageNamingTheRule) {
  int failed = -2;
  auto db =
      compile_filters({rule("ok", "abc"), rule("broken", "(abc"), rule("ok2", "x")}, 1, &failed);
  ASSERT_FALSE(db);
  EXPECT_EQ(failed, 1);
  EXPECT_EQ(db.message().find("filter \"broken\": pattern \"(abc\": "), 0u) << db.message();
  EXPECT_NE(db.message().find("Missing close parenthesis"), std::string::npos) << db.message();
}

TEST(FilterCompile, NoRulesIsNoDatabase) {
  auto db = compile_filters({}, 2);
  ASSERT_TRUE(db);
  EXPECT_FALSE(*db);
}

TEST(FilterCheck, FieldsAreChecked) {
  EXPECT_TRUE(check_filter_rule(rule("a-b_c.1", "x")));
  EXPECT_FALSE(check_filter_rule(rule("", "x")));
  EXPECT_FALSE(check_filter_rule(rule("has space", "x")));
  EXPECT_EQ(check_filter_rule(rule("a", "")).message(), "pattern: required");
  auto r = rule("a", "x");
  r.depth = 0;
  EXPECT_EQ(check_filter_rule(r).message(), "depth: must be between 1 and 65535, got 0");
  r.depth = 65536;
  EXPECT_FALSE(check_filter_rule(r));
  r = rule("a", "x");
  r.flags = {"nocase"};
  EXPECT_NE(check_filter_rule(r).message().find("unknown flag \"nocase\""), std::string::npos);
  r = rule("a", "x");
  r.service = "web";
  EXPECT_EQ(check_filter_rule(r).message(), "service: \"web\" is not NAMESPACE/NAME");
}

TEST(FilterSet, ScopeAndPrefilter) {
  auto wide = rule("wide-udp", "a");
  wide.proto = 17;
  auto by_port = rule("port", "b");
  by_port.port = 8080;
  by_port.proto = 6;
  auto by_vip = rule("vip", "c");
  by_vip.vip = 0xc6130001;
  by_vip.depth = 2000;
  std::vector<filter_rule_config> rules{wide, by_port, by_vip};
  auto db = compile_filters(rules, 1);
  ASSERT_TRUE(db);
  compiler comp(65537, 1024);
  auto fs = build_filter_set(*db, rules, {7, 3, 9}, comp);
  ASSERT_TRUE(fs);
  EXPECT_EQ(fs->max_depth, 2000u);
  EXPECT_EQ(fs->rules[0].slot, 7u);
  EXPECT_EQ(fs->wide_protos, 2);  // UDP only
  EXPECT_TRUE(fs->may_match(0x0a000001, 17, 53, 0));
  EXPECT_FALSE(fs->may_match(0x0a000001, 6, 80, 0));
  EXPECT_TRUE(fs->may_match(0x0a000001, 6, 8080, 0));
  EXPECT_TRUE(fs->may_match(0xc6130001, 6, 80, 0));
  EXPECT_TRUE(fs->rules[1].applies(1, 6, 8080, 0));
  EXPECT_FALSE(fs->rules[1].applies(1, 17, 8080, 0));
  EXPECT_FALSE(fs->rules[2].applies(0xc6130002, 6, 80, 0));
  EXPECT_EQ(filter_scope_text(by_port), "tcp :8080");
  EXPECT_EQ(filter_scope_text(rule("x", "y")), "all");
  EXPECT_EQ(filter_scope_text(by_vip), "198.19.0.1");
}

}  // namespace
}  // namespace ferry::control
