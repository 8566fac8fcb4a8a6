// ferry-perf: benchmarks that print one JSON object per result line.
//   ferry-perf pipeline [--flows 1000,1000000] [--runs 5]
//                       [--case established|reply|new_flow|syn_refused|
//                              fragments]
//                       [--workers 1] [--no-huge] [--source-limit RATE]
//   ferry-perf pipeline --filter-rules 0,10,100,1000 [--payload 64,512] [--runs 3] [--no-huge]
//   ferry-perf maglev   [--runs 5]
//   ferry-perf sync     [--services 1000,10000] [--runs 5] [--dns]
//   ferry-perf dns      [--services 1000,10000] [--runs 5] [--no-huge]
//   ferry-perf gen      [--case throughput|zero_loss|conn] ...  (gen.cpp; perf/linerate.sh)
// `pipeline` drives the worker's packet path on mbufs in memory (no I/O, one core);
// `maglev` measures table builds, balance and disruption. perf/run.sh runs both with
// hugepages and rewrites docs/performance.md.
#include <netinet/in.h>
#include <rte_eal.h>
#include <rte_ip.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "compile.hpp"
#include "ferry/maglev.hpp"
#include "filter.hpp"
#include "gen.hpp"
#include "node.hpp"
#include "offline.hpp"
#include "publish.hpp"
#include "stats.hpp"

namespace {

using nlohmann::json;
using namespace ferry;

using perf::spread;
using perf::summarize;
using perf::to_json;

// ---- pipeline -------------------------------------------------------------------------

constexpr uint32_t kVip = 0xc613000a;        // 198.19.0.10
constexpr uint32_t kClientNet = 0xc6128000;  // 198.18.128.0/17, behind 198.18.0.1
constexpr uint32_t kGateway = 0xc6120001;
constexpr uint32_t kBackendNet = 0xc6120100;  // 198.18.1.x
constexpr unsigned kBackends = 100;

uint32_t client_ip(uint64_t flow) { return kClientNet + (flow & 0x7fff); }
uint16_t client_port(uint64_t flow) { return static_cast<uint16_t>(1024 + (flow >> 15)); }

struct pipeline_bench {
  std::unique_ptr<dp::offline_dataplane> od;
  std::unique_ptr<snapshot> snap;  // not yet published: the filter benchmark sets its rules
  const service_port_entry* svc = nullptr;
  static constexpr uint16_t kMaxPayload = 1400;
  uint8_t tmpl[54 + kMaxPayload] = {};
  uint16_t payload = 0;  // TCP payload bytes of forward packets (the filter benchmark)

  uint32_t capacity;
  unsigned workers;
  uint32_t syn_max;

  // syn_max: [conntrack] syn_max (the new_flow case lifts it to the capacity, so every SYN
  // makes an entry; syn_refused keeps it small; 0: the capacity). SYN_SENT entries do not age
  // here. source_limit: [limits] new_flows_per_source (and burst) for every worker; 0: off.
  pipeline_bench(uint32_t capacity_, unsigned workers_, uint32_t syn_max_ = 0,
                 uint32_t source_limit = 0)
      : capacity(capacity_), workers(workers_), syn_max(syn_max_ ? syn_max_ : capacity_) {
    node_config cfg;
    cfg.ports = {{"eth0", "", {0xc61200fe, 24}}, {"eth1", "", {0xc61201fe, 24}}};
    cfg.routes = {{{kClientNet, 17}, kGateway, "eth0"}};
    cfg.conntrack.tcp_established_timeout = 86400;
    cfg.conntrack.tcp_syn_timeout = 86400;
    cfg.conntrack.syn_max = syn_max;
    rte_ether_addr macs[2] = {{{2, 0, 0, 0, 0, 1}}, {{2, 0, 0, 0, 0, 2}}};
    dp::offline_options o;
    o.flow_capacity = capacity;
    o.workers = workers;
    o.mbufs = 1023 + workers * dp::kBurst;
    o.limits.new_flows_per_source = o.limits.new_flows_burst = source_limit;
    od = std::make_unique<dp::offline_dataplane>(cfg, macs, o);
    od->learn(0, kGateway, {{2, 0xc1, 0, 0, 0, 1}});

    std::string yaml =
        "apiVersion: v1\nkind: Service\nmetadata: {name: bench}\nspec:\n"
        "  clusterIP: 198.19.0.10\n  ports: [{port: 80, targetPort: 9376}]\n---\n"
        "apiVersion: v1\nkind: Endpoints\nmetadata: {name: bench}\nsubsets:\n"
        "- ports: [{port: 9376}]\n  addresses:\n";
    for (unsigned i = 1; i <= kBackends; ++i) {
      yaml += "  - ip: " + format_ipv4(kBackendNet + i) + "\n";
      od->learn(1, kBackendNet + i, {{2, 0xb0, 0, 0, 0, static_cast<uint8_t>(i)}});
    }
    control::store st(ipv4_prefix{0xc6130000, 16});
    auto objs = model::parse_manifests(yaml, "bench");
    if (!objs || !st.apply(std::move(*objs), control::source::file)) std::abort();
    snap = std::move(*control::compiler(kMaglevDefaultMaxSize, 16).compile(st));
    svc = snap->ports()[0];

    // Ethernet + IPv4 + TCP, 60 bytes on the wire; flow fields are patched per packet.
    auto* eth = reinterpret_cast<rte_ether_hdr*>(tmpl);
    eth->ether_type = RTE_BE16(RTE_ETHER_TYPE_IPV4);
    eth->src_addr = {{2, 0xc1, 0, 0, 0, 1}};
    auto* ip = reinterpret_cast<rte_ipv4_hdr*>(eth + 1);
    ip->version_ihl = RTE_IPV4_VHL_DEF;
    ip->total_length = RTE_BE16(46);
    ip->time_to_live = 64;
    ip->next_proto_id = IPPROTO_TCP;
    auto* th = reinterpret_cast<rte_tcp_hdr*>(ip + 1);
    th->data_off = 5 << 4;
  }

  // Flow f belongs to worker f % workers (as RSS would send its client's packets there).
  void insert_flows(uint64_t n) {
    for (uint64_t f = 0; f < n; ++f) {
      dp::worker& w = *od->workers[f % workers];
      dp::flow_key k{client_ip(f), kVip, client_port(f), 80, IPPROTO_TCP};
      const backend& b = svc->pick(dp::conntrack::hash(k));
      if (!od->dp.ct->insert(w.ct, k, {b.ip, b.port}, svc->id, dp::flow_state::tcp_established,
                             rte_rdtsc())) {
        std::cerr << "flow table full at " << f << "\n";
        std::abort();
      }
    }
  }

  // A SYN flood's leftovers: every worker's embryonic entries at the cap (flows from
  // `first` on), so the next SYNs take the refused path (syn_stateless).
  void fill_embryonic(uint64_t first) {
    for (unsigned t = 0; t < workers; ++t) {
      dp::worker& w = *od->workers[t];
      for (uint64_t f = first; od->dp.ct->syn_admit(w.ct); ++f) {
        dp::flow_key k{client_ip(f), kVip, client_port(f), 80, IPPROTO_TCP};
        const backend& b = svc->pick(dp::conntrack::hash(k));
        if (!od->dp.ct->insert(w.ct, k, {b.ip, b.port}, svc->id, dp::flow_state::tcp_syn,
                               rte_rdtsc())) {
          std::cerr << "flow table full filling SYN_SENT at " << f << "\n";
          std::abort();
        }
      }
      first += 1u << 24;
    }
  }

  enum class kind { established, reply, new_flow, syn_refused };

  // Writes the packet of `flow` into m: a forward ACK, a backend's reply, or a SYN.
  void fill(rte_mbuf* m, uint64_t flow, kind k) const {
    rte_pktmbuf_reset(m);
    auto* d = rte_pktmbuf_mtod(m, uint8_t*);
    const uint16_t len = static_cast<uint16_t>(54 + payload);
    std::memcpy(d, tmpl, std::max<uint16_t>(60, len));
    m->data_len = m->pkt_len = std::max<uint16_t>(60, len);
    auto* eth = reinterpret_cast<rte_ether_hdr*>(d);
    auto* ip = reinterpret_cast<rte_ipv4_hdr*>(eth + 1);
    auto* th = reinterpret_cast<rte_tcp_hdr*>(ip + 1);
    ip->total_length = rte_cpu_to_be_16(static_cast<uint16_t>(40 + payload));
    if (k == kind::reply) {
      dp::flow_key fk{client_ip(flow), kVip, client_port(flow), 80, IPPROTO_TCP};
      const backend& b = svc->pick(dp::conntrack::hash(fk));
      eth->dst_addr = od->dp.ports[1].mac;
      ip->src_addr = rte_cpu_to_be_32(b.ip);
      ip->dst_addr = rte_cpu_to_be_32(fk.src_ip);
      th->src_port = rte_cpu_to_be_16(b.port);
      th->dst_port = rte_cpu_to_be_16(fk.src_port);
      th->tcp_flags = RTE_TCP_ACK_FLAG;
    } else {
      eth->dst_addr = od->dp.ports[0].mac;
      ip->src_addr = rte_cpu_to_be_32(client_ip(flow));
      ip->dst_addr = rte_cpu_to_be_32(kVip);
      th->src_port = rte_cpu_to_be_16(client_port(flow));
      th->dst_port = RTE_BE16(80);
      th->tcp_flags =
          k == kind::new_flow || k == kind::syn_refused ? RTE_TCP_SYN_FLAG : RTE_TCP_ACK_FLAG;
    }
    // The header checksum right, as on the wire (the pipeline checks it); the template's
    // field is 0, so the sum is over the patched header as it stands.
    ip->hdr_checksum = rte_ipv4_cksum(ip);
  }

  // Cycles for `packets` packets on one worker: fill + process_burst + the worker loop's
  // sweep, and the fill alone (so the packet path's own cost can be reported).
  std::pair<double, double> run_one(dp::worker& w, const std::vector<uint64_t>& flows, kind k,
                                    uint64_t packets) {
    rte_mbuf* pkts[dp::kBurst];
    if (rte_pktmbuf_alloc_bulk(od->dp.pool, pkts, dp::kBurst) != 0) std::abort();
    uint64_t i = 0;
    uint64_t start = rte_rdtsc();
    while (i < packets) {
      for (auto* m : pkts) fill(m, flows[i++ % flows.size()], k);
      w.now = rte_rdtsc();
      dp::process_burst(w, snap.get(), pkts, dp::kBurst, k == kind::reply ? 1 : 0);
      dp::offline_dataplane::drop_tx(w);  // the same mbufs come round again
      od->dp.ct->sweep_paced(w.ct, w.now);
    }
    double total = static_cast<double>(rte_rdtsc() - start);
    i = 0;
    start = rte_rdtsc();
    while (i < packets) {
      for (auto* m : pkts) fill(m, flows[i++ % flows.size()], k);
      asm volatile("" ::: "memory");
    }
    double refill = static_cast<double>(rte_rdtsc() - start);
    rte_pktmbuf_free_bulk(pkts, dp::kBurst);
    return {total, refill};
  }

  // Every worker on its own thread, pinned to CPU t, on the flows it owns. Returns the
  // workers' mean ns/packet and their summed Mpps.
  std::pair<double, double> run(const std::vector<uint64_t>& flows, kind k, uint64_t packets) {
    const double ns_per_cycle = 1e9 / static_cast<double>(rte_get_tsc_hz());
    std::vector<double> ns(workers);
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < workers; ++t) {
      threads.emplace_back([&, t] {
        cpu_set_t cpus;
        CPU_ZERO(&cpus);
        CPU_SET(t % std::thread::hardware_concurrency(), &cpus);
        pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus);
        std::vector<uint64_t> mine;
        for (uint64_t f : flows) {
          if (f % workers == t) mine.push_back(f);
        }
        auto [total, refill] = run_one(*od->workers[t], mine, k, packets);
        ns[t] = (total - refill) * ns_per_cycle / static_cast<double>(packets);
      });
    }
    for (auto& th : threads) th.join();
    double mean = 0, mpps = 0;
    for (double x : ns) {
      mean += x / workers;
      mpps += 1e3 / x;
    }
    return {mean, mpps};
  }
};

void bench_pipeline(const std::vector<uint64_t>& flow_counts, int runs, const std::string& only,
                    unsigned workers, uint32_t source_limit) {
  const uint64_t kPackets = 2'000'000;
  for (uint64_t n : flow_counts) {
    std::mt19937_64 rng(n);
    std::vector<uint64_t> random_flows(1 << 20);
    for (auto& f : random_flows) f = rng() % n;
    std::unique_ptr<pipeline_bench> b;
    for (auto k : {pipeline_bench::kind::established, pipeline_bench::kind::reply,
                   pipeline_bench::kind::new_flow, pipeline_bench::kind::syn_refused}) {
      const char* name = k == pipeline_bench::kind::established ? "established"
                         : k == pipeline_bench::kind::reply     ? "reply"
                         : k == pipeline_bench::kind::new_flow  ? "new_flow"
                                                                : "syn_refused";
      if (!only.empty() && only != name) continue;
      const bool fresh =
          k == pipeline_bench::kind::new_flow || k == pipeline_bench::kind::syn_refused;
      // The table is sized as an operator would size it for n flows (n plus a little);
      // new_flow needs room for every flow it adds on top.
      uint64_t room = k == pipeline_bench::kind::new_flow ? kPackets * uint64_t(runs) * workers : 0;
      auto capacity = static_cast<uint32_t>(n + n / 16 + room + 1024 * workers);
      // syn_refused: 1024 SYN_SENT entries per worker, all there before the flood's SYNs.
      const uint32_t syn_max = k == pipeline_bench::kind::syn_refused ? 1024 * workers : capacity;
      if (!b || b->capacity != capacity || b->syn_max != syn_max) {
        b.reset();
        b = std::make_unique<pipeline_bench>(capacity, workers, syn_max, source_limit);
        b->insert_flows(n);
        if (k == pipeline_bench::kind::syn_refused) b->fill_embryonic(1ull << 30);
      }
      auto sum = [&](auto member) {
        uint64_t x = 0;
        for (const auto& w : b->od->workers) x += (w->counters.*member).get();
        return x;
      };
      uint32_t embryonic_before = 0;
      for (unsigned t = 0; t < workers; ++t) embryonic_before += b->od->dp.ct->embryonic(t);
      const uint64_t created_before = sum(&worker_counters::flows_created);
      const uint64_t expired_before = sum(&worker_counters::flows_expired);
      std::vector<double> ns, mpps;
      uint64_t next_new = n;
      for (int r = 0; r < runs; ++r) {
        std::vector<uint64_t> flows;
        if (fresh) {
          flows.resize(kPackets * workers);
          for (auto& f : flows) f = next_new++;
        }
        auto [mean_ns, total_mpps] = b->run(fresh ? flows : random_flows, k, kPackets);
        ns.push_back(mean_ns);
        mpps.push_back(total_mpps);
      }
      uint64_t drops = 0, full = 0;
      for (const auto& w : b->od->workers) {
        for (const auto& d : w->counters.drops) drops += d.get();
        full += w->counters.flows_table_full.get();
      }
      json extra = json::object();
      if (k == pipeline_bench::kind::syn_refused) {
        // The cap held, nothing was made or expired, and every established flow is there.
        uint32_t embryonic_after = 0;
        for (unsigned t = 0; t < workers; ++t) embryonic_after += b->od->dp.ct->embryonic(t);
        uint64_t established = 0;
        for (uint64_t f = 0; f < n; ++f) {
          dp::flow_key key{client_ip(f), kVip, client_port(f), 80, IPPROTO_TCP};
          established += b->od->dp.ct->lookup(key, dp::conntrack::hash(key)).entry != nullptr;
        }
        extra = {{"syn_max", b->od->dp.ct->syn_max() * workers},
                 {"embryonic_before", embryonic_before},
                 {"embryonic_after", embryonic_after},
                 {"syn_stateless", sum(&worker_counters::syn_stateless)},
                 {"flows_created", sum(&worker_counters::flows_created) - created_before},
                 {"flows_expired", sum(&worker_counters::flows_expired) - expired_before},
                 {"established_found", established}};
      }
      json row = {{"bench", "pipeline"},
                  {"case", name},
                  {"flows", n},
                  {"workers", workers},
                  {"source_limit", source_limit},
                  {"table_capacity", capacity},
                  {"table_bytes", b->od->dp.ct->memory_bytes()},
                  {"packets_per_run", kPackets * workers},
                  {"runs", runs},
                  {"ns_per_packet", to_json(summarize(ns))},
                  {"mpps", summarize(mpps).median},
                  {"drops", drops},
                  {"table_full", full}};
      row.update(extra);
      std::cout << row.dump() << std::endl;
    }
  }
}

// ---- filter ---------------------------------------------------------------------------

// n signatures of the kinds IDS rule sets carry: literal strings (paths, commands, tokens)
// and regexes such as `GET /[a-z]+\.php\?id=[0-9]+'`, each with a distinctive part so that
// none matches the benchmark's clean HTTP requests (the common case: no match).
std::vector<filter_rule_config> signatures(size_t n) {
  static const char* words[] = {"passwd",  "cmd.exe", "xp_cmdshell", "base64_decode", "wget",
                                "eval\\(", "union",   "<script",     "..%2f",         "jndi:ldap"};
  std::vector<filter_rule_config> out;
  std::mt19937_64 rng(42);
  for (size_t i = 0; i < n; ++i) {
    filter_rule_config r;
    r.name = "sig-" + std::to_string(i);
    const std::string tag = std::to_string(rng() % 100000);
    const std::string w = words[i % std::size(words)];
    switch (i % 4) {
      case 0:  // literal
        r.pattern = "/" + w + "/" + tag;
        break;
      case 1:  // literal, any case
        r.pattern = w + "-" + tag;
        r.flags = {"caseless"};
        break;
      case 2:  // SQL injection shaped regex
        r.pattern = "GET /[a-z]+" + tag + "\\.php\\?id=[0-9]+'";
        break;
      default:  // header regex
        r.pattern = "\r\nX-" + tag + ":\\s*[a-z]{4,}\\d+";
        r.flags = {"caseless"};
        break;
    }
    r.depth = 512;
    out.push_back(std::move(r));
  }
  return out;
}

// ns/packet of established-flow packets carrying an HTTP request of each payload size, with
// 0, 10, 100, 1000 rules (none matching), measured side by side: every run goes over every
// combination, so the drift of a shared machine hits them all alike.
void bench_filter(const std::vector<uint64_t>& rule_counts, const std::vector<uint64_t>& payloads,
                  int runs) {
  const uint64_t kPackets = 1'000'000, kFlows = 1000;
  pipeline_bench b(static_cast<uint32_t>(kFlows * 2 + 1024), 1);
  b.insert_flows(kFlows);
  std::string http =
      "GET /static/app/index.html?lang=en HTTP/1.1\r\nHost: shop.example.com\r\n"
      "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/119.0\r\n"
      "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
      "Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n"
      "Connection: keep-alive\r\nCookie: session=7f3c9a1e5b2d4c6f8a0e1b3d5f7a9c2e; theme=dark\r\n";
  while (http.size() < pipeline_bench::kMaxPayload)
    http += "X-Trace-Id: 0af7651916cd43dd8448eb211c80319c\r\n";
  std::memcpy(b.tmpl + 54, http.data(), pipeline_bench::kMaxPayload);
  std::mt19937_64 rng(1);
  std::vector<uint64_t> flows(1 << 16);
  for (auto& f : flows) f = rng() % kFlows;
  control::compiler comp(kMaglevDefaultMaxSize, 16);

  // The filter sets, compiled once each (compile time: for the largest).
  std::vector<std::shared_ptr<const filter_set>> sets;
  for (uint64_t n : rule_counts) {
    auto rules = signatures(n);
    std::vector<uint32_t> slots(n);
    for (uint32_t i = 0; i < n; ++i) slots[i] = i;
    std::vector<double> ms;
    std::shared_ptr<const filter_db> db;
    for (int r = 0; r < (n ? runs : 0); ++r) {
      auto t0 = std::chrono::steady_clock::now();
      auto c = control::compile_filters(rules, 1);
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      if (!c) {
        std::cerr << c.message() << "\n";
        std::abort();
      }
      db = *c;
    }
    if (n) {
      size_t bytes = 0;
      hs_database_size(db->db, &bytes);
      std::cout << json{{"bench", "filter_compile"},
                        {"rules", n},
                        {"runs", runs},
                        {"ms", to_json(summarize(ms))},
                        {"database_bytes", bytes}}
                       .dump()
                << std::endl;
    }
    sets.push_back(control::build_filter_set(db, rules, slots, comp));
  }
  std::vector<std::vector<double>> ns(payloads.size() * rule_counts.size());
  b.run(flows, pipeline_bench::kind::established, kPackets);  // warm-up (caches, branch history)
  for (int r = 0; r < runs; ++r) {
    for (size_t p = 0; p < payloads.size(); ++p) {
      b.payload = static_cast<uint16_t>(payloads[p]);
      for (size_t i = 0; i < rule_counts.size(); ++i) {
        b.snap->filters = sets[i];
        ns[p * rule_counts.size() + i].push_back(
            b.run(flows, pipeline_bench::kind::established, kPackets).first);
      }
    }
  }
  uint64_t drops = 0, hits = 0;
  for (const auto& d : b.od->workers[0]->counters.drops) drops += d.get();
  for (uint32_t i = 0; i < b.od->dp.filter_max_rules; ++i)
    hits += b.od->workers[0]->filter_hits[i].get();
  for (size_t p = 0; p < payloads.size(); ++p) {
    const double base = summarize(ns[p * rule_counts.size()]).median;
    for (size_t i = 0; i < rule_counts.size(); ++i) {
      const auto s = summarize(ns[p * rule_counts.size() + i]);
      std::cout << json{{"bench", "filter"},
                        {"case", "established"},
                        {"payload", payloads[p]},
                        {"rules", rule_counts[i]},
                        {"packets_per_run", kPackets},
                        {"runs", runs},
                        {"ns_per_packet", to_json(s)},
                        {"added_ns", s.median - base},
                        {"mpps", 1e3 / s.median},
                        {"drops", drops},
                        {"hits", hits}}
                       .dump()
                << std::endl;
    }
  }
  // Check that the packets measured were scanned: with one more rule (count) matching the
  // requests' path, every packet of a run counts one hit.
  {
    auto rules = signatures(rule_counts.back());
    filter_rule_config check;
    check.name = "check";
    check.pattern = "GET /static/app/index\\.html";
    check.drop = false;
    rules.push_back(check);
    std::vector<uint32_t> slots(rules.size());
    for (uint32_t i = 0; i < rules.size(); ++i) slots[i] = i;
    auto db = control::compile_filters(rules, 1);
    if (!db) std::abort();
    b.snap->filters = control::build_filter_set(*db, rules, slots, comp);
    b.payload = static_cast<uint16_t>(payloads.back());
    const uint32_t slot = slots.back();
    const uint64_t before = b.od->workers[0]->filter_hits[slot].get();
    const uint64_t packets = 32 * 1000;
    b.run(flows, pipeline_bench::kind::established, packets);
    std::cout << json{{"bench", "filter_check"},
                      {"rules", rules.size()},
                      {"payload", b.payload},
                      {"packets", packets},
                      {"hits", b.od->workers[0]->filter_hits[slot].get() - before}}
                     .dump()
              << std::endl;
  }
  b.snap->filters = nullptr;
}

// ---- fragments --------------------------------------------------------------

// A 3000-byte TCP datagram of an established flow, arriving in three fragments (1480, 1480,
// 40 bytes of IP payload): reassembly, the flow lookup and NAT, and fragmentation again for
// the backend port's 1500 MTU (three fragments out). Time per datagram, the building of the
// fragments (allocation, copies, header checksums) and freeing what went out measured apart
// and taken off.
void bench_fragments(int runs) {
  constexpr uint64_t kFlows = 1000, kDatagrams = 200'000;
  constexpr uint16_t kPerBurst = 10;  // datagrams per burst: 30 fragments
  pipeline_bench b(2048, 1);
  b.insert_flows(kFlows);
  dp::worker& w = *b.od->workers[0];
  auto build = [&](rte_mbuf** m, uint64_t flow, uint16_t id) {
    static const uint16_t kOff[3] = {0, 1480, 2960}, kLen[3] = {1480, 1480, 40};
    for (int f = 0; f < 3; ++f) {
      auto* d = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m[f], 34 + kLen[f]));
      std::memcpy(d, b.tmpl, 34);
      auto* eth = reinterpret_cast<rte_ether_hdr*>(d);
      eth->dst_addr = b.od->dp.ports[0].mac;
      auto* ip = reinterpret_cast<rte_ipv4_hdr*>(eth + 1);
      ip->src_addr = rte_cpu_to_be_32(client_ip(flow));
      ip->dst_addr = rte_cpu_to_be_32(kVip);
      ip->packet_id = rte_cpu_to_be_16(id);
      ip->total_length = rte_cpu_to_be_16(20 + kLen[f]);
      ip->fragment_offset = rte_cpu_to_be_16((f < 2 ? RTE_IPV4_HDR_MF_FLAG : 0) | kOff[f] / 8);
      uint8_t* l4 = d + 34;
      std::memset(l4, 'x', kLen[f]);
      if (f == 0) {
        auto* th = reinterpret_cast<rte_tcp_hdr*>(l4);
        std::memset(th, 0, sizeof(*th));
        th->src_port = rte_cpu_to_be_16(client_port(flow));
        th->dst_port = RTE_BE16(80);
        th->data_off = 5 << 4;
        th->tcp_flags = RTE_TCP_ACK_FLAG;
      }
      ip->hdr_checksum = 0;
      ip->hdr_checksum = rte_ipv4_cksum(ip);
    }
  };
  std::vector<double> ns;
  uint64_t out = 0;
  for (int r = 0; r < runs; ++r) {
    rte_mbuf* pkts[kPerBurst * 3];
    uint16_t id = 0;
    auto pass = [&](bool process) {
      const uint64_t start = rte_rdtsc();
      for (uint64_t i = 0; i < kDatagrams; i += kPerBurst) {
        if (rte_pktmbuf_alloc_bulk(b.od->dp.pool, pkts, kPerBurst * 3) != 0) std::abort();
        for (uint16_t d = 0; d < kPerBurst; ++d) build(pkts + 3 * d, (i + d) % kFlows, ++id);
        if (process) {
          w.now = rte_rdtsc();
          dp::process_burst(w, b.snap.get(), pkts, kPerBurst * 3, 0);
          for (const auto& t : w.tx) out += t.n;
          dp::offline_dataplane::drain_tx(w);
        } else {
          rte_pktmbuf_free_bulk(pkts, kPerBurst * 3);
        }
      }
      return static_cast<double>(rte_rdtsc() - start);
    };
    const double total = pass(true), fill = pass(false);
    ns.push_back((total - fill) * 1e9 / static_cast<double>(rte_get_tsc_hz()) /
                 static_cast<double>(kDatagrams));
  }
  uint64_t drops = 0;
  for (const auto& d : w.counters.drops) drops += d.get();
  std::cout << json{{"bench", "pipeline"},  {"case", "fragments"},
                    {"flows", kFlows},      {"datagram_bytes", 3020},
                    {"fragments_in", 3},    {"datagrams_per_run", kDatagrams},
                    {"runs", runs},         {"ns_per_datagram", to_json(summarize(ns))},
                    {"fragments_out", out}, {"reassembled", w.counters.frag_reassembled.get()},
                    {"drops", drops}}
                   .dump()
            << std::endl;
}

// ---- dns ------------------------------------------------------------------------------

// DNS queries per second on one worker: a UDP query to the DNS address goes through the
// whole packet path (parse, zone lookup, answer written in place, checksums, route,
// neighbor, TX batch), for names that exist (hit) and for the ndots:5 search-list misses a
// pod sends first (nxdomain).
void bench_dns(const std::vector<uint64_t>& service_counts, int runs) {
  constexpr uint32_t kDns = 0xc6130035;  // 198.19.0.53
  const uint64_t kQueries = 2'000'000;
  for (uint64_t n : service_counts) {
    node_config cfg;
    cfg.ports = {{"eth0", "", {0xc61200fe, 24}}, {"eth1", "", {0xc61201fe, 24}}};
    cfg.routes = {{{kClientNet, 17}, kGateway, "eth0"}};
    rte_ether_addr macs[2] = {{{2, 0, 0, 0, 0, 1}}, {{2, 0, 0, 0, 0, 2}}};
    dp::offline_options o;
    o.flow_capacity = 1024;
    o.mbufs = 1023 + dp::kBurst;
    dp::offline_dataplane od(cfg, macs, o);
    od.learn(0, kGateway, {{2, 0xc1, 0, 0, 0, 1}});
    od.dp.dns_addresses = {kDns};
    std::string yaml;
    for (uint64_t i = 0; i < n; ++i) {
      yaml += "apiVersion: v1\nkind: Service\nmetadata: {name: svc-" + std::to_string(i) +
              "}\nspec:\n  clusterIP: " + format_ipv4(0xc6130100 + static_cast<uint32_t>(i)) +
              "\n  ports: [{name: http, port: 80}]\n---\n";
    }
    control::store st(ipv4_prefix{0xc6130000, 16});
    auto objs = model::parse_manifests(yaml, "bench");
    if (!objs || !st.apply(std::move(*objs), control::source::file)) std::abort();
    control::compiler c(kMaglevDefaultMaxSize, static_cast<uint32_t>(n + 16));
    c.enable_dns(dns_config{.addresses = {kDns}}, {0xc6130000, 16});
    auto snap = std::move(*c.compile(st));

    // 1024 query frames per case, asked round robin.
    std::mt19937_64 rng(n);
    for (const char* which : {"hit", "nxdomain"}) {
      const bool hit = which[0] == 'h';
      std::vector<std::vector<uint8_t>> frames;
      for (int q = 0; q < 1024; ++q) {
        std::string name = "svc-" + std::to_string(rng() % n) + ".default.svc.cluster.local";
        if (!hit) name += ".default.svc.cluster.local";
        std::vector<uint8_t> dnsq = {0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0};
        for (size_t at = 0; at < name.size();) {
          size_t dot = std::min(name.find('.', at), name.size());
          dnsq.push_back(static_cast<uint8_t>(dot - at));
          dnsq.insert(dnsq.end(), name.begin() + at, name.begin() + dot);
          at = dot + 1;
        }
        dnsq.insert(dnsq.end(), {0, 0, 1, 0, 1});
        std::vector<uint8_t> f(42 + dnsq.size());
        auto* eth = reinterpret_cast<rte_ether_hdr*>(f.data());
        eth->dst_addr = od.dp.ports[0].mac;
        eth->src_addr = {{2, 0xc1, 0, 0, 0, 1}};
        eth->ether_type = RTE_BE16(RTE_ETHER_TYPE_IPV4);
        auto* ip = reinterpret_cast<rte_ipv4_hdr*>(eth + 1);
        ip->version_ihl = RTE_IPV4_VHL_DEF;
        ip->total_length = rte_cpu_to_be_16(static_cast<uint16_t>(f.size() - 14));
        ip->time_to_live = 64;
        ip->next_proto_id = IPPROTO_UDP;
        ip->src_addr = rte_cpu_to_be_32(client_ip(static_cast<uint64_t>(q)));
        ip->dst_addr = rte_cpu_to_be_32(kDns);
        auto* uh = reinterpret_cast<rte_udp_hdr*>(ip + 1);
        uh->src_port = rte_cpu_to_be_16(static_cast<uint16_t>(1024 + q));
        uh->dst_port = RTE_BE16(53);
        uh->dgram_len = rte_cpu_to_be_16(static_cast<uint16_t>(8 + dnsq.size()));
        std::memcpy(uh + 1, dnsq.data(), dnsq.size());
        ip->hdr_checksum = rte_ipv4_cksum(ip);
        frames.push_back(std::move(f));
      }
      dp::worker& w = *od.workers[0];
      auto fill = [&](rte_mbuf* m, uint64_t i) {
        const auto& f = frames[i % frames.size()];
        rte_pktmbuf_reset(m);
        std::memcpy(rte_pktmbuf_mtod(m, uint8_t*), f.data(), f.size());
        m->data_len = m->pkt_len = static_cast<uint32_t>(f.size());
      };
      const size_t outcome =
          static_cast<size_t>(hit ? dns::outcome::noerror : dns::outcome::nxdomain);
      const uint64_t answered_before = w.counters.dns[outcome].get();
      std::vector<double> ns, mqps;
      for (int r = 0; r < runs; ++r) {
        rte_mbuf* pkts[dp::kBurst];
        if (rte_pktmbuf_alloc_bulk(od.dp.pool, pkts, dp::kBurst) != 0) std::abort();
        uint64_t i = 0, start = rte_rdtsc();
        while (i < kQueries) {
          for (auto* m : pkts) fill(m, i++);
          w.now = rte_rdtsc();
          dp::process_burst(w, snap.get(), pkts, dp::kBurst, 0);
          dp::offline_dataplane::drop_tx(w);
        }
        auto total = static_cast<double>(rte_rdtsc() - start);
        i = 0;
        start = rte_rdtsc();
        while (i < kQueries) {
          for (auto* m : pkts) fill(m, i++);
          asm volatile("" ::: "memory");
        }
        auto refill = static_cast<double>(rte_rdtsc() - start);
        rte_pktmbuf_free_bulk(pkts, dp::kBurst);
        double per = (total - refill) * 1e9 / static_cast<double>(rte_get_tsc_hz()) /
                     static_cast<double>(kQueries);
        ns.push_back(per);
        mqps.push_back(1e3 / per);
      }
      const uint64_t answered = w.counters.dns[outcome].get() - answered_before;
      std::cout << json{{"bench", "dns_pipeline"},
                        {"case", which},
                        {"services", n},
                        {"zone_names", c.dns_names()},
                        {"queries_per_run", kQueries},
                        {"runs", runs},
                        {"ns_per_query", to_json(summarize(ns))},
                        {"mqps", summarize(mqps).median},
                        {"answered_as_expected",
                         answered == kQueries * static_cast<uint64_t>(runs)}}
                       .dump()
                << std::endl;
    }
  }
}

// ---- maglev ---------------------------------------------------------------------------

std::vector<maglev_backend> backends(size_t n, uint32_t first = 0x0a000001) {
  std::vector<maglev_backend> b;
  for (size_t i = 0; i < n; ++i) b.push_back({static_cast<uint32_t>(first + i), 9376, 1});
  return b;
}

double moved_fraction(const std::vector<maglev_backend>& a, const std::vector<uint16_t>& ta,
                      const std::vector<maglev_backend>& b, const std::vector<uint16_t>& tb) {
  size_t moved = 0;
  for (size_t i = 0; i < ta.size(); ++i) {
    moved += a[ta[i]].ip != b[tb[i]].ip;
  }
  return static_cast<double>(moved) / static_cast<double>(ta.size());
}

void bench_maglev(int runs) {
  for (uint32_t m : {65537u, 655373u}) {
    for (size_t n : {100u, 1000u}) {
      auto b = backends(n);
      std::vector<double> ms;
      std::vector<uint16_t> table;
      for (int r = 0; r < runs; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        table = maglev_build(b, m);
        ms.push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count());
      }
      std::vector<size_t> counts(n);
      for (auto s : table) counts[s]++;
      double mean = static_cast<double>(m) / static_cast<double>(n);
      double imbalance =
          static_cast<double>(*std::max_element(counts.begin(), counts.end())) / mean;
      auto removed = b;
      removed.erase(removed.begin() + static_cast<long>(n / 2));
      auto added = b;
      added.push_back({static_cast<uint32_t>(0x0b000001), 9376, 1});
      double rm = moved_fraction(b, table, removed, maglev_build(removed, m));
      double add = moved_fraction(b, table, added, maglev_build(added, m));
      std::cout << json{{"bench", "maglev"},
                        {"case", "build"},
                        {"table_size", m},
                        {"backends", n},
                        {"runs", runs},
                        {"build_ms", to_json(summarize(ms))},
                        {"max_over_mean", imbalance},
                        {"moved_on_remove", rm},
                        {"moved_on_add", add},
                        {"ideal_remove", 1.0 / static_cast<double>(n)},
                        {"ideal_add", 1.0 / static_cast<double>(n + 1)}}
                       .dump()
                << std::endl;
    }
  }
}

// ---- sync ----------------------------------------------------------------------------

std::string service_doc(size_t i, unsigned endpoints, unsigned generation) {
  std::string name = "svc-" + std::to_string(i);
  std::string ip = format_ipv4(0x0a600000 + 10 + static_cast<uint32_t>(i));  // 10.96.0.0/12
  std::string out = "apiVersion: v1\nkind: Service\nmetadata: {name: " + name +
                    ", namespace: bench}\nspec:\n  clusterIP: " + ip +
                    "\n  ports: [{name: http, port: 80, targetPort: 8080}]\n---\n"
                    "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: " +
                    name +
                    "-x\n  namespace: bench\n  labels: {kubernetes.io/service-name: " + name +
                    "}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints:\n";
  for (unsigned e = 0; e < endpoints; ++e) {
    // generation shifts one address: the "one endpoint changed" update.
    uint32_t a = 0x0ac00000 + static_cast<uint32_t>(i) * 16 + e + (e == 0 ? generation * 4096 : 0);
    out += "  - addresses: [\"" + format_ipv4(a) + "\"]\n";
  }
  return out + "---\n";
}

// Control-plane sync: a whole load, then single changes, each measured from the request to
// the new snapshot published (the next worker loop uses it).
// dns: the node also builds the DNS zone with every snapshot ([dns] on), to show its cost.
void bench_sync(const std::vector<uint64_t>& counts, unsigned endpoints, int runs, bool dns) {
  auto* qsbr = static_cast<rte_rcu_qsbr*>(std::aligned_alloc(64, 4096));
  rte_rcu_qsbr_init(qsbr, 1);
  for (uint64_t n : counts) {
    std::string all;
    for (size_t i = 0; i < n; ++i) all += service_doc(i, endpoints, 0);
    std::vector<double> load_ms, parse_ms, apply_ms, change_ms, add_ms;
    for (int r = 0; r < runs; ++r) {
      std::atomic<const snapshot*> slot{nullptr};
      control::publisher pub(slot, qsbr);
      node_config cfg;
      cfg.service_cidr = {0x0a600000, 12};
      if (dns) cfg.dns.addresses = {0x0a60000a};
      control::node node(cfg,
                         [&](std::unique_ptr<const snapshot> s) { pub.publish(std::move(s)); });
      // The load from text, timed as its two halves: decoding the YAML, and applying the
      // decoded objects (store, endpoints, Maglev tables, lookup tables, publish).
      auto t0 = std::chrono::steady_clock::now();
      auto objs = model::parse_manifests(all, "bench");
      auto t1 = std::chrono::steady_clock::now();
      if (!objs || !node.apply(std::move(*objs), control::source::file)) std::abort();
      auto t2 = std::chrono::steady_clock::now();
      parse_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      apply_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
      load_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t0).count());
      for (unsigned c = 1; c <= 20; ++c) {
        std::string one = service_doc(c * 7919 % n, endpoints, c);
        auto a = std::chrono::steady_clock::now();
        if (!node.apply({{"change", one}}, control::source::socket)) std::abort();
        change_ms.push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a)
                .count());
        std::string added = service_doc(n + c, endpoints, 0);
        a = std::chrono::steady_clock::now();
        if (!node.apply({{"add", added}}, control::source::socket)) std::abort();
        add_ms.push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a)
                .count());
      }
    }
    auto p99 = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[std::min(v.size() - 1, v.size() * 99 / 100)];
    };
    std::cout << json{{"bench", "sync"},
                      {"case", dns ? "ferry + DNS zone" : "ferry"},
                      {"services", n},
                      {"endpoints_per_service", endpoints},
                      {"runs", runs},
                      {"full_load_ms", to_json(summarize(load_ms))},
                      {"yaml_decode_ms", to_json(summarize(parse_ms))},
                      {"apply_decoded_ms", to_json(summarize(apply_ms))},
                      {"endpoint_change_ms", to_json(summarize(change_ms))},
                      {"endpoint_change_p99_ms", p99(change_ms)},
                      {"service_add_ms", to_json(summarize(add_ms))},
                      {"service_add_p99_ms", p99(add_ms)}}
                     .dump()
              << std::endl;
  }
  std::free(qsbr);
}

std::vector<uint64_t> parse_list(const std::string& s) {
  std::vector<uint64_t> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::stoull(item));
  return out;
}

int usage() {
  std::cerr << "usage: ferry-perf pipeline [--flows N,N,...] [--runs R] [--case NAME] "
               "[--workers W] [--no-huge] [--source-limit RATE]\n"
               "       ferry-perf pipeline --filter-rules N,N,... [--payload B,B,...] [--runs R] "
               "[--no-huge]\n"
               "       ferry-perf maglev [--runs R]\n"
               "       ferry-perf sync [--services N,N,...] [--runs R] [--dns]\n"
               "       ferry-perf dns [--services N,N,...] [--runs R] [--no-huge]\n"
               "       ferry-perf gen [--case throughput|zero_loss|conn] ... (see gen.cpp)\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  std::string cmd = argv[1];
  if (cmd == "gen") return ferry::perf::gen_main(argc - 1, argv + 1);
  std::vector<uint64_t> flows{1000, 1000000};
  std::vector<uint64_t> services{1000, 10000};
  int runs = 5;
  unsigned workers = 1;
  bool huge = true;
  bool dns = false;
  uint32_t source_limit = 0;
  std::string only;
  std::vector<uint64_t> filter_rules, payloads{64, 512};
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--flows" && i + 1 < argc) {
      flows = parse_list(argv[++i]);
    } else if (a == "--runs" && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--services" && i + 1 < argc) {
      services = parse_list(argv[++i]);
    } else if (a == "--case" && i + 1 < argc) {
      only = argv[++i];
    } else if (a == "--workers" && i + 1 < argc) {
      workers = static_cast<unsigned>(std::max(1, std::atoi(argv[++i])));
    } else if (a == "--filter-rules" && i + 1 < argc) {
      filter_rules = parse_list(argv[++i]);
    } else if (a == "--payload" && i + 1 < argc) {
      payloads = parse_list(argv[++i]);
      for (uint64_t p : payloads) {
        if (p > 1400) return usage();
      }
    } else if (a == "--source-limit" && i + 1 < argc) {
      source_limit = static_cast<uint32_t>(std::max(0L, std::atol(argv[++i])));
    } else if (a == "--no-huge") {
      huge = false;
    } else if (a == "--dns") {
      dns = true;
    } else {
      return usage();
    }
  }
  if (cmd == "maglev") {
    bench_maglev(runs);
    return 0;
  }
  if (cmd == "sync") {
    bench_sync(services, 10, runs, dns);
    return 0;
  }
  if (cmd != "pipeline" && cmd != "dns") return usage();
  std::vector<std::string> args{"ferry-perf",    "-l",         "0",           "--no-pci",
                                "--file-prefix", "ferry-perf", "--log-level", "*:error",
                                "--no-telemetry"};
  if (!huge) args.insert(args.end(), {"--no-huge", "-m", "6144"});
  std::vector<char*> eal;
  for (auto& a : args) eal.push_back(a.data());
  if (rte_eal_init(static_cast<int>(eal.size()), eal.data()) < 0) {
    std::cerr << "EAL init failed (hugepages set up? perf/run.sh does it, or pass --no-huge)\n";
    return 1;
  }
  if (cmd == "dns") {
    bench_dns(services, runs);
  } else if (!filter_rules.empty()) {
    bench_filter(filter_rules, payloads, runs);
  } else if (only == "fragments") {
    bench_fragments(runs);
  } else {
    bench_pipeline(flows, runs, only, workers, source_limit);
  }
  rte_eal_cleanup();
  return 0;
}
