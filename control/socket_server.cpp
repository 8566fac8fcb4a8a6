#include "socket_server.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <filesystem>
#include <string_view>
#include <system_error>
#include <utility>

namespace ferry::control {
namespace {

using steady_clock = std::chrono::steady_clock;
using json = nlohmann::json;

// The control thread serves one connection at a time, so a client that stalls must not be able
// to hold it for long; and a request bigger than any sane manifest set is an error, not a job.
constexpr auto server_io_timeout = std::chrono::seconds(5);
constexpr size_t max_request_size = size_t{64} << 20;

std::string errno_text(int err) { return std::strerror(err); }

// Milliseconds left until the deadline, rounded up so poll() never wakes early and spins;
// -1 (wait forever) for steady_clock::time_point::max().
int remaining_ms(steady_clock::time_point deadline) {
  if (deadline == steady_clock::time_point::max()) return -1;
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - steady_clock::now()).count();
  if (left <= 0) return 0;
  return left > INT_MAX ? INT_MAX : static_cast<int>(left);
}

// Waits until fd reports `events` (or a hangup/error, which the next read/write will surface).
// Returns 0 or an errno value; ETIMEDOUT when the deadline passes.
int wait_ready(int fd, short events, steady_clock::time_point deadline) {
  for (;;) {
    int timeout = remaining_ms(deadline);
    if (timeout == 0) return ETIMEDOUT;
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, timeout);
    if (n > 0) return 0;
    if (n < 0 && errno != EINTR) return errno;
  }
}

// Writes all of data to a non-blocking socket. MSG_NOSIGNAL because a client that hangs up
// early must cost us an EPIPE, not the whole daemon. Returns 0 or an errno value.
int write_all(int fd, std::string_view data, steady_clock::time_point deadline) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n >= 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return errno;
    if (int err = wait_ready(fd, POLLOUT, deadline)) return err;
  }
  return 0;
}

// Reads from a non-blocking socket into out until EOF or, with stop_at_newline, the first '\n'
// (which is dropped along with anything after it). Returns 0 or an errno value: ETIMEDOUT when
// the deadline passes, EMSGSIZE when more than max_size bytes arrive.
int read_message(int fd, steady_clock::time_point deadline, size_t max_size, bool stop_at_newline,
                 std::string& out) {
  char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n == 0) return 0;
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return errno;
      if (int err = wait_ready(fd, POLLIN, deadline)) return err;
      continue;
    }
    std::string_view chunk(buf, static_cast<size_t>(n));
    if (stop_at_newline) {
      if (auto nl = chunk.find('\n'); nl != std::string_view::npos) chunk = chunk.substr(0, nl);
    }
    if (out.size() + chunk.size() > max_size) return EMSGSIZE;
    out.append(chunk);
    if (chunk.size() < static_cast<size_t>(n)) return 0;  // stopped at the newline
  }
}

// Never throws: strings that reach a response may come from user input, and invalid UTF-8 there
// must not turn an answer into a dropped connection.
std::string encode(const json& message) {
  return message.dump(-1, ' ', false, json::error_handler_t::replace) + '\n';
}

json refusal(std::string message) { return json{{"ok", false}, {"error", std::move(message)}}; }

bool fill_address(const std::string& path, sockaddr_un& addr) {
  addr = {};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) return false;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return true;
}

// True when something is still accepting connections on path. EAGAIN means a live listener
// with a full backlog; ECONNREFUSED means the file was left behind by a process that is gone.
bool socket_is_live(const sockaddr_un& addr) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return false;
  int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  bool live = rc == 0 || errno == EAGAIN;
  ::close(fd);
  return live;
}

class fd_guard {
 public:
  explicit fd_guard(int fd) : fd_(fd) {}
  ~fd_guard() {
    if (fd_ >= 0) ::close(fd_);
  }
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

}  // namespace

result<std::unique_ptr<socket_server>> socket_server::listen(const std::string& path, handler h) {
  sockaddr_un addr;
  if (!fill_address(path, addr)) {
    return make_error("control socket path \"" + path + "\" is empty or longer than " +
                      std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
  }

  auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec) {
      return make_error("cannot create directory " + parent.string() + " for control socket " +
                        path + ": " + ec.message());
    }
  }

  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    // Only ever remove a socket: a regular file here is a configuration mistake we should
    // report, and a live socket belongs to another ferryd whose clients we must not steal.
    if (!S_ISSOCK(st.st_mode)) {
      return make_error("cannot use " + path + " as control socket: it exists and is not a socket");
    }
    if (socket_is_live(addr)) {
      return make_error("cannot use " + path +
                        " as control socket: it is in use (is another ferryd running?)");
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return make_error("cannot remove stale control socket " + path + ": " + errno_text(errno));
    }
  }

  fd_guard fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) {
    return make_error("cannot create control socket " + path + ": " + errno_text(errno));
  }
  // Linux creates the socket file with the socket inode's mode (minus umask), so narrowing it
  // before bind() closes the window in which the file would be world-connectable. Best effort:
  // the chmod below sets the final mode either way.
  (void)::fchmod(fd.get(), 0660);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return make_error("cannot bind control socket " + path + ": " + errno_text(errno));
  }
  if (::chmod(path.c_str(), 0660) != 0) {
    int err = errno;
    ::unlink(path.c_str());
    return make_error("cannot chmod control socket " + path + ": " + errno_text(err));
  }
  if (::listen(fd.get(), SOMAXCONN) != 0) {
    int err = errno;
    ::unlink(path.c_str());
    return make_error("cannot listen on control socket " + path + ": " + errno_text(err));
  }
  return std::unique_ptr<socket_server>(new socket_server(path, fd.release(), std::move(h)));
}

socket_server::socket_server(std::string path, int fd, handler h)
    : path_(std::move(path)), fd_(fd), handler_(std::move(h)) {}

socket_server::~socket_server() {
  ::close(fd_);
  ::unlink(path_.c_str());
}

bool socket_server::poll_once(int timeout_ms, int wake_fd) {
  pollfd p[2] = {{fd_, POLLIN, 0}, {wake_fd, POLLIN, 0}};
  int n = ::poll(p, wake_fd >= 0 ? 2 : 1, timeout_ms);
  if (n <= 0) return false;  // timeout, or EINTR: the caller's loop comes back soon enough
  const bool woken = wake_fd >= 0 && (p[1].revents & POLLIN);
  if (!(p[0].revents & POLLIN)) return woken;
  for (;;) {
    int conn = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (conn < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      // EAGAIN: all pending connections served. Anything else (EMFILE, ENOBUFS) would fail
      // again at once; leave the connection queued for the next call instead of spinning.
      return woken;
    }
    serve(conn);
    ::close(conn);
  }
}

void socket_server::serve(int conn) {
  std::string request_text;
  int err = read_message(conn, steady_clock::now() + server_io_timeout, max_request_size, true,
                         request_text);

  json response;
  if (err == ETIMEDOUT) {
    response =
        refusal("request not received within " + std::to_string(server_io_timeout.count()) + " s");
  } else if (err == EMSGSIZE) {
    response = refusal("request larger than " + std::to_string(max_request_size >> 20) + " MiB");
  } else if (err != 0) {
    return;  // the client is gone; nobody to answer
  } else if (request_text.empty()) {
    return;  // a connect-and-close probe, e.g. listen() checking for a live socket
  } else {
    try {
      json request = json::parse(request_text);
      if (!request.is_object()) {
        response = refusal("bad request: expected a JSON object");
      } else {
        response = handler_(request);
      }
    } catch (const json::parse_error& e) {
      response = refusal(std::string("bad request: ") + e.what());
    } catch (const std::exception& e) {
      response = refusal(e.what());
    } catch (...) {
      response = refusal("internal error: unknown exception in request handler");
    }
  }
  // A fresh deadline: time the handler spent is not the client's fault.
  (void)write_all(conn, encode(response), steady_clock::now() + server_io_timeout);
}

result<nlohmann::json> call(const std::string& path, const nlohmann::json& request,
                            int timeout_ms) {
  auto deadline = timeout_ms > 0 ? steady_clock::now() + std::chrono::milliseconds(timeout_ms)
                                 : steady_clock::time_point::max();
  std::string request_text;
  try {
    request_text = request.dump() + '\n';
  } catch (const json::exception& e) {
    return make_error(std::string("cannot encode request: ") + e.what());
  }

  sockaddr_un addr;
  if (!fill_address(path, addr)) {
    return make_error("cannot connect to ferryd at " + path + ": socket path too long");
  }
  fd_guard fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return make_error("cannot create socket: " + errno_text(errno));

  // connect() stays blocking so a full backlog waits rather than failing at once; on Unix
  // sockets SO_SNDTIMEO bounds that wait.
  if (timeout_ms > 0) {
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  }
  int rc;
  do {
    rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    int err = errno;
    std::string message = "cannot connect to ferryd at " + path + ": ";
    if (err == EAGAIN) return make_error(message + "timed out (is ferryd stuck?)");
    message += errno_text(err);
    if (err == ENOENT || err == ECONNREFUSED) message += " (is ferryd running?)";
    return make_error(message);
  }
  ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK);

  int err = write_all(fd.get(), request_text, deadline);
  if (err == ETIMEDOUT) return make_error("timed out sending request to ferryd at " + path);
  // EPIPE/ECONNRESET: ferryd stopped reading (e.g. the request was too large) but may still
  // have answered why, so read on.
  if (err != 0 && err != EPIPE && err != ECONNRESET) {
    return make_error("cannot send request to ferryd at " + path + ": " + errno_text(err));
  }
  ::shutdown(fd.get(), SHUT_WR);

  std::string response_text;
  err = read_message(fd.get(), deadline, SIZE_MAX, false, response_text);
  // A peer that closes with our request unread makes the kernel report ECONNRESET after its
  // data instead of a clean EOF; the answer we got is still complete.
  if (err == ECONNRESET && !response_text.empty()) err = 0;
  if (err == ETIMEDOUT) {
    return make_error("timed out waiting for ferryd at " + path + " after " +
                      std::to_string(timeout_ms) + " ms");
  }
  if (err != 0) {
    return make_error("cannot read response from ferryd at " + path + ": " + errno_text(err));
  }
  if (response_text.empty()) {
    return make_error("ferryd at " + path + " closed the connection without answering");
  }
  try {
    return json::parse(response_text);
  } catch (const json::parse_error& e) {
    return make_error("bad response from ferryd at " + path + ": " + e.what());
  }
}

}  // namespace ferry::control
