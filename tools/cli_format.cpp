#include "cli_format.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <functional>
#include <set>
#include <sstream>
#include <utility>

#include "ferry/dns.hpp"

namespace ferry::cli {

namespace {

// ---- Reading results ---------------------------------------------------------------------------

// Missing fields read as null rather than throwing: an older or newer ferryd may differ.
const json& member(const json& object, const std::string& key) {
  static const json null;
  if (!object.is_object()) return null;
  auto it = object.find(key);
  return it != object.end() ? *it : null;
}

const json& items_of(const json& object, const std::string& key) {
  static const json empty = json::array();
  const json& items = member(object, key);
  return items.is_array() ? items : empty;
}

double number(const json& value, double fallback = 0) {
  return value.is_number() ? value.get<double>() : fallback;
}

std::string text(const json& value) {
  if (value.is_null()) return "";
  if (value.is_string()) return value.get<std::string>();
  if (value.is_boolean()) return value.get<bool>() ? "True" : "False";
  if (value.is_number_float()) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.1f", value.get<double>());
    return buf;
  }
  return value.dump();
}

// text(), or `none` for an empty value.
std::string or_none(const json& value, const std::string& none = "<none>") {
  std::string t = text(value);
  return t.empty() ? none : t;
}

std::string fixed(double v, int decimals) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  return buf;
}

std::string percent(double ratio) { return fixed(ratio * 100, 1) + "%"; }

// 1536 -> "1.5Ki": byte counts in the tables stay narrow.
std::string bytes(const json& value) {
  if (!value.is_number()) return text(value);
  double v = value.get<double>();
  static const char* units[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi"};
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(units)) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? text(value) : fixed(v, 1) + units[u];
}

// kubectl's way to say how long: 42s, 4m12s, 3h12m, 2d4h.
std::string duration(double seconds) {
  if (seconds < 0) seconds = 0;
  auto s = static_cast<int64_t>(seconds);
  if (s < 60) return std::to_string(s) + "s";
  if (s < 3600) return std::to_string(s / 60) + "m" + std::to_string(s % 60) + "s";
  if (s < 86400) return std::to_string(s / 3600) + "h" + std::to_string(s % 3600 / 60) + "m";
  return std::to_string(s / 86400) + "d" + std::to_string(s % 86400 / 3600) + "h";
}

std::string plural(const json& n, const std::string& one, const std::string& many) {
  return text(n) + " " + (n == 1 ? one : many);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// ---- Tables
// --------------------------------------------------------------------------------------

using row = std::vector<std::string>;

// Columns left-aligned and separated by 2 spaces (kubectl's 3 would push typical rows past 80
// columns); lines carry no trailing blanks (the last column is not padded, and a row may end in
// empty cells). With `max_width`, a last cell that would cross it is cut short with "...": that
// column is free text (a detail, an error) and -o wide shows it whole.
void table(std::ostream& out, const std::vector<row>& rows, const std::string& indent = "",
           size_t max_width = 0) {
  std::vector<size_t> widths;
  for (const auto& r : rows) {
    widths.resize(std::max(widths.size(), r.size()));
    for (size_t i = 0; i < r.size(); ++i) widths[i] = std::max(widths[i], r[i].size());
  }
  for (const auto& r : rows) {
    std::string line = indent;
    for (size_t i = 0; i < r.size(); ++i) {
      if (i + 1 == r.size() && max_width > 0 && line.size() + r[i].size() > max_width &&
          line.size() + 3 < max_width) {
        line += r[i].substr(0, max_width - line.size() - 3) + "...";
      } else {
        line += r[i];
      }
      if (i + 1 < r.size()) line.append(widths[i] - r[i].size() + 2, ' ');
    }
    line.erase(line.find_last_not_of(' ') + 1);
    out << line << '\n';
  }
}

using cell_fn = std::function<std::string(const json& item)>;

struct column {
  std::string header;
  cell_fn cell;
  bool wide_only = false;
  bool table_only = false;  // a summary that wide's own columns spell out
};

cell_fn field(std::string key) {
  return [key = std::move(key)](const json& item) { return text(member(item, key)); };
}

void items_table(std::ostream& out, const std::vector<json>& lines,
                 const std::vector<column>& columns, bool wide, const std::string& indent = "",
                 bool cut_last = false) {
  std::vector<row> rows(1);
  for (const auto& c : columns) {
    if (wide ? !c.table_only : !c.wide_only) rows[0].push_back(c.header);
  }
  for (const auto& line : lines) {
    row& r = rows.emplace_back();
    for (const auto& c : columns) {
      if (wide ? !c.table_only : !c.wide_only) r.push_back(c.cell(line));
    }
  }
  table(out, rows, indent, cut_last && !wide ? 80 : 0);
}

// Named counters laid out as NAME VALUE pairs in as many side-by-side groups as fit 80 columns,
// filled top to bottom: a dozen counters read at a glance without a 150-column header.
void counter_grid(std::ostream& out, const std::vector<std::pair<std::string, std::string>>& pairs,
                  const std::string& indent = "  ") {
  if (pairs.empty()) return;
  size_t name_w = 0, value_w = 0;
  for (const auto& [n, v] : pairs) {
    name_w = std::max(name_w, n.size());
    value_w = std::max(value_w, v.size());
  }
  const size_t group = name_w + 2 + value_w;
  size_t groups = std::max<size_t>(1, (80 - indent.size() + 3) / (group + 3));
  groups = std::min(groups, pairs.size());
  const size_t lines = (pairs.size() + groups - 1) / groups;
  for (size_t l = 0; l < lines; ++l) {
    std::string line = indent;
    for (size_t g = 0; g < groups; ++g) {
      size_t i = g * lines + l;
      if (i >= pairs.size()) break;
      const auto& [n, v] = pairs[i];
      if (g > 0) line.append(3, ' ');  // wider than a table's: pairs must not run together
      line += n + std::string(name_w - n.size() + 2 + value_w - v.size(), ' ') + v;
    }
    line.erase(line.find_last_not_of(' ') + 1);
    out << line << '\n';
  }
}

std::vector<std::pair<std::string, std::string>> counters_of(const json& object,
                                                             const std::vector<std::string>& keys) {
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const auto& k : keys) {
    const json& v = member(object, k);
    if (!v.is_null()) pairs.emplace_back(k, text(v));
  }
  return pairs;
}

// "Label:   value" lines, the value wrapped at 80 columns under itself.
void fact(std::ostream& out, const std::string& label, const std::string& value,
          size_t label_width = 11) {
  std::string head = label.empty() ? "" : label + ":";
  head.append(label_width > head.size() ? label_width - head.size() : 1, ' ');
  const size_t room = head.size() < 60 ? 80 - head.size() : 20;
  std::istringstream words(value);
  std::string word, line;
  bool first = true;
  auto flush = [&] {
    out << (first ? head : std::string(head.size(), ' ')) << line << '\n';
    first = false;
    line.clear();
  };
  while (words >> word) {
    if (!line.empty() && line.size() + 1 + word.size() > room) flush();
    line += (line.empty() ? "" : " ") + word;
  }
  if (!line.empty() || first) {
    if (line.empty()) head.erase(head.find_last_not_of(' ') + 1);
    flush();
  }
}

// A list of strings joined with ",", or `none` when it is empty (or absent).
std::string joined(const json& list, const std::string& none = "<none>") {
  std::string out;
  if (list.is_array()) {
    for (const auto& v : list) {
      std::string t = text(v);
      if (!t.empty()) out += (out.empty() ? "" : ",") + t;
    }
  }
  return out.empty() ? none : out;
}

// ---- get: services ---------------------------------------------------------------------------

std::string service_ports(const json& service) {
  std::string out;
  for (const auto& port : items_of(service, "ports")) {
    if (!out.empty()) out += ',';
    out += text(member(port, "port"));
    const json& node_port = member(port, "node_port");
    if (node_port.is_number() && node_port != 0) out += ':' + text(node_port);
    out += '/' + text(member(port, "protocol"));
  }
  return out.empty() ? "<none>" : out;
}

// As kubectl shows it: load balancer addresses, then externalIPs; <pending> while a load
// balancer waits for an address and has no externalIP to show instead; the DNS name of an
// ExternalName Service.
std::string service_external_ip(const json& service) {
  if (text(member(service, "type")) == "ExternalName") {
    return joined(json::array({member(service, "external_name")}));
  }
  json all = json::array();
  for (const auto& ip : items_of(service, "load_balancer")) all.push_back(ip);
  for (const auto& ip : items_of(service, "external_ips")) all.push_back(ip);
  if (all.empty() && member(service, "load_balancer_pending") == true) return "<pending>";
  return joined(all);
}

// "None", or "ClientIP(10800s)" with the sticky timeout.
std::string service_affinity(const json& service) {
  std::string affinity = text(member(service, "session_affinity"));
  if (affinity.empty()) return "<unknown>";  // a ferryd from before affinity
  const json& timeout = member(service, "affinity_timeout_seconds");
  if (timeout.is_number()) affinity += "(" + text(timeout) + "s)";
  return affinity;
}

// "ext=Local,int=Cluster": which endpoints external and in-cluster traffic may reach.
std::string service_policy(const json& service) {
  auto policy = [&](const char* key) { return or_none(member(service, key), "<unknown>"); };
  return "ext=" + policy("external_traffic_policy") + ",int=" + policy("internal_traffic_policy");
}

// ---- get: endpoints --------------------------------------------------------------------------

// "ready,serving", "serving,terminating", ...: the conditions that hold, in one narrow cell.
std::string conditions(const json& e) {
  std::string out;
  for (const char* c : {"ready", "serving", "terminating"}) {
    if (member(e, c) == true) out += (out.empty() ? "" : ",") + std::string(c);
  }
  return out.empty() ? "<none>" : out;
}

// The effective weight; "drained" when an operator set it to 0 (ferryctl drain).
std::string endpoint_weight(const json& e) {
  if (member(e, "drained") == true) return "drained";
  return or_none(member(e, "weight"), "-");
}

// One row per endpoint of every port, with the conditions traffic decisions follow; a Service
// without endpoints still gets a row, so it does not vanish from the list.
std::vector<json> endpoint_rows(const json& item) {
  std::vector<json> rows;
  for (const auto& detail : items_of(item, "details")) {
    json row = detail.is_object() ? detail : json::object();
    row["namespace"] = member(item, "namespace");
    row["name"] = member(item, "name");
    row["endpoint"] = text(member(detail, "address")) + ":" + text(member(detail, "port"));
    if (text(member(detail, "node")).empty()) row["node"] = "<none>";
    rows.push_back(std::move(row));
  }
  if (rows.empty()) {
    rows.push_back({{"namespace", member(item, "namespace")},
                    {"name", member(item, "name")},
                    {"endpoint", "<none>"}});
  }
  return rows;
}

// ---- get: the resources ----------------------------------------------------------------------

using expand_fn = std::function<std::vector<json>(const json& item)>;

struct resource_view {
  resource_info info;
  std::vector<column> columns;
  expand_fn expand = nullptr;  // several rows per item (an endpoints item: one per endpoint)
};

// Where a flow went: "198.19.0.10:80/TCP".
std::string flow_service(const json& f) {
  return text(member(f, "service")) + "/" + text(member(f, "protocol"));
}

std::string seconds_cell(const json& v) { return v.is_number() ? fixed(number(v), 1) + "s" : ""; }

const std::vector<resource_view>& views() {
  static const std::vector<resource_view> all = {
      {{"services", {"services", "service", "svc"}},
       {{"NAMESPACE", field("namespace")},
        {"NAME", field("name")},
        {"TYPE", field("type")},
        // Empty for ExternalName Services (kubectl's <none>).
        {"CLUSTER-IP",
         [](const json& s) { return joined(json::array({member(s, "cluster_ip")})); }},
        {"EXTERNAL-IP", service_external_ip, true},
        {"PORT(S)", service_ports},
        {"AFFINITY", service_affinity, true},
        {"POLICY", service_policy, true},
        {"ENDPOINTS", field("ready_endpoints")}}},
      {{"endpoints", {"endpoints", "ep"}},
       {{"NAMESPACE", field("namespace")},
        {"NAME", field("name")},
        {"PORT-NAME", [](const json& e) { return or_none(member(e, "port_name")); }, true},
        {"ENDPOINT", field("endpoint")},
        {"CONDITIONS", conditions, false, true},
        {"READY", field("ready"), true},
        {"SERVING", field("serving"), true},
        {"TERMINATING", field("terminating"), true},
        {"WEIGHT", endpoint_weight},
        {"NODE", field("node")},
        {"LOCAL", field("local"), true}},
       endpoint_rows},
      {{"pods", {"pods", "pod", "po"}},
       {{"NAMESPACE", field("namespace")},
        {"NAME", field("name")},
        {"READY", field("ready")},
        {"TERMINATING", field("terminating"), true},
        {"IP", [](const json& p) { return or_none(member(p, "ip")); }},
        {"NODE", [](const json& p) { return or_none(member(p, "node")); }}}},
      {{"nodes", {"nodes", "node", "no"}, false},
       {{"NAME", field("name")},
        {"ADDRESSES", [](const json& n) { return joined(member(n, "addresses")); }},
        {"ZONE", [](const json& n) { return joined(json::array({member(n, "zone")})); }},
        {"THIS-NODE", field("this_node")}}},
      {{"flows", {"flows", "flow"}, false, false},
       {{"PROTO", field("protocol"), true},
        {"CLIENT", field("client")},
        {"SERVICE", flow_service},
        {"SERVICE-NAME", [](const json& f) { return or_none(member(f, "service_name")); }, true},
        {"BACKEND", field("backend")},
        {"STATE", field("state")},
        {"IDLE", [](const json& f) { return seconds_cell(member(f, "idle_seconds")); }},
        {"AGE", [](const json& f) { return seconds_cell(member(f, "age_seconds")); }, true},
        {"LCORE", field("lcore"), true},
        {"MASQUERADE", [](const json& f) { return or_none(member(f, "masquerade")); }, true}}},
      {{"nodeports", {"nodeports", "nodeport", "np"}},
       {{"NAMESPACE", field("namespace")},
        {"NAME", field("name")},
        {"NODE-PORT",
         [](const json& n) {
           return text(member(n, "node_port")) + "/" + text(member(n, "protocol"));
         }},
        {"PORT-NAME", [](const json& n) { return or_none(member(n, "port_name")); }, true},
        {"PORT", field("port")},
        {"CLUSTER-IP", [](const json& n) { return or_none(member(n, "cluster_ip")); }},
        {"POLICY", field("external_traffic_policy")},
        {"BACKENDS", field("backends")}}},
      {{"neighbors", {"neighbors", "neighbours", "neighbor", "neigh"}, false, false},
       {{"ADDRESS", field("address")},
        {"MAC", [](const json& n) { return or_none(member(n, "mac")); }},
        {"PORT", field("port")},
        {"STATE", field("state")},
        {"AGE",
         [](const json& n) {
           const json& age = member(n, "age_seconds");
           return age.is_number() ? duration(number(age)) : "";
         }}}},
      {{"routes", {"routes", "route", "rt"}, false, false},
       {{"DESTINATION", field("destination")},
        {"VIA", [](const json& r) { return or_none(member(r, "via"), "on-link"); }},
        {"PORT", field("port")},
        {"KIND", field("kind")}}},
  };
  return all;
}

const resource_view& view_of(const resource_info& r) {
  for (const auto& v : views()) {
    if (v.info.name == r.name) return v;
  }
  return views().front();
}

// ---- YAML ------------------------------------------------------------------------------------

// A string YAML would read as something else (a number, a bool, null) is quoted.
bool needs_quotes(const std::string& s) {
  if (s.empty()) return true;
  static const std::set<std::string> words = {"true", "false", "yes", "no", "on",
                                              "off",  "null",  "~",   "y",  "n"};
  if (words.count(lower(s))) return true;
  const char* p = s.c_str();
  char* end = nullptr;
  std::strtod(p, &end);
  if (end != p && *end == '\0') return true;
  return s.find_first_of(":#{}[],&*!|>'\"%@`") != std::string::npos || s.front() == '-' ||
         s.front() == ' ' || s.back() == ' ' || s.find('\n') != std::string::npos;
}

void emit(YAML::Emitter& out, const json& v) {
  if (v.is_object()) {
    if (v.empty()) {
      out << YAML::Flow << YAML::BeginMap << YAML::EndMap;
      return;
    }
    out << YAML::BeginMap;
    for (const auto& [key, value] : v.items()) {
      out << YAML::Key << key << YAML::Value;
      emit(out, value);
    }
    out << YAML::EndMap;
  } else if (v.is_array()) {
    if (v.empty()) {
      out << YAML::Flow << YAML::BeginSeq << YAML::EndSeq;
      return;
    }
    out << YAML::BeginSeq;
    for (const auto& item : v) emit(out, item);
    out << YAML::EndSeq;
  } else if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (needs_quotes(s)) out << YAML::DoubleQuoted;
    out << s;
  } else if (v.is_null()) {
    out << YAML::Null;
  } else {
    // Numbers and booleans as JSON spells them: 0.12 stays 0.12, not 0.11999999999999999.
    out << v.dump();
  }
}

// ---- status ----------------------------------------------------------------------------------

std::string port_speed(const json& p) {
  const json& s = member(p, "speed_mbps");
  if (!s.is_number() || s == 0) return "-";
  double mbps = number(s);
  if (mbps >= 1000) {
    double g = mbps / 1000;
    return (std::floor(g) == g ? fixed(g, 0) : fixed(g, 1)) + "Gb/s";
  }
  return fixed(mbps, 0) + "Mb/s";
}

std::string link_state(const json& p) {
  const json& up = member(p, "link_up");
  return up.is_boolean() ? (up.get<bool>() ? "up" : "down") : "-";
}

std::string since(double now, double then_seconds) {
  return then_seconds > 0 && now > 0 ? duration(now - then_seconds) + " ago" : "";
}

// ---- describe --------------------------------------------------------------------------------

std::string backend_weight(const json& b) {
  const json& w = member(b, "weight");
  if (!member(b, "override").is_null()) return w == 0 ? "drained" : text(w) + "*";
  return text(w);
}

std::string endpoint_of(const json& b) {
  return text(member(b, "address")) + ":" + text(member(b, "port"));
}

// ---- stats -----------------------------------------------------------------------------------

std::string timestamp(double unix_seconds) {
  auto t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

// Reasons that happened, biggest first (ties by name): what an operator is looking for.
std::vector<std::pair<std::string, double>> nonzero(const json& counts) {
  std::vector<std::pair<std::string, double>> out;
  if (!counts.is_object()) return out;
  for (const auto& [reason, count] : counts.items()) {
    if (count.is_number() && count != 0) out.emplace_back(reason, number(count));
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  return out;
}

double delta(const json& before, const json& after, const std::string& key) {
  double d = number(member(after, key)) - number(member(before, key));
  return d > 0 ? d : 0;  // a restarted ferryd starts from zero: no negative rates
}

// The item of `list` with the same `key` value as `item`.
const json& same(const json& list, const json& item, const std::string& key) {
  static const json null;
  if (list.is_array()) {
    for (const auto& i : list) {
      if (member(i, key) == member(item, key)) return i;
    }
  }
  return null;
}

double rounded(double v, int decimals) {
  const double scale = std::pow(10, decimals);
  return std::round(v * scale) / scale;
}

}  // namespace

// ---- Public ----------------------------------------------------------------------------------

std::optional<format> parse_format(std::string_view name) {
  if (name == "table") return format::table;
  if (name == "wide") return format::wide;
  if (name == "json") return format::json;
  if (name == "yaml") return format::yaml;
  return std::nullopt;
}

std::string to_json(const json& value) {
  return value.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string to_yaml(const json& value) {
  YAML::Emitter out;
  out.SetIndent(2);
  emit(out, value);
  std::string s = out.c_str();
  return s + "\n";
}

const resource_info* find_resource(std::string_view word) {
  std::string w = lower(std::string(word));
  for (const auto& v : views()) {
    if (std::find(v.info.aliases.begin(), v.info.aliases.end(), w) != v.info.aliases.end()) {
      return &v.info;
    }
  }
  return nullptr;
}

std::string resource_list() {
  std::string out;
  for (const auto& v : views()) {
    std::string names = v.info.name;
    if (v.info.aliases.back() != v.info.name) names += "/" + v.info.aliases.back();
    out += (out.empty() ? "" : ", ") + names;
  }
  return out;
}

json filter_by_name(const json& result, const std::vector<std::string>& names,
                    std::vector<std::string>& missing) {
  json out = result.is_object() ? result : json::object();
  json kept = json::array();
  std::set<std::string> seen;
  for (const auto& item : items_of(result, "items")) {
    std::string name = text(member(item, "name"));
    if (std::find(names.begin(), names.end(), name) != names.end()) {
      kept.push_back(item);
      seen.insert(name);
    }
  }
  for (const auto& n : names) {
    if (!seen.count(n) && std::find(missing.begin(), missing.end(), n) == missing.end()) {
      missing.push_back(n);
    }
  }
  out["items"] = kept;
  return out;
}

std::string render_get(const resource_info& r, const json& result, format f, const context&) {
  if (f == format::json) return to_json(result);
  if (f == format::yaml) return to_yaml(result);
  const resource_view& v = view_of(r);
  const bool wide = f == format::wide;
  std::ostringstream out;
  const json& items = items_of(result, "items");
  std::vector<json> lines;
  for (const auto& item : items) {
    if (v.expand) {
      for (auto& l : v.expand(item)) lines.push_back(std::move(l));
    } else {
      lines.push_back(item);
    }
  }
  if (!lines.empty() || r.name == "flows") items_table(out, lines, v.columns, wide);
  if (r.name == "flows") {
    const json& total = member(result, "total");
    const json& matched = member(result, "matched");
    out << "(showing " << items.size() << " of "
        << (matched.is_number() ? text(matched) : text(total)) << " matching flows, " << text(total)
        << " active)\n";
  }
  return out.str();
}

std::string render_status(const json& s, format f, const context& ctx) {
  if (f == format::json) return to_json(s);
  if (f == format::yaml) return to_yaml(s);
  const bool wide = f == format::wide;
  std::ostringstream out;
  fact(out, "Version",
       "ferryd " + or_none(member(s, "version"), "?") + " (pid " + text(member(s, "pid")) + ")");
  fact(out, "Node", or_none(member(s, "node")));
  std::string uptime = duration(number(member(s, "uptime_seconds")));
  if (wide && member(s, "started_unix").is_number()) {
    uptime += " (since " + timestamp(number(member(s, "started_unix"))) + ")";
  }
  fact(out, "Uptime", uptime);
  fact(out, "Config", or_none(member(s, "config")));
  fact(out, "Log level", or_none(member(s, "log_level")));
  const json& snap = member(s, "snapshot");
  std::string snapshot = "generation " + or_none(member(snap, "generation"), "?") + ", " +
                         plural(member(snap, "services"), "service", "services") + ", " +
                         plural(member(snap, "service_ports"), "service port", "service ports");
  std::string ago = since(ctx.now_unix, number(member(snap, "published_unix_ns")) / 1e9);
  if (!ago.empty()) snapshot += ", published " + ago;
  fact(out, "Snapshot", snapshot);
  fact(out, "Metrics", or_none(member(s, "metrics"), "off"));
  const json& dns = member(s, "dns");
  if (dns.is_object()) {
    fact(out, "DNS",
         joined(member(dns, "addresses")) + " (zone " + text(member(dns, "zone")) +
             (member(dns, "tcp") == true ? ", UDP and TCP)" : ", UDP only)"));
  } else {
    fact(out, "DNS", "off");
  }

  out << "\nLcores:\n";
  std::vector<json> lcores(items_of(s, "lcores").begin(), items_of(s, "lcores").end());
  items_table(out, lcores,
              {{"LCORE", field("lcore")},
               {"ROLE", field("role")},
               {"WORKER", field("worker")},
               {"BUSY",
                [](const json& l) {
                  const json& b = member(l, "busy_ratio");
                  return b.is_number() ? percent(number(b)) : "";
                }},
               {"RX-PACKETS", field("rx_packets")},
               {"TX-PACKETS", field("tx_packets")}},
              wide, "  ");

  out << "\nPorts:\n";
  std::vector<json> ports(items_of(s, "ports").begin(), items_of(s, "ports").end());
  items_table(out, ports,
              {{"NAME", field("name")},
               {"PORT-ID", field("port_id"), true},
               {"LINK", link_state},
               {"SPEED", port_speed},
               {"ADDRESS", [](const json& p) { return or_none(member(p, "address")); }},
               {"MAC", field("mac")},
               {"RXQ", field("rx_queues")},
               {"TXQ", field("tx_queues")},
               {"DEVICE", field("device"), true}},
              wide, "  ");

  out << "\nSources:\n";
  std::vector<json> sources(items_of(s, "sources").begin(), items_of(s, "sources").end());
  items_table(out, sources,
              {{"KIND", field("kind")},
               {"NAME", field("name")},
               {"OBJECTS", field("objects")},
               {"HEALTHY", field("healthy")},
               {"DETAIL", [](const json& x) { return text(member(x, "detail")); }}},
              wide, "  ", true);
  return out.str();
}

std::string render_describe_service(const json& s, format f) {
  if (f == format::json) return to_json(s);
  if (f == format::yaml) return to_yaml(s);
  const bool wide = f == format::wide;
  std::ostringstream out;
  const size_t w = 19;
  fact(out, "Name", text(member(s, "name")), w);
  fact(out, "Namespace", text(member(s, "namespace")), w);
  fact(out, "Type", text(member(s, "type")), w);
  fact(out, "IP", joined(json::array({member(s, "cluster_ip")})), w);
  if (text(member(s, "type")) == "ExternalName") {
    fact(out, "External Name", or_none(member(s, "external_name")), w);
  }
  fact(out, "External IPs", joined(member(s, "external_ips")), w);
  if (text(member(s, "type")) == "LoadBalancer") {
    std::string lb = joined(member(s, "load_balancer"));
    if (member(s, "load_balancer_pending") == true) lb = "<pending>";
    if (member(s, "load_balancer_allocated") == true) lb += " (from the pool)";
    fact(out, "LoadBalancer IPs", lb, w);
    fact(out, "Source Ranges", joined(member(s, "load_balancer_source_ranges")), w);
  }
  fact(out, "Session Affinity", service_affinity(s), w);
  fact(out, "Traffic Policy",
       "external " + or_none(member(s, "external_traffic_policy"), "<unknown>") + ", internal " +
           or_none(member(s, "internal_traffic_policy"), "<unknown>"),
       w);
  fact(out, "Source", or_none(member(s, "source"), "<unknown>"), w);
  fact(out, "Ready Endpoints", or_none(member(s, "ready_endpoints"), "0"), w);

  bool overridden = false;
  for (const auto& p : items_of(s, "ports")) {
    std::string title = "Port " + (text(member(p, "name")).empty() ? std::string("<unnamed>")
                                                                   : text(member(p, "name")));
    out << '\n'
        << title << ": " << text(member(p, "vip")) << ":" << text(member(p, "port")) << "/"
        << text(member(p, "protocol")) << " -> " << or_none(member(p, "target_port"), "?");
    if (member(p, "node_port").is_number() && member(p, "node_port") != 0) {
      out << ", node port " << text(member(p, "node_port"));
    }
    out << '\n';
    const json& c = member(p, "counters");
    out << "  Traffic: " << plural(member(c, "packets"), "packet", "packets") << ", "
        << bytes(member(c, "bytes")) << "B, "
        << plural(member(c, "new_flows"), "new flow", "new flows");
    if (member(p, "maglev_size").is_number()) {
      out << "; Maglev table " << text(member(p, "maglev_size")) << " slots";
    }
    out << '\n';
    const json& backends = items_of(p, "backends");
    if (backends.empty()) {
      out << "  Backends: <none>\n";
      continue;
    }
    std::vector<json> rows(backends.begin(), backends.end());
    for (const auto& b : rows) overridden |= !member(b, "override").is_null();
    auto share = [](const json& b) {
      const json& x = member(b, "share");
      return x.is_number() ? percent(number(x)) : "";
    };
    if (wide) {
      items_table(out, rows,
                  {{"ADDRESS", field("address")},
                   {"PORT", field("port")},
                   {"WEIGHT", backend_weight},
                   {"CONFIGURED", field("configured_weight")},
                   {"READY", field("ready")},
                   {"SERVING", field("serving")},
                   {"TERMINATING", field("terminating")},
                   {"NODE", [](const json& b) { return or_none(member(b, "node")); }},
                   {"ZONE", [](const json& b) { return or_none(member(b, "zone")); }},
                   {"SLOTS", field("slots")},
                   {"SHARE", share},
                   {"FLOWS", field("active_flows")}},
                  true, "  ");
    } else {
      items_table(out, rows,
                  {{"ENDPOINT", endpoint_of},
                   {"WEIGHT", backend_weight},
                   {"CONDITIONS", conditions},
                   {"NODE", [](const json& b) { return or_none(member(b, "node")); }},
                   {"SLOTS", field("slots")},
                   {"SHARE", share},
                   {"FLOWS", field("active_flows")}},
                  false, "  ");
    }
  }
  if (overridden) {
    out << "\n* weight set by ferryctl weight or drain; `weight ... --reset` undoes it\n";
  }
  return out.str();
}

std::string render_trace(const json& t, format f) {
  if (f == format::json) return to_json(t);
  if (f == format::yaml) return to_yaml(t);
  std::ostringstream out;
  std::string proto = text(member(t, "protocol"));
  for (char& c : proto) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  fact(out, "Packet",
       proto + " " + text(member(t, "source")) + " -> " + text(member(t, "destination")));

  const std::string match = text(member(t, "match"));
  const json& svc = member(t, "service");
  std::string match_text = match.empty() ? "none" : match;
  if (svc.is_object()) {
    std::string port_name = text(member(svc, "port_name"));
    fact(out, "Match", match_text);
    fact(out, "Service",
         text(member(svc, "namespace")) + "/" + text(member(svc, "name")) +
             (port_name.empty() ? "" : " port " + port_name) + " (" + text(member(svc, "vip")) +
             ":" + text(member(svc, "port")) + "/" + text(member(svc, "protocol")) + ")");
  } else {
    fact(out, "Match", match_text);
    fact(out, "Service", "<none>");
  }

  const json& flow = member(t, "flow");
  if (flow.is_object()) {
    fact(out, "Flow",
         "existing " + text(member(flow, "state")) + " flow to " + text(member(flow, "backend")) +
             " (idle " + seconds_cell(member(flow, "idle_seconds")) + ", age " +
             seconds_cell(member(flow, "age_seconds")) + ")");
  } else {
    fact(out, "Flow", "none (the packet would start a new flow)");
  }

  std::string decision = or_none(member(t, "decision"), "<unknown>");
  const json& maglev = member(t, "maglev");
  if (maglev.is_object()) {
    decision += " (slot " + text(member(maglev, "slot")) + " of " +
                text(member(maglev, "table_size")) + ")";
  }
  fact(out, "Decision", decision);
  fact(out, "Backend", or_none(member(t, "backend")));

  const json& nat = member(t, "nat");
  if (nat.is_object() && !text(member(nat, "destination")).empty()) {
    std::string dst = text(member(t, "destination"));
    std::string src = text(member(t, "source"));
    std::string new_dst = text(member(nat, "destination"));
    std::string new_src = text(member(nat, "source"));
    fact(out, "NAT", "destination " + dst + " -> " + new_dst);
    fact(out, "",
         new_src.empty() || new_src == src ? "source " + src + " (unchanged)"
                                           : "source " + src + " -> " + new_src + " (masquerade)");
  } else {
    fact(out, "NAT", "<none>");
  }
  fact(out, "Verdict", or_none(member(t, "verdict"), "<unknown>"));
  const std::string reason = text(member(t, "reason"));
  if (!reason.empty()) fact(out, "Reason", reason);
  return out.str();
}

std::string render_weight(const json& r) {
  std::ostringstream out;
  auto weight_text = [](const json& w) {
    return w.is_null() ? std::string("configured") : text(w);
  };
  const json& weight = member(r, "weight");
  const std::string address = text(member(r, "address"));
  out << text(member(r, "namespace")) << '/' << text(member(r, "name")) << ' ' << address << ": ";
  if (weight.is_null()) {
    out << "weight back to configured (was " << weight_text(member(r, "previous")) << ")";
  } else {
    out << "weight " << weight_text(member(r, "previous")) << " -> " << text(weight);
    if (weight == 0) out << " (drained)";
  }
  out << " on " << plural(member(r, "ports"), "port", "ports") << '\n';
  if (weight == 0) out << "established flows stay; no new flow goes to " << address << '\n';
  return out.str();
}

// Payload signature filter: `ferryctl filter list|add|del`.
std::string render_filter_list(const json& r, format f) {
  if (f == format::json) return to_json(r);
  if (f == format::yaml) return to_yaml(r);
  const json& rules = items_of(r, "rules");
  if (rules.empty()) return "No filter rules.\n";
  auto flags = [](const json& rule) {
    std::string out;
    for (const auto& fl : items_of(rule, "flags")) {
      if (!out.empty()) out += ',';
      out += text(fl);
    }
    return out.empty() ? std::string("-") : out;
  };
  std::ostringstream out;
  std::vector<json> lines(rules.begin(), rules.end());
  // The pattern last: free text, cut at 80 columns in the table (-o wide shows it whole).
  items_table(out, lines,
              {{"NAME", field("name")},
               {"ACTION", field("action")},
               {"SCOPE", field("scope")},
               {"DEPTH", field("depth")},
               {"HITS", field("hits")},
               {"SOURCE", field("source")},
               {"FLAGS", flags, true},
               {"PATTERN", field("pattern")}},
              f == format::wide, "", true);
  return out.str();
}

std::string render_filter_change(const std::string& verb, const json& r) {
  std::ostringstream out;
  out << "filter " << text(member(r, "name"));
  if (verb == "filter add") {
    // Two lines: a pattern may be long.
    out << " added: " << text(member(r, "action")) << ", first " << text(member(r, "depth"))
        << " payload bytes, scope " << text(member(r, "scope"))
        << "\npattern: " << text(member(r, "pattern")) << '\n';
  } else {
    out << " deleted (" << plural(member(r, "hits"), "hit", "hits") << ")\n";
  }
  return out.str();
}

std::string render_flush(const json& r) {
  return "flushed " + plural(member(r, "flushed"), "flow", "flows") + "\n";
}

std::string render_changes(const json& result) {
  std::ostringstream out;
  for (const auto& change : items_of(result, "changes")) {
    out << lower(text(member(change, "kind"))) << '/' << text(member(change, "name")) << ' '
        << text(member(change, "action")) << '\n';
  }
  return out.str();
}

// `ferryctl reload`: how many file objects changed and which, then the config keys that wait
// for a restart.
std::string render_reload(const json& result) {
  const json& changes = items_of(result, "changes");
  json shown = json::object({{"changes", json::array()}});
  for (const auto& c : changes) {
    if (text(member(c, "action")) != "unchanged") shown["changes"].push_back(c);
  }
  std::ostringstream out;
  out << "reloaded " << text(member(result, "config")) << ": " << shown["changes"].size() << " of "
      << changes.size() << " file objects changed\n"
      << render_changes(shown);
  for (const auto& key : items_of(result, "restart_needed")) {
    out << "restart needed: " << text(key) << " changed\n";
  }
  return out.str();
}

// `ferryctl log-level [LEVEL]`: "log level: debug (was info)", or the level alone when asked.
std::string render_log_level(const json& result) {
  const std::string level = text(member(result, "level"));
  const std::string was = text(member(result, "previous"));
  return "log level: " + level + (was != level ? " (was " + was + ")" : "") + "\n";
}

std::string render_stats(const json& stats, format f, const context& ctx) {
  if (f == format::json) return to_json(stats);
  if (f == format::yaml) return to_yaml(stats);
  const bool wide = f == format::wide;
  std::ostringstream out;
  out << "Ports:\n";
  std::vector<json> ports(items_of(stats, "ports").begin(), items_of(stats, "ports").end());
  items_table(out, ports,
              {{"NAME", field("name")},
               {"RX-PACKETS", field("rx_packets")},
               {"TX-PACKETS", field("tx_packets")},
               {"RX-BYTES", [](const json& p) { return bytes(member(p, "rx_bytes")); }},
               {"TX-BYTES", [](const json& p) { return bytes(member(p, "tx_bytes")); }},
               {"RX-MISSED", field("rx_missed")},
               {"RX-ERRORS", field("rx_errors"), true},
               {"TX-DROPPED", field("tx_dropped")}},
              wide, "  ");

  out << "\nWorkers:\n";
  std::vector<json> workers(items_of(stats, "workers").begin(), items_of(stats, "workers").end());
  items_table(out, workers,
              {{"WORKER", field("worker")},
               {"LCORE", field("lcore")},
               {"RX-PACKETS", field("rx_packets")},
               {"FOREIGN-FLOW-HITS", field("foreign_flow_hits")},
               {"BUSY-SECONDS", field("busy_seconds"), true},
               {"POLL-SECONDS", field("poll_seconds"), true}},
              wide, "  ");

  out << "\nFlows:\n";
  counter_grid(out, counters_of(member(stats, "flows"),
                                {"active", "capacity", "created", "picked_up", "expired",
                                 "table_full", "stateless", "stateless_replies", "snat",
                                 "port_remapped", "affinity_reused", "foreign_hits", "embryonic",
                                 "syn_max", "syn_stateless", "ack_stateless"}));

  out << "\nL2/ICMP:\n";
  counter_grid(out,
               counters_of(member(stats, "l2"),
                           {"arp_requests_sent", "arp_replies_sent", "neighbor_held",
                            "icmp_echo_replies", "icmp_unreachable_sent", "icmp_errors_translated",
                            "icmp_time_exceeded_sent", "icmp_frag_needed_sent"}));

  // IPv4 fragments, from a ferryd that has them.
  if (const json& frag = member(stats, "fragments"); frag.is_object()) {
    out << "\nFragments:\n";
    counter_grid(out, counters_of(frag, {"received", "reassembled", "held", "max_held",
                                         "fragmented", "fragments_sent"}));
  }

  // DNS, when ferryd serves it: answers by outcome from the workers (UDP) and the TCP side.
  if (const json& dns = member(stats, "dns"); dns.is_object()) {
    out << "\nDNS:\n";
    const json& tcp = member(dns, "tcp");
    std::vector<row> rows = {{"OUTCOME", "UDP", "TCP"}};
    for (std::string_view name : ferry::dns::kOutcomeNames) {
      const std::string o(name);
      rows.push_back({o, text(member(dns, o)), tcp.is_object() ? text(member(tcp, o)) : "-"});
    }
    rows.push_back({"truncated", text(member(dns, "truncated")), "-"});
    // Over [dns] rate_limit and answered with TC (the rest: drop dns_rate_limited).
    if (dns.contains("slipped")) rows.push_back({"slipped", text(member(dns, "slipped")), "-"});
    // The TCP server's connections, and how many its bounds closed or held back.
    for (const char* key : {"connections", "refused_connections", "evicted", "idle_closed",
                            "message_timeouts", "memory_limited"}) {
      rows.push_back({key, "-", tcp.is_object() ? text(member(tcp, key)) : "-"});
    }
    table(out, rows, "  ");
  }

  out << "\nDrops:\n";
  auto drops = nonzero(member(stats, "drops"));
  if (drops.empty()) {
    out << "  no drops\n";
  } else {
    std::vector<row> rows = {{"REASON", "PACKETS"}};
    for (const auto& [reason, count] : drops) rows.push_back({reason, fixed(count, 0)});
    table(out, rows, "  ");
  }

  out << "\nServices:\n";
  std::vector<json> services(items_of(stats, "services").begin(),
                             items_of(stats, "services").end());
  items_table(out, services,
              {{"NAME", field("name")},
               {"SERVICE-PORT",
                [](const json& s) {
                  return text(member(s, "vip")) + ":" + text(member(s, "port")) + "/" +
                         text(member(s, "protocol"));
                }},
               {"PACKETS", field("packets")},
               {"BYTES", [](const json& s) { return bytes(member(s, "bytes")); }},
               {"NEW-FLOWS", field("new_flows")}},
              wide, "  ");

  // The Kubernetes API source, when ferryd follows one: is it in step, and since when not.
  const json& api = member(member(stats, "sources"), "kubernetes");
  if (!api.is_object()) return out.str();
  out << "\nKubernetes API: " << text(member(api, "server")) << " ("
      << text(member(api, "credentials")) << ")\n"
      << "  refused objects: " << text(member(api, "refused")) << "\n";
  std::vector<json> resources(items_of(api, "resources").begin(), items_of(api, "resources").end());
  const double now_ms = ctx.now_unix * 1000;
  items_table(out, resources,
              {{"KIND", field("kind")},
               {"SYNCED", field("synced")},
               {"WATCHING", field("connected")},
               {"RESOURCE-VERSION", field("resource_version"), true},
               {"LAST-EVENT",
                [now_ms](const json& r) {
                  double last = number(member(r, "last_event_unix_ms"));
                  return last > 0 ? duration((now_ms - last) / 1000) + " ago" : "never";
                }},
               {"EVENTS", field("events")},
               {"BOOKMARKS", field("bookmarks"), true},
               {"RELISTS", field("relists")},
               {"ERRORS", field("errors")},
               {"BACKOFF",
                [](const json& r) {
                  double ms = number(member(r, "backoff_ms"));
                  if (ms <= 0) return std::string("-");  // not backing off
                  return ms < 60000 ? fixed(ms / 1000, 1) + "s" : duration(ms / 1000);
                }},
               {"SKIPPED", field("skipped"), true},
               {"TOO-LARGE", field("too_large"), true}},
              wide, "  ");
  // Errors are sentences: below the table rather than in a column that would push it off screen.
  bool heading = false;
  for (const auto& r : resources) {
    std::string error = text(member(r, "last_error"));
    if (error.empty()) continue;
    if (!heading) out << "  Last errors:\n";
    heading = true;
    fact(out, "    " + text(member(r, "kind")), error, 0);
  }
  return out.str();
}

json stats_rates(const json& before, const json& after, double elapsed) {
  if (elapsed <= 0) elapsed = 1;
  json ports = json::array();
  for (const auto& p : items_of(after, "ports")) {
    const json& b = same(member(before, "ports"), p, "name");
    const double drops =
        delta(b, p, "rx_missed") + delta(b, p, "rx_errors") + delta(b, p, "tx_dropped");
    ports.push_back({{"name", member(p, "name")},
                     {"rx_pps", rounded(delta(b, p, "rx_packets") / elapsed, 1)},
                     {"tx_pps", rounded(delta(b, p, "tx_packets") / elapsed, 1)},
                     {"rx_mbps", rounded(delta(b, p, "rx_bytes") * 8 / 1e6 / elapsed, 3)},
                     {"tx_mbps", rounded(delta(b, p, "tx_bytes") * 8 / 1e6 / elapsed, 3)},
                     {"drops_per_second", rounded(drops / elapsed, 1)}});
  }
  json workers = json::array();
  for (const auto& w : items_of(after, "workers")) {
    const json& b = same(member(before, "workers"), w, "worker");
    json item = {{"worker", member(w, "worker")},
                 {"lcore", member(w, "lcore")},
                 {"rx_pps", rounded(delta(b, w, "rx_packets") / elapsed, 1)},
                 {"busy_ratio", nullptr}};
    if (member(w, "busy_seconds").is_number()) {
      const double poll = delta(b, w, "poll_seconds");
      const double busy = delta(b, w, "busy_seconds");
      item["busy_ratio"] = rounded(std::min(1.0, busy / (poll > 0 ? poll : elapsed)), 4);
    }
    workers.push_back(std::move(item));
  }
  json drops = json::array();
  json drop_deltas = json::object();
  if (const json& after_drops = member(after, "drops"); after_drops.is_object()) {
    for (const auto& [reason, count] : after_drops.items()) {
      drop_deltas[reason] = delta(member(before, "drops"), after_drops, reason);
    }
  }
  for (const auto& [reason, count] : nonzero(drop_deltas)) {
    drops.push_back({{"reason", reason}, {"per_second", rounded(count / elapsed, 1)}});
  }
  const json& flows_after = member(after, "flows");
  return {{"interval_seconds", rounded(elapsed, 3)},
          {"ports", ports},
          {"workers", workers},
          {"flows",
           {{"active", member(flows_after, "active")},
            {"new_per_second",
             rounded(delta(member(before, "flows"), flows_after, "created") / elapsed, 1)}}},
          {"drops", drops}};
}

std::string render_rates(const json& rates, format f, const std::string& node, const context& ctx) {
  if (f == format::json) return to_json(rates);
  if (f == format::yaml) return to_yaml(rates);
  const bool wide = f == format::wide;
  std::ostringstream out;
  std::string header = "ferry " + (node.empty() ? std::string("stats") : "on " + node) + "   " +
                       timestamp(ctx.now_unix) + "   every " +
                       fixed(number(member(rates, "interval_seconds")), 1) + "s";
  out << header << std::string(header.size() < 64 ? 64 - header.size() : 1, ' ')
      << "Ctrl-C quits\n\n";
  auto rate = [](const char* key, int decimals) {
    return [key, decimals](const json& x) { return fixed(number(member(x, key)), decimals); };
  };
  std::vector<json> ports(items_of(rates, "ports").begin(), items_of(rates, "ports").end());
  items_table(out, ports,
              {{"PORT", field("name")},
               {"RX-PPS", rate("rx_pps", 0)},
               {"RX-MBIT/S", rate("rx_mbps", 1)},
               {"TX-PPS", rate("tx_pps", 0)},
               {"TX-MBIT/S", rate("tx_mbps", 1)},
               {"DROPS/S", rate("drops_per_second", 0)}},
              wide);
  out << '\n';
  std::vector<json> workers(items_of(rates, "workers").begin(), items_of(rates, "workers").end());
  items_table(out, workers,
              {{"WORKER", field("worker")},
               {"LCORE", field("lcore")},
               {"RX-PPS", rate("rx_pps", 0)},
               {"BUSY",
                [](const json& w) {
                  const json& b = member(w, "busy_ratio");
                  return b.is_number() ? percent(number(b)) : "-";
                }}},
              wide);
  const json& flows = member(rates, "flows");
  out << "\nFlows: " << text(member(flows, "active")) << " active, "
      << fixed(number(member(flows, "new_per_second")), 0) << " new/s\n\n";
  const json& drops = items_of(rates, "drops");
  if (drops.empty()) {
    out << "Drops: none\n";
  } else {
    std::vector<json> top(drops.begin(), drops.end());
    if (!wide && top.size() > 5) top.resize(5);  // top five: the screen stays put
    items_table(out, top, {{"DROP-REASON", field("reason")}, {"PER-SECOND", rate("per_second", 1)}},
                wide);
    if (top.size() < drops.size()) {
      out << "(" << drops.size() - top.size() << " more reasons; -o wide shows all)\n";
    }
  }
  return out.str();
}

std::string render(const std::string& verb, const json& result, format f, const context& ctx) {
  if (verb.rfind("get ", 0) == 0) {
    const resource_info* r = find_resource(verb.substr(4));
    if (r != nullptr) return render_get(*r, result, f, ctx);
  }
  if (verb == "status") return render_status(result, f, ctx);
  if (verb == "describe service") return render_describe_service(result, f);
  if (verb == "trace") return render_trace(result, f);
  if (verb == "stats") return render_stats(result, f, ctx);
  if (verb == "filter list") return render_filter_list(result, f);
  if (f == format::json) return to_json(result);
  if (f == format::yaml) return to_yaml(result);
  if (verb == "weight") return render_weight(result);
  if (verb == "flush") return render_flush(result);
  if (verb == "filter add" || verb == "filter del") return render_filter_change(verb, result);
  if (verb == "apply" || verb == "delete") return render_changes(result);
  if (verb == "reload") return render_reload(result);
  if (verb == "log-level") return render_log_level(result);
  return to_json(result);
}

}  // namespace ferry::cli
