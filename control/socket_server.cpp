#include "socket_server.hpp"

#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>
#include <system_error>
#include <utility>

namespace ferry::control {
namespace {

using steady_clock = std::chrono::steady_clock;
using json = nlohmann::json;

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

// A parser's message may quote what it read (a whole string token, megabytes of it).
std::string capped(std::string message) {
  constexpr size_t kMax = 512;
  if (message.size() > kMax) {
    message.resize(kMax);
    message += "...";
  }
  return message;
}

// Freeing this much at once is worth handing back to the system (malloc_trim).
constexpr size_t kTrimAfterBytes = size_t{1} << 20;

// "30 s", "1.5 s": a client timeout as people give it.
std::string seconds_text(int ms) {
  std::string s = std::to_string(ms / 1000);
  if (ms % 1000) {
    char frac[16];
    std::snprintf(frac, sizeof(frac), ".%03d", ms % 1000);
    s += frac;
    while (s.back() == '0') s.pop_back();
  }
  return s + " s";
}

std::string too_deep() {
  return "bad request: nested deeper than " + std::to_string(kMaxRequestDepth) +
         " levels of arrays and objects";
}

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

std::string describe_value(const json& value) {
  switch (value.type()) {
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    case json::value_t::string: {
      constexpr size_t kMax = 64;
      const auto& s = value.get_ref<const std::string&>();
      // Through dump() for the quotes and escapes: a string is one level, no recursion.
      if (s.size() <= kMax) return json(s).dump(-1, ' ', false, json::error_handler_t::replace);
      return json(s.substr(0, kMax)).dump(-1, ' ', false, json::error_handler_t::replace) +
             "... (" + std::to_string(s.size()) + " bytes)";
    }
    case json::value_t::discarded:
      return "nothing";
    default:
      return value.dump();  // a number, boolean or null
  }
}

json answer_request(std::string_view text, const std::function<json(const json&)>& h) {
  try {
    if (text.empty()) return refusal("bad request: empty request (expected one JSON object)");
    if (text.find('\0') != std::string_view::npos) {
      return refusal("bad request: NUL byte in request");
    }
    // Before decoding: the handlers may be careless with deep values, and the decoded value
    // itself would cost a recursion per level to copy or compare.
    if (nesting_scanner().feed(text) > kMaxRequestDepth) return refusal(too_deep());
    json request = json::parse(text);
    if (!request.is_object()) {
      return refusal(std::string("bad request: expected a JSON object, got ") +
                     request.type_name());
    }
    auto op = request.find("op");
    if (op == request.end()) return refusal("bad request: missing \"op\"");
    if (!op->is_string()) return refusal("bad request: \"op\" must be a string");
    return h(request);
  } catch (const json::parse_error& e) {
    return refusal(capped(std::string("bad request: ") + e.what()));
  } catch (const json::type_error& e) {
    // A field of the wrong type that an operation read without checking.
    return refusal(std::string("bad request: a field has the wrong type: ") + e.what());
  } catch (const std::exception& e) {
    return refusal(e.what());
  } catch (...) {
    return refusal("internal error: unknown exception in request handler");
  }
}

result<std::unique_ptr<socket_server>> socket_server::listen(const std::string& path, handler h,
                                                             socket_options options) {
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
  auto undo = [&](const std::string& what) {
    int err = errno;
    ::unlink(path.c_str());
    return make_error("cannot " + what + " control socket " + path + ": " + errno_text(err));
  };
  if (::chmod(path.c_str(), 0660) != 0) return undo("chmod");
  // The owner stays ferryd's user (root in production); the group opens it to operators.
  if (options.group && ::chown(path.c_str(), static_cast<uid_t>(-1), *options.group) != 0) {
    return undo("set the group (control.socket_group) of");
  }
  if (::listen(fd.get(), SOMAXCONN) != 0) return undo("listen on");
  return std::unique_ptr<socket_server>(
      new socket_server(path, fd.release(), std::move(h), std::move(options)));
}

socket_server::socket_server(std::string path, int fd, handler h, socket_options options)
    : path_(std::move(path)),
      fd_(fd),
      handler_(std::move(h)),
      options_(options),
      group_(options.group ? *options.group : ::getegid()) {
  if (options_.max_connections == 0) options_.max_connections = 1;
}

socket_server::~socket_server() {
  for (auto& c : conns_) ::close(c.fd);
  ::close(fd_);
  ::unlink(path_.c_str());
}

namespace {

// The supplementary groups of a process, from /proc/PID/status ("Groups:\t4 24 27").
std::vector<gid_t> groups_of(pid_t pid) {
  std::vector<gid_t> out;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Groups:", 0) != 0) continue;
    std::istringstream words(line.substr(7));
    unsigned long g;
    while (words >> g) out.push_back(static_cast<gid_t>(g));
    break;
  }
  return out;
}

}  // namespace

std::string socket_server::refusal_for(int fd) const {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return std::string("permission denied: cannot read the peer's credentials: ") +
           errno_text(errno);
  }
  if (cred.uid == 0 || cred.uid == ::geteuid() || cred.gid == group_) return "";
  // The peer may have exited already; then it has no groups and nobody to answer anyway.
  for (gid_t g : groups_of(cred.pid)) {
    if (g == group_) return "";
  }
  return "permission denied: uid " + std::to_string(cred.uid) + " is not root, not ferryd's uid " +
         std::to_string(::geteuid()) + ", and not in the control socket's group (gid " +
         std::to_string(group_) + ", control.socket_group)";
}

size_t socket_server::live() const {
  return static_cast<size_t>(
      std::count_if(conns_.begin(), conns_.end(), [](const connection& c) { return !c.dead; }));
}

size_t socket_server::buffered_bytes() const {
  size_t n = 0;
  for (const auto& c : conns_) {
    if (!c.dead && !c.answering) n += c.in.size();
  }
  return n;
}

void socket_server::sweep() {
  size_t freed = 0;
  std::erase_if(conns_, [&](connection& c) {
    if (!c.dead) return false;
    freed += c.in.capacity() + c.out.capacity();
    ::close(c.fd);
    return true;
  });
  // A large request's buffers are given back to the system, not kept by malloc for the next.
  if (freed >= kTrimAfterBytes) ::malloc_trim(0);
}

void socket_server::drop(connection& c, const std::string& why) {
  answer(c, refusal(why));
  (void)on_writable(c);  // best effort: one non-blocking try to say why
  c.dead = true;
}

void socket_server::evict_idlest() {
  connection* idlest = nullptr;
  for (auto& c : conns_) {
    if (c.dead || c.round == round_) continue;
    if (!idlest || c.active < idlest->active) idlest = &c;
  }
  if (!idlest) return;
  ++counters_.evicted;
  drop(*idlest, "closed: all " + std::to_string(options_.max_connections) +
                    " control socket connections were in use and this one was idle longest");
}

bool socket_server::make_room(const connection& c, size_t more) {
  const size_t budget = std::max(options_.max_request_bytes, options_.max_buffered_bytes
                                                                 ? options_.max_buffered_bytes
                                                                 : 2 * options_.max_request_bytes);
  for (size_t held = buffered_bytes(); held + more > budget;) {
    connection* oldest = nullptr;
    for (auto& o : conns_) {
      if (&o == &c || o.dead || o.answering || o.in.empty()) continue;
      if (!oldest || o.accepted < oldest->accepted) oldest = &o;
    }
    if (!oldest) return false;
    held -= oldest->in.size();
    ++counters_.over_budget;
    drop(*oldest, "dropped: unfinished requests held more than " + std::to_string(budget) +
                      " bytes together, and this one was the oldest");
  }
  return true;
}

void socket_server::accept_all() {
  // At most max_connections a poll: each may evict one connection from an earlier poll, so a
  // connection is never evicted in the poll that accepted it.
  for (size_t n = 0; n < options_.max_connections; ++n) {
    int fd = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      // EAGAIN: all pending connections taken. Anything else (EMFILE, ENOBUFS) would fail
      // again at once; leave the connection queued for the next call instead of spinning.
      return;
    }
    if (live() >= options_.max_connections) evict_idlest();
    sweep();
    connection& c = conns_.emplace_back();
    c.fd = fd;
    c.round = round_;
    c.accepted = c.active = steady_clock::now();
    c.deadline = c.accepted + options_.io_timeout;
    if (!serve_new(c)) c.dead = true;
    sweep();
  }
}

bool socket_server::serve_new(connection& c) {
  if (auto why = refusal_for(c.fd); !why.empty()) {
    // A burst of refused clients must not flood the log: at most one line a second.
    auto now = steady_clock::now();
    if (now - last_refusal_log_ >= std::chrono::seconds(1)) {
      spdlog::warn("control socket: refused a client: {}{}", why,
                   refusals_unlogged_ ? " (and " + std::to_string(refusals_unlogged_) +
                                            " more refusals not logged)"
                                      : "");
      last_refusal_log_ = now;
      refusals_unlogged_ = 0;
    } else {
      ++refusals_unlogged_;
    }
    answer(c, refusal(why));
  }
  // New connections usually carry their request already; serve them without another wait.
  bool alive = c.answering || on_readable(c);
  if (alive && c.answering) alive = on_writable(c);  // most answers fit the socket buffer
  return alive;
}

void socket_server::answer(connection& c, const json& response) {
  c.out = encode(response);
  c.written = 0;
  c.answering = true;
  const size_t held = c.in.capacity();
  c.in.clear();
  c.in.shrink_to_fit();
  // Called after the request is decoded and handled, so its decoded copy is gone too: a large
  // request's memory goes back to the system instead of staying with malloc.
  if (held >= kTrimAfterBytes) ::malloc_trim(0);
  // A fresh deadline: time the handler spent is not the client's fault.
  c.deadline = steady_clock::now() + options_.io_timeout;
}

bool socket_server::on_readable(connection& c) {
  // Bounded per call, so one client streaming a large request cannot starve the others.
  char buf[64 * 1024];
  for (int round = 0; round < 16; ++round) {
    ssize_t n = ::recv(c.fd, buf, sizeof(buf), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK;  // anything else: the client is gone
    }
    if (n == 0) {
      // EOF ends a request that has no newline; nothing at all is a connect-and-close probe
      // (listen() checking for a live socket), with nobody to answer.
      if (c.in.empty()) return false;
      answer(c, answer_request(c.in, handler_));
      return true;
    }
    c.active = steady_clock::now();
    std::string_view chunk(buf, static_cast<size_t>(n));
    const auto nl = chunk.find('\n');
    if (nl != std::string_view::npos) chunk = chunk.substr(0, nl);
    if (c.in.size() + chunk.size() > options_.max_request_bytes) {
      ++counters_.too_large;
      answer(c, refusal("request larger than " + std::to_string(options_.max_request_bytes) +
                        " bytes (control.max_request_bytes)"));
      return true;
    }
    if (c.nesting.feed(chunk) > kMaxRequestDepth) {
      ++counters_.too_deep;
      answer(c, refusal(too_deep()));
      return true;
    }
    if (!make_room(c, chunk.size())) return false;  // cannot happen: budget >= one request
    c.in.append(chunk);
    if (nl != std::string_view::npos) {
      answer(c, answer_request(c.in, handler_));
      return true;
    }
  }
  return true;
}

bool socket_server::on_writable(connection& c) {
  while (c.written < c.out.size()) {
    // MSG_NOSIGNAL because a client that hangs up early must cost us an EPIPE, not the daemon.
    ssize_t n = ::send(c.fd, c.out.data() + c.written, c.out.size() - c.written, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK;
    }
    c.written += static_cast<size_t>(n);
    c.active = steady_clock::now();
  }
  return false;  // all written: one request per connection
}

bool socket_server::poll_once(int timeout_ms, int wake_fd) {
  ++round_;
  // The nearest deadline bounds the wait, so a stalled client is dropped on time.
  for (const auto& c : conns_) {
    int left = remaining_ms(c.deadline);
    if (timeout_ms < 0 || left < timeout_ms) timeout_ms = left;
  }
  std::vector<pollfd> p;
  p.reserve(conns_.size() + 2);
  // Always listening: when every slot is taken, a new client evicts the one idle longest.
  p.push_back({fd_, POLLIN, 0});
  p.push_back({wake_fd, POLLIN, 0});
  for (const auto& c : conns_) {
    p.push_back({c.fd, static_cast<short>(c.answering ? POLLOUT : POLLIN), 0});
  }
  int n = ::poll(p.data(), p.size(), timeout_ms);
  if (n < 0) return false;  // EINTR: the caller's loop comes back soon enough
  const bool woken = wake_fd >= 0 && (p[1].revents & POLLIN);

  // Serving one connection may drop others (over the memory budget): they are marked dead,
  // skipped here, and closed by sweep().
  for (size_t i = 0; i < conns_.size(); ++i) {
    auto& c = conns_[i];
    if (c.dead) continue;
    const short ev = p[i + 2].revents;
    bool alive = true;
    if (!c.answering && (ev & (POLLIN | POLLHUP | POLLERR))) alive = on_readable(c);
    if (alive && c.answering && (ev & (POLLOUT | POLLERR | POLLHUP) || c.written == 0)) {
      alive = on_writable(c);  // try at once: most answers fit the socket buffer
    }
    if (alive && steady_clock::now() >= c.deadline) {
      ++counters_.timed_out;
      if (!c.answering) {
        drop(c, "request not received within " +
                    std::to_string(options_.io_timeout.count() / 1000) + " s");
      }
      alive = false;
    }
    if (!alive) c.dead = true;
  }
  sweep();
  if (p[0].revents & POLLIN) accept_all();
  return woken;
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
  if (err == ETIMEDOUT) {
    return make_error("timed out after " + seconds_text(timeout_ms) +
                      " sending the request to ferryd at " + path + " (is ferryd stuck?)");
  }
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
    // The whole request was sent: ferryd goes on with it and may well carry it out (a large
    // apply takes a while); only the answer was not waited for.
    return make_error("timed out after " + seconds_text(timeout_ms) + " waiting for ferryd at " +
                      path +
                      " to answer; the request was sent, so ferryd may still carry it out "
                      "(a change may be applied: check before retrying)");
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
