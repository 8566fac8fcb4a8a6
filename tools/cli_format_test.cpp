// Golden tests of ferryctl's output: each fixture under tests/golden/ is a result object as
// ferryd answers it; every format it is shown in is compared byte for byte with NAME.FORMAT.txt.
// FERRY_UPDATE_GOLDEN=1 rewrites the expected files (review the diff before committing).
#include "cli_format.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace ferry::cli {
namespace {

// The clock the fixtures were written against: 2026-09-21 16:53:20 UTC.
constexpr double kNow = 1790009600;

std::string golden_dir() {
  const char* dir = std::getenv("FERRY_GOLDEN_DIR");
  return dir != nullptr ? dir : "tests/golden";
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

json fixture(const std::string& name) {
  std::string text = slurp(golden_dir() + "/" + name + ".json");
  EXPECT_FALSE(text.empty()) << "missing fixture " << golden_dir() << "/" << name << ".json";
  return json::parse(text.empty() ? "{}" : text);
}

// Compares with the golden file, or rewrites it under FERRY_UPDATE_GOLDEN=1.
void expect_golden(const std::string& file, const std::string& got) {
  const std::string path = golden_dir() + "/" + file;
  const char* update = std::getenv("FERRY_UPDATE_GOLDEN");
  if (update != nullptr && std::string(update) == "1") {
    std::ofstream(path, std::ios::binary) << got;
    return;
  }
  EXPECT_EQ(slurp(path), got) << "golden file " << path
                              << " differs (FERRY_UPDATE_GOLDEN=1 rewrites it)";
}

void expect_fits_80_columns(const std::string& what, const std::string& text) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    EXPECT_LE(line.size(), 80u) << what << ": line wider than 80 columns:\n" << line;
    EXPECT_EQ(line.find_last_not_of(' ') + 1, line.size()) << what << ": trailing blanks";
  }
}

struct golden_case {
  std::string fixture;  // tests/golden/FIXTURE.json
  std::string verb;     // as cli::render knows it
  std::vector<std::string> formats = {"table", "wide", "json", "yaml"};
};

std::vector<golden_case> cases() {
  return {
      {"status", "status"},
      {"get-services", "get services"},
      {"get-endpoints", "get endpoints"},
      {"get-pods", "get pods"},
      {"get-nodes", "get nodes"},
      {"get-flows", "get flows"},
      {"get-flows-filtered", "get flows", {"table"}},
      {"get-nodeports", "get nodeports"},
      {"get-neighbors", "get neighbors"},
      {"get-routes", "get routes"},
      {"describe-service", "describe service"},
      {"describe-service-lb", "describe service", {"table", "wide"}},
      {"trace", "trace"},
      {"trace-masquerade", "trace", {"table"}},
      {"trace-existing", "trace", {"table"}},
      {"trace-no-service", "trace", {"table"}},
      {"weight-drain", "weight", {"table", "json"}},
      {"weight-set", "weight", {"table"}},
      {"weight-reset", "weight", {"table"}},
      {"flush", "flush", {"table", "json"}},
      {"apply", "apply", {"table"}},
      {"stats", "stats"},
      {"stats-kubernetes", "stats", {"table", "wide"}},
      // Payload signature filter.
      {"filter-list", "filter list"},
      {"filter-add", "filter add", {"table", "json"}},
      {"filter-del", "filter del", {"table"}},
  };
}

void PrintTo(const golden_case& c, std::ostream* os) { *os << c.fixture; }

class golden : public ::testing::TestWithParam<golden_case> {};

TEST_P(golden, renders_as_recorded) {
  const auto& c = GetParam();
  json result = fixture(c.fixture);
  for (const auto& name : c.formats) {
    SCOPED_TRACE(c.fixture + " -o " + name);
    std::string got = render(c.verb, result, *parse_format(name), {kNow});
    expect_golden(c.fixture + "." + name + ".txt", got);
    if (name == "table") expect_fits_80_columns(c.fixture, got);
    if (name == "json") {
      EXPECT_EQ(json::parse(got), result);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(all, golden, ::testing::ValuesIn(cases()), [](const auto& info) {
  std::string n = info.param.fixture;
  for (char& ch : n) ch = ch == '-' ? '_' : ch;
  return n;
});

// stats --watch: the fixture holds two stats results a known time apart.
TEST(stats_rates, golden_screen_and_json) {
  json f = fixture("stats-watch");
  json rates = stats_rates(f["before"], f["after"], f["elapsed_seconds"].get<double>());
  std::string table = render_rates(rates, format::table, f["node"], {kNow});
  expect_golden("stats-watch.table.txt", table);
  expect_fits_80_columns("stats --watch", table);
  expect_golden("stats-watch.wide.txt", render_rates(rates, format::wide, f["node"], {kNow}));
  expect_golden("stats-watch.json.txt", render_rates(rates, format::json, f["node"], {kNow}));
}

TEST(stats_rates, deltas_over_elapsed_time) {
  json before = {
      {"ports",
       {{{"name", "eth0"},
         {"rx_packets", 100},
         {"rx_bytes", 1000},
         {"tx_packets", 0},
         {"rx_missed", 1}}}},
      {"workers",
       {{{"worker", 0}, {"rx_packets", 10}, {"busy_seconds", 1.0}, {"poll_seconds", 10.0}}}},
      {"flows", {{"active", 3}, {"created", 10}}},
      {"drops", {{"no_route", 5}, {"tx_full", 0}}}};
  json after = {
      {"ports",
       {{{"name", "eth0"},
         {"rx_packets", 300},
         {"rx_bytes", 251000},
         {"tx_packets", 0},
         {"rx_missed", 5}}}},
      {"workers",
       {{{"worker", 0}, {"rx_packets", 210}, {"busy_seconds", 1.5}, {"poll_seconds", 12.0}}}},
      {"flows", {{"active", 7}, {"created", 30}}},
      {"drops", {{"no_route", 9}, {"tx_full", 0}}}};
  json r = stats_rates(before, after, 2.0);
  EXPECT_EQ(r["ports"][0]["rx_pps"], 100.0);
  EXPECT_EQ(r["ports"][0]["rx_mbps"], 1.0);  // 250000 bytes * 8 / 2 s
  EXPECT_EQ(r["ports"][0]["drops_per_second"], 2.0);
  EXPECT_EQ(r["workers"][0]["rx_pps"], 100.0);
  EXPECT_EQ(r["workers"][0]["busy_ratio"], 0.25);  // 0.5 s busy of 2 s polling
  EXPECT_EQ(r["flows"]["active"], 7);
  EXPECT_EQ(r["flows"]["new_per_second"], 10.0);
  ASSERT_EQ(r["drops"].size(), 1u);  // only the reasons that moved
  EXPECT_EQ(r["drops"][0]["reason"], "no_route");
  EXPECT_EQ(r["drops"][0]["per_second"], 2.0);
  // A counter going backwards (ferryd restarted) is no negative rate.
  json again = stats_rates(after, before, 1.0);
  EXPECT_EQ(again["ports"][0]["rx_pps"], 0.0);
}

TEST(get, name_filter_keeps_named_items_and_reports_missing) {
  json result = {{"items",
                  {{{"name", "a"}, {"namespace", "x"}},
                   {{"name", "b"}, {"namespace", "y"}},
                   {{"name", "a"}, {"namespace", "y"}}}}};
  std::vector<std::string> missing;
  json kept = filter_by_name(result, {"a", "zz"}, missing);
  ASSERT_EQ(kept["items"].size(), 2u);
  EXPECT_EQ(kept["items"][1]["namespace"], "y");
  EXPECT_EQ(missing, std::vector<std::string>{"zz"});
}

TEST(get, resources_by_alias) {
  ASSERT_NE(find_resource("svc"), nullptr);
  EXPECT_EQ(find_resource("SVC")->name, "services");
  EXPECT_EQ(find_resource("np")->name, "nodeports");
  EXPECT_EQ(find_resource("neigh")->name, "neighbors");
  EXPECT_EQ(find_resource("rt")->name, "routes");
  EXPECT_FALSE(find_resource("routes")->namespaced);
  EXPECT_FALSE(find_resource("flows")->named);
  EXPECT_FALSE(find_resource("flows")->namespaced);
  EXPECT_EQ(find_resource("bogus"), nullptr);
}

TEST(formats, names) {
  EXPECT_EQ(parse_format("wide"), format::wide);
  EXPECT_EQ(parse_format("yaml"), format::yaml);
  EXPECT_FALSE(parse_format("xml"));
}

TEST(formats, yaml_keeps_strings_strings) {
  json v = {{"target_port", "9376"}, {"port", 80},           {"detail", ""},
            {"on", "yes"},           {"ratio", 0.12},        {"none", nullptr},
            {"list", json::array()}, {"tuple", "1.2.3.4:80"}};
  std::string y = to_yaml(v);
  EXPECT_NE(y.find("target_port: \"9376\""), std::string::npos) << y;
  EXPECT_NE(y.find("port: 80\n"), std::string::npos) << y;
  EXPECT_NE(y.find("detail: \"\""), std::string::npos) << y;
  EXPECT_NE(y.find("on: \"yes\""), std::string::npos) << y;
  EXPECT_NE(y.find("ratio: 0.12\n"), std::string::npos) << y;
  EXPECT_NE(y.find("none: ~"), std::string::npos) << y;
  EXPECT_NE(y.find("list: []"), std::string::npos) << y;
  EXPECT_NE(y.find("tuple: \"1.2.3.4:80\""), std::string::npos) << y;
}

}  // namespace
}  // namespace ferry::cli
