// The control socket: a Unix stream socket that takes one JSON request per connection and
// answers one JSON response. Runs on the control thread only (not thread-safe): poll_once()
// multiplexes every connection without blocking on any one of them, and calls the handler
// synchronously, on the caller's thread, once a request is complete.
//
// What a client can hold is bounded: max_connections slots (when all are taken, a new client
// evicts the one idle longest, so idle connections cannot lock ferryctl out), io_timeout to
// send a request from its first byte, max_request_bytes per request, max_buffered_bytes over
// all unfinished requests (the oldest is dropped first), and kMaxRequestDepth levels of
// nesting (refused while the bytes arrive, before anything is decoded).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/result.hpp"
#include "json_depth.hpp"

namespace ferry::control {

/// Requests nested deeper than this are refused before they are decoded. No request goes past
/// 3 levels; a deep value (60,000 levels fit in 120 KB) costs a recursion per level wherever it
/// is printed, copied or compared, which is a stack overflow waiting for a careless caller.
inline constexpr size_t kMaxRequestDepth = 32;

struct socket_options {
  size_t max_request_bytes = size_t{4} << 20;  // [control] max_request_bytes
  // The bytes of all unfinished requests together (a request's buffer may take up to twice its
  // bytes while it grows); 0: 2 x max_request_bytes. At least max_request_bytes.
  size_t max_buffered_bytes = 0;
  // The socket file's group, and the group whose members may use the socket besides root and
  // ferryd's own user. nullopt: the process's effective group.
  std::optional<gid_t> group;
  size_t max_connections = 64;  // beyond it, the connection idle longest is evicted
  // A connection gets this long to send its request, and again to take its answer.
  std::chrono::milliseconds io_timeout{5000};
};

/// What the control socket refused or dropped (`ferryctl stats`: control_socket; metrics:
/// ferry_control_socket_*_total). Written and read on the control thread only.
struct socket_counters {
  uint64_t evicted = 0;      // idle connections closed to make room (all slots in use)
  uint64_t over_budget = 0;  // unfinished requests dropped: together over max_buffered_bytes
  uint64_t too_deep = 0;     // requests nested deeper than kMaxRequestDepth
  uint64_t too_large = 0;    // requests over max_request_bytes
  uint64_t timed_out = 0;    // requests not sent, or answers not taken, within io_timeout
};

/// A client's value as an error or log message shows it: a number, boolean or null as JSON, a
/// string quoted and cut at 64 bytes, an array or object by its type only ("an object"). Never
/// dump() a client's value whole: that recurses once per level of nesting.
std::string describe_value(const nlohmann::json& value);

/// Decodes one request (the bytes before '\n') and calls the handler; never throws. Every
/// malformed request (empty, nested deeper than kMaxRequestDepth, not JSON, not an object, no
/// "op" string) is answered with {"ok":false,"error":"bad request: ..."}. Shared by the server and
/// the fuzz target.
nlohmann::json answer_request(std::string_view text,
                              const std::function<nlohmann::json(const nlohmann::json&)>& h);

/// Wire format (both directions): one JSON object followed by '\n'.
/// Request:  {"op": "...", ...}
/// Response: {"ok": true, "result": ...} or {"ok": false, "error": "message"}
class socket_server {
 public:
  using handler = std::function<nlohmann::json(const nlohmann::json& request)>;

  /// Creates the socket (and its parent directory), replacing a stale socket file. The file
  /// gets mode 0660 and options.group as its group.
  static result<std::unique_ptr<socket_server>> listen(const std::string& path, handler h,
                                                       socket_options options = {});
  ~socket_server();

  /// Accepts, reads, answers and times out connections for at most timeout_ms, returning
  /// early when wake_fd (if not -1) becomes readable or something was served. Returns
  /// whether wake_fd is readable.
  bool poll_once(int timeout_ms, int wake_fd = -1);

  /// Takes effect for requests that start after the call (a reload may change it).
  void set_max_request_bytes(size_t n) { options_.max_request_bytes = n; }

  const std::string& path() const { return path_; }
  size_t connections() const { return conns_.size(); }
  const socket_counters& counters() const { return counters_; }
  /// Bytes held by unfinished requests now.
  size_t buffered_bytes() const;

 private:
  struct connection {
    int fd = -1;
    std::string in;           // request bytes so far (never a '\n': the request ends before it)
    nesting_scanner nesting;  // of `in`
    std::string out;          // answer not yet written
    size_t written = 0;
    bool answering = false;  // the request is done; writing `out`, then close
    bool dead = false;       // evicted or dropped: closed at the end of this poll
    uint64_t round = 0;      // the poll_once() call that accepted it
    std::chrono::steady_clock::time_point accepted;
    std::chrono::steady_clock::time_point active;  // last byte read or written
    std::chrono::steady_clock::time_point deadline;
  };

  socket_server(std::string path, int fd, handler h, socket_options options);
  void accept_all();
  // Returns false when the connection is finished (closed or to be closed).
  bool on_readable(connection& c);
  bool on_writable(connection& c);
  void answer(connection& c, const nlohmann::json& response);
  // Answers with the refusal, tries once to send it, and marks the connection dead.
  void drop(connection& c, const std::string& why);
  // Serves a connection the moment it is accepted; false when it is finished.
  bool serve_new(connection& c);
  // Makes room for one more connection: drops the connection idle longest that was accepted
  // in an earlier poll (a new client always gets one poll to send its request).
  void evict_idlest();
  // Drops the oldest unfinished requests other than `c`'s until `more` bytes fit the budget.
  bool make_room(const connection& c, size_t more);
  size_t live() const;
  // Closes and forgets dead connections.
  void sweep();
  // Why a peer may not use the socket, or "" when it may.
  std::string refusal_for(int fd) const;

  std::string path_;
  int fd_;
  handler handler_;
  socket_options options_;
  gid_t group_;
  std::vector<connection> conns_;
  uint64_t round_ = 0;
  socket_counters counters_;
  std::chrono::steady_clock::time_point last_refusal_log_{};
  uint64_t refusals_unlogged_ = 0;
};

/// Client side, used by ferryctl and the tests: sends one request, returns the response.
result<nlohmann::json> call(const std::string& path, const nlohmann::json& request,
                            int timeout_ms = 30000);

}  // namespace ferry::control
