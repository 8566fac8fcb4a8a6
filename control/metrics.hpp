// Prometheus metrics: the text exposition (format 0.0.4) of what the stats op reports, the
// change-to-dataplane latency histogram, and a small HTTP server for GET /metrics.
//
// Everything here belongs to the control thread and is not thread-safe: ferryd renders from
// the stats JSON it builds for `ferryctl stats` (so both always agree) and serves the HTTP
// connections from its control loop, between control-socket requests. The server never
// blocks: every socket is non-blocking, a request must arrive within a few seconds and be
// small, and a slow reader only holds its own connection's buffer.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "ferry/result.hpp"

namespace ferry::control::metrics {

/// A Prometheus histogram with fixed bounds (seconds), 100 us to 10 s.
struct histogram {
  static constexpr std::array<double, 16> kBounds = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                     0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                                     1,      2.5,     5,      10};
  std::array<uint64_t, kBounds.size()> buckets{};  // observations in (previous bound, bound]
  uint64_t count = 0;                              // all observations (the +Inf bucket)
  double sum = 0;

  void observe(double seconds);
  /// Observations <= kBounds[i] (Prometheus buckets are cumulative).
  uint64_t cumulative(size_t i) const;
};

/// Where a change came from, as the histogram's source label.
enum class change_source : uint8_t { socket, file, kubernetes, count };
inline constexpr std::string_view kChangeSourceNames[] = {"socket", "file", "kubernetes"};

/// Time from the control thread having a change (a whole socket request, a watch update
/// taken, manifest files about to be read) to the publish of the snapshot that contains
/// it. The caller brackets the operation with begin()/end() and calls published() from its
/// publish function; only the first publish after begin() counts, and an operation that
/// changes nothing publishes nothing and is not observed.
class change_latency {
 public:
  using clock = std::chrono::steady_clock;

  void begin(change_source from, clock::time_point at = clock::now()) { pending_ = {from, at}; }
  void published(clock::time_point at = clock::now());
  void end() { pending_.reset(); }

  const histogram& of(change_source s) const { return by_source_[static_cast<size_t>(s)]; }

 private:
  std::optional<std::pair<change_source, clock::time_point>> pending_;
  std::array<histogram, static_cast<size_t>(change_source::count)> by_source_;
};

/// What the stats JSON does not carry.
struct process_info {
  std::string version;
  double start_time_seconds = 0;  // Unix time
};

/// Renders the stats op's result and the latency histograms as Prometheus text 0.0.4.
/// Missing parts of the JSON (DNS off, no Kubernetes source) leave their metrics out.
std::string render(const nlohmann::json& stats, const change_latency& latency,
                   const process_info& info);

/// Escapes a label value: backslash, double quote and newline.
std::string escape_label(std::string_view value);

/// A TCP listen address: "a.b.c.d:port" or "[v6]:port", port 1-65535.
struct listen_address {
  sockaddr_storage addr{};
  socklen_t len = 0;
  std::string text;  // as given
};
result<listen_address> parse_listen_address(std::string_view text);

/// A scrape is one small request; anything bigger is not a scraper worth serving.
inline constexpr size_t kMaxRequest = 8192;

/// The whole HTTP/1.1 response to a request (its head as received: request line, headers):
/// 200 for GET or HEAD of /metrics (body from `metrics`), /healthz and /; 404 for other
/// paths, 405 for other methods, 400 for a malformed request line, 431 when longer than
/// kMaxRequest. Always "Connection: close". What http_server sends; pure.
std::string http_answer(std::string_view request, const std::function<std::string()>& metrics);

/// The HTTP/1.1 server: GET (or HEAD) /metrics, /healthz and /; one request per connection.
class http_server {
 public:
  using body_fn = std::function<std::string()>;

  /// Binds and listens; the error says why ("cannot listen on 127.0.0.1:9100: ...").
  /// A connection gets `timeout` to send its request and read the answer.
  static result<std::unique_ptr<http_server>> listen(
      const std::string& address, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  /// Readable (an epoll set of the listener and every connection) while serve_ready() has
  /// work to do; poll it beside the control socket.
  int fd() const { return epoll_; }

  /// Accepts, reads, answers and closes whatever is ready, and drops connections past their
  /// deadline; never blocks. `metrics` is called for each GET /metrics.
  void serve_ready(const body_fn& metrics);

  size_t connections() const { return conns_.size(); }

 private:
  struct conn {
    std::string in, out;
    size_t sent = 0;
    bool answered = false;  // out is complete; after sending it, read until EOF and close
    std::chrono::steady_clock::time_point deadline;
  };

  http_server(int listener, int epoll, std::chrono::milliseconds timeout)
      : listener_(listener), epoll_(epoll), timeout_(timeout) {}
  void accept_all();
  void on_ready(int fd, uint32_t events, const body_fn& metrics);
  void answer(int fd, conn& c, const body_fn& metrics);
  bool flush(int fd, conn& c);  // false: the connection is finished (closed)
  void close_conn(int fd);

  int listener_;
  int epoll_;
  std::chrono::milliseconds timeout_;
  bool accept_paused_ = false;  // the listener is out of the epoll set until accept_resume_
  std::chrono::steady_clock::time_point accept_resume_;
  std::map<int, conn> conns_;  // by socket
};

}  // namespace ferry::control::metrics
