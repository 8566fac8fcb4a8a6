// DNS over TCP. The workers answer UDP themselves; TCP needs a real TCP stack, so they hand
// TCP segments for a DNS address's port 53 to the kernel through a TAP port whose kernel side
// lives in a private network namespace ferryd creates (so nothing of the host's network
// changes). There the DNS addresses sit on the TAP, and this server's thread answers on a
// listening socket from the same snapshot the workers use: it is a QSBR reader like them,
// online only while it answers. The kernel's segments come back through the TAP and the
// workers route them to the client like any other packet. The same thread serves the UDP
// queries the workers hand over because their CNAME chain leaves the zone (dns_resolver.hpp).
//
// Bounds, since anyone who reaches a DNS address can connect ([dns] tcp_*, config.hpp):
// - one query at a time per connection: the next is read only once the previous answer has
//   gone to the kernel (whose socket buffers are capped, kSocketBuffer), so a client that
//   pipelines and never reads is held back by TCP's own flow control, not by our memory;
// - a memory budget for every query and answer buffered in the server (tcp_memory): a query
//   that would exceed it waits, an answer that cannot be kept closes its connection;
// - a deadline per query from its first byte (tcp_message_timeout), so dripping bytes does
//   not keep a connection; idle connections close after tcp_idle_timeout;
// - at most tcp_connections_per_source from one address; at tcp_connections the oldest idle
//   connection (else the oldest busy one) is closed for the new one.
//
// Thread-safety: open() runs on the main lcore before the workers start; afterwards the
// server's own thread is the only user of its sockets, and stats() may be read from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "dataplane.hpp"
#include "dns_resolver.hpp"
#include "ferry/config.hpp"
#include "ferry/dns.hpp"
#include "ferry/result.hpp"

namespace ferry::dp {

class dns_tcp_server {
 public:
  /// Counters, shown as `dns.tcp` by ferryctl stats and metrics (control/metrics.cpp).
  struct stats {
    std::atomic<uint64_t> connections{0};
    std::atomic<uint64_t> refused_connections{0};  // the source had tcp_connections_per_source
    std::atomic<uint64_t> evicted{0};              // closed for a new one at tcp_connections
    std::atomic<uint64_t> idle_closed{0};          // tcp_idle_timeout
    std::atomic<uint64_t> message_timeouts{0};     // tcp_message_timeout
    std::atomic<uint64_t> memory_limited{0};       // a query waited or an answer was dropped
    std::atomic<uint64_t> outcomes[dns::kNumOutcomes] = {};
  };

  /// Makes the namespace, the TAP port (appended to dp.ports, dp.dns_tcp_port set, one queue
  /// pair per worker) and the listening socket. `qsbr_id`: the server thread's QSBR id.
  static result<std::unique_ptr<dns_tcp_server>> open(dataplane& dp, unsigned workers,
                                                      unsigned qsbr_id,
                                                      const dns_config::tcp_limits& limits);
  ~dns_tcp_server();

  void start();
  const stats& counters() const { return stats_; }
  /// Answers UDP queries whose CNAME chain leaves the zone (dns_resolver.hpp).
  const dns_resolver* resolver() const { return resolver_.get(); }

  // Kernel send and receive buffer of each connection (the kernel doubles it): what a client
  // that never reads can make the kernel hold, beside the server's own tcp_memory.
  static constexpr int kSocketBuffer = 64 << 10;
  // Queries answered per connection per poll round, so one pipelining client cannot starve
  // the others.
  static constexpr unsigned kQueriesPerRound = 8;

 private:
  struct connection;
  enum class closed : uint8_t { no, peer, idle, deadline, memory };

  dns_tcp_server(dataplane& dp, int listen_fd, unsigned qsbr_id,
                 const dns_config::tcp_limits& limits, std::unique_ptr<dns_resolver> resolver)
      : dp_(dp),
        listen_fd_(listen_fd),
        qsbr_id_(qsbr_id),
        limits_(limits),
        resolver_(std::move(resolver)) {}
  void run();
  void accept_all(std::vector<connection>& conns);
  closed serve(connection& c, short revents);
  closed expire(const connection& c) const;
  closed send_out(connection& c);
  closed answer(connection& c, size_t len);
  closed send_answer(connection& c, size_t len);
  void deliver_resolved(std::vector<connection>& conns);
  void release(connection& c);

  dataplane& dp_;
  int listen_fd_;
  unsigned qsbr_id_;
  dns_config::tcp_limits limits_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  stats stats_;
  // The server thread's own: bytes reserved for queries and answers (<= limits_.memory), the
  // scratch buffer answers are built in, and the time of this poll round.
  size_t buffered_ = 0;
  uint64_t next_id_ = 1;  // connection ids (0: none)
  std::vector<uint8_t> scratch_;
  std::chrono::steady_clock::time_point now_;
  std::unique_ptr<dns_resolver> resolver_;
};

}  // namespace ferry::dp
