// Decodes Kubernetes manifests (YAML or JSON, as `kubectl get -o yaml` prints them) into the
// plain values of model.hpp. Validation follows the API server closely enough that a manifest
// it would refuse is refused here too, with a message naming the object and the field.

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "ferry/net.hpp"
#include "ferry/result.hpp"
#include "model.hpp"

namespace ferry::model {

std::string_view kind_name(const object& obj) {
  struct visitor {
    std::string_view operator()(const service&) const { return "Service"; }
    std::string_view operator()(const endpoint_slice&) const { return "EndpointSlice"; }
    std::string_view operator()(const endpoints&) const { return "Endpoints"; }
    std::string_view operator()(const pod&) const { return "Pod"; }
    std::string_view operator()(const node&) const { return "Node"; }
  };
  return std::visit(visitor{}, obj);
}

const object_meta& meta_of(const object& obj) {
  return std::visit([](const auto& o) -> const object_meta& { return o.meta; }, obj);
}

namespace {

constexpr std::string_view kServiceNameLabel = "kubernetes.io/service-name";
// Lists may nest, and a YAML alias can make a List contain itself; these bounds turn such
// input into an error instead of a stack overflow or an exponential expansion.
constexpr int kMaxListDepth = 32;
constexpr size_t kMaxObjects = 1'000'000;
// yaml-cpp keeps an alias as a second reference to one node, so it is the decoder's walk that
// expands aliases: nested ones (a list of 10 aliases of a list of 10 ...) make a few KB of
// YAML into billions of nodes. The walk may visit at most kWalkBase + kWalkPerByte nodes per
// byte of the text (a key looked up in a mapping costs its entries); without aliases a text
// never needs that many (a node takes at least two bytes, a mapping is looked up a few dozen
// times), so only aliasing is refused, as go-yaml refuses "excessive aliasing".
constexpr size_t kWalkBase = 100'000;
constexpr size_t kWalkPerByte = 16;

// Thrown by the field decoders and caught once in parse_manifests, which prefixes the origin
// and the object. An exception keeps the many field checks free of error plumbing; nothing
// escapes this file.
struct field_error {
  std::string path;
  std::string reason;
};

[[noreturn]] void fail(std::string path, std::string reason) {
  throw field_error{std::move(path), std::move(reason)};
}

std::string join(std::string_view path, std::string_view key) {
  std::string out(path);
  if (!out.empty()) out += '.';
  out += key;
  return out;
}

std::string at(std::string_view path, size_t index) {
  return std::string(path) + "[" + std::to_string(index) + "]";
}

std::string key_path(std::string_view path, std::string_view key) {
  return std::string(path) + "[" + std::string(key) + "]";
}

// What is left of a manifest text's walk budget (kWalkBase, kWalkPerByte).
struct walk_budget {
  size_t left;
  size_t total;
};

// Thrown when the budget is spent; parse_manifests names the document (an object's name
// says little when aliases repeat it).
struct walk_exceeded {
  size_t total;
};

// One value of a document being decoded: a yaml-cpp node (manifest text), a nlohmann::json
// value (an API object, decoded as it is, without a detour through YAML), or a map key.
// The decoders below read documents through these few operations only.
class value {
 public:
  value() = default;  // absent
  value(YAML::Node y, walk_budget* budget) : yaml_(std::move(y)), budget_(budget), from_(yaml) {}
  explicit value(const nlohmann::json* j) : json_(j), from_(j ? json : absent) {}
  static value key(std::string text) {
    value v;
    v.text_ = std::move(text);
    v.from_ = map_key;
    return v;
  }

  // A JSON null, an empty YAML value and a missing key all mean "not set", as when the API
  // server decodes into Go structs.
  bool present() const {
    switch (from_) {
      case yaml:
        return yaml_.IsDefined() && !yaml_.IsNull();
      case json:
        return !json_->is_null();
      case map_key:
        return true;
      case absent:
        break;
    }
    return false;
  }
  bool is_map() const {
    return from_ == yaml ? yaml_.IsMap() : from_ == json && json_->is_object();
  }
  bool is_list() const {
    return from_ == yaml ? yaml_.IsSequence() : from_ == json && json_->is_array();
  }
  bool is_scalar() const {
    if (from_ == yaml) return yaml_.IsScalar();
    return from_ == map_key || (from_ == json && json_->is_primitive() && !json_->is_null());
  }
  // Only plain scalars can be numbers or booleans, so `port: "80"` is a string, as in JSON:
  // yaml-cpp tags plain scalars "?" and quoted ones "!"; JSON has numbers and booleans.
  bool plain() const {
    if (from_ == yaml) return yaml_.Tag() == "?";
    return from_ == json && (json_->is_number() || json_->is_boolean());
  }
  // An explicit YAML tag such as "tag:yaml.org,2002:int".
  bool tagged(std::string_view tag) const { return from_ == yaml && yaml_.Tag() == tag; }
  // A scalar's text (JSON numbers and booleans as they are written).
  std::string scalar() const {
    if (from_ == yaml) return yaml_.Scalar();
    if (from_ == map_key) return text_;
    if (from_ == json) return json_->is_string() ? json_->get<std::string>() : json_->dump();
    return {};
  }
  // A key of a mapping (absent when missing, or when this is not a mapping).
  value operator[](const char* key) const {
    if (!present()) return {};
    if (from_ == yaml) {
      if (yaml_.IsMap()) spend(yaml_.size());
      return value(yaml_[key], budget_);
    }
    if (from_ != json || !json_->is_object()) return {};
    auto it = json_->find(key);
    return it == json_->end() ? value() : value(&*it);
  }
  std::vector<value> items() const {  // of a list
    std::vector<value> out;
    if (from_ == yaml) {
      spend(yaml_.size());
      for (const auto& item : yaml_) out.emplace_back(item, budget_);
    } else if (from_ == json) {
      for (const auto& item : *json_) out.emplace_back(&item);
    }
    return out;
  }
  std::vector<std::pair<value, value>> entries() const {  // of a mapping, in order
    std::vector<std::pair<value, value>> out;
    if (from_ == yaml) {
      spend(2 * yaml_.size());
      for (const auto& kv : yaml_) {
        out.emplace_back(value(kv.first, budget_), value(kv.second, budget_));
      }
    } else if (from_ == json) {
      for (const auto& [k, v] : json_->items()) out.emplace_back(key(k), value(&v));
    }
    return out;
  }

 private:
  enum source { absent, yaml, json, map_key };
  void spend(size_t nodes) const {
    if (!budget_) return;
    if (nodes > budget_->left) throw walk_exceeded{budget_->total};
    budget_->left -= nodes;
  }
  YAML::Node yaml_;
  walk_budget* budget_ = nullptr;  // yaml only
  const nlohmann::json* json_ = nullptr;
  std::string text_;
  source from_ = absent;
};

bool present(const value& n) { return n.present(); }

bool is_bool_text(std::string_view s) {
  // YAML 1.1 spellings too: sigs.k8s.io/yaml (go-yaml v2) reads them as booleans.
  static constexpr std::string_view kWords[] = {"true", "True", "TRUE", "false", "False", "FALSE",
                                                "yes",  "Yes",  "YES",  "no",    "No",    "NO",
                                                "on",   "On",   "ON",   "off",   "Off",   "OFF"};
  for (auto w : kWords) {
    if (s == w) return true;
  }
  return false;
}

// Whether a plain scalar reads as a YAML/JSON number: [-+]digits[.digits][e[-+]digits], a
// 0x/0o integer, or .inf/.nan. Used only to decide how to show a wrong value.
bool looks_numeric(std::string_view s) {
  auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  size_t i = 0;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
  auto rest = s.substr(i);
  if (rest == ".inf" || rest == ".Inf" || rest == ".INF" || rest == ".nan" || rest == ".NaN") {
    return true;
  }
  if (rest.size() > 2 && rest[0] == '0' && (rest[1] == 'x' || rest[1] == 'o')) return true;
  auto skip_digits = [&] {
    size_t start = i;
    while (i < s.size() && is_digit(s[i])) ++i;
    return i - start;
  };
  size_t digits = skip_digits();
  if (i < s.size() && s[i] == '.') {
    ++i;
    digits += skip_digits();
  }
  if (digits == 0) return false;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    if (skip_digits() == 0) return false;
  }
  return i == s.size();
}

std::string quote(std::string_view s) {
  constexpr size_t kMaxShown = 64;  // keeps a stray blob from flooding the message
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < kMaxShown; ++i) {
    char c = s[i];
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += '?';
    } else {
      out += c;
    }
  }
  if (s.size() > kMaxShown) out += "...";
  out += '"';
  return out;
}

// How a wrong value is shown after "got": numbers and booleans bare, strings quoted.
std::string describe(const value& n) {
  if (!present(n)) return "null";
  if (n.is_map()) return "a mapping";
  if (n.is_list()) return "a list";
  const std::string s = n.scalar();
  if (n.plain() && (is_bool_text(s) || looks_numeric(s))) return s;
  return quote(s);
}

// Looks up a key of a node already checked to be a mapping (or absent). Const access, so a
// missing key is not inserted.
value child(const value& map, const char* key) { return map[key]; }

void expect_map(const value& n, const std::string& path) {
  if (present(n) && !n.is_map()) fail(path, "must be a mapping, got " + describe(n));
}

// Entries of a list must themselves be mappings; null entries are refused too.
void expect_entry_map(const value& n, const std::string& path) {
  if (!present(n) || !n.is_map()) fail(path, "must be a mapping, got " + describe(n));
}

// The list at n, or an empty one when absent.
std::vector<value> list_of(const value& n, const std::string& path) {
  if (!present(n)) return {};
  if (!n.is_list()) fail(path, "must be a list, got " + describe(n));
  return n.items();
}

std::optional<std::string> opt_string(const value& n, const std::string& path) {
  if (!present(n)) return std::nullopt;
  // Numbers and booleans are taken as their text: hand-written manifests often leave label
  // values like `version: 2` unquoted, and nothing here depends on the distinction.
  if (!n.is_scalar()) fail(path, "must be a string, got " + describe(n));
  return n.scalar();
}

std::string string_or_empty(const value& n, const std::string& path) {
  return opt_string(n, path).value_or("");
}

std::string required_string(const value& n, const std::string& path) {
  auto s = opt_string(n, path);
  if (!s || s->empty()) fail(path, "required");
  return *s;
}

// A non-negative decimal integer written as a number (never a quoted string, float or bool).
std::optional<uint64_t> plain_uint(const value& n) {
  if (!present(n) || !n.is_scalar()) return std::nullopt;
  if (!n.plain() && !n.tagged("tag:yaml.org,2002:int")) return std::nullopt;
  const std::string s = n.scalar();
  // A leading zero is octal in YAML 1.1 and invalid in JSON; refuse rather than guess.
  if (s.empty() || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<uint16_t> opt_port(const value& n, const std::string& path, bool zero_ok) {
  if (!present(n)) return std::nullopt;
  auto v = plain_uint(n);
  if (!v || (*v == 0 && !zero_ok) || *v > 65535) {
    fail(path, std::string("must be an integer ") + (zero_ok ? "0-65535" : "1-65535") + ", got " +
                   describe(n));
  }
  return static_cast<uint16_t>(*v);
}

uint16_t required_port(const value& n, const std::string& path) {
  auto p = opt_port(n, path, false);
  if (!p) fail(path, "required");
  return *p;
}

std::optional<bool> opt_bool(const value& n, const std::string& path) {
  if (!present(n)) return std::nullopt;
  if (n.is_scalar() && (n.plain() || n.tagged("tag:yaml.org,2002:bool"))) {
    const std::string s = n.scalar();
    if (is_bool_text(s)) {
      char c = s[0];
      return c == 't' || c == 'T' || c == 'y' || c == 'Y' || s == "on" || s == "On" || s == "ON";
    }
  }
  fail(path, "must be a boolean, got " + describe(n));
}

uint8_t protocol_of(const value& n, const std::string& path) {
  auto s = opt_string(n, path);
  if (!s || s->empty()) return kProtoTcp;
  auto proto = parse_proto(*s);
  if (!proto) fail(path, "must be one of TCP, UDP, SCTP, got " + describe(n));
  return *proto;
}

[[noreturn]] void fail_address(const value& n, const std::string& path) {
  const std::string s = n.scalar();
  if (s.find(':') != std::string::npos) fail(path, "IPv6 is not supported yet, got " + quote(s));
  fail(path, "must be an IPv4 address, got " + describe(n));
}

uint32_t required_ipv4(const value& n, const std::string& path) {
  auto s = opt_string(n, path);
  if (!s || s->empty()) fail(path, "required");
  auto addr = parse_ipv4(*s);
  if (!addr) fail_address(n, path);
  return *addr;
}

// An address of either family (a dual-stack field): the IPv4 one, or nullopt for IPv6 (kept
// out: ferry forwards IPv4 only). Anything else is refused.
std::optional<uint32_t> ipv4_or_skip_ipv6(const value& n, const std::string& path,
                                          const std::string& text) {
  if (auto addr = parse_ipv4(text)) return addr;
  if (text.find(':') == std::string::npos) {
    fail(path, "must be an IPv4 or IPv6 address, got " + describe(n));
  }
  return std::nullopt;
}

labels string_map(const value& n, const std::string& path) {
  labels out;
  if (!present(n)) return out;
  expect_map(n, path);
  for (const auto& [k, v] : n.entries()) {
    if (!k.is_scalar()) fail(path, "keys must be strings, got " + describe(k));
    const std::string key = k.scalar();
    out[key] = string_or_empty(v, key_path(path, key));
  }
  return out;
}

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// RFC 1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric.
bool is_dns_label(std::string_view s, size_t max_len = 63) {
  if (s.empty() || s.size() > max_len) return false;
  for (char c : s) {
    if (!is_lower_alnum(c) && c != '-') return false;
  }
  return is_lower_alnum(s.front()) && is_lower_alnum(s.back());
}

[[noreturn]] void fail_not_dns_label(const std::string& path, const std::string& got) {
  fail(path, "must be a lower-case DNS-1123 label (a-z, 0-9, '-'; at most 63 characters), got " +
                 quote(got));
}

// A DNS-1123 label or nothing (hostname, subdomain: names ferry's DNS serves).
std::string dns_label_or_empty(const value& n, const std::string& path) {
  std::string s = string_or_empty(n, path);
  if (!s.empty() && !is_dns_label(s)) fail_not_dns_label(path, s);
  return s;
}

// RFC 1123 subdomain, the rule for object names: dot-separated labels, 253 characters in all.
bool is_dns_subdomain(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  size_t start = 0;
  while (true) {
    size_t dot = s.find('.', start);
    if (!is_dns_label(s.substr(start, dot - start), 253)) return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

// IANA service name, the rule for named container ports (and so for named targetPorts).
bool is_iana_svc_name(std::string_view s) {
  if (s.empty() || s.size() > 15) return false;
  bool letter = false;
  for (char c : s) {
    if (!is_lower_alnum(c) && c != '-') return false;
    if (c >= 'a' && c <= 'z') letter = true;
  }
  return letter && s.front() != '-' && s.back() != '-' && s.find("--") == std::string_view::npos;
}

// RFC 1035 label, the rule for Service names (ValidateServiceName): a DNS-1123 label that
// starts with a letter. A Service's name is one label of its DNS names, so "pod-0.db" (which
// would answer for a pod of the headless Service db) and names over 63 characters are refused.
bool is_dns1035_label(std::string_view s) {
  return is_dns_label(s) && s.front() >= 'a' && s.front() <= 'z';
}

// The API server's message for a name that fails its rule, after the value.
std::string name_rule(std::string_view kind, std::string_view name) {
  std::string why;
  if (kind == "namespace") {
    why = name.size() > 63 ? "must be no more than 63 characters"
                           : "a lowercase RFC 1123 label must consist of lower case alphanumeric "
                             "characters or '-', and must start and end with an alphanumeric "
                             "character";
  } else if (kind == "Service") {
    why = name.size() > 63 ? "must be no more than 63 characters"
                           : "a DNS-1035 label must consist of lower case alphanumeric characters "
                             "or '-', start with an alphabetic character, and end with an "
                             "alphanumeric character";
  } else {
    why = name.size() > 253 ? "must be no more than 253 characters"
                            : "a lowercase RFC 1123 subdomain must consist of lower case "
                              "alphanumeric characters, '-' or '.', and must start and end with "
                              "an alphanumeric character";
  }
  return "Invalid value: " + quote(name) + ": " + why;
}

// metadata.name and metadata.namespace are strings in the API (ObjectMeta): a number or a
// boolean is refused as the API server's decoder refuses it, never taken as its text.
std::optional<std::string> name_string(const value& n, const std::string& path) {
  if (present(n) && n.is_scalar() && n.plain()) {
    const std::string s = n.scalar();
    if (is_bool_text(s) || looks_numeric(s)) fail(path, "must be a string, got " + s);
  }
  return opt_string(n, path);
}

object_meta decode_meta(const value& doc, const std::string& kind) {
  auto m = child(doc, "metadata");
  expect_map(m, "metadata");
  object_meta meta;
  auto name = name_string(child(m, "name"), "metadata.name");
  if (!name || name->empty()) fail("metadata.name", "required");
  meta.name = *name;
  // As the API server validates each kind's name: Service a DNS-1035 label
  // (ValidateServiceName), Pod, Endpoints, EndpointSlice and Node a DNS-1123 subdomain.
  if (kind == "Service" ? !is_dns1035_label(meta.name) : !is_dns_subdomain(meta.name)) {
    fail("metadata.name", name_rule(kind, meta.name));
  }
  auto ns = name_string(child(m, "namespace"), "metadata.namespace");
  if (ns && !ns->empty()) {
    if (!is_dns_label(*ns)) fail("metadata.namespace", name_rule("namespace", *ns));
    meta.ns = *ns;
  }
  meta.label_map = string_map(child(m, "labels"), "metadata.labels");
  meta.annotations = string_map(child(m, "annotations"), "metadata.annotations");
  return meta;
}

service_type decode_service_type(const value& n, const std::string& path) {
  auto s = opt_string(n, path);
  if (!s || s->empty() || *s == "ClusterIP") return service_type::cluster_ip;
  if (*s == "NodePort") return service_type::node_port;
  if (*s == "LoadBalancer") return service_type::load_balancer;
  if (*s == "ExternalName") return service_type::external_name;
  fail(path, "must be one of ClusterIP, NodePort, LoadBalancer, ExternalName, got " + describe(n));
}

// spec.clusterIP and spec.clusterIPs. clusterIP wins when set; otherwise the first IPv4 entry
// of clusterIPs, so a dual-stack service with IPv6 first still gets its IPv4 address.
void decode_cluster_ip(const value& spec, service& svc) {
  auto single = child(spec, "clusterIP");
  auto ip = string_or_empty(single, "spec.clusterIP");
  if (ip == "None") {
    svc.headless = true;
  } else if (!ip.empty()) {
    auto addr = parse_ipv4(ip);
    if (!addr) fail_address(single, "spec.clusterIP");
    svc.cluster_ip = addr;
  }
  auto list = list_of(child(spec, "clusterIPs"), "spec.clusterIPs");
  bool take = ip.empty();
  for (size_t i = 0; i < list.size(); ++i) {
    std::string path = at("spec.clusterIPs", i);
    auto entry = required_string(list[i], path);
    if (entry == "None") {
      if (take && i == 0) svc.headless = true;
      take = false;
      continue;
    }
    auto addr = parse_ipv4(entry);
    if (addr) {
      if (take) svc.cluster_ip = addr;
      take = false;
    } else if (entry.find(':') == std::string::npos) {
      fail(path, "must be an IPv4 or IPv6 address or \"None\", got " + describe(list[i]));
    }
  }
}

service_port decode_service_port(const value& n, const std::string& path) {
  expect_entry_map(n, path);
  service_port sp;
  sp.name = string_or_empty(child(n, "name"), join(path, "name"));
  if (!sp.name.empty() && !is_dns_label(sp.name)) fail_not_dns_label(join(path, "name"), sp.name);
  sp.protocol = protocol_of(child(n, "protocol"), join(path, "protocol"));
  sp.port = required_port(child(n, "port"), join(path, "port"));
  sp.node_port = opt_port(child(n, "nodePort"), join(path, "nodePort"), true).value_or(0);

  // targetPort is an IntOrString: a number, a digit string (which Kubernetes also treats as a
  // number) or the name of a container port. Absent, 0 or "" defaults to the service port.
  auto target = child(n, "targetPort");
  std::string target_path = join(path, "targetPort");
  sp.target_port = sp.port;
  if (!present(target)) return sp;
  const char* reason = "must be an integer 1-65535 or a port name, got ";
  if (!target.is_scalar()) fail(target_path, reason + describe(target));
  const std::string text = target.scalar();
  if (text.empty()) return sp;
  if (text.find_first_not_of("0123456789") == std::string::npos) {
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    bool leading_zero = text.size() > 1 && text[0] == '0';
    if (ec != std::errc{} || end != text.data() + text.size() || v > 65535 || leading_zero) {
      fail(target_path, reason + describe(target));
    }
    if (v != 0) sp.target_port = static_cast<uint16_t>(v);
    return sp;
  }
  // An unquoted word is a port name (`targetPort: http`), but a float, a negative number or a
  // boolean is a mistake.
  if (target.plain() && (is_bool_text(text) || looks_numeric(text))) {
    fail(target_path, reason + describe(target));
  }
  if (!is_iana_svc_name(text)) {
    fail(target_path,
         "a port name must be 1-15 lower-case letters, digits or '-' with at least one letter, "
         "got " +
             quote(text));
  }
  sp.target_port = text;
  return sp;
}

traffic_policy decode_policy(const value& n, const std::string& path) {
  auto s = opt_string(n, path);
  if (!s || s->empty() || *s == "Cluster") return traffic_policy::cluster;
  if (*s == "Local") return traffic_policy::local;
  fail(path, "must be Cluster or Local, got " + describe(n));
}

void decode_service_policies(const value& spec, service& svc) {
  auto affinity_node = child(spec, "sessionAffinity");
  auto affinity = string_or_empty(affinity_node, "spec.sessionAffinity");
  if (affinity == "ClientIP") {
    svc.affinity_client_ip = true;
  } else if (!affinity.empty() && affinity != "None") {
    fail("spec.sessionAffinity", "must be None or ClientIP, got " + describe(affinity_node));
  }
  const char* timeout_path = "spec.sessionAffinityConfig.clientIP.timeoutSeconds";
  auto config = child(spec, "sessionAffinityConfig");
  expect_map(config, "spec.sessionAffinityConfig");
  auto client_ip = child(config, "clientIP");
  expect_map(client_ip, "spec.sessionAffinityConfig.clientIP");
  if (auto t = child(client_ip, "timeoutSeconds"); present(t)) {
    auto v = plain_uint(t);
    // The API server's bounds: more than 0, at most a day.
    if (!v || *v == 0 || *v > 86400)
      fail(timeout_path, "must be an integer 1-86400, got " + describe(t));
    if (!svc.affinity_client_ip) fail(timeout_path, "requires spec.sessionAffinity: ClientIP");
    svc.affinity_timeout = static_cast<uint32_t>(*v);
  }
  svc.external_policy =
      decode_policy(child(spec, "externalTrafficPolicy"), "spec.externalTrafficPolicy");
  svc.internal_policy =
      decode_policy(child(spec, "internalTrafficPolicy"), "spec.internalTrafficPolicy");
  svc.publish_not_ready =
      opt_bool(child(spec, "publishNotReadyAddresses"), "spec.publishNotReadyAddresses")
          .value_or(false);
  if (auto a = opt_bool(child(spec, "allocateLoadBalancerNodePorts"),
                        "spec.allocateLoadBalancerNodePorts")) {
    svc.allocate_node_ports = *a;
  }
}

void decode_load_balancer(const value& doc, const value& spec, service& svc) {
  auto lb_ip = child(spec, "loadBalancerIP");
  if (auto s = opt_string(lb_ip, "spec.loadBalancerIP"); s && !s->empty()) {
    svc.load_balancer_ip = required_ipv4(lb_ip, "spec.loadBalancerIP");
  }
  auto ranges = list_of(child(spec, "loadBalancerSourceRanges"), "spec.loadBalancerSourceRanges");
  for (size_t i = 0; i < ranges.size(); ++i) {
    std::string path = at("spec.loadBalancerSourceRanges", i);
    auto text = required_string(ranges[i], path);
    auto prefix = text.find('/') == std::string::npos ? std::nullopt : parse_ipv4_prefix(text);
    if (!prefix) {
      if (text.find(':') != std::string::npos)
        fail(path, "IPv6 is not supported yet, got " + quote(text));
      fail(path, "must be an IPv4 CIDR like 203.0.113.0/24, got " + describe(ranges[i]));
    }
    svc.source_ranges.push_back(*prefix);
  }
  auto status = child(doc, "status");
  expect_map(status, "status");
  auto lb = child(status, "loadBalancer");
  expect_map(lb, "status.loadBalancer");
  auto ingress = list_of(child(lb, "ingress"), "status.loadBalancer.ingress");
  for (size_t i = 0; i < ingress.size(); ++i) {
    std::string path = at("status.loadBalancer.ingress", i);
    expect_entry_map(ingress[i], path);
    auto ip = child(ingress[i], "ip");
    // An ingress may be a hostname only (cloud load balancers); nothing to serve here then.
    auto text = string_or_empty(ip, join(path, "ip"));
    if (text.empty()) continue;
    if (auto addr = ipv4_or_skip_ipv6(ip, join(path, "ip"), text)) svc.lb_ingress.push_back(*addr);
  }
}

service decode_service(const value& doc, object_meta meta) {
  service svc;
  svc.meta = std::move(meta);
  auto spec = child(doc, "spec");
  expect_map(spec, "spec");
  svc.type = decode_service_type(child(spec, "type"), "spec.type");
  decode_cluster_ip(spec, svc);
  svc.selector = string_map(child(spec, "selector"), "spec.selector");

  auto ports = list_of(child(spec, "ports"), "spec.ports");
  std::map<std::string, size_t> names;
  std::map<std::pair<uint16_t, uint8_t>, size_t> numbers;
  for (size_t i = 0; i < ports.size(); ++i) {
    std::string path = at("spec.ports", i);
    auto sp = decode_service_port(ports[i], path);
    // Endpoint ports are matched to service ports by name, so with several ports each needs
    // its own name (the API server enforces the same).
    if (ports.size() > 1) {
      if (sp.name.empty()) fail(join(path, "name"), "required when a service has several ports");
      auto [it, fresh] = names.emplace(sp.name, i);
      if (!fresh) {
        fail(join(path, "name"),
             "duplicate name " + quote(sp.name) + " (also " + at("spec.ports", it->second) + ")");
      }
    }
    auto [it, fresh] = numbers.emplace(std::pair{sp.port, sp.protocol}, i);
    if (!fresh) {
      fail(path, "duplicate port " + std::to_string(sp.port) + "/" + proto_name(sp.protocol) +
                     " (also " + at("spec.ports", it->second) + ")");
    }
    svc.ports.push_back(std::move(sp));
  }

  auto external = list_of(child(spec, "externalIPs"), "spec.externalIPs");
  for (size_t i = 0; i < external.size(); ++i) {
    svc.external_ips.push_back(required_ipv4(external[i], at("spec.externalIPs", i)));
  }
  svc.external_name = string_or_empty(child(spec, "externalName"), "spec.externalName");
  if (svc.type == service_type::external_name && svc.external_name.empty()) {
    fail("spec.externalName", "required for type ExternalName");
  }
  if (svc.type != service_type::node_port && svc.type != service_type::load_balancer) {
    for (size_t i = 0; i < svc.ports.size(); ++i) {
      if (svc.ports[i].node_port) {
        fail(join(at("spec.ports", i), "nodePort"),
             "may only be set for type NodePort or LoadBalancer");
      }
    }
  }
  decode_service_policies(spec, svc);
  decode_load_balancer(doc, spec, svc);
  return svc;
}

// targetRef names the pod behind an address; other referents (none in practice) are dropped.
std::string target_pod_of(const value& n, const std::string& path) {
  expect_map(n, path);
  auto kind = string_or_empty(child(n, "kind"), join(path, "kind"));
  auto name = string_or_empty(child(n, "name"), join(path, "name"));
  return kind == "Pod" ? name : std::string();
}

std::vector<endpoint_port> decode_endpoint_ports(const value& n, const std::string& path) {
  std::vector<endpoint_port> out;
  auto list = list_of(n, path);
  std::map<std::string, size_t> names;
  for (size_t i = 0; i < list.size(); ++i) {
    std::string p = at(path, i);
    expect_entry_map(list[i], p);
    endpoint_port ep;
    ep.name = string_or_empty(child(list[i], "name"), join(p, "name"));
    // The API server: a DNS-1123 label (EndpointSlice and Endpoints ports alike).
    if (!ep.name.empty() && !is_dns_label(ep.name)) fail_not_dns_label(join(p, "name"), ep.name);
    ep.protocol = protocol_of(child(list[i], "protocol"), join(p, "protocol"));
    // A null port means "all ports" in an EndpointSlice; ferry balances single ports only.
    ep.port = required_port(child(list[i], "port"), join(p, "port"));
    // Service ports find their endpoint port by name; two with one name would be ambiguous.
    auto [it, fresh] = names.emplace(ep.name, i);
    if (!fresh) {
      fail(join(p, "name"),
           "duplicate name " + quote(ep.name) + " (also " + at(path, it->second) + ")");
    }
    out.push_back(std::move(ep));
  }
  return out;
}

// hints: {forZones: [{name: z}], forNodes: [{name: n}]}.
void decode_hints(const value& n, const std::string& path, endpoint& ep) {
  expect_map(n, path);
  auto names = [&](const char* key, std::vector<std::string>& out) {
    std::string list_path = join(path, key);
    auto list = list_of(child(n, key), list_path);
    for (size_t i = 0; i < list.size(); ++i) {
      expect_entry_map(list[i], at(list_path, i));
      out.push_back(required_string(child(list[i], "name"), join(at(list_path, i), "name")));
    }
  };
  names("forZones", ep.for_zones);
  names("forNodes", ep.for_nodes);
}

endpoint_slice decode_endpoint_slice(const value& doc, object_meta meta) {
  endpoint_slice slice;
  slice.meta = std::move(meta);
  auto label = slice.meta.label_map.find(std::string(kServiceNameLabel));
  if (label == slice.meta.label_map.end() || label->second.empty()) {
    fail(key_path("metadata.labels", kServiceNameLabel),
         "required: it names the service this slice belongs to");
  }
  slice.service_name = label->second;

  auto type_node = child(doc, "addressType");
  auto type = required_string(type_node, "addressType");
  if (type == "IPv4") {
    slice.ipv4 = true;
  } else if (type == "IPv6" || type == "FQDN") {
    slice.ipv4 = false;
  } else {
    fail("addressType", "must be one of IPv4, IPv6, FQDN, got " + describe(type_node));
  }

  auto list = list_of(child(doc, "endpoints"), "endpoints");
  for (size_t i = 0; i < list.size(); ++i) {
    std::string path = at("endpoints", i);
    expect_entry_map(list[i], path);
    endpoint ep;
    std::string addr_path = join(path, "addresses");
    auto addresses = list_of(child(list[i], "addresses"), addr_path);
    if (addresses.empty()) fail(addr_path, "required: at least one address");
    for (size_t j = 0; j < addresses.size(); ++j) {
      // Other families are checked for shape only and kept out of the IPv4 list.
      if (slice.ipv4) {
        ep.addresses.push_back(required_ipv4(addresses[j], at(addr_path, j)));
      } else {
        required_string(addresses[j], at(addr_path, j));
      }
    }
    std::string cond_path = join(path, "conditions");
    auto cond = child(list[i], "conditions");
    expect_map(cond, cond_path);
    ep.ready = opt_bool(child(cond, "ready"), join(cond_path, "ready")).value_or(true);
    // As kube-proxy reads them: nil ready and nil serving are true, nil terminating false.
    ep.serving = opt_bool(child(cond, "serving"), join(cond_path, "serving")).value_or(true);
    ep.terminating =
        opt_bool(child(cond, "terminating"), join(cond_path, "terminating")).value_or(false);
    ep.node_name = string_or_empty(child(list[i], "nodeName"), join(path, "nodeName"));
    ep.target_pod = target_pod_of(child(list[i], "targetRef"), join(path, "targetRef"));
    ep.zone = string_or_empty(child(list[i], "zone"), join(path, "zone"));
    ep.hostname = dns_label_or_empty(child(list[i], "hostname"), join(path, "hostname"));
    decode_hints(child(list[i], "hints"), join(path, "hints"), ep);
    slice.group.endpoints.push_back(std::move(ep));
  }
  slice.group.ports = decode_endpoint_ports(child(doc, "ports"), "ports");
  return slice;
}

void decode_endpoint_addresses(const value& n, const std::string& path, bool ready,
                               endpoint_group& group) {
  auto list = list_of(n, path);
  for (size_t i = 0; i < list.size(); ++i) {
    std::string p = at(path, i);
    expect_entry_map(list[i], p);
    endpoint ep;
    ep.addresses.push_back(required_ipv4(child(list[i], "ip"), join(p, "ip")));
    ep.ready = ready;
    ep.serving = ready;
    ep.node_name = string_or_empty(child(list[i], "nodeName"), join(p, "nodeName"));
    ep.target_pod = target_pod_of(child(list[i], "targetRef"), join(p, "targetRef"));
    ep.hostname = dns_label_or_empty(child(list[i], "hostname"), join(p, "hostname"));
    group.endpoints.push_back(std::move(ep));
  }
}

endpoints decode_endpoints(const value& doc, object_meta meta) {
  endpoints eps;
  eps.meta = std::move(meta);
  auto subsets = list_of(child(doc, "subsets"), "subsets");
  for (size_t i = 0; i < subsets.size(); ++i) {
    std::string path = at("subsets", i);
    expect_entry_map(subsets[i], path);
    endpoint_group group;
    decode_endpoint_addresses(child(subsets[i], "addresses"), join(path, "addresses"), true, group);
    decode_endpoint_addresses(child(subsets[i], "notReadyAddresses"),
                              join(path, "notReadyAddresses"), false, group);
    group.ports = decode_endpoint_ports(child(subsets[i], "ports"), join(path, "ports"));
    eps.subsets.push_back(std::move(group));
  }
  return eps;
}

pod decode_pod(const value& doc, object_meta meta) {
  pod p;
  p.meta = std::move(meta);
  auto spec = child(doc, "spec");
  expect_map(spec, "spec");
  p.node_name = string_or_empty(child(spec, "nodeName"), "spec.nodeName");
  p.hostname = dns_label_or_empty(child(spec, "hostname"), "spec.hostname");
  p.subdomain = dns_label_or_empty(child(spec, "subdomain"), "spec.subdomain");
  auto containers = list_of(child(spec, "containers"), "spec.containers");
  for (size_t i = 0; i < containers.size(); ++i) {
    std::string path = at("spec.containers", i);
    expect_entry_map(containers[i], path);
    std::string ports_path = join(path, "ports");
    auto ports = list_of(child(containers[i], "ports"), ports_path);
    for (size_t j = 0; j < ports.size(); ++j) {
      std::string pp = at(ports_path, j);
      expect_entry_map(ports[j], pp);
      container_port cp;
      cp.name = string_or_empty(child(ports[j], "name"), join(pp, "name"));
      if (!cp.name.empty() && !is_iana_svc_name(cp.name)) {  // IsValidPortName
        fail(join(pp, "name"),
             "must be 1-15 lower-case letters, digits or '-' with at least one letter, "
             "got " +
                 quote(cp.name));
      }
      cp.protocol = protocol_of(child(ports[j], "protocol"), join(pp, "protocol"));
      cp.port = required_port(child(ports[j], "containerPort"), join(pp, "containerPort"));
      p.ports.push_back(std::move(cp));
    }
  }

  auto status = child(doc, "status");
  expect_map(status, "status");
  // status.podIP wins; a dual-stack pod with an IPv6 primary uses the IPv4 of status.podIPs.
  std::optional<uint32_t> listed;
  auto ips = list_of(child(status, "podIPs"), "status.podIPs");
  for (size_t i = 0; i < ips.size(); ++i) {
    std::string path = at("status.podIPs", i);
    expect_entry_map(ips[i], path);
    auto entry_node = child(ips[i], "ip");
    auto entry = required_string(entry_node, join(path, "ip"));
    auto addr = ipv4_or_skip_ipv6(entry_node, join(path, "ip"), entry);
    if (addr && !listed) listed = addr;
  }
  auto ip_node = child(status, "podIP");
  auto ip = string_or_empty(ip_node, "status.podIP");
  if (ip.empty()) {
    p.ip = listed;
  } else {
    p.ip = parse_ipv4(ip);
    if (!p.ip && ip.find(':') != std::string::npos) p.ip = listed;
    if (!p.ip) fail_address(ip_node, "status.podIP");
  }
  auto conditions = list_of(child(status, "conditions"), "status.conditions");
  for (size_t i = 0; i < conditions.size(); ++i) {
    std::string path = at("status.conditions", i);
    expect_entry_map(conditions[i], path);
    auto type = string_or_empty(child(conditions[i], "type"), join(path, "type"));
    auto value = string_or_empty(child(conditions[i], "status"), join(path, "status"));
    if (type == "Ready") p.ready = value == "True";
  }
  // A pod being deleted stops taking new traffic (the endpoints controller marks it
  // terminating; its serving condition keeps the readiness it had).
  if (present(child(child(doc, "metadata"), "deletionTimestamp"))) {
    p.terminating = true;
  }
  return p;
}

node decode_node(const value& doc, object_meta meta) {
  node n;
  n.meta = std::move(meta);
  // Nodes are cluster-scoped: a namespace, if any, is meaningless; keep them in "".
  n.meta.ns = "";
  if (auto z = n.meta.label_map.find("topology.kubernetes.io/zone"); z != n.meta.label_map.end())
    n.zone = z->second;
  auto status = child(doc, "status");
  expect_map(status, "status");
  auto addresses = list_of(child(status, "addresses"), "status.addresses");
  for (size_t i = 0; i < addresses.size(); ++i) {
    std::string path = at("status.addresses", i);
    expect_entry_map(addresses[i], path);
    auto type = string_or_empty(child(addresses[i], "type"), join(path, "type"));
    if (type != "InternalIP" && type != "ExternalIP") continue;
    auto a = child(addresses[i], "address");
    auto text = required_string(a, join(path, "address"));
    if (auto addr = ipv4_or_skip_ipv6(a, join(path, "address"), text)) {
      n.addresses.push_back(*addr);
    }
  }
  return n;
}

// Walks documents and List items, appending objects. `header` always names what is being
// decoded, so the single catch in parse_manifests can say where a field error happened.
class decoder {
 public:
  explicit decoder(std::vector<object>& out) : out_(out) {}

  void document(const value& doc, const std::string& where, int depth) {
    header = where;
    this->where = where;
    if (!doc.is_map()) fail("", "must be a mapping, got " + describe(doc));
    auto kind = required_string(child(doc, "kind"), "kind");
    auto api_version = required_string(child(doc, "apiVersion"), "apiVersion");
    if (kind == "List") {
      check_api_version(kind, api_version, "v1");
      list(doc, where, depth);
      return;
    }
    bool known = kind == "Service" || kind == "Pod" || kind == "Endpoints" ||
                 kind == "EndpointSlice" || kind == "Node";
    if (!known) {
      fail("", "unsupported kind " + quote(kind) + " (apiVersion " + api_version + ")");
    }
    check_api_version(kind, api_version, kind == "EndpointSlice" ? "discovery.k8s.io/v1" : "v1");
    if (++count_ > kMaxObjects) fail("", "more than " + std::to_string(kMaxObjects) + " objects");

    header = where.empty() ? kind : where + ": " + kind;
    auto meta = decode_meta(doc, kind);
    header = kind + " " + meta.ns + "/" + meta.name;
    if (kind == "Service") {
      out_.emplace_back(decode_service(doc, std::move(meta)));
    } else if (kind == "EndpointSlice") {
      out_.emplace_back(decode_endpoint_slice(doc, std::move(meta)));
    } else if (kind == "Endpoints") {
      out_.emplace_back(decode_endpoints(doc, std::move(meta)));
    } else if (kind == "Node") {
      out_.emplace_back(decode_node(doc, std::move(meta)));
    } else {
      out_.emplace_back(decode_pod(doc, std::move(meta)));
    }
  }

  std::string header;
  std::string where;  // the document or List item being decoded ("document 2: items[3]")

 private:
  void check_api_version(const std::string& kind, const std::string& got, const char* want) {
    if (got != want) {
      header += (header.empty() ? "" : ": ") + kind;
      fail("apiVersion", std::string("must be ") + want + ", got " + quote(got));
    }
  }

  void list(const value& doc, const std::string& where, int depth) {
    if (depth >= kMaxListDepth) fail("items", "Lists nested too deeply");
    auto items = list_of(child(doc, "items"), "items");
    for (size_t i = 0; i < items.size(); ++i) {
      std::string item_where = where + ": " + at("items", i);
      if (!present(items[i])) {
        header = item_where;
        fail("", "must be a mapping, got null");
      }
      document(items[i], item_where, depth + 1);
    }
  }

  std::vector<object>& out_;
  size_t count_ = 0;
};

// The documents of a multi-document text, each with the line it starts on. yaml-cpp 0.7's
// LoadAll loops forever on a stray ',' at document level (found by fuzz_manifest; the input
// "," alone is enough), and a manifest must never hang the control thread. So ferry splits
// on "---" / "..." lines itself and gives each document to YAML::Load, which returns.
struct yaml_document {
  std::string text;
  size_t first_line;  // 0-based
};

std::vector<yaml_document> split_documents(std::string_view text) {
  std::vector<yaml_document> docs(1, {"", 0});
  size_t line = 0;
  while (!text.empty()) {
    size_t eol = text.find('\n');
    std::string_view l = text.substr(0, eol == std::string_view::npos ? text.size() : eol + 1);
    text.remove_prefix(l.size());
    auto marker = [&](std::string_view m) {
      return l.substr(0, 3) == m &&
             (l.size() == 3 || l[3] == ' ' || l[3] == '\t' || l[3] == '\r' || l[3] == '\n');
    };
    if (marker("---")) {
      docs.push_back({std::string(l.substr(3)), line});  // "--- value" keeps the value
    } else if (marker("...")) {
      docs.push_back({"", line + 1});
    } else {
      docs.back().text += l;
    }
    ++line;
  }
  return docs;
}

}  // namespace

result<object> parse_object(const nlohmann::json& obj, std::string_view origin) {
  std::vector<object> out;
  decoder dec(out);
  try {
    if (!obj.is_object()) fail("", std::string("must be an object, got ") + obj.type_name());
    dec.document(value(&obj), "", 0);  // messages start with the object itself
    if (out.size() != 1) fail("kind", "must be one object, not a List");
  } catch (const field_error& e) {
    std::string msg = std::string(origin) + (dec.header.empty() ? "" : ": " + dec.header);
    if (!e.path.empty()) msg += ": " + e.path;
    return make_error(msg + ": " + e.reason);
  } catch (const YAML::Exception& e) {
    return make_error(std::string(origin) + ": " + dec.header + ": " + e.msg);
  }
  return std::move(out[0]);
}

result<std::vector<object>> parse_manifests(std::string_view text, std::string_view origin) {
  std::string prefix(origin);
  std::vector<YAML::Node> docs;
  for (const auto& d : split_documents(text)) {
    try {
      docs.push_back(YAML::Load(d.text));
    } catch (const YAML::Exception& e) {
      std::string where;
      if (!e.mark.is_null()) {
        where = " at line " + std::to_string(d.first_line + e.mark.line + 1) + ", column " +
                std::to_string(e.mark.column + 1);
      }
      return make_error(prefix + ": YAML syntax error" + where + ": " + e.msg);
    }
  }

  std::vector<object> out;
  decoder dec(out);
  const size_t walk = kWalkBase + kWalkPerByte * text.size();
  walk_budget budget{walk, walk};
  try {
    size_t n = 0;
    for (const auto& doc : docs) {
      value v(doc, &budget);
      if (!v.present()) continue;  // "---" separators with nothing between them
      dec.document(v, "document " + std::to_string(++n), 0);
    }
  } catch (const field_error& e) {
    std::string msg = prefix + ": " + dec.header;
    if (!e.path.empty()) msg += ": " + e.path;
    return make_error(msg + ": " + e.reason);
  } catch (const walk_exceeded& e) {
    return make_error(prefix + ": " + dec.where +
                      ": excessive aliasing: decoding would visit more than " +
                      std::to_string(e.total) + " YAML nodes (" + std::to_string(kWalkBase) +
                      " + " + std::to_string(kWalkPerByte) +
                      " per byte of the text); YAML aliases (*name) multiply what they repeat");
  } catch (const YAML::Exception& e) {
    // Decoding only reads nodes already checked for shape; this is a safety net.
    return make_error(prefix + ": " + dec.header + ": " + e.msg);
  }
  return out;
}

}  // namespace ferry::model
