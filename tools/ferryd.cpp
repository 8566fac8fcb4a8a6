// ferryd: the daemon. The EAL main lcore runs the control thread (config, store, compile,
// publish, control socket); every other lcore runs a dataplane worker.
#include <fcntl.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_pdump.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <optional>
#include <thread>

#include "builtin.hpp"
#include "config.hpp"
#include "dns_tcp.hpp"
#include "ferryd_views.hpp"
#include "fragments.hpp"
#include "inspect.hpp"
#include "metrics.hpp"
#include "node.hpp"
#include "ports.hpp"
#include "publish.hpp"
#include "socket_server.hpp"

namespace {

using nlohmann::json;
using namespace ferry;

std::atomic<bool> g_signalled{false};
// SIGTERM stops ferryd within this long whatever the control thread is doing (see
// stop_watchdog).
constexpr auto kStopGrace = std::chrono::milliseconds(1500);
std::atomic<bool> g_reload{false};
void on_signal(int) { g_signalled.store(true); }
void on_sighup(int) { g_reload.store(true); }

// SIGTERM or SIGINT only sets g_signalled; the control loop sees it between requests (every
// 200 ms at most), and long control work checks it too (node::set_stop). Work that does not
// (a huge manifest being decoded, a compile) could still hold the loop for minutes, so this
// thread, once the signal came, gives the loop kStopGrace to finish; after that it stops the
// workers, removes the control socket and exits the process at once, as systemd's SIGKILL
// would a little later (the kernel releases hugepages, sockets and devices), so a stop is
// never held hostage. Exit status 0: the stop asked for is what happened.
class stop_watchdog {
 public:
  stop_watchdog(std::atomic<bool>& workers_stop, std::string socket_path)
      : socket_path_(std::move(socket_path)),
        thread_([this, &workers_stop] { watch(workers_stop); }) {}
  ~stop_watchdog() {
    done_.store(true);
    thread_.join();
  }
  stop_watchdog(const stop_watchdog&) = delete;
  stop_watchdog& operator=(const stop_watchdog&) = delete;

 private:
  void watch(std::atomic<bool>& workers_stop) {
    using clock = std::chrono::steady_clock;
    constexpr auto kTick = std::chrono::milliseconds(20);
    while (!g_signalled.load()) {
      if (done_.load()) return;
      std::this_thread::sleep_for(kTick);
    }
    const auto deadline = clock::now() + kStopGrace;
    while (clock::now() < deadline) {
      if (done_.load()) return;
      std::this_thread::sleep_for(kTick);
    }
    if (done_.load()) return;
    spdlog::error(
        "ferryd stopping: the control thread is still busy {} ms after the signal; "
        "exiting without waiting for it",
        kStopGrace.count());
    spdlog::default_logger()->flush();
    workers_stop.store(true);
    ::unlink(socket_path_.c_str());  // as the socket server's destructor would
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // workers leave their loops
    std::_Exit(0);
  }
  std::string socket_path_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// DPDK's runtime directory for a file prefix, as EAL picks it (eal_get_runtime_dir): root's
// under /var/run, other users' under $XDG_RUNTIME_DIR or /tmp.
std::string eal_runtime_dir(const std::string& prefix) {
  std::string base = "/var/run";
  if (::geteuid() != 0) {
    const char* xdg = std::getenv("XDG_RUNTIME_DIR");
    base = xdg ? xdg : "/tmp";
  }
  return base + "/dpdk/" + prefix;
}

// A second primary process on one file prefix would share (and wreck) the first one's
// hugepage files; EAL's own refusal does not say why. EAL holds a write lock on part of
// <runtime dir>/config for its whole life, so F_GETLK names the holder. An --in-memory or
// --no-shconf process keeps no such file and cannot clash.
std::string eal_prefix_in_use(const std::vector<std::string>& eal_args) {
  std::string prefix = "rte";
  for (size_t i = 0; i < eal_args.size(); ++i) {
    const auto& a = eal_args[i];
    if (a == "--in-memory" || a == "--no-shconf") return "";
    if (a == "--file-prefix" && i + 1 < eal_args.size()) prefix = eal_args[i + 1];
    if (a.rfind("--file-prefix=", 0) == 0) prefix = a.substr(14);
  }
  std::string file = eal_runtime_dir(prefix) + "/config";
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";  // no such process ever ran, or it left nothing behind
  struct flock lk {};
  lk.l_type = F_WRLCK;
  lk.l_whence = SEEK_SET;  // l_start 0, l_len 0: the whole file
  int rc = ::fcntl(fd, F_GETLK, &lk);
  ::close(fd);
  if (rc != 0 || lk.l_type == F_UNLCK) return "";
  return "EAL file prefix \"" + prefix + "\" is in use by another DPDK process (pid " +
         std::to_string(lk.l_pid) + "); give each ferryd its own --file-prefix";
}

void usage() {
  std::cerr << "usage: ferryd [--config FILE.toml] [--check] [--verbose] [--print-default-config]\n"
               "  no --config: run the built-in demo default (see README)\n"
               "  --check: validate the config and its manifests, then exit\n"
               "  --print-default-config: print the built-in default config (a starting point)\n";
}

// poll_once() watches one fd besides the control socket; an epoll set is readable while any
// fd in it is, so the API watch and the metrics server can both wake the loop.
class wake_set {
 public:
  wake_set() : ep_(epoll_create1(EPOLL_CLOEXEC)) {}
  ~wake_set() {
    if (ep_ >= 0) close(ep_);
  }
  wake_set(const wake_set&) = delete;
  wake_set& operator=(const wake_set&) = delete;
  void add(int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (fd >= 0 && ep_ >= 0 && epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) == 0) ++n_;
  }
  int fd() const { return n_ ? ep_ : -1; }

 private:
  int ep_;
  int n_ = 0;
};

using views::service_baselines;

json stats_view(const dp::dataplane& d, const std::vector<std::unique_ptr<dp::worker>>& workers,
                service_baselines& base) {
  dp::totals t = dp::collect(d, workers);
  json ports = json::array();
  for (const auto& p : t.ports) {
    ports.push_back({{"name", p.name},
                     {"rx_packets", p.rx_packets},
                     {"tx_packets", p.tx_packets},
                     {"rx_bytes", p.rx_bytes},
                     {"tx_bytes", p.tx_bytes},
                     {"rx_missed", p.rx_missed},
                     {"rx_errors", p.rx_errors},
                     {"rx_by_workers", p.rx_workers},
                     {"tx_by_workers", p.tx_workers},
                     {"tx_dropped", p.tx_errors}});
  }
  json drops = json::object();
  for (size_t i = 0; i < kNumDrops; ++i) drops[std::string(kDropNames[i])] = t.drops[i];
  uint64_t active = 0;
  dp::list_flows(d, 0, active);
  uint64_t embryonic = 0;
  for (unsigned i = 0; i < d.ct->workers(); ++i) embryonic += d.ct->embryonic(i);
  json services = json::array();
  if (const snapshot* s = d.snap.load(std::memory_order_acquire)) {
    for (const auto* e : s->ports()) {
      const dp::service_totals c = views::service_counts(workers, base, *e);
      services.push_back({{"name", e->name},
                          {"vip", format_ipv4(e->vip)},
                          {"port", e->port},
                          {"protocol", proto_name(e->proto)},
                          {"packets", c.packets},
                          {"bytes", c.bytes},
                          {"new_flows", c.new_flows}});
    }
  }
  json dns = {
      {"truncated", t.dns_truncated}, {"tcp_packets", t.dns_tcp}, {"slipped", t.dns_slipped}};
  for (size_t o = 0; o < dns::kNumOutcomes; ++o) dns[std::string(dns::kOutcomeNames[o])] = t.dns[o];
  json per_worker = json::array();
  auto seconds = [&](uint64_t cycles) { return static_cast<double>(cycles) / d.tsc_hz; };
  for (size_t i = 0; i < workers.size(); ++i) {
    per_worker.push_back({{"worker", i},
                          {"lcore", workers[i]->lcore},
                          {"rx_packets", t.per_worker_rx[i]},
                          {"foreign_flow_hits", t.per_worker_foreign[i]},
                          {"busy_seconds", seconds(workers[i]->counters.busy_cycles.get())},
                          {"poll_seconds", seconds(workers[i]->counters.poll_cycles.get())}});
  }
  json fragments = {{"received", t.frag_received},
                    {"reassembled", t.frag_reassembled},
                    {"held", t.frag_held},
                    {"fragmented", t.frag_fragmented},
                    {"fragments_sent", t.frag_sent},
                    {"max_held", d.frag_max_held},
                    {"max_datagrams", d.frag_max_datagrams}};
  json out = {{"ports", ports},
              {"drops", drops},
              {"flows",
               {{"active", active},
                {"created", t.flows_created},
                {"picked_up", t.flows_picked_up},
                {"expired", t.flows_expired},
                {"table_full", t.flows_table_full},
                {"stateless", t.stateless_forward},
                {"stateless_replies", t.stateless_reply},
                {"snat", t.snat_flows},
                {"port_remapped", t.port_remapped},
                {"affinity_reused", t.affinity_reused},
                {"foreign_hits", t.flows_foreign},
                // TCP abuse: SYN_SENT entries now and their cap, and what went statelessly.
                {"embryonic", embryonic},
                {"syn_max", d.ct->syn_max() * d.ct->workers()},
                {"syn_stateless", t.syn_stateless},
                {"ack_stateless", t.ack_stateless},
                {"capacity", d.ct->capacity()},
                {"memory_bytes", d.ct->memory_bytes()}}},
              {"l2",
               {{"arp_requests_sent", t.arp_requests_sent},
                {"arp_replies_sent", t.arp_replies_sent},
                {"icmp_echo_replies", t.icmp_echo_replies},
                {"icmp_unreachable_sent", t.icmp_unreach_sent},
                {"icmp_errors_translated", t.icmp_errors_translated},
                {"icmp_time_exceeded_sent", t.icmp_time_exceeded_sent},
                {"icmp_frag_needed_sent", t.icmp_frag_needed_sent},
                {"neighbor_held", t.neighbor_held}}},
              {"services", services},
              {"workers", per_worker},
              {"fragments", fragments}};
  if (!d.dns_addresses.empty()) out["dns"] = dns;
  return out;
}

// What the control socket refused or dropped: a client's bounds biting (socket_counters).
json control_socket_view(const control::socket_server& s) {
  const auto& c = s.counters();
  return {{"connections", s.connections()}, {"buffered_bytes", s.buffered_bytes()},
          {"evicted", c.evicted},           {"over_budget", c.over_budget},
          {"too_deep", c.too_deep},         {"too_large", c.too_large},
          {"timed_out", c.timed_out}};
}

json dns_tcp_view(const dp::dns_tcp_server::stats& s) {
  json out = {{"connections", s.connections.load()},
              {"refused_connections", s.refused_connections.load()},
              {"evicted", s.evicted.load()},
              {"idle_closed", s.idle_closed.load()},
              {"message_timeouts", s.message_timeouts.load()},
              {"memory_limited", s.memory_limited.load()}};
  for (size_t o = 0; o < dns::kNumOutcomes; ++o) {
    out[std::string(dns::kOutcomeNames[o])] = s.outcomes[o].load();
  }
  return out;
}

// The DNS thread's resolver of ExternalName targets outside the zone.
json dns_external_view(const dp::dns_resolver::stats& s) {
  return {{"queries", s.queries.load()},
          {"cache_hits", s.cache_hits.load()},
          {"upstream_queries", s.upstream_queries.load()},
          {"servfail", s.servfail.load()},
          {"pending_full", s.pending_full.load()},
          {"cache_evicted", s.cache_evicted.load()},
          {"ttl_capped", s.ttl_capped.load()}};
}

// The sources' health for `ferryctl stats`: the Kubernetes API per resource.
json sources_view(const control::kube::watcher* api, uint64_t refused) {
  if (!api) return json::object();
  json resources = json::array();
  for (const auto& r : api->status()) {
    resources.push_back({{"kind", r.kind},
                         {"synced", r.synced},
                         {"connected", r.connected},
                         {"resource_version", r.resource_version},
                         {"last_event_unix_ms", r.last_event_ms},
                         {"events", r.events},
                         {"bookmarks", r.bookmarks},
                         {"relists", r.relists},
                         {"errors", r.errors},
                         {"skipped", r.skipped},
                         {"too_large", r.too_large},
                         {"backoff_ms", r.backoff_ms},
                         {"last_error", r.last_error}});
  }
  return {{"kubernetes",
           {{"server", api->creds().server},
            {"credentials", api->creds().origin},
            {"refused", refused},
            {"resources", resources}}}};
}

// [fragments] with max_held lowered so that held fragments (mbufs from the packet pool) take
// at most half of it over all workers: a flood of incomplete fragments cannot starve the
// traffic that needs the pool.
fragments_config held_fragments(const node_config& cfg, unsigned workers) {
  fragments_config f = cfg.fragments;
  const uint32_t cap = std::max<uint32_t>(1, cfg.mbufs / 2 / workers);
  if (f.enabled && f.max_held > cap) {
    spdlog::warn(
        "{}: fragments.max_held: {} per worker x {} workers is over half of the {} mbufs "
        "(dataplane.mbufs); holding at most {} per worker",
        cfg.source, f.max_held, workers, cfg.mbufs, cap);
    f.max_held = cap;
  }
  return f;
}

int run(const node_config& cfg) {
  const control::metrics::process_info info{
      FERRY_VERSION,
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count()};
  const auto started = std::chrono::steady_clock::now();
  const int64_t started_unix = std::chrono::duration_cast<std::chrono::seconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count();
  // Refuse to start half-configured: check every manifest before touching any device.
  {
    control::node dry(cfg, [](std::unique_ptr<const snapshot>) {});
    if (auto r = dry.load_sources(cfg, false); !r) {
      spdlog::error("{}", r.message());
      return 1;
    }
  }

  std::optional<control::kube::credentials> api_creds;
  if (cfg.kubernetes.enabled) {
    auto c = control::kube::credentials_for(cfg.kubernetes);
    if (!c) {
      spdlog::error("{}: {}", cfg.source, c.message());
      return 1;
    }
    api_creds = std::move(*c);
  }

  // Another ferryd answering on our socket owns the same ports: do not touch them.
  if (control::call(cfg.socket_path, {{"op", "stats"}}, 2000)) {
    spdlog::error("{}: control.socket: {} is in use by another running ferryd", cfg.source,
                  cfg.socket_path);
    return 1;
  }

  if (auto busy = eal_prefix_in_use(cfg.eal_args); !busy.empty()) {
    spdlog::error("{}: dataplane.eal_args: {}", cfg.source, busy);
    return 1;
  }

  // Bound before the EAL takes any device: a port in use refuses the start at no cost.
  std::unique_ptr<control::metrics::http_server> metrics;
  if (!cfg.metrics.address.empty()) {
    auto m = control::metrics::http_server::listen(cfg.metrics.address);
    if (!m) {
      spdlog::error("{}: metrics.address: {}", cfg.source, m.message());
      return 1;
    }
    metrics = std::move(*m);
  }

  std::vector<std::string> args{"ferryd"};
  args.insert(args.end(), cfg.eal_args.begin(), cfg.eal_args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  if (rte_eal_init(static_cast<int>(argv.size()), argv.data()) < 0) {
    spdlog::error("{}: dataplane.eal_args: EAL init failed: {}", cfg.source,
                  rte_strerror(rte_errno));
    return 1;
  }
  unsigned n_workers = rte_lcore_count() - 1;
  if (n_workers == 0 || n_workers > 64) {
    spdlog::error(
        "{}: dataplane.eal_args: need 1-64 worker lcores besides the main lcore "
        "(e.g. -l 0,1), got {}",
        cfg.source, n_workers);
    rte_eal_cleanup();
    return 1;
  }
  // Lets dpdk-dumpcap/dpdk-pdump (secondary processes) capture our ports; costs nothing
  // until one asks (it then installs RX/TX callbacks on the ports it captures).
  if (rte_pdump_init() != 0) {
    spdlog::warn("packet capture (dpdk-dumpcap) is off: {}", rte_strerror(rte_errno));
  }

  dp::dataplane d;
  d.tsc_hz = rte_get_tsc_hz();
  d.hold_tsc = d.tsc_hz / 1000 * cfg.neighbor_hold_ms;
  d.arp_retry_tsc = d.tsc_hz / 5;
  d.icmp_rate = cfg.icmp_unreachable_rate;
  d.limits = cfg.limits;
  d.n_workers = n_workers;
  d.echo_rate = cfg.icmp.echo_rate;
  d.error_rate = cfg.icmp.error_rate;
  d.answer_service_echo = cfg.icmp.answer_service_echo;
  d.idle_sleep_us = cfg.idle_sleep_us;
  d.max_service_ports = cfg.max_service_ports;
  d.filter_max_rules = cfg.filter_max_rules;
  d.dns_addresses = cfg.dns.addresses;
  d.dns_external_ttl_max = cfg.dns.external_ttl_max;
  d.dns_external_cache = cfg.dns.external_cache_size;
  d.dns_rrl_rate = cfg.dns.rate_limit;
  d.dns_rrl_mask = ipv4_prefix{0, cfg.dns.rate_limit_prefix}.mask();
  d.dns_rrl_slip = cfg.dns.rate_limit_slip;
  d.dns_rrl_exempt = cfg.dns.rate_limit_exempt;
  d.dns_forward_sources = cfg.dns.forward_sources;
  d.affinity = std::make_unique<dp::affinity_table>(cfg.conntrack.affinity_capacity);
  d.routes = dp::build_routes(cfg);
  d.neighbors = std::make_unique<dp::neighbor_table>(d.tsc_hz * cfg.neighbor_timeout);
  // RCU readers: the workers, and the DNS TCP server's thread (id n_workers).
  const unsigned readers = n_workers + (cfg.dns.enabled() ? 1 : 0);
  d.qsbr = static_cast<rte_rcu_qsbr*>(
      rte_zmalloc("ferry_qsbr", rte_rcu_qsbr_get_memsize(readers), RTE_CACHE_LINE_SIZE));
  d.pool = rte_pktmbuf_pool_create("ferry_mbufs", cfg.mbufs, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                   static_cast<int>(rte_socket_id()));
  int rc = 1;
  std::vector<std::unique_ptr<dp::worker>> workers;
  std::unique_ptr<dp::dns_tcp_server> dns_tcp;
  if (!d.qsbr || rte_rcu_qsbr_init(d.qsbr, readers) != 0 || !d.pool) {
    spdlog::error(
        "{}: cannot allocate the packet pool ({} mbufs) or RCU state: {} "
        "(raise -m in dataplane.eal_args or lower dataplane.mbufs)",
        cfg.source, cfg.mbufs, rte_strerror(rte_errno));
  } else if (d.ct = std::make_unique<dp::conntrack>(cfg.conntrack.capacity, n_workers, d.qsbr,
                                                    d.tsc_hz, cfg.conntrack);
             d.ct->capacity() == 0) {
    spdlog::error(
        "{}: conntrack.capacity: cannot allocate {} flows (raise -m in "
        "dataplane.eal_args or lower the capacity)",
        cfg.source, cfg.conntrack.capacity);
  } else if (auto fe = dp::setup_fragments(d, held_fragments(cfg, n_workers), "ferry_frag_ind");
             !fe.empty()) {
    spdlog::error("{}: fragments: {} (raise -m in dataplane.eal_args)", cfg.source, fe);
  } else if (auto r = dp::setup_ports(d, cfg, n_workers); !r) {
    spdlog::error("{}", r.message());
  } else {
    // UDP is the workers' own; without the TAP (no /dev/net/tun, say) DNS still answers on
    // UDP and TCP segments are dropped and counted (dns_tcp_no_server).
    if (cfg.dns.enabled()) {
      if (auto t = dp::dns_tcp_server::open(d, n_workers, n_workers, cfg.dns.tcp); !t) {
        spdlog::warn("{}: DNS over TCP is off: {}", cfg.source, t.message());
      } else {
        dns_tcp = std::move(*t);
        dns_tcp->start();
      }
    }
    control::publisher pub(d.snap, d.qsbr);
    int64_t published_ns = 0;  // wall clock of the last publish, for latency measurements
    control::metrics::change_latency latency;
    using control::metrics::change_source;
    control::node ctl(
        cfg,
        [&](std::unique_ptr<const snapshot> s) {
          pub.publish(std::move(s));
          latency.published();
          published_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
        },
        n_workers);
    // Payload signature filter: a rule's hits are its slot summed over the workers.
    ctl.set_filter_hits([&](uint32_t slot) {
      uint64_t n = 0;
      for (const auto& w : workers) n += w->filter_hits[slot].get();
      return n;
    });
    // Observed only when there is something to read (an empty start publishes too).
    if (!cfg.manifests.empty() || !cfg.builtin_manifests.empty()) {
      latency.begin(change_source::file);
    }
    // Every worker's state, before any runs. A reassembly table that cannot be had refuses
    // the start: running with reassembly silently off would drop every fragment.
    auto init_workers = [&] {
      unsigned lcore, i = 0;
      RTE_LCORE_FOREACH_WORKER(lcore) {
        workers.push_back(std::make_unique<dp::worker>());
        dp::init_worker(*workers.back(), d, i++, lcore);
        // A bound the config asks for and the memory cannot hold stops the start: none is
        // ever silently off.
        if (cfg.limits.new_flows_per_source && !workers.back()->limiter.enabled()) {
          spdlog::error(
              "{}: limits.source_table_size: no memory for {} sources on worker {}: raise -m "
              "in dataplane.eal_args or lower limits.source_table_size",
              cfg.source, cfg.limits.source_table_size, i - 1);
          return false;
        }
        if (d.dns_rrl_rate && !d.dns_addresses.empty() && !workers.back()->dns_limiter.enabled()) {
          spdlog::error(
              "{}: dns.rate_limit: no memory for {} sources (limits.source_table_size) on worker "
              "{}: raise -m in dataplane.eal_args or lower limits.source_table_size",
              cfg.source, cfg.limits.source_table_size, i - 1);
          return false;
        }
        if (d.frag_enabled && !workers.back()->frag.tbl) {
          spdlog::error(
              "{}: fragments.max_datagrams: no memory for worker {}'s reassembly table ({} "
              "datagrams): raise -m in dataplane.eal_args or lower fragments.max_datagrams",
              cfg.source, i - 1, cfg.fragments.max_datagrams);
          return false;
        }
      }
      return true;
    };
    auto lr = ctl.load_sources(cfg);
    latency.end();
    if (!lr) {
      spdlog::error("{}", lr.message());
    } else if (!init_workers()) {
      // Logged; nothing was launched.
    } else {
      unsigned lcore, i = 0;
      RTE_LCORE_FOREACH_WORKER(lcore) {
        rte_eal_remote_launch(dp::worker_main, workers[i++].get(), lcore);
      }
      std::unique_ptr<control::kube::watcher> api;
      if (api_creds) {
        api = std::make_unique<control::kube::watcher>(
            *api_creds, cfg.kubernetes, control::kube::watched_resources(cfg.node_name));
        api->start();
        spdlog::info("kubernetes: following {} ({})", api_creds->server, api_creds->origin);
      }
      service_baselines baselines;
      const control::socket_server* control_socket = nullptr;  // set once it listens
      auto stats = [&] {
        json out = stats_view(d, workers, baselines);
        out["sources"] = sources_view(api.get(), ctl.api_refused());
        if (control_socket) out["control_socket"] = control_socket_view(*control_socket);
        if (dns_tcp) out["dns"]["tcp"] = dns_tcp_view(dns_tcp->counters());
        if (dns_tcp) out["dns"]["external"] = dns_external_view(dns_tcp->resolver()->counters());
        out["filters"] = ctl.filter_list()["rules"];
        out["snapshot"] = {{"generation", pub.current()->generation},
                           {"published_unix_ns", published_ns}};
        return out;
      };
      ctl.set_views([&](const json& req) { return views::flows(d, req); },
                    [&](const json&) { return stats(); });
      auto scrape = [&] { return control::metrics::render(stats(), latency, info); };
      views::busy_sampler busy;
      ctl.set_view("status", [&](const json&) {
        return views::status(d, workers, busy,
                             {cfg, ctl, api.get(), pub.current()->generation, published_ns,
                              started_unix, started, dns_tcp != nullptr});
      });
      ctl.set_view("neighbors", [&](const json&) { return views::neighbors(d); });
      ctl.set_view("routes", [&](const json&) { return views::routes(d, cfg); });
      ctl.set_view("trace", [&](const json& req) { return views::trace(d, req); });
      ctl.set_view("flush", [&](const json& req) { return views::flush(d, req); });
      ctl.set_backend_flush([&](const std::vector<control::backend_change>& gone) -> uint64_t {
        std::vector<dp::service_backend> which;
        which.reserve(gone.size());
        for (const auto& b : gone) which.push_back({b.vip, b.vport, b.proto, b.ip, b.port});
        return dp::flush_backends(d, std::move(which));
      });
      ctl.set_view("describe",
                   [&](const json& req) { return views::describe(d, workers, baselines, req); });
      control::socket_options socket_opts{.max_request_bytes = cfg.max_request_bytes};
      if (cfg.socket_gid >= 0) socket_opts.group = static_cast<gid_t>(cfg.socket_gid);
      auto server = control::socket_server::listen(
          cfg.socket_path,
          [&](const json& req) {
            latency.begin(change_source::socket);
            json out = ctl.handle(req);
            latency.end();
            return out;
          },
          socket_opts);
      if (!server) {
        spdlog::error("{}: control.socket: {}", cfg.source, server.message());
      } else {
        control_socket = server->get();
        for (const auto& p : d.ports) {
          spdlog::info("port {}: dpdk port {}, {} RX / {} TX queues, MTU {}", p.name, p.port_id,
                       p.rx_queues, p.tx_queues, p.mtu);
        }
        spdlog::info("ferryd {} up: {} workers, {} service ports, control socket {}", cfg.node_name,
                     n_workers, pub.current()->vips.size(), cfg.socket_path);
        if (metrics) spdlog::info("metrics: http://{}/metrics", cfg.metrics.address);
        wake_set wake;
        if (api) wake.add(api->wake_fd());
        if (metrics) wake.add(metrics->fd());
        stop_watchdog watchdog(d.stop, cfg.socket_path);
        ctl.set_stop(&g_signalled);
        while (!g_signalled.load()) {
          busy.tick(workers);
          const bool woken = (*server)->poll_once(200, wake.fd());
          // Every turn, not only when woken: this also drops connections past their deadline.
          if (metrics) metrics->serve_ready(scrape);
          if (g_reload.exchange(false)) {
            spdlog::info("SIGHUP: reloading {}", cfg.source);
            latency.begin(change_source::file);
            (void)ctl.handle({{"op", "reload"}});  // logs what it did or why it refused
            latency.end();
          }
          ctl.tick();  // removed backends whose grace is over: their flows are flushed
          // A reload (signal or socket) may have changed it.
          (*server)->set_max_request_bytes(ctl.config().max_request_bytes);
          if (!woken || !api) continue;
          auto u = api->take();
          if (u.empty()) continue;
          latency.begin(change_source::kubernetes);
          auto r = ctl.sync_api(std::move(u));
          latency.end();
          if (!r) {
            spdlog::error("kubernetes: update not applied: {}", r.message());
            continue;
          }
          control::log_changes(*r, "kubernetes");
        }
        spdlog::info("ferryd stopping");
        rc = 0;
      }
      d.stop.store(true);
      rte_eal_mp_wait_lcore();
    }
    dns_tcp.reset();  // its thread reads snapshots: gone before the publisher frees the last
  }
  workers.clear();
  dp::close_ports(d);
  dp::release_fragments(d);  // after the devices let go of the fragments they were sending
  d.ct.reset();
  rte_mempool_free(d.pool);
  rte_free(d.qsbr);
  rte_pdump_uninit();
  rte_eal_cleanup();
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  bool check = false;
  bool verbose = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if ((a == "--config" || a == "-c") && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a == "--check") {
      check = true;
    } else if (a == "--verbose" || a == "-v") {
      verbose = true;
    } else if (a == "--print-default-config") {
      std::cout << ferry::control::kDefaultConfig;
      return 0;
    } else if (a == "--help" || a == "-h") {
      usage();
      return 0;
    } else {
      usage();
      return 2;
    }
  }
  auto cfg = config_path.empty() ? ferry::control::default_config()
                                 : ferry::control::load_config(config_path);
  if (!cfg) {
    spdlog::error("{}", cfg.message());
    return 1;
  }
  // --verbose wins over [log] level (it is how one debugs a config).
  ferry::control::set_log_level(verbose ? "debug" : cfg->log_level);
  if (check) {
    ferry::control::node dry(*cfg, [](std::unique_ptr<const ferry::snapshot>) {});
    if (auto r = dry.load_sources(*cfg, false); !r) {
      spdlog::error("{}", r.message());
      return 1;
    }
    if (cfg->kubernetes.enabled) {
      if (auto c = ferry::control::kube::credentials_for(cfg->kubernetes); !c) {
        spdlog::error("{}: {}", cfg->source, c.message());
        return 1;
      }
    }
    std::cout << cfg->source << ": ok\n";
    return 0;
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGHUP, on_sighup);
  return run(*cfg);
}
