// The control socket: a Unix stream socket that takes one JSON request per connection and
// answers one JSON response. Runs on the control thread only (not thread-safe); the handler
// is called synchronously from poll_once().
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "ferry/result.hpp"

namespace ferry::control {

/// Wire format (both directions): one JSON object followed by '\n'.
/// Request:  {"op": "...", ...}
/// Response: {"ok": true, "result": ...} or {"ok": false, "error": "message"}
class socket_server {
 public:
  using handler = std::function<nlohmann::json(const nlohmann::json& request)>;

  /// Creates the socket (and its parent directory), replacing a stale socket file.
  static result<std::unique_ptr<socket_server>> listen(const std::string& path, handler h);
  ~socket_server();

  /// Serves every connection that is waiting, waiting at most timeout_ms for the first or
  /// for wake_fd (if not -1) to become readable. Returns whether wake_fd is readable.
  bool poll_once(int timeout_ms, int wake_fd = -1);

  const std::string& path() const { return path_; }

 private:
  socket_server(std::string path, int fd, handler h);
  void serve(int conn);

  std::string path_;
  int fd_;
  handler handler_;
};

/// Client side, used by ferryctl and the tests: sends one request, returns the response.
result<nlohmann::json> call(const std::string& path, const nlohmann::json& request,
                            int timeout_ms = 30000);

}  // namespace ferry::control
