#include "config.hpp"

#include <grp.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <toml.hpp>

#include "builtin.hpp"
#include "dns_zone.hpp"
#include "ferry/counters.hpp"
#include "ferry/maglev.hpp"
#include "filter.hpp"
#include "metrics.hpp"

namespace ferry::control {
namespace {

// Walks one TOML table, remembering which keys were read so leftovers can be refused.
// Every accessor throws config_error with "file: path.key: reason"; parse_config catches it.
struct config_error {
  std::string message;
};

// Returns the offset of the first byte that is not well-formed UTF-8 (RFC 3629: no overlong
// forms, no surrogates, nothing above U+10FFFF), or npos. TOML text must be UTF-8, and
// toml11 3.7.1 reads past its buffer when it reports bad UTF-8 inside a multi-line string,
// so the text is checked here first.
size_t invalid_utf8_at(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<uint8_t>(s[i]);
    size_t len = c < 0x80             ? 1
                 : (c & 0xE0) == 0xC0 ? 2
                 : (c & 0xF0) == 0xE0 ? 3
                 : (c & 0xF8) == 0xF0 ? 4
                                      : 0;
    if (len == 0 || i + len > s.size()) return i;
    uint32_t cp = len == 1 ? c : c & (0x7F >> len);
    for (size_t k = 1; k < len; ++k) {
      auto b = static_cast<uint8_t>(s[i + k]);
      if ((b & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (b & 0x3F);
    }
    static constexpr uint32_t min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_len[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::string_view::npos;
}

// ferry's own tables nest at most three deep ([[filter]] flags are an array in a table in an
// array); this leaves room for any hand-written style and none for a stack overflow.
constexpr int kMaxTomlDepth = 32;

// Where the text nests tables, arrays and dotted keys deeper than kMaxTomlDepth: the 1-based
// line, or 0. toml11 3.7 parses (and toml::value destroys) nested values recursively, so a
// value nested 100,000 deep overflows the stack; this scan runs first and sees the same
// depth toml11 would build: [ and { in values, dots in keys (bare, in [table] headers and in
// inline tables), skipping strings and comments. Malformed text may be misjudged, but only
// ever into a depth no deeper than what is counted, and toml11 then refuses its syntax.
size_t too_deep_at(std::string_view s) {
  struct level {
    char open;  // '[' array, '{' inline table
    int depth;  // the container's own depth (the root table is 0)
  };
  std::vector<level> stack;  // at most kMaxTomlDepth entries: deeper input returns first
  bool in_key = true;        // reading a key (line start, or after '{' / ',' in a table)
  int header = 0;            // depth of the current [table] / [[array]] header's table
  int base = 0;              // depth of the table the key being read belongs to
  int key_dots = 0;          // each dot in a key is one more table
  int value_depth = 1;       // the depth an array or inline table opened now would have
  size_t line = 1;
  auto triple = [&](size_t i, char q) { return s.substr(i, 3) == std::string(3, q); };
  auto skip_string = [&](size_t& i) {  // i at the opening quote; leaves it at the closing one
    const char q = s[i];
    const bool multi = triple(i, q);
    for (i += multi ? 3 : 1; i < s.size(); ++i) {
      if (s[i] == '\n') ++line;
      if (q == '"' && s[i] == '\\') {
        if (++i < s.size() && s[i] == '\n') ++line;
      } else if (s[i] == q && (!multi || triple(i, q))) {
        if (multi) i += 2;
        while (multi && i + 1 < s.size() && s[i + 1] == q) ++i;  // """a"""" is a"
        return;
      }
    }
  };
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '#') {
      while (i + 1 < s.size() && s[i + 1] != '\n') ++i;
    } else if (c == '"' || c == '\'') {
      skip_string(i);
    } else if (c == '\n') {
      ++line;
      if (stack.empty()) {
        in_key = true;
        base = header;
        key_dots = 0;
      }
    } else if (in_key && stack.empty() && c == '[') {
      // A [table] header (depth: its dotted parts) or [[array]] (one more: the array).
      int depth = 1;
      if (i + 1 < s.size() && s[i + 1] == '[') ++depth, ++i;
      for (++i; i < s.size() && s[i] != ']' && s[i] != '\n'; ++i) {
        if (s[i] == '"' || s[i] == '\'') skip_string(i);
        if (i < s.size() && s[i] == '.' && ++depth > kMaxTomlDepth) return line;
      }
      if (depth > kMaxTomlDepth) return line;
      if (i < s.size() && s[i] == '\n') --i;  // counted by the branch above
      header = base = depth;
    } else if (in_key) {
      if (c == '.' && base + ++key_dots > kMaxTomlDepth) return line;
      if (c == '=') {
        in_key = false;
        value_depth = base + key_dots + 1;
      }
    } else if (c == '[' || c == '{') {
      if (value_depth > kMaxTomlDepth) return line;
      stack.push_back({c, value_depth});
      if (c == '{') {
        in_key = true;
        base = value_depth;
        key_dots = 0;
      } else {
        ++value_depth;
      }
    } else if ((c == ']' || c == '}') && !stack.empty()) {
      stack.pop_back();
      if (!stack.empty() && stack.back().open == '[') value_depth = stack.back().depth + 1;
    } else if (c == ',' && !stack.empty() && stack.back().open == '{') {
      in_key = true;
      base = stack.back().depth;
      key_dots = 0;
    }
  }
  return 0;
}

class table_reader {
 public:
  table_reader(const toml::value& v, std::string path, const std::string& file)
      : file_(file), path_(std::move(path)) {
    if (!v.is_table()) fail("", "must be a table");
    table_ = &v.as_table();
  }

  const toml::value* find(const std::string& key) {
    seen_.insert(key);
    auto it = table_->find(key);
    return it == table_->end() ? nullptr : &it->second;
  }

  [[noreturn]] void fail(const std::string& key, const std::string& reason) const {
    std::string where = path_;
    if (!key.empty()) where += (where.empty() ? "" : ".") + key;
    throw config_error{file_ + ": " + where + ": " + reason};
  }

  void string(const std::string& key, std::string& out) {
    if (auto* v = find(key)) {
      if (!v->is_string()) fail(key, "must be a string");
      out = v->as_string().str;
      if (out.empty()) fail(key, "must not be empty");
    }
  }

  void boolean(const std::string& key, bool& out) {
    if (auto* v = find(key)) {
      if (!v->is_boolean()) fail(key, "must be true or false");
      out = v->as_boolean();
    }
  }

  template <typename T>
  void integer(const std::string& key, T& out, int64_t min = 0,
               int64_t max = std::numeric_limits<T>::max()) {
    if (auto* v = find(key)) {
      if (!v->is_integer()) fail(key, "must be an integer");
      int64_t n = v->as_integer();
      if (n < min || n > max) {
        fail(key, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                      ", got " + std::to_string(n));
      }
      out = static_cast<T>(n);
    }
  }

  void strings(const std::string& key, std::vector<std::string>& out) {
    if (auto* v = find(key)) {
      if (!v->is_array()) fail(key, "must be an array of strings");
      out.clear();
      for (const auto& item : v->as_array()) {
        if (!item.is_string()) fail(key, "must be an array of strings");
        out.push_back(item.as_string().str);
      }
    }
  }

  ipv4_prefix prefix(const std::string& key, bool required) {
    std::string text;
    string(key, text);
    if (text.empty()) {
      if (required) fail(key, "required (an IPv4 address with prefix length, a.b.c.d/n)");
      return {};
    }
    auto p = parse_ipv4_prefix(text);
    if (!p) fail(key, "\"" + text + "\" is not an IPv4 address with prefix length (a.b.c.d/n)");
    return *p;
  }

  template <typename Fn>
  void table(const std::string& key, Fn&& fn) {
    if (auto* v = find(key)) {
      table_reader sub(*v, path_.empty() ? key : path_ + "." + key, file_);
      fn(sub);
      sub.finish();
    }
  }

  template <typename Fn>
  void array_of_tables(const std::string& key, Fn&& fn) {
    if (auto* v = find(key)) {
      if (!v->is_array()) fail(key, "must be an array of tables ([[" + key + "]])");
      size_t i = 0;
      for (const auto& item : v->as_array()) {
        table_reader sub(item, key + "[" + std::to_string(i++) + "]", file_);
        fn(sub);
        sub.finish();
      }
    }
  }

  void finish() const {
    for (const auto& [key, value] : *table_) {
      if (!seen_.count(key)) fail(key, "unknown key");
    }
  }

 private:
  const std::string& file_;
  std::string path_;
  const toml::table* table_ = nullptr;
  std::set<std::string> seen_;
};

// A group name or number, as the socket's group.
result<int64_t> group_id(const std::string& text) {
  int64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec == std::errc{} && end == text.data() + text.size()) {
    if (n < 0 || n >= int64_t{1} << 32) return make_error("\"" + text + "\" is not a group id");
    return n;
  }
  group g{};
  group* found = nullptr;
  std::vector<char> buf(16384);
  int rc;
  while ((rc = ::getgrnam_r(text.c_str(), &g, buf.data(), buf.size(), &found)) == ERANGE) {
    buf.resize(buf.size() * 2);
  }
  if (rc != 0 || !found) {
    return make_error("no group named \"" + text + "\" (a group name or numeric gid)");
  }
  return int64_t{found->gr_gid};
}

// The smallest prefix length services.service_cidr may have (Kubernetes: /12 for IPv4).
constexpr uint8_t kMinServiceCidrLen = 12;

bool overlap(const ipv4_prefix& a, const ipv4_prefix& b) {
  const ipv4_prefix& wider = a.len <= b.len ? a : b;
  const ipv4_prefix& narrower = a.len <= b.len ? b : a;
  return wider.contains(narrower.addr);
}

std::string format_prefix(const ipv4_prefix& p) {
  return format_ipv4(p.addr & p.mask()) + "/" + std::to_string(p.len);
}

// What names one device: a PCI address or a vdev's name (the part before its first ','),
// and for af_packet/pcap vdevs the interface they open (iface=NAME): two vdevs of different
// names on one interface are still one device.
std::string device_id(std::string_view d) { return std::string(d.substr(0, d.find(','))); }
std::string iface_of(std::string_view d) {
  for (size_t at = d.find(','); at != std::string_view::npos; at = d.find(',', at + 1)) {
    auto arg = d.substr(at + 1, d.find(',', at + 1) - at - 1);
    if (arg.substr(0, 6) == "iface=") return std::string(arg.substr(6));
  }
  return {};
}

// The DPDK memory dataplane.eal_args gives (-m MiB, or --socket-mem's sum), or 0: unknown.
uint64_t eal_memory_mib(const std::vector<std::string>& args) {
  auto sum = [](std::string_view list) -> uint64_t {
    uint64_t total = 0;
    while (!list.empty()) {
      auto part = list.substr(0, list.find(','));
      uint64_t n = 0;
      auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), n);
      if (ec != std::errc{} || end != part.data() + part.size()) return 0;
      total += n;
      list.remove_prefix(std::min(list.size(), part.size() + 1));
    }
    return total;
  };
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view a = args[i];
    std::string_view next = i + 1 < args.size() ? std::string_view(args[i + 1]) : "";
    if (a == "-m" || a == "--socket-mem") return sum(next);
    if (a.substr(0, 13) == "--socket-mem=") return sum(a.substr(13));
    if (a.size() > 2 && a.substr(0, 2) == "-m") return sum(a.substr(2));  // -m512
  }
  return 0;
}

// The worker lcores dataplane.eal_args asks for (-l or --lcores LIST of numbers and ranges,
// less the main lcore), at least 1 (also when the list says no more).
uint64_t eal_workers(const std::vector<std::string>& args) {
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] != "-l" && args[i] != "--lcores") continue;
    std::string_view list = args[i + 1];
    uint64_t n = 0;
    while (!list.empty()) {
      auto part = list.substr(0, list.find(','));
      auto dash = part.find('-');
      uint64_t lo = 0, hi = 0;
      auto num = [](std::string_view t, uint64_t& out) {
        auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), out);
        return ec == std::errc{} && end == t.data() + t.size();
      };
      if (!num(part.substr(0, dash), lo)) return 1;
      hi = lo;
      if (dash != std::string_view::npos && (!num(part.substr(dash + 1), hi) || hi < lo)) return 1;
      n += hi - lo + 1;
      list.remove_prefix(std::min(list.size(), part.size() + 1));
    }
    return n > 1 ? n - 1 : 1;
  }
  return 1;
}

// Each worker's reassembly table is allocated at start from DPDK memory: rte_ip_frag makes
// 2 x bit_ceil(max_datagrams) slots of 256 bytes (measured: 2 MiB at 4096, 512 MiB at
// 1048576). When eal_args says how much memory there is, a table that cannot fit (with the
// packet pool, the other thing sized by the config) is refused here, not at start.
// A packet buffer's least size in DPDK memory: RTE_MBUF_DEFAULT_BUF_SIZE and struct rte_mbuf.
constexpr uint64_t kMbufBytes = 2176 + 128;

template <typename Fail>
void check_fragment_memory(const node_config& c, Fail&& fail) {
  const uint64_t mib = eal_memory_mib(c.eal_args);
  if (!c.fragments.enabled || mib == 0) return;
  const uint64_t table = uint64_t{2} * std::bit_ceil(uint64_t{c.fragments.max_datagrams}) * 256;
  const uint64_t workers = eal_workers(c.eal_args);
  const uint64_t pool = uint64_t{c.mbufs} * kMbufBytes;
  if (workers * table + pool > mib << 20) {
    fail("fragments.max_datagrams: " + std::to_string(c.fragments.max_datagrams) +
         " needs a reassembly table of " + std::to_string(table >> 20) + " MiB per worker (" +
         std::to_string(workers) + " workers) besides " + std::to_string(pool >> 20) +
         " MiB of packet pool, more than the " + std::to_string(mib) +
         " MiB dataplane.eal_args gives DPDK (-m); lower it or raise -m");
  }
}

void check(const node_config& c) {
  auto fail = [&](const std::string& what) { throw config_error{c.source + ": " + what}; };
  if (c.ports.empty()) fail("port: at least one [[port]] is required");
  if (c.ports.size() > kMaxPorts) fail("port: at most 8 ports are supported");
  std::set<std::string> names;
  for (size_t i = 0; i < c.ports.size(); ++i) {
    const auto& p = c.ports[i];
    std::string at = "port[" + std::to_string(i) + "]";
    if (p.name.empty()) fail(at + ".name: required");
    if (p.device.empty()) fail(at + ".device: required (PCI address or vdev string)");
    if (!names.insert(p.name).second) fail(at + ".name: duplicate port name \"" + p.name + "\"");
    for (size_t j = 0; j < i; ++j) {
      const auto& q = c.ports[j];
      const std::string other = " (port[" + std::to_string(j) + "], " + q.name + ")";
      if (device_id(p.device) == device_id(q.device) ||
          (!iface_of(p.device).empty() && iface_of(p.device) == iface_of(q.device))) {
        fail(at + ".device: \"" + p.device + "\" is the device of another port" + other);
      }
      // Two ports on one subnet: the routes could not tell which one leads to an address.
      if (overlap(p.address, q.address)) {
        fail(at + ".address: " + format_prefix(p.address) + " is on the subnet of another port" +
             other + ", " + format_prefix(q.address));
      }
    }
  }
  // A ClusterIP range holding a node's subnet (or the whole Internet) would take over
  // addresses that are not services. Kubernetes caps the range at a /12 (kube-apiserver's
  // --service-cluster-ip-range: "the mask must be >= 12").
  if (c.service_cidr.len < kMinServiceCidrLen) {
    fail("services.service_cidr: " + format_prefix(c.service_cidr) + " is too large: the prefix " +
         "length must be at least " + std::to_string(kMinServiceCidrLen) + " (as Kubernetes)");
  }
  for (size_t i = 0; i < c.ports.size(); ++i) {
    if (overlap(c.service_cidr, c.ports[i].address)) {
      fail("services.service_cidr: " + format_prefix(c.service_cidr) + " overlaps port[" +
           std::to_string(i) + "].address " + format_prefix(c.ports[i].address) +
           " (ClusterIPs must not be node subnet addresses)");
    }
  }
  for (uint32_t a : c.dns.addresses) {
    for (size_t i = 0; i < c.ports.size(); ++i) {
      if (a == c.ports[i].address.addr) {
        fail("dns.addresses: " + format_ipv4(a) + " is port[" + std::to_string(i) +
             "].address, the node's own address (give DNS an address of its own)");
      }
    }
  }
  check_fragment_memory(c, fail);
  for (size_t i = 0; i < c.routes.size(); ++i) {
    const auto& r = c.routes[i];
    std::string at = "route[" + std::to_string(i) + "]";
    if (r.port.empty()) fail(at + ".port: required");
    if (!names.count(r.port)) fail(at + ".port: no [[port]] named \"" + r.port + "\"");
  }
}

}  // namespace

result<node_config> parse_config(std::string_view text, const std::string& source) {
  node_config c;
  c.source = source;
  if (size_t bad = invalid_utf8_at(text); bad != std::string_view::npos) {
    size_t line = 1 + std::count(text.begin(), text.begin() + bad, '\n');
    return make_error(source + ":" + std::to_string(line) + ": not valid UTF-8 (byte " +
                      std::to_string(bad) + "); a config file must be UTF-8 text");
  }
  if (size_t line = too_deep_at(text)) {
    return make_error(source + ":" + std::to_string(line) + ": nested more than " +
                      std::to_string(kMaxTomlDepth) +
                      " levels deep (tables, arrays, inline tables and dotted keys together)");
  }
  try {
    std::istringstream in{std::string(text)};
    toml::value root = toml::parse(in, source);
    table_reader top(root, "", source);
    top.table("node", [&](table_reader& t) { t.string("name", c.node_name); });
    top.table("dataplane", [&](table_reader& t) {
      t.strings("eal_args", c.eal_args);
      t.integer("mbufs", c.mbufs, 1023, 16 << 20);
      t.integer("idle_sleep_us", c.idle_sleep_us, 0, 1000000);
    });
    top.array_of_tables("port", [&](table_reader& t) {
      port_config p;
      t.string("name", p.name);
      t.string("device", p.device);
      p.address = t.prefix("address", true);
      t.integer("rx_desc", p.rx_desc, 64, 16384);
      t.integer("tx_desc", p.tx_desc, 64, 16384);
      t.integer("mtu", p.mtu, 576, 9702);
      c.ports.push_back(std::move(p));
    });
    top.array_of_tables("route", [&](table_reader& t) {
      route_config r;
      r.to = t.prefix("to", true);
      std::string via;
      t.string("via", via);
      if (!via.empty()) {
        auto a = parse_ipv4(via);
        if (!a) t.fail("via", "\"" + via + "\" is not an IPv4 address");
        r.via = *a;
      }
      t.string("port", r.port);
      c.routes.push_back(std::move(r));
    });
    top.table("control", [&](table_reader& t) {
      t.string("socket", c.socket_path);
      t.string("socket_group", c.socket_group);
      if (!c.socket_group.empty()) {
        auto gid = group_id(c.socket_group);
        if (!gid) t.fail("socket_group", gid.message());
        c.socket_gid = *gid;
      }
      t.integer("max_request_bytes", c.max_request_bytes, 1024, int64_t{1} << 32);
    });
    top.table("log", [&](table_reader& t) {
      t.string("level", c.log_level);
      if (std::find_if(std::begin(kLogLevels), std::end(kLogLevels),
                       [&](const char* l) { return c.log_level == l; }) == std::end(kLogLevels)) {
        t.fail("level",
               "\"" + c.log_level +
                   "\" is not a log level (trace, debug, info, warn, error, critical, off)");
      }
    });
    top.table("sources", [&](table_reader& t) { t.strings("manifests", c.manifests); });
    top.table("kubernetes", [&](table_reader& t) {
      auto& k = c.kubernetes;
      t.string("kubeconfig", k.kubeconfig);
      t.string("context", k.context);
      t.boolean("in_cluster", k.in_cluster);
      t.string("service_account_dir", k.service_account_dir);
      t.integer("page_size", k.page_size, 1, 100000);
      t.integer("watch_timeout", k.watch_timeout, 1, 86400);
      t.integer("max_list_objects", k.max_list_objects, 1, 100000000);
      t.integer("max_list_bytes", k.max_list_bytes, int64_t{1} << 16, int64_t{1} << 40);
      t.integer("max_event_bytes", k.max_event_bytes, int64_t{1} << 12, int64_t{1} << 30);
      t.integer("backoff_initial_ms", k.backoff_initial_ms, 1, 600000);
      t.integer("backoff_max_ms", k.backoff_max_ms, 1, 3600000);
      if (k.backoff_max_ms < k.backoff_initial_ms) {
        t.fail("backoff_max_ms", "must not be below backoff_initial_ms (" +
                                     std::to_string(k.backoff_initial_ms) + ")");
      }
      if (k.in_cluster && !k.kubeconfig.empty()) {
        t.fail("in_cluster", "set either in_cluster or kubeconfig, not both");
      }
      if (!k.in_cluster && k.kubeconfig.empty()) {
        t.fail("", "needs kubeconfig = \"FILE\" or in_cluster = true");
      }
      k.enabled = true;
    });
    top.table("dns", [&](table_reader& t) {
      std::vector<std::string> addresses;
      t.strings("addresses", addresses);
      for (const auto& text : addresses) {
        auto a = parse_ipv4(text);
        if (!a || !*a) t.fail("addresses", "\"" + text + "\" is not an IPv4 address");
        c.dns.addresses.push_back(*a);
      }
      t.string("zone", c.dns.zone);
      while (!c.dns.zone.empty() && c.dns.zone.back() == '.') c.dns.zone.pop_back();
      if (c.dns.zone.empty() || control::dns_wire(c.dns.zone).empty() ||
          c.dns.zone.find_first_not_of(
              "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") !=
              std::string::npos) {
        t.fail("zone", "\"" + c.dns.zone + "\" is not a DNS domain name (like cluster.local)");
      }
      t.integer("ttl", c.dns.ttl, 0, 86400);
      std::vector<std::string> upstreams;
      t.strings("upstreams", upstreams);
      for (const auto& text : upstreams) {
        // a.b.c.d or a.b.c.d:port
        const auto colon = text.find(':');
        auto a = parse_ipv4(std::string_view(text).substr(0, colon));
        uint64_t port = 53;
        bool ok = a && *a;
        if (ok && colon != std::string::npos) {
          auto digits = std::string_view(text).substr(colon + 1);
          auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
          ok = ec == std::errc{} && end == digits.data() + digits.size() && port && port < 65536;
        }
        if (!ok) t.fail("upstreams", "\"" + text + "\" is not an IPv4 address or address:port");
        c.dns.upstreams.emplace_back(*a, static_cast<uint16_t>(port));
      }
      auto& tcp = c.dns.tcp;
      // Each connection is a file descriptor of ferryd's (RLIMIT_NOFILE).
      t.integer("tcp_connections", tcp.connections, 1, 1024);
      t.integer("tcp_connections_per_source", tcp.connections_per_source, 1, 1024);
      t.integer("tcp_idle_timeout", tcp.idle_timeout, 1, 3600);
      t.integer("tcp_message_timeout", tcp.message_timeout, 1, 3600);
      // At least two largest messages: one query being read, one answer being sent.
      t.integer("tcp_memory", tcp.memory, 2 * 65537, 1 << 30);
      t.integer("external_ttl_max", c.dns.external_ttl_max, 0, 86400);
      t.integer("external_cache_size", c.dns.external_cache_size, 0, 1 << 20);
      if (!upstreams.empty() && c.dns.addresses.empty()) {
        t.fail("upstreams", "needs addresses: DNS is off without them");
      }
      // Response rate limiting (reflection) and who may use the upstreams.
      t.integer("rate_limit", c.dns.rate_limit, 0, 100000000);
      t.integer("rate_limit_prefix", c.dns.rate_limit_prefix, 8, 32);
      t.integer("rate_limit_slip", c.dns.rate_limit_slip, 0, 100);
      auto prefixes = [&](const std::string& key, std::vector<ipv4_prefix>& out) {
        std::vector<std::string> texts;
        t.strings(key, texts);
        for (const auto& text : texts) {
          auto p = parse_ipv4_prefix(text);
          if (!p) t.fail(key, "\"" + text + "\" is not an IPv4 address or prefix (a.b.c.d/n)");
          out.push_back(*p);
        }
      };
      prefixes("rate_limit_exempt", c.dns.rate_limit_exempt);
      prefixes("forward_sources", c.dns.forward_sources);
    });
    top.table("conntrack", [&](table_reader& t) {
      t.integer("capacity", c.conntrack.capacity, 1024, 1 << 28);
      t.integer("tcp_syn_timeout", c.conntrack.tcp_syn_timeout, 1, 86400 * 7);
      t.integer("tcp_established_timeout", c.conntrack.tcp_established_timeout, 1, 86400 * 7);
      t.integer("tcp_closing_timeout", c.conntrack.tcp_closing_timeout, 1, 86400 * 7);
      // TCP abuse: tcp_fin_timeout is the newer name of tcp_closing_timeout (either works).
      t.integer("tcp_fin_timeout", c.conntrack.tcp_closing_timeout, 1, 86400 * 7);
      t.integer("tcp_rst_timeout", c.conntrack.tcp_rst_timeout, 1, 86400 * 7);
      t.integer("tcp_rst_window", c.conntrack.tcp_rst_window, 0, 1u << 30);
      t.integer("syn_max", c.conntrack.syn_max, 1, 1 << 28);
      t.integer("udp_timeout", c.conntrack.udp_timeout, 1, 86400 * 7);
      t.integer("sctp_init_timeout", c.conntrack.sctp_init_timeout, 1, 86400 * 7);
      t.integer("sctp_established_timeout", c.conntrack.sctp_established_timeout, 1, 86400 * 7);
      t.integer("sctp_closing_timeout", c.conntrack.sctp_closing_timeout, 1, 86400 * 7);
      t.integer("affinity_capacity", c.conntrack.affinity_capacity, 1024, 1 << 26);
      t.integer("removed_backend_grace", c.conntrack.removed_backend_grace, 0, 86400);
      if (t.find("tcp_fin_timeout") && t.find("tcp_closing_timeout")) {
        t.fail("tcp_fin_timeout", "is the new name of tcp_closing_timeout: give only one");
      }
      if (c.conntrack.syn_max > c.conntrack.capacity) {
        t.fail("syn_max", "must not exceed capacity (" + std::to_string(c.conntrack.capacity) +
                              "), got " + std::to_string(c.conntrack.syn_max));
      }
    });
    // [limits]: the per-source new-flow limit and the filter's rule slots.
    top.table("limits", [&](table_reader& t) {
      t.integer("new_flows_per_source", c.limits.new_flows_per_source, 0, 100000000);
      t.integer("new_flows_burst", c.limits.new_flows_burst, 0, 100000000);
      t.integer("source_table_size", c.limits.source_table_size, 16, 1 << 24);
      t.integer("filter_max_rules", c.filter_max_rules, 1, 65536);  // the signature filter
    });
    // [fragments]
    top.table("fragments", [&](table_reader& t) {
      t.boolean("enabled", c.fragments.enabled);
      t.integer("max_datagrams", c.fragments.max_datagrams, 1, 1 << 20);
      t.integer("timeout_ms", c.fragments.timeout_ms, 10, 60000);
      t.integer("max_size", c.fragments.max_size, 576, 65535);
      t.integer("max_held", c.fragments.max_held, 16, 1 << 20);
    });
    top.table("maglev", [&](table_reader& t) {
      t.integer("max_table_size", c.maglev_max_size, kMaglevMinSize, 65521 * 1000);
    });
    top.table("services", [&](table_reader& t) {
      t.integer("max_service_ports", c.max_service_ports, 16, 1 << 22);
      if (t.find("service_cidr")) c.service_cidr = t.prefix("service_cidr", true);
      std::string range;
      t.string("node_port_range", range);
      if (!range.empty()) {
        auto dash = range.find('-');
        uint64_t lo = 0, hi = 0;
        auto num = [](std::string_view s, uint64_t& out) {
          auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
          return ec == std::errc{} && end == s.data() + s.size();
        };
        if (dash == std::string::npos || !num(std::string_view(range).substr(0, dash), lo) ||
            !num(std::string_view(range).substr(dash + 1), hi) || lo == 0 || lo > hi ||
            hi > 65535) {
          t.fail("node_port_range", "\"" + range + "\" is not a port range like 30000-32767");
        }
        c.node_port_min = static_cast<uint16_t>(lo);
        c.node_port_max = static_cast<uint16_t>(hi);
      }
      std::vector<std::string> pool;
      t.strings("load_balancer_pool", pool);
      for (const auto& text : pool) {
        auto p = parse_ipv4_prefix(text);
        if (!p) {
          t.fail("load_balancer_pool",
                 "\"" + text + "\" is not an IPv4 address or prefix (a.b.c.d/n)");
        }
        c.load_balancer_pool.push_back(*p);
      }
      t.integer("icmp_unreachable_rate", c.icmp_unreachable_rate, 0, 1000000);
    });
    top.table("metrics", [&](table_reader& t) {
      // Not t.string(): "" is meaningful here (off).
      if (auto* v = t.find("address")) {
        if (!v->is_string()) t.fail("address", "must be a string (\"\" turns metrics off)");
        c.metrics.address = v->as_string().str;
        if (!c.metrics.address.empty()) {
          if (auto a = metrics::parse_listen_address(c.metrics.address); !a) {
            t.fail("address", a.message());
          }
        }
      }
    });
    top.table("neighbor", [&](table_reader& t) {
      t.integer("timeout", c.neighbor_timeout, 1, 86400);
      t.integer("hold_ms", c.neighbor_hold_ms, 0, 60000);
    });
    // Payload signature filter.
    top.array_of_tables("filter", [&](table_reader& t) {
      filter_rule_config r;
      t.string("name", r.name);
      const std::string at = "filter[" + std::to_string(c.filters.size()) + "]";
      // Names the rule in every message: "filter[2] (evil): depth: ...".
      auto fail = [&](const std::string& what) {
        throw config_error{source + ": " + at + " (" + r.name + "): " + what};
      };
      t.string("pattern", r.pattern);
      t.strings("flags", r.flags);
      std::string action = "drop", vip, proto;
      t.string("action", action);
      if (action != "drop" && action != "count") {
        fail("action: \"" + action + "\" must be drop or count");
      }
      r.drop = action == "drop";
      int64_t depth = r.depth, port = 0;
      t.integer("depth", depth, std::numeric_limits<int64_t>::min());
      if (depth < 1 || depth > kFilterMaxDepth) {
        fail("depth: must be between 1 and " + std::to_string(kFilterMaxDepth) + ", got " +
             std::to_string(depth));
      }
      r.depth = static_cast<uint32_t>(depth);
      t.string("service", r.service);
      t.string("vip", vip);
      if (!vip.empty()) {
        auto a = parse_ipv4(vip);
        if (!a) fail("vip: \"" + vip + "\" is not an IPv4 address");
        r.vip = *a;
      }
      t.string("protocol", proto);
      if (!proto.empty()) {
        if (proto != "TCP" && proto != "UDP" && proto != "tcp" && proto != "udp") {
          fail("protocol: \"" + proto + "\" must be TCP or UDP");
        }
        r.proto = proto == "TCP" || proto == "tcp" ? 6 : 17;
      }
      t.integer("port", port, std::numeric_limits<int64_t>::min());
      if (port < 0 || port > 65535)
        fail("port: must be between 1 and 65535, got " + std::to_string(port));
      r.port = static_cast<uint16_t>(port);
      if (auto ok = check_filter_rule(r); !ok) fail(ok.message());
      for (const auto& other : c.filters) {
        if (other.name == r.name) fail("name: duplicate filter name \"" + r.name + "\"");
      }
      c.filters.push_back(std::move(r));
    });
    // [icmp]: echo and error rates, ping to service addresses.
    top.table("icmp", [&](table_reader& t) {
      t.integer("echo_rate", c.icmp.echo_rate, 0, 1000000);
      t.integer("error_rate", c.icmp.error_rate, 0, 1000000);
      t.boolean("answer_service_echo", c.icmp.answer_service_echo);
    });
    top.finish();
    check(c);
    if (c.filters.size() > c.filter_max_rules) {
      throw config_error{source + ": filter: " + std::to_string(c.filters.size()) +
                         " rules, more than limits.filter_max_rules (" +
                         std::to_string(c.filter_max_rules) + ")"};
    }
    // The patterns compile (Hyperscan's own message, naming the rule that failed).
    if (int bad = -1; !c.filters.empty()) {
      if (auto db = compile_filters(c.filters, 0, &bad); !db) {
        std::string at = "filter";
        if (bad >= 0) {
          at = "filter[" + std::to_string(bad) + "] (" + c.filters[static_cast<size_t>(bad)].name +
               "): pattern";
        }
        const std::string& m = db.message();
        // compile_filters' message: 'filter "NAME": pattern "RE": MESSAGE'.
        const auto colon = m.find("\": ", m.find("pattern \""));
        throw config_error{source + ": " + at + ": " +
                           (bad >= 0 && colon != std::string::npos ? m.substr(colon + 3) : m)};
      }
    }
  } catch (const config_error& e) {
    return make_error(e.message);
  } catch (const std::exception& e) {
    // toml11 syntax errors carry file, line and a caret under the bad spot.
    return make_error(std::string(e.what()));
  }
  return c;
}

result<node_config> load_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) return make_error(path + ": cannot read config file: " + std::strerror(errno));
  std::stringstream buf;
  buf << in.rdbuf();
  return parse_config(buf.str(), path);
}

std::vector<std::string> restart_needed(const node_config& a, const node_config& b) {
  std::vector<std::string> out;
  auto differ = [&](bool changed, const char* key) {
    if (changed) out.emplace_back(key);
  };
  differ(a.node_name != b.node_name, "node.name");
  differ(a.eal_args != b.eal_args, "dataplane.eal_args");
  differ(a.mbufs != b.mbufs, "dataplane.mbufs");
  differ(a.idle_sleep_us != b.idle_sleep_us, "dataplane.idle_sleep_us");
  differ(a.ports != b.ports, "port");
  differ(a.routes != b.routes, "route");
  differ(a.socket_path != b.socket_path, "control.socket");
  differ(a.socket_gid != b.socket_gid, "control.socket_group");
  differ(a.conntrack != b.conntrack, "conntrack");
  differ(a.kubernetes != b.kubernetes, "kubernetes");
  differ(a.limits != b.limits, "limits");
  differ(a.dns != b.dns, "dns");
  differ(a.maglev_max_size != b.maglev_max_size, "maglev.max_table_size");
  differ(a.max_service_ports != b.max_service_ports, "services.max_service_ports");
  differ(a.service_cidr != b.service_cidr, "services.service_cidr");
  differ(a.node_port_min != b.node_port_min || a.node_port_max != b.node_port_max,
         "services.node_port_range");
  differ(a.load_balancer_pool != b.load_balancer_pool, "services.load_balancer_pool");
  differ(a.icmp_unreachable_rate != b.icmp_unreachable_rate, "services.icmp_unreachable_rate");
  differ(a.neighbor_timeout != b.neighbor_timeout, "neighbor.timeout");
  differ(a.neighbor_hold_ms != b.neighbor_hold_ms, "neighbor.hold_ms");
  // Payload signature filter: [[filter]] tables reload live (node::reload); the counter
  // slots are sized at start.
  differ(a.filter_max_rules != b.filter_max_rules, "limits.filter_max_rules");
  differ(a.icmp != b.icmp, "icmp");
  differ(a.fragments != b.fragments, "fragments");
  return out;
}

result<node_config> default_config() {
  auto c = parse_config(kDefaultConfig, default_config_source());
  if (c) c->builtin_manifests = kDefaultManifests;
  return c;
}

}  // namespace ferry::control
