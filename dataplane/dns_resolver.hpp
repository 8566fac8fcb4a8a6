// ExternalName targets outside the cluster zone, resolved for clients over UDP and TCP (RFC
// 1034 4.3.2: the answer follows the CNAME). A worker cannot wait for an upstream, so it hands
// such a query (dns::outcome::resolve) to the kernel behind the DNS TAP port, as it does TCP; this
// resolver, run by the DNS server's thread in that namespace, answers it: the responder
// writes the CNAME chain, the chain's last target is asked of a [dns] upstream from the DNS
// address (its answers come back to the TAP: pipeline.cpp sends UDP from an upstream to a
// DNS address there), and the target's records are appended, their TTLs capped. Answers are
// kept in a bounded cache; pending client queries are bounded; no answer in time is SERVFAIL.
// The TCP server hands its own such queries over with resolve_tcp() and takes the finished
// answers back with take_tcp_answers(), in the same thread.
//
// Thread-safety: open() runs on the thread that made the namespace; afterwards only the DNS
// server's thread uses it (poll_fds, serve); counters() may be read from any thread.
#pragma once

#include <poll.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dataplane.hpp"
#include "ferry/dns.hpp"
#include "ferry/result.hpp"

namespace ferry::dns {

/// What an upstream said about a name: the records (CNAMEs and the type asked) whose owner is
/// the name or a name the kept CNAMEs lead to, each with its TTL capped.
struct upstream_answer {
  struct record {
    std::string owner;  // lower-case wire format
    uint16_t type = 0;
    uint32_t ttl = 0;
    std::string rdata;  // names (CNAME) uncompressed
  };
  uint16_t rcode = 0;   // 0 or NXDOMAIN: cacheable; anything else is answered SERVFAIL
  uint32_t ttl = 0;     // how long it may be kept: the smallest record TTL, capped
  uint32_t capped = 0;  // records whose TTL the cap cut
  std::vector<record> records;
};

// Kept per answer (the rest are left out): more would not fit a UDP answer anyway, and it
// bounds the cache at about external_cache_size * 4 KiB.
constexpr size_t kMaxUpstreamRecords = 64, kMaxUpstreamBytes = 4096;

/// A query for `name` (lower-case wire) and `qtype`, with EDNS (kEdnsSize) and RD.
std::string upstream_query(uint16_t id, const std::string& name, uint16_t qtype);

/// Reads an upstream's response to upstream_query(id, name, qtype); false when it is not one
/// (wrong id, question or flags, malformed). Only A, AAAA and TXT records of the type asked
/// (no names in their data) and CNAMEs are kept; TTLs (and the answer's) are capped at
/// ttl_max, a negative answer is kept min(ttl_max, its SOA's TTL).
bool parse_upstream(const uint8_t* msg, size_t len, uint16_t id, const std::string& name,
                    uint16_t qtype, uint32_t ttl_max, upstream_answer& out);

/// Appends `a` to the responder's answer in msg[0, len) (outcome resolve, chase::write):
/// records owned by the chain's target point at r.target_at; the RCODE becomes the
/// upstream's; `age` seconds are taken off every TTL. Over r.limit the answer is truncated
/// (TC, no records) as the responder does. Returns the new length.
size_t complete(uint8_t* msg, size_t len, size_t cap, const answer_result& r,
                const upstream_answer& a, uint32_t age);

/// SERVFAIL for the responder's answer in msg[0, len): the chain so far, RCODE 2.
void servfail(uint8_t* msg, size_t len);

}  // namespace ferry::dns

namespace ferry::dp {

class dns_resolver {
 public:
  struct stats {
    std::atomic<uint64_t> queries{0};     // client queries handed over by the workers
    std::atomic<uint64_t> cache_hits{0};  // answered from the cache
    std::atomic<uint64_t> upstream_queries{0};
    std::atomic<uint64_t> servfail{0};       // no usable upstream answer in time
    std::atomic<uint64_t> pending_full{0};   // kMaxPending reached: SERVFAIL at once
    std::atomic<uint64_t> cache_evicted{0};  // live entries pushed out by cache_size
    std::atomic<uint64_t> ttl_capped{0};     // records whose TTL ttl_max cut
  };

  /// Binds UDP port 53 on each DNS address; call in the DNS namespace.
  static result<std::unique_ptr<dns_resolver>> open(const dataplane& dp);
  ~dns_resolver();

  /// The snapshot's usable upstreams (weight > 0); call while a QSBR reader is online.
  static std::vector<std::pair<uint32_t, uint16_t>> upstreams(const snapshot* snap);
  /// A TCP query whose chain leaves the zone: r and msg[0, r.len) are the responder's answer
  /// so far (chase::write). The finished answer comes back through take_tcp_answers().
  void resolve_tcp(uint64_t conn, const uint8_t* msg, const dns::answer_result& r,
                   std::vector<std::pair<uint32_t, uint16_t>> ups);
  /// Finished answers to TCP connections (by the id resolve_tcp was given), taken once.
  std::vector<std::pair<uint64_t, std::string>> take_tcp_answers() {
    return std::exchange(tcp_answers_, {});
  }
  /// Appends the descriptors to poll (client sockets, then one per upstream query).
  void poll_fds(std::vector<pollfd>& fds) const;
  /// After poll: `fds` points at what poll_fds appended. Answers, asks upstreams, expires.
  void serve(const pollfd* fds, dataplane& dp, unsigned qsbr_id);
  const stats& counters() const { return stats_; }

  static constexpr size_t kMaxPending = 256;  // client queries waiting for upstreams
  static constexpr auto kTimeout = std::chrono::milliseconds(2000);  // then SERVFAIL
  static constexpr auto kRetry = std::chrono::milliseconds(700);     // then the next upstream

 private:
  using clock = std::chrono::steady_clock;
  struct waiter {
    int fd = -1;  // the client socket it came on (its DNS address); UDP
    sockaddr_storage peer{};
    socklen_t peer_len = sizeof(sockaddr_storage);
    uint64_t tcp = 0;  // else the TCP server's connection id
    std::string msg;   // the responder's answer so far
    dns::answer_result r;
  };
  struct inflight {
    int fd = -1;  // connected to the upstream: its own random source port
    uint16_t id = 0;
    std::string key;  // name + type
    std::string name;
    uint16_t qtype = 0;
    std::vector<std::pair<uint32_t, uint16_t>> upstreams;
    size_t tries = 0;
    clock::time_point sent, deadline;
    std::vector<waiter> waiters;
  };
  struct cached {
    dns::upstream_answer answer;
    clock::time_point stored, expires;
  };

  explicit dns_resolver(std::vector<int> fds, uint32_t source, uint32_t ttl_max, size_t cache_size)
      : client_fds_(std::move(fds)), source_(source), ttl_max_(ttl_max), cache_size_(cache_size) {}
  void on_query(int fd, dataplane& dp, unsigned qsbr_id, clock::time_point now);
  void resolve(waiter w, std::vector<std::pair<uint32_t, uint16_t>> ups, clock::time_point now);
  void on_reply(inflight& f, clock::time_point now);
  bool send_upstream(inflight& f);
  void finish(inflight& f, const dns::upstream_answer* a, clock::time_point now);
  void store(const std::string& key, const dns::upstream_answer& a, clock::time_point now);
  void reply(waiter& w);

  std::vector<int> client_fds_;
  // The DNS namespace: the server's thread joins it before making the upstream sockets
  // (a thread made elsewhere, it starts in ferryd's namespace).
  int netns_fd_ = -1;
  bool in_netns_ = false;
  uint32_t source_;  // the DNS address upstream queries leave from
  uint32_t ttl_max_;
  size_t cache_size_;
  std::vector<inflight> inflight_;
  size_t pending_ = 0;  // waiters over all inflight queries
  std::map<std::string, cached> cache_;
  std::vector<std::pair<uint64_t, std::string>> tcp_answers_;
  uint64_t rng_;
  stats stats_;
};

}  // namespace ferry::dp
