// DNS over TCP. The workers answer UDP themselves; TCP needs a real TCP stack, so they hand
// TCP segments for a DNS address's port 53 to the kernel through a TAP port whose kernel side
// lives in a private network namespace ferryd creates (so nothing of the host's network
// changes). There the DNS addresses sit on the TAP, and this server's thread answers on a
// listening socket from the same snapshot the workers use: it is a QSBR reader like them,
// online only while it answers. The kernel's segments come back through the TAP and the
// workers route them to the client like any other packet. The same thread serves the UDP
// queries the workers hand over because their CNAME chain leaves the zone (dns_resolver.hpp).
//
// Thread-safety: open() runs on the main lcore before the workers start; afterwards the
// server's own thread is the only user of its sockets, and stats() may be read from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "dataplane.hpp"
#include "dns_resolver.hpp"
#include "ferry/dns.hpp"
#include "ferry/result.hpp"

namespace ferry::dp {

class dns_tcp_server {
 public:
  struct stats {
    std::atomic<uint64_t> connections{0}, refused_connections{0}, idle_closed{0};
    std::atomic<uint64_t> outcomes[dns::kNumOutcomes] = {};
  };

  /// Makes the namespace, the TAP port (appended to dp.ports, dp.dns_tcp_port set, one queue
  /// pair per worker) and the listening socket. `qsbr_id`: the server thread's QSBR id.
  static result<std::unique_ptr<dns_tcp_server>> open(dataplane& dp, unsigned workers,
                                                      unsigned qsbr_id);
  ~dns_tcp_server();

  void start();
  const stats& counters() const { return stats_; }
  /// Answers UDP queries whose CNAME chain leaves the zone (dns_resolver.hpp).
  const dns_resolver* resolver() const { return resolver_.get(); }

  static constexpr size_t kMaxConnections = 256;
  static constexpr int kIdleSeconds = 10;  // RFC 7766: close idle connections, seconds

 private:
  dns_tcp_server(dataplane& dp, int listen_fd, unsigned qsbr_id,
                 std::unique_ptr<dns_resolver> resolver)
      : dp_(dp), listen_fd_(listen_fd), qsbr_id_(qsbr_id), resolver_(std::move(resolver)) {}
  void run();

  dataplane& dp_;
  int listen_fd_;
  unsigned qsbr_id_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  stats stats_;
  std::unique_ptr<dns_resolver> resolver_;
};

}  // namespace ferry::dp
