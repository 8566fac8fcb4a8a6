#include "dns_tcp.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <poll.h>
#include <rte_ethdev.h>
#include <rte_rcu_qsbr.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "ports.hpp"

namespace ferry::dp {
namespace {

constexpr const char* kTapDevice = "net_tap_ferrydns";
constexpr const char* kTapIface = "ferry-dns";

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

// Address, flags and the default route of the kernel side, by ioctl (no netlink needed):
// the DNS addresses as /32s on the interface and its aliases, no ARP (the kernel then sends
// every frame to the interface's own MAC, and the workers route it), IPv6 off (no ND noise).
result<rte_ether_addr> configure_kernel_side(const std::vector<uint32_t>& addresses) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error(errno_text("socket"));
  auto fail = [&](const std::string& what) {
    auto e = make_error(errno_text(what));
    close(fd);
    return e;
  };
  std::ofstream(std::string("/proc/sys/net/ipv6/conf/") + kTapIface + "/disable_ipv6") << "1";
  for (size_t i = 0; i < addresses.size(); ++i) {
    ifreq ifr{};
    std::string name = i ? std::string(kTapIface) + ":" + std::to_string(i) : kTapIface;
    std::snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name.c_str());
    auto* sin = reinterpret_cast<sockaddr_in*>(&ifr.ifr_addr);
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(addresses[i]);
    if (ioctl(fd, SIOCSIFADDR, &ifr) != 0) return fail("SIOCSIFADDR " + name);
    sin->sin_addr.s_addr = htonl(0xffffffff);
    if (ioctl(fd, SIOCSIFNETMASK, &ifr) != 0) return fail("SIOCSIFNETMASK " + name);
  }
  ifreq ifr{};
  std::snprintf(ifr.ifr_name, IFNAMSIZ, "%s", kTapIface);
  if (ioctl(fd, SIOCGIFFLAGS, &ifr) != 0) return fail("SIOCGIFFLAGS");
  ifr.ifr_flags |= IFF_UP | IFF_NOARP;
  if (ioctl(fd, SIOCSIFFLAGS, &ifr) != 0) return fail("SIOCSIFFLAGS");
  if (ioctl(fd, SIOCGIFHWADDR, &ifr) != 0) return fail("SIOCGIFHWADDR");
  rte_ether_addr mac;
  std::memcpy(mac.addr_bytes, ifr.ifr_hwaddr.sa_data, RTE_ETHER_ADDR_LEN);
  rtentry rt{};
  char dev[IFNAMSIZ];
  std::snprintf(dev, IFNAMSIZ, "%s", kTapIface);
  rt.rt_dst.sa_family = AF_INET;
  rt.rt_genmask.sa_family = AF_INET;
  rt.rt_flags = RTF_UP;
  rt.rt_dev = dev;
  if (ioctl(fd, SIOCADDRT, &rt) != 0 && errno != EEXIST) return fail("SIOCADDRT default");
  close(fd);
  return mac;
}

result<int> listen_tcp53() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error(errno_text("socket"));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  // Inherited by every accepted socket: bounds what the kernel holds for a client that
  // pipelines queries and never reads its answers.
  const int size = dns_tcp_server::kSocketBuffer;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(dns::kPort);
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 || listen(fd, 128) != 0) {
    auto e = make_error(errno_text("bind/listen on TCP port 53"));
    close(fd);
    return e;
  }
  return fd;
}

}  // namespace

result<std::unique_ptr<dns_tcp_server>> dns_tcp_server::open(dataplane& dp, unsigned workers,
                                                             unsigned qsbr_id,
                                                             const dns_config::tcp_limits& limits) {
  // Everything that binds to a network namespace (the TAP interface and its queues, the
  // ioctl sockets the PMD keeps, our listening socket) is made by one thread that moved to a
  // fresh namespace; those objects keep it alive after the thread is gone.
  result<uint16_t> port = make_error("not started");
  result<port_info> info = make_error("not started");
  result<rte_ether_addr> mac = make_error("not started");
  result<int> fd = make_error("not started");
  result<std::unique_ptr<dns_resolver>> resolver = make_error("not started");
  std::thread t([&] {
    if (unshare(CLONE_NEWNET) != 0) {
      port = make_error(errno_text("unshare(CLONE_NEWNET)"));
      return;
    }
    port = probe(std::string(kTapDevice) + ",iface=" + kTapIface);
    if (!port) return;
    info = start_port(*port, "dns-tcp", 1024, 1024, workers, dp.pool);
    if (!info) return;
    mac = configure_kernel_side(dp.dns_addresses);
    if (!mac) return;
    fd = listen_tcp53();
    if (fd) resolver = dns_resolver::open(dp);
  });
  t.join();
  std::string where = "dns: TCP server: ";
  if (!port) return make_error(where + port.message());
  if (!info) return make_error(where + info.message());
  if (!mac) return make_error(where + mac.message());
  if (!fd) return make_error(where + fd.message());
  if (!resolver) return make_error(where + resolver.message());
  if (dp.ports.size() >= kMaxPorts) {
    return make_error(where + "needs a port slot of its own: use at most " +
                      std::to_string(kMaxPorts - 1) + " [[port]]s with [dns]");
  }
  info->mac = *mac;  // what the workers address the kernel's frames to
  dp.dns_tcp_port = static_cast<uint16_t>(dp.ports.size());
  dp.ports.push_back(*info);
  return std::unique_ptr<dns_tcp_server>(
      new dns_tcp_server(dp, *fd, qsbr_id, limits, std::move(*resolver)));
}

dns_tcp_server::~dns_tcp_server() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
  ::close(listen_fd_);
}

void dns_tcp_server::start() {
  thread_ = std::thread([this] { run(); });
}

// One client connection: where it is in reading its query (length prefix, then body) and
// what is left to send of its answer. Never both: the next query is read once the answer is
// out (with the kernel).
struct dns_tcp_server::connection {
  int fd = -1;
  uint32_t source = 0;  // client address (host order), for tcp_connections_per_source
  std::chrono::steady_clock::time_point active;   // accepted, or the last byte read or sent
  std::chrono::steady_clock::time_point started;  // the query's first byte
  uint8_t head[2] = {};                           // the query's length prefix
  uint8_t head_len = 0;
  std::vector<uint8_t> query;  // its body, sized (and counted in buffered_) once head is in
  size_t query_got = 0;
  std::vector<uint8_t> out;  // what the kernel did not take of the last answer (buffered_)
  size_t out_sent = 0;
  bool waiting = false;    // the query waits for tcp_memory (counted once per query)
  uint64_t id = 0;         // for the resolver's answers (resolve_tcp)
  bool resolving = false;  // its answer waits for an upstream (dns_resolver)

  size_t query_len() const { return static_cast<size_t>(head[0] << 8 | head[1]); }
  bool reading() const { return head_len > 0; }
  bool idle() const { return !reading() && out.empty() && !resolving; }
  bool body_unreserved() const { return head_len == 2 && query.size() != query_len(); }
};

namespace {
bool would_block() { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR; }
}  // namespace

void dns_tcp_server::run() {
  rte_rcu_qsbr_thread_register(dp_.qsbr, qsbr_id_);
  scratch_.resize(2 + 65535);
  std::vector<connection> conns;
  std::vector<pollfd> fds;
  while (!stop_.load(std::memory_order_relaxed)) {
    // Slot 0: the listening socket; then one slot per connection, in conns' order, from
    // `first`. Another kind of descriptor gets slots of its own before `first` and its own
    // handler below.
    fds.assign(1, pollfd{listen_fd_, POLLIN, 0});
    const size_t first = fds.size();
    for (const auto& c : conns) {
      // No reading until the answer is out; a query waiting for memory polls for nothing.
      // Nor while its answer waits for the resolver.
      const short want = !c.out.empty() ? POLLOUT : c.waiting || c.resolving ? 0 : POLLIN;
      fds.push_back({c.fd, want, 0});
    }
    const size_t resolver_at = fds.size();
    resolver_->poll_fds(fds);
    if (poll(fds.data(), fds.size(), 200) < 0 && errno != EINTR) break;
    resolver_->serve(fds.data() + resolver_at, dp_, qsbr_id_);
    now_ = std::chrono::steady_clock::now();
    size_t kept = 0;
    for (size_t i = 0; i < conns.size(); ++i) {
      connection& c = conns[i];
      // A query waiting for memory is looked at every round (it polls for nothing).
      const short revents = fds[first + i].revents;
      closed why = revents || c.waiting ? serve(c, revents) : closed::no;
      if (why == closed::no) why = expire(c);
      if (why == closed::idle) stats_.idle_closed.fetch_add(1, std::memory_order_relaxed);
      if (why == closed::deadline) {
        stats_.message_timeouts.fetch_add(1, std::memory_order_relaxed);
      }
      if (why != closed::no) {
        release(c);
        continue;
      }
      if (kept != i) conns[kept] = std::move(c);
      ++kept;
    }
    conns.erase(conns.begin() + static_cast<long>(kept), conns.end());
    deliver_resolved(conns);
    if (fds[0].revents & POLLIN) accept_all(conns);
  }
  for (auto& c : conns) release(c);
  rte_rcu_qsbr_thread_unregister(dp_.qsbr, qsbr_id_);
}

void dns_tcp_server::accept_all(std::vector<connection>& conns) {
  for (;;) {
    sockaddr_in peer{};
    socklen_t peer_len = sizeof(peer);
    const int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &peer_len,
                           SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    const uint32_t source = ntohl(peer.sin_addr.s_addr);
    size_t same = 0;
    for (const auto& c : conns) same += c.source == source;
    if (same >= limits_.connections_per_source) {
      ::close(fd);
      stats_.refused_connections.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (conns.size() >= limits_.connections) {
      // The oldest idle connection goes (RFC 7766 6.2.3: the server may close idle ones);
      // with none idle, the one that made no progress for longest.
      auto victim = std::min_element(conns.begin(), conns.end(), [](const auto& a, const auto& b) {
        return std::pair(!a.idle(), a.active) < std::pair(!b.idle(), b.active);
      });
      release(*victim);
      conns.erase(victim);
      stats_.evicted.fetch_add(1, std::memory_order_relaxed);
    }
    connection c;
    c.fd = fd;
    c.source = source;
    c.active = now_;
    c.id = next_id_++;
    conns.push_back(std::move(c));
    stats_.connections.fetch_add(1, std::memory_order_relaxed);
  }
}

dns_tcp_server::closed dns_tcp_server::serve(connection& c, short revents) {
  if (revents & (POLLERR | POLLHUP | POLLNVAL)) return closed::peer;
  if (c.resolving) return closed::no;
  if (!c.out.empty()) {
    if (closed why = send_out(c); why != closed::no || !c.out.empty()) return why;
  }
  for (unsigned q = 0; q < kQueriesPerRound && c.out.empty(); ++q) {
    if (c.head_len < 2) {
      const ssize_t n = recv(c.fd, c.head + c.head_len, 2u - c.head_len, 0);
      if (n <= 0) return n < 0 && would_block() ? closed::no : closed::peer;
      if (c.head_len == 0) c.started = now_;
      c.head_len = static_cast<uint8_t>(c.head_len + n);
      c.active = now_;
      if (c.head_len < 2) return closed::no;
    }
    const size_t len = c.query_len();
    uint8_t* msg = scratch_.data() + 2;
    if (c.query.empty() && len > 0) {
      // Usually the whole query is here already: it goes straight to the scratch buffer,
      // with nothing reserved, so only queries that arrive in pieces use tcp_memory (and a
      // budget taken by those does not hold up anyone else's).
      const ssize_t n = recv(c.fd, msg, len, MSG_PEEK);
      if (n <= 0) return n < 0 && would_block() ? closed::no : closed::peer;
      if (static_cast<size_t>(n) == len) {
        if (recv(c.fd, msg, len, 0) != n) return closed::peer;  // we are its only reader
        c.active = now_;
        if (closed why = answer(c, len); why != closed::no) return why;
        continue;
      }
    }
    if (c.body_unreserved()) {
      if (buffered_ + len > limits_.memory) {
        if (!c.waiting) stats_.memory_limited.fetch_add(1, std::memory_order_relaxed);
        c.waiting = true;
        return closed::no;
      }
      c.waiting = false;
      c.query.resize(len);
      buffered_ += len;
    }
    while (c.query_got < len) {
      const ssize_t n = recv(c.fd, c.query.data() + c.query_got, len - c.query_got, 0);
      if (n <= 0) return n < 0 && would_block() ? closed::no : closed::peer;
      c.query_got += static_cast<size_t>(n);
      c.active = now_;
    }
    if (len) std::memcpy(msg, c.query.data(), len);
    buffered_ -= len;
    std::vector<uint8_t>().swap(c.query);
    c.query_got = 0;
    if (closed why = answer(c, len); why != closed::no) return why;
  }
  return closed::no;
}

// Answers the query of `len` bytes at scratch_ + 2 and sends the answer; a CNAME chain that
// leaves the zone goes to the resolver first (deliver_resolved sends its answer).
dns_tcp_server::closed dns_tcp_server::answer(connection& c, size_t len) {
  uint8_t* msg = scratch_.data() + 2;
  c.head_len = 0;
  c.waiting = false;
  rte_rcu_qsbr_thread_online(dp_.qsbr, qsbr_id_);
  // acquire: pairs with the control thread's release store of the snapshot.
  const snapshot* snap = dp_.snap.load(std::memory_order_acquire);
  auto ups = dns_resolver::upstreams(snap);
  const dns::answer_result r =
      dns::answer(snap ? snap->dns.get() : nullptr, msg, len, 65535, false, 0, false,
                  ups.empty() ? dns::chase::stop : dns::chase::write);
  rte_rcu_qsbr_thread_offline(dp_.qsbr, qsbr_id_);
  stats_.outcomes[static_cast<size_t>(r.how)].fetch_add(1, std::memory_order_relaxed);
  if (!r.len) return closed::peer;  // not a query: nothing to say on this connection
  if (r.how == dns::outcome::resolve) {
    c.resolving = true;
    c.active = now_;
    resolver_->resolve_tcp(c.id, msg, r, std::move(ups));
    return closed::no;
  }
  return send_answer(c, r.len);
}

// Sends the answer of `len` bytes at scratch_ + 2 (its length prefix goes before it); what
// the kernel does not take is kept, within tcp_memory.
dns_tcp_server::closed dns_tcp_server::send_answer(connection& c, size_t len) {
  scratch_[0] = static_cast<uint8_t>(len >> 8);
  scratch_[1] = static_cast<uint8_t>(len);
  const size_t total = 2 + len;
  ssize_t n = send(c.fd, scratch_.data(), total, MSG_NOSIGNAL);
  if (n < 0) {
    if (!would_block()) return closed::peer;
    n = 0;
  }
  if (n > 0) c.active = now_;
  const size_t rest = total - static_cast<size_t>(n);
  if (rest == 0) return closed::no;
  if (buffered_ + rest > limits_.memory) {
    stats_.memory_limited.fetch_add(1, std::memory_order_relaxed);
    return closed::memory;
  }
  c.out.assign(scratch_.begin() + n, scratch_.begin() + static_cast<long>(total));
  c.out_sent = 0;
  buffered_ += rest;
  return closed::no;
}

// The resolver's finished answers to the connections still open (others are dropped).
void dns_tcp_server::deliver_resolved(std::vector<connection>& conns) {
  for (auto& [id, msg] : resolver_->take_tcp_answers()) {
    auto c =
        std::find_if(conns.begin(), conns.end(), [id = id](const auto& x) { return x.id == id; });
    if (c == conns.end() || !c->resolving || msg.size() > 65535) continue;
    c->resolving = false;
    std::memcpy(scratch_.data() + 2, msg.data(), msg.size());
    if (send_answer(*c, msg.size()) != closed::no) {
      release(*c);
      conns.erase(c);
    }
  }
}

dns_tcp_server::closed dns_tcp_server::send_out(connection& c) {
  const ssize_t n = send(c.fd, c.out.data() + c.out_sent, c.out.size() - c.out_sent, MSG_NOSIGNAL);
  if (n < 0) return would_block() ? closed::no : closed::peer;
  c.out_sent += static_cast<size_t>(n);
  c.active = now_;
  if (c.out_sent == c.out.size()) {
    buffered_ -= c.out.size();
    std::vector<uint8_t>().swap(c.out);
    c.out_sent = 0;
  }
  return closed::no;
}

dns_tcp_server::closed dns_tcp_server::expire(const connection& c) const {
  if (c.reading() && now_ - c.started > std::chrono::seconds(limits_.message_timeout)) {
    return closed::deadline;
  }
  if (now_ - c.active > std::chrono::seconds(limits_.idle_timeout)) return closed::idle;
  return closed::no;
}

void dns_tcp_server::release(connection& c) {
  ::close(c.fd);
  buffered_ -= c.query.size() + c.out.size();
}

}  // namespace ferry::dp
