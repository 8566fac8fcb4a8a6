// The control socket: a Unix stream socket that takes one JSON request per connection and
// answers one JSON response. Runs on the control thread only (not thread-safe): poll_once()
// multiplexes every connection without blocking on any one of them, and calls the handler
// synchronously, on the caller's thread, once a request is complete.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/result.hpp"

namespace ferry::control {

struct socket_options {
  size_t max_request_bytes = size_t{64} << 20;  // [control] max_request_bytes
  // The socket file's group, and the group whose members may use the socket besides root and
  // ferryd's own user. nullopt: the process's effective group.
  std::optional<gid_t> group;
  size_t max_connections = 64;  // more wait in the listen backlog
  // A connection gets this long to send its request, and again to take its answer.
  std::chrono::milliseconds io_timeout{5000};
};

/// Decodes one request (the bytes before '\n') and calls the handler; never throws. Every
/// malformed request (empty, not JSON, not an object, no "op" string) is answered with
/// {"ok":false,"error":"bad request: ..."}. Shared by the server and the fuzz target.
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

 private:
  struct connection {
    int fd = -1;
    std::string in;      // request bytes so far
    size_t scanned = 0;  // in[0, scanned) has no '\n'
    std::string out;     // answer not yet written
    size_t written = 0;
    bool answering = false;  // the request is done; writing `out`, then close
    std::chrono::steady_clock::time_point deadline;
  };

  socket_server(std::string path, int fd, handler h, socket_options options);
  void accept_all();
  // Returns false when the connection is finished (closed or to be closed).
  bool on_readable(connection& c);
  bool on_writable(connection& c);
  void answer(connection& c, const nlohmann::json& response);
  // Why a peer may not use the socket, or "" when it may.
  std::string refusal_for(int fd) const;

  std::string path_;
  int fd_;
  handler handler_;
  socket_options options_;
  gid_t group_;
  std::vector<connection> conns_;
  std::chrono::steady_clock::time_point last_refusal_log_{};
  uint64_t refusals_unlogged_ = 0;
};

/// Client side, used by ferryctl and the tests: sends one request, returns the response.
result<nlohmann::json> call(const std::string& path, const nlohmann::json& request,
                            int timeout_ms = 30000);

}  // namespace ferry::control
