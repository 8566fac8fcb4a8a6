#include "metrics.hpp"

#include <arpa/inet.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <span>
#include <utility>
#include <vector>

namespace ferry::control::metrics {

using json = nlohmann::json;

void histogram::observe(double seconds) {
  if (!(seconds >= 0)) seconds = 0;  // a clock step backwards, or NaN: count it as instant
  size_t i = 0;
  while (i < kBounds.size() && seconds > kBounds[i]) ++i;
  if (i < kBounds.size()) ++buckets[i];
  ++count;
  sum += seconds;
}

uint64_t histogram::cumulative(size_t i) const {
  uint64_t n = 0;
  for (size_t k = 0; k <= i && k < buckets.size(); ++k) n += buckets[k];
  return n;
}

void change_latency::published(clock::time_point at) {
  if (!pending_) return;
  auto [from, start] = *pending_;
  pending_.reset();
  by_source_[static_cast<size_t>(from)].observe(std::chrono::duration<double>(at - start).count());
}

std::string escape_label(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char ch : value) {
    if (ch == '\\') {
      out += "\\\\";
    } else if (ch == '"') {
      out += "\\\"";
    } else if (ch == '\n') {
      out += "\\n";
    } else {
      out += ch;
    }
  }
  return out;
}

namespace {

// Shortest text that reads back as the same double; plain decimals (0.0001, 1700000000.5:
// bucket bounds and timestamps as people read them) unless tiny or huge. Prometheus spells
// the specials +Inf, -Inf and NaN.
std::string format_double(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  const double mag = std::fabs(v);
  const auto fmt = v == 0 || (mag >= 1e-4 && mag < 1e21) ? std::chars_format::fixed
                                                         : std::chars_format::scientific;
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, fmt);
  return ec == std::errc{} ? std::string(buf, end) : "NaN";
}

// A JSON number (or bool) as a sample value; nullopt for anything else, so a field another
// version of the stats op lacks just leaves its sample out.
std::optional<std::string> value_text(const json& v) {
  if (v.is_number_unsigned()) return std::to_string(v.get<uint64_t>());
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number_float()) return format_double(v.get<double>());
  if (v.is_boolean()) return v.get<bool>() ? "1" : "0";
  return std::nullopt;
}

// A count of 1/per_second units as seconds; integers split first so nanoseconds since 1970
// (beyond a double's 53 bits) still give the exact second.
std::optional<std::string> seconds_text(const json& v, uint64_t per_second) {
  if (v.is_number_unsigned()) {
    const auto n = v.get<uint64_t>();
    return format_double(static_cast<double>(n / per_second) +
                         static_cast<double>(n % per_second) / static_cast<double>(per_second));
  }
  if (v.is_number()) return format_double(v.get<double>() / static_cast<double>(per_second));
  return std::nullopt;
}

const json& field(const json& o, std::string_view key) {
  static const json null;
  if (!o.is_object()) return null;
  auto it = o.find(key);
  return it == o.end() ? null : *it;
}

std::string text_of(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (auto t = value_text(v)) return *t;
  return "";
}

using labels = std::vector<std::pair<std::string_view, std::string>>;

// Samples grouped by family, families in first-use order: the format wants every sample of
// a family together, under its HELP and TYPE lines.
class exposition {
 public:
  void sample(std::string_view name, std::string_view type, std::string_view help, const labels& ls,
              const std::string& value, std::string_view suffix = "") {
    auto [it, fresh] = index_.try_emplace(std::string(name), families_.size());
    if (fresh) families_.push_back({std::string(name), std::string(type), std::string(help), {}});
    std::string& out = families_[it->second].samples;
    out.append(name).append(suffix);
    if (!ls.empty()) {
      out += '{';
      for (size_t i = 0; i < ls.size(); ++i) {
        if (i) out += ',';
        out.append(ls[i].first).append("=\"").append(escape_label(ls[i].second)).append("\"");
      }
      out += '}';
    }
    out.append(" ").append(value).append("\n");
  }

  // A sample from a JSON field; absent or non-numeric fields give none.
  void from(const json& v, std::string_view name, std::string_view type, std::string_view help,
            const labels& ls = {}) {
    if (auto t = value_text(v)) sample(name, type, help, ls, *t);
  }

  std::string text() const {
    std::string out;
    for (const auto& f : families_) {
      out.append("# HELP ").append(f.name).append(" ").append(f.help).append("\n");
      out.append("# TYPE ").append(f.name).append(" ").append(f.type).append("\n");
      out.append(f.samples);
    }
    return out;
  }

 private:
  struct family {
    std::string name, type, help, samples;
  };
  std::vector<family> families_;
  std::map<std::string, size_t> index_;
};

struct metric {
  const char* key;   // field of the stats JSON object
  const char* name;  // Prometheus name
  const char* type;
  const char* help;
};

constexpr metric kPortMetrics[] = {
    {"rx_packets", "ferry_port_rx_packets_total", "counter", "Packets the port received."},
    {"tx_packets", "ferry_port_tx_packets_total", "counter", "Packets the port sent."},
    {"rx_bytes", "ferry_port_rx_bytes_total", "counter", "Bytes the port received."},
    {"tx_bytes", "ferry_port_tx_bytes_total", "counter", "Bytes the port sent."},
    {"rx_missed", "ferry_port_rx_missed_total", "counter",
     "Packets the port dropped because no receive descriptor was free."},
    {"rx_errors", "ferry_port_rx_errors_total", "counter", "Erroneous packets received."},
    {"tx_dropped", "ferry_port_tx_dropped_total", "counter", "Packets the port failed to send."},
    {"rx_by_workers", "ferry_port_worker_rx_packets_total", "counter",
     "Packets the workers took from the port's queues."},
    {"tx_by_workers", "ferry_port_worker_tx_packets_total", "counter",
     "Packets the workers handed to the port's queues."},
};

constexpr metric kWorkerMetrics[] = {
    {"rx_packets", "ferry_worker_rx_packets_total", "counter", "Packets the worker received."},
    {"foreign_flow_hits", "ferry_worker_foreign_flow_hits_total", "counter",
     "Packets that matched a flow entry another worker made."},
    {"busy_seconds", "ferry_worker_busy_seconds_total", "counter",
     "Time the worker's poll loop spent in iterations that found packets."},
    {"poll_seconds", "ferry_worker_poll_seconds_total", "counter",
     "Time the worker's poll loop ran."},
};

constexpr metric kFlowMetrics[] = {
    {"active", "ferry_conntrack_flows", "gauge", "Flow entries in the connection table."},
    {"capacity", "ferry_conntrack_capacity", "gauge", "Flow entries the table can hold."},
    {"memory_bytes", "ferry_conntrack_memory_bytes", "gauge", "Memory of the connection table."},
    {"created", "ferry_conntrack_created_total", "counter",
     "Flow entries made for new flows (SYN or first UDP packet)."},
    {"picked_up", "ferry_conntrack_picked_up_total", "counter",
     "Flow entries made for TCP flows found mid-stream, from the backend's answer."},
    {"expired", "ferry_conntrack_expired_total", "counter",
     "Flow entries reclaimed after their timeout."},
    {"table_full", "ferry_conntrack_table_full_total", "counter",
     "New flows forwarded without an entry because the table was full."},
    {"stateless", "ferry_conntrack_stateless_forwards_total", "counter",
     "Packets forwarded by Maglev without a flow entry."},
    {"stateless_replies", "ferry_conntrack_stateless_replies_total", "counter",
     "Replies un-NATed through the backend table without a flow entry."},
    {"snat", "ferry_conntrack_snat_flows_total", "counter",
     "New flows whose source was translated to a node address."},
    {"port_remapped", "ferry_conntrack_port_remapped_total", "counter",
     "New flows given another source port: the client reused its port for another frontend "
     "of the same backend."},
    {"affinity_reused", "ferry_conntrack_affinity_reused_total", "counter",
     "New flows sent to the backend their client had (sessionAffinity ClientIP)."},
    {"foreign_hits", "ferry_conntrack_foreign_hits_total", "counter",
     "Packets that matched a flow entry another worker made."},
    // TCP abuse
    {"embryonic", "ferry_conntrack_embryonic_flows", "gauge",
     "Flow entries in SYN_SENT or SYN_RECV (capped at syn_max)."},
    {"syn_max", "ferry_conntrack_syn_max", "gauge",
     "Cap on SYN_SENT and SYN_RECV entries, whole table."},
    {"syn_stateless", "ferry_conntrack_syn_stateless_total", "counter",
     "SYNs forwarded by Maglev without an entry: embryonic entries at syn_max."},
    {"ack_stateless", "ferry_conntrack_ack_stateless_total", "counter",
     "Mid-stream TCP packets without an entry forwarded by Maglev (no entry made)."},
};

constexpr metric kL2Metrics[] = {
    {"arp_requests_sent", "ferry_arp_requests_sent_total", "counter", "ARP requests sent."},
    {"arp_replies_sent", "ferry_arp_replies_sent_total", "counter", "ARP replies sent."},
    {"icmp_echo_replies", "ferry_icmp_echo_replies_total", "counter",
     "ICMP echo replies sent for node addresses."},
    {"icmp_unreachable_sent", "ferry_icmp_unreachable_sent_total", "counter",
     "ICMP port unreachable answers for service ports without endpoints."},

    {"icmp_errors_translated", "ferry_icmp_errors_translated_total", "counter",
     "ICMP errors about NATed flows translated back and sent on."},
    {"icmp_time_exceeded_sent", "ferry_icmp_time_exceeded_sent_total", "counter",
     "ICMP time exceeded sent for packets forwarded with TTL 1 or less."},
    {"icmp_frag_needed_sent", "ferry_icmp_frag_needed_sent_total", "counter",
     "ICMP fragmentation needed sent for DF packets over the egress MTU."},
    {"neighbor_held", "ferry_neighbor_held_packets_total", "counter",
     "Packets parked while their next hop's MAC address was resolved."},
};

// IPv4 fragments.
constexpr metric kFragmentMetrics[] = {
    {"received", "ferry_fragments_received_total", "counter",
     "IPv4 fragments taken in for reassembly."},
    {"reassembled", "ferry_fragments_reassembled_total", "counter",
     "Datagrams reassembled from fragments and sent on through the packet path."},
    {"held", "ferry_fragments_held", "gauge",
     "Fragments the workers' reassembly tables hold now (mbufs from the packet pool)."},
    {"fragmented", "ferry_fragments_fragmented_total", "counter",
     "Datagrams larger than the egress port's MTU sent as fragments."},
    {"fragments_sent", "ferry_fragments_sent_total", "counter",
     "Fragments made from those datagrams."},
};

constexpr metric kServiceMetrics[] = {
    {"packets", "ferry_service_packets_total", "counter",
     "Packets sent to the service port's backends."},
    {"bytes", "ferry_service_bytes_total", "counter", "Bytes sent to the service port's backends."},
    {"new_flows", "ferry_service_new_flows_total", "counter",
     "New flows balanced over the service port's backends."},
};

constexpr metric kKubeMetrics[] = {
    {"events", "ferry_kubernetes_events_total", "counter", "Watch events received."},
    {"bookmarks", "ferry_kubernetes_bookmarks_total", "counter", "Watch bookmarks received."},
    {"relists", "ferry_kubernetes_relists_total", "counter", "Lists of the whole resource."},
    {"errors", "ferry_kubernetes_errors_total", "counter", "Failed lists or watches."},
    {"skipped", "ferry_kubernetes_skipped_total", "counter", "Objects that could not be decoded."},
    {"too_large", "ferry_kubernetes_too_large_total", "counter",
     "Lists or watch events refused for a size or depth bound."},
    {"synced", "ferry_kubernetes_synced", "gauge", "1 once the resource's first list is applied."},
    {"connected", "ferry_kubernetes_connected", "gauge", "1 while a watch is open."},
};

constexpr metric kDnsTcpMetrics[] = {
    {"connections", "ferry_dns_tcp_connections_total", "counter", "DNS over TCP connections."},
    {"refused_connections", "ferry_dns_tcp_refused_connections_total", "counter",
     "DNS over TCP connections refused (their source had tcp_connections_per_source open)."},
    {"evicted", "ferry_dns_tcp_evicted_total", "counter",
     "DNS over TCP connections closed to admit a new one (tcp_connections open)."},
    {"idle_closed", "ferry_dns_tcp_idle_closed_total", "counter",
     "DNS over TCP connections closed for idleness."},
    {"message_timeouts", "ferry_dns_tcp_message_timeouts_total", "counter",
     "DNS over TCP connections closed: a query took longer than tcp_message_timeout."},
    {"memory_limited", "ferry_dns_tcp_memory_limited_total", "counter",
     "DNS over TCP queries that waited, or answers dropped, at tcp_memory."},
};

constexpr metric kControlSocketMetrics[] = {
    {"connections", "ferry_control_socket_connections", "gauge",
     "Control socket connections open now."},
    {"buffered_bytes", "ferry_control_socket_buffered_bytes", "gauge",
     "Bytes of unfinished control socket requests held now."},
    {"evicted", "ferry_control_socket_evicted_total", "counter",
     "Idle control socket connections closed to make room for a new one (all slots in use)."},
    {"over_budget", "ferry_control_socket_over_budget_total", "counter",
     "Unfinished control socket requests dropped: together they held too many bytes."},
    {"too_deep", "ferry_control_socket_too_deep_total", "counter",
     "Control socket requests refused: nested too deeply."},
    {"too_large", "ferry_control_socket_too_large_total", "counter",
     "Control socket requests refused: larger than control.max_request_bytes."},
    {"timed_out", "ferry_control_socket_timed_out_total", "counter",
     "Control socket requests not sent, or answers not taken, in time."},
};

void each(exposition& e, const json& obj, const auto& table, const labels& ls) {
  for (const auto& m : table) e.from(field(obj, m.key), m.name, m.type, m.help, ls);
}

// The DNS outcome counters of one transport: every key that is not one of `skip` nor a
// key of `table` (the transport's other counters).
void dns_outcomes(exposition& e, const json& obj, const char* transport,
                  std::initializer_list<std::string_view> skip,
                  std::span<const metric> table = {}) {
  if (!obj.is_object()) return;
  for (const auto& [key, v] : obj.items()) {
    if (std::find(skip.begin(), skip.end(), key) != skip.end()) continue;
    if (std::any_of(table.begin(), table.end(),
                    [&key = key](const metric& m) { return m.key == key; })) {
      continue;
    }
    e.from(v, "ferry_dns_queries_total", "counter", "DNS queries answered, by outcome.",
           {{"transport", transport}, {"outcome", key}});
  }
}

}  // namespace

std::string render(const json& stats, const change_latency& latency, const process_info& info) {
  exposition e;
  e.sample("ferry_build_info", "gauge", "The ferryd version; always 1.",
           {{"version", info.version}}, "1");
  e.sample("process_start_time_seconds", "gauge", "Start time of the process (Unix seconds).", {},
           format_double(info.start_time_seconds));

  const json& snap = field(stats, "snapshot");
  e.from(field(snap, "generation"), "ferry_snapshot_generation", "gauge",
         "Generation of the published service snapshot.");
  if (auto t = seconds_text(field(snap, "published_unix_ns"), 1000000000)) {
    e.sample("ferry_snapshot_published_timestamp_seconds", "gauge",
             "When the current snapshot was published (Unix seconds).", {}, *t);
  }

  for (const auto& p : field(stats, "ports")) {
    each(e, p, kPortMetrics, {{"port", text_of(field(p, "name"))}});
  }
  for (const auto& w : field(stats, "workers")) {
    each(e, w, kWorkerMetrics,
         {{"worker", text_of(field(w, "worker"))}, {"lcore", text_of(field(w, "lcore"))}});
  }
  if (const json& drops = field(stats, "drops"); drops.is_object()) {
    for (const auto& [reason, v] : drops.items()) {
      e.from(v, "ferry_drops_total", "counter", "Packets dropped, by reason.",
             {{"reason", reason}});
    }
  }
  each(e, field(stats, "flows"), kFlowMetrics, {});
  each(e, field(stats, "l2"), kL2Metrics, {});
  each(e, field(stats, "fragments"), kFragmentMetrics, {});
  for (const auto& s : field(stats, "services")) {
    each(e, s, kServiceMetrics,
         {{"service", text_of(field(s, "name"))},
          {"vip", text_of(field(s, "vip"))},
          {"port", text_of(field(s, "port"))},
          {"protocol", text_of(field(s, "protocol"))}});
  }
  // Payload signature filter.
  for (const auto& f : field(stats, "filters")) {
    e.from(field(f, "hits"), "ferry_filter_hits_total", "counter",
           "Packets a payload filter rule matched (action drop: dropped).",
           {{"rule", text_of(field(f, "name"))}, {"action", text_of(field(f, "action"))}});
  }

  if (const json& dns = field(stats, "dns"); dns.is_object()) {
    dns_outcomes(e, dns, "udp", {"tcp", "truncated", "tcp_packets", "slipped"});
    const json& tcp = field(dns, "tcp");
    dns_outcomes(e, tcp, "tcp", {}, kDnsTcpMetrics);
    e.from(field(dns, "truncated"), "ferry_dns_truncated_total", "counter",
           "DNS answers sent over UDP with TC set (too big).");
    e.from(field(dns, "slipped"), "ferry_dns_slipped_total", "counter",
           "DNS answers over [dns] rate_limit sent with TC set and no records (slip).");
    e.from(field(dns, "tcp_packets"), "ferry_dns_tcp_packets_total", "counter",
           "DNS over TCP packets the workers handed to the TCP server.");
    each(e, tcp, kDnsTcpMetrics, {});
  }

  each(e, field(stats, "control_socket"), kControlSocketMetrics, {});

  const json& kube = field(field(stats, "sources"), "kubernetes");
  for (const auto& r : field(kube, "resources")) {
    const labels ls = {{"kind", text_of(field(r, "kind"))}};
    each(e, r, kKubeMetrics, ls);
    const json& ms = field(r, "last_event_unix_ms");  // 0: no event yet
    if (auto t = seconds_text(ms, 1000); t && ms.get<double>() > 0) {
      e.sample("ferry_kubernetes_last_event_timestamp_seconds", "gauge",
               "When the resource's last watch event arrived (Unix seconds).", ls, *t);
    }
  }
  e.from(field(kube, "refused"), "ferry_kubernetes_refused_total", "counter",
         "API objects ferry refused (a conflict with a local object, say).");

  constexpr const char* kLatency = "ferry_change_to_dataplane_seconds";
  constexpr const char* kLatencyHelp =
      "Time from the control thread having a change to the publish of the snapshot with it.";
  for (size_t s = 0; s < static_cast<size_t>(change_source::count); ++s) {
    const histogram& h = latency.of(static_cast<change_source>(s));
    const std::string source(kChangeSourceNames[s]);
    for (size_t i = 0; i < histogram::kBounds.size(); ++i) {
      e.sample(kLatency, "histogram", kLatencyHelp,
               {{"source", source}, {"le", format_double(histogram::kBounds[i])}},
               std::to_string(h.cumulative(i)), "_bucket");
    }
    e.sample(kLatency, "histogram", kLatencyHelp, {{"source", source}, {"le", "+Inf"}},
             std::to_string(h.count), "_bucket");
    e.sample(kLatency, "histogram", kLatencyHelp, {{"source", source}}, format_double(h.sum),
             "_sum");
    e.sample(kLatency, "histogram", kLatencyHelp, {{"source", source}}, std::to_string(h.count),
             "_count");
  }
  return e.text();
}

// ---- listen address ---------------------------------------------------------------------

result<listen_address> parse_listen_address(std::string_view text) {
  auto bad = [&](std::string_view why) {
    std::string m = "\"";
    m.append(text).append("\" ").append(why);
    m.append(" (expected ADDRESS:PORT, like 127.0.0.1:9100 or [::1]:9100)");
    return make_error(std::move(m));
  };
  listen_address out;
  out.text = std::string(text);
  std::string host;
  std::string_view port_text;
  const bool v6 = !text.empty() && text.front() == '[';
  if (v6) {
    auto close = text.find("]:");
    if (close == std::string_view::npos) return bad("has no ]:PORT");
    host = std::string(text.substr(1, close - 1));
    port_text = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad("has no :PORT");
    host = std::string(text.substr(0, colon));
    port_text = text.substr(colon + 1);
  }
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc{} || end != port_text.data() + port_text.size() ||
      port == 0 || port > 65535) {
    return bad("has no port between 1 and 65535");
  }
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&out.addr);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, host.c_str(), &a->sin6_addr) != 1) return bad("is not an IPv6 address");
    out.len = sizeof(sockaddr_in6);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&out.addr);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, host.c_str(), &a->sin_addr) != 1) return bad("is not an IPv4 address");
    out.len = sizeof(sockaddr_in);
  }
  return out;
}

// ---- HTTP server ------------------------------------------------------------------------

namespace {

using steady_clock = std::chrono::steady_clock;

// Connections beyond the cap are closed at once rather than queued.
constexpr size_t kMaxConnections = 64;

std::string response(int status, std::string_view reason, std::string_view type,
                     const std::string& body, bool head, std::string_view extra = "") {
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason) + "\r\n";
  out.append("Content-Type: ").append(type).append("\r\n");
  out.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
  out.append(extra);
  out.append("Connection: close\r\n\r\n");
  if (!head) out.append(body);
  return out;
}

constexpr std::string_view kText = "text/plain; charset=utf-8";

}  // namespace

result<std::unique_ptr<http_server>> http_server::listen(const std::string& address,
                                                         std::chrono::milliseconds timeout) {
  auto a = parse_listen_address(address);
  if (!a) return a.err();
  auto fail = [&](int err) {
    return make_error("cannot listen on " + address + ": " + std::strerror(err));
  };
  int fd = ::socket(a->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(errno);
  int one = 1;
  // A restarted ferryd must get its port back while the last one's connections linger in
  // TIME_WAIT; this does not let two listeners share it.
  (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (a->addr.ss_family == AF_INET6) {
    (void)::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  }
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&a->addr), a->len) != 0 ||
      ::listen(fd, 64) != 0) {
    int err = errno;
    ::close(fd);
    return fail(err);
  }
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (ep < 0 || ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
    int err = errno;
    if (ep >= 0) ::close(ep);
    ::close(fd);
    return fail(err);
  }
  return std::unique_ptr<http_server>(new http_server(fd, ep, timeout));
}

http_server::~http_server() {
  while (!conns_.empty()) close_conn(conns_.begin()->first);
  ::close(epoll_);
  ::close(listener_);
}

void http_server::serve_ready(const body_fn& metrics) {
  if (accept_paused_ && steady_clock::now() >= accept_resume_) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = listener_;
    accept_paused_ = ::epoll_ctl(epoll_, EPOLL_CTL_ADD, listener_, &ev) != 0;
  }
  epoll_event events[32];
  int n = ::epoll_wait(epoll_, events, 32, 0);
  for (int i = 0; i < n; ++i) {
    if (events[i].data.fd == listener_) {
      accept_all();
    } else {
      on_ready(events[i].data.fd, events[i].events, metrics);
    }
  }
  const auto now = steady_clock::now();
  std::vector<int> late;
  for (const auto& [fd, c] : conns_) {
    if (c.deadline <= now) late.push_back(fd);
  }
  for (int fd : late) close_conn(fd);
}

void http_server::accept_all() {
  for (;;) {
    int fd = ::accept4(listener_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        // EMFILE and the like: the listener stays readable, and would wake the control loop
        // at once, again and again; stop watching it for a second.
        ::epoll_ctl(epoll_, EPOLL_CTL_DEL, listener_, nullptr);
        accept_paused_ = true;
        accept_resume_ = steady_clock::now() + std::chrono::seconds(1);
      }
      return;
    }
    if (conns_.size() >= kMaxConnections) {
      ::close(fd);
      continue;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      ::close(fd);
      continue;
    }
    conns_[fd].deadline = steady_clock::now() + timeout_;
  }
}

void http_server::close_conn(int fd) {
  ::epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
  ::close(fd);
  conns_.erase(fd);
}

void http_server::on_ready(int fd, uint32_t, const body_fn& metrics) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  conn& c = it->second;
  if (c.answered && c.sent < c.out.size()) {
    flush(fd, c);
    return;
  }
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      close_conn(fd);  // the peer is done (or gone); after an answer this is the normal end
      return;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (c.answered) continue;  // whatever follows the request is read and dropped
    c.in.append(buf, static_cast<size_t>(n));
    if (c.in.find("\r\n\r\n") != std::string::npos || c.in.find("\n\n") != std::string::npos ||
        c.in.size() > kMaxRequest) {
      answer(fd, c, metrics);
      if (!conns_.count(fd)) return;
    }
  }
}

std::string http_answer(std::string_view request, const std::function<std::string()>& metrics) {
  if (request.size() > kMaxRequest) {
    return response(431, "Request Header Fields Too Large", kText, "request too large\n", false);
  }
  std::string_view line = request.substr(0, request.find('\n'));
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  const auto sp1 = line.find(' ');
  const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos ||
      line.substr(sp2 + 1).substr(0, 5) != "HTTP/") {
    return response(400, "Bad Request", kText, "bad request\n", false);
  }
  const auto method = line.substr(0, sp1);
  auto path = line.substr(sp1 + 1, sp2 - sp1 - 1);
  path = path.substr(0, path.find('?'));
  const bool head = method == "HEAD";
  if (method != "GET" && !head) {
    return response(405, "Method Not Allowed", kText, "method not allowed\n", false,
                    "Allow: GET, HEAD\r\n");
  }
  if (path == "/metrics") {
    try {
      return response(200, "OK", "text/plain; version=0.0.4; charset=utf-8", metrics(), head);
    } catch (const std::exception& ex) {
      return response(500, "Internal Server Error", kText, std::string(ex.what()) + "\n", head);
    }
  }
  if (path == "/healthz") return response(200, "OK", kText, "ok\n", head);
  if (path == "/") {
    return response(200, "OK", "text/html; charset=utf-8",
                    "<html><head><title>ferryd</title></head><body><h1>ferryd</h1>"
                    "<p><a href=\"/metrics\">/metrics</a></p></body></html>\n",
                    head);
  }
  return response(404, "Not Found", kText, "not found\n", head);
}

void http_server::answer(int fd, conn& c, const body_fn& metrics) {
  c.answered = true;
  c.out = http_answer(c.in, metrics);
  c.in.clear();
  c.in.shrink_to_fit();
  flush(fd, c);
}

bool http_server::flush(int fd, conn& c) {
  while (c.sent < c.out.size()) {
    ssize_t n = ::send(fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n > 0) {
      c.sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      epoll_event ev{};
      ev.events = EPOLLOUT;
      ev.data.fd = fd;
      ::epoll_ctl(epoll_, EPOLL_CTL_MOD, fd, &ev);
      return true;
    }
    close_conn(fd);
    return false;
  }
  // All sent: tell the client, then wait for its close (closing first, with its bytes
  // unread, could reset the connection before it read the answer).
  ::shutdown(fd, SHUT_WR);
  c.out.clear();
  c.out.shrink_to_fit();
  c.sent = 0;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  ::epoll_ctl(epoll_, EPOLL_CTL_MOD, fd, &ev);
  return true;
}

}  // namespace ferry::control::metrics
