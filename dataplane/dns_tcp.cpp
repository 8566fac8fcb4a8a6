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

struct connection {
  int fd;
  std::vector<uint8_t> in, out;
  std::chrono::steady_clock::time_point last;
};

}  // namespace

result<std::unique_ptr<dns_tcp_server>> dns_tcp_server::open(dataplane& dp, unsigned workers,
                                                             unsigned qsbr_id) {
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
      new dns_tcp_server(dp, *fd, qsbr_id, std::move(*resolver)));
}

dns_tcp_server::~dns_tcp_server() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
  ::close(listen_fd_);
}

void dns_tcp_server::start() {
  thread_ = std::thread([this] { run(); });
}

void dns_tcp_server::run() {
  rte_rcu_qsbr_thread_register(dp_.qsbr, qsbr_id_);
  std::vector<connection> conns;
  std::vector<pollfd> fds;
  std::vector<uint8_t> buf(65535 + 2);
  while (!stop_.load(std::memory_order_relaxed)) {
    fds.assign(1, pollfd{listen_fd_, POLLIN, 0});
    for (const auto& c : conns) {
      fds.push_back({c.fd, static_cast<short>(c.out.empty() ? POLLIN : POLLOUT), 0});
    }
    const size_t resolver_at = fds.size();
    resolver_->poll_fds(fds);
    if (poll(fds.data(), fds.size(), 200) < 0 && errno != EINTR) break;
    resolver_->serve(fds.data() + resolver_at, dp_, qsbr_id_);
    const auto now = std::chrono::steady_clock::now();
    std::vector<bool> gone(conns.size(), false);
    for (size_t i = 0; i < conns.size(); ++i) {
      connection& c = conns[i];
      const short ev = fds[i + 1].revents;
      if (ev & (POLLERR | POLLHUP | POLLNVAL)) {
        gone[i] = true;
        continue;
      }
      if (ev & POLLOUT) {
        ssize_t n = send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN) gone[i] = true;
        if (n > 0) c.out.erase(c.out.begin(), c.out.begin() + n);
        c.last = now;
      }
      if (ev & POLLIN) {
        ssize_t n = recv(c.fd, buf.data(), buf.size(), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN)) {
          gone[i] = true;
          continue;
        }
        if (n > 0) c.in.insert(c.in.end(), buf.begin(), buf.begin() + n);
        c.last = now;
        // Every whole message (2-byte length, then the query) is answered in order.
        while (c.in.size() >= 2 && c.in.size() >= 2u + (c.in[0] << 8 | c.in[1])) {
          const size_t len = c.in[0] << 8 | c.in[1];
          std::memcpy(buf.data() + 2, c.in.data() + 2, len);
          c.in.erase(c.in.begin(), c.in.begin() + 2 + static_cast<long>(len));
          rte_rcu_qsbr_thread_online(dp_.qsbr, qsbr_id_);
          // acquire: pairs with the control thread's release store of the snapshot.
          const snapshot* snap = dp_.snap.load(std::memory_order_acquire);
          dns::answer_result r =
              dns::answer(snap ? snap->dns.get() : nullptr, buf.data() + 2, len, 65535, false, 0);
          rte_rcu_qsbr_thread_offline(dp_.qsbr, qsbr_id_);
          stats_.outcomes[static_cast<size_t>(r.how)].fetch_add(1, std::memory_order_relaxed);
          if (!r.len) {
            gone[i] = true;
            break;
          }
          buf[0] = static_cast<uint8_t>(r.len >> 8);
          buf[1] = static_cast<uint8_t>(r.len);
          c.out.insert(c.out.end(), buf.begin(), buf.begin() + 2 + static_cast<long>(r.len));
        }
      }
      if (!gone[i] && now - c.last > std::chrono::seconds(kIdleSeconds)) {
        gone[i] = true;
        stats_.idle_closed.fetch_add(1, std::memory_order_relaxed);
      }
    }
    for (size_t i = conns.size(); i-- > 0;) {
      if (!gone[i]) continue;
      ::close(conns[i].fd);
      conns.erase(conns.begin() + static_cast<long>(i));
    }
    if (fds[0].revents & POLLIN) {
      for (int fd;
           (fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
        if (conns.size() >= kMaxConnections) {
          ::close(fd);
          stats_.refused_connections.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        conns.push_back({fd, {}, {}, now});
        stats_.connections.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }
  for (const auto& c : conns) ::close(c.fd);
  rte_rcu_qsbr_thread_unregister(dp_.qsbr, qsbr_id_);
}

}  // namespace ferry::dp
