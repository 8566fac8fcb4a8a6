#include "dns_resolver.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <rte_rcu_qsbr.h>
#include <sched.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace ferry::dns {
namespace {

constexpr uint16_t kQr = 0x8000, kTc = 0x0200, kRcodeMask = 0x000f;
constexpr uint16_t kServFail = 2, kNxDomain = 3;
constexpr size_t kOpt = 11;

uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t get32(const uint8_t* p) { return static_cast<uint32_t>(get16(p)) << 16 | get16(p + 2); }
void put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
void append16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v));
}

// The (possibly compressed) name at pos, lower-cased into `out`; pointers must go backwards,
// so it ends. Returns the position after it in the message, 0 when malformed.
size_t read_name(const uint8_t* msg, size_t len, size_t pos, std::string& out) {
  out.clear();
  size_t after = 0;
  for (size_t limit = pos;;) {
    if (pos >= len) return 0;
    const uint8_t l = msg[pos];
    if ((l & 0xC0) == 0xC0) {
      if (pos + 2 > len) return 0;
      const size_t to = get16(msg + pos) & 0x3FFF;
      if (!after) after = pos + 2;
      if (to >= limit) return 0;  // only backwards: no loop
      pos = limit = to;
      continue;
    }
    if (l & 0xC0 || pos + 1u + l > len || out.size() + 1u + l > kMaxName) return 0;
    out.push_back(static_cast<char>(l));
    for (size_t i = 1; i <= l; ++i) {
      const uint8_t c = msg[pos + i];
      out.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c | 0x20 : c));
    }
    pos += 1u + l;
    if (!l) return after ? after : pos;
  }
}

size_t name_len_at(const uint8_t* msg, size_t at, size_t end) {
  for (size_t pos = at; pos < end;) {
    const uint8_t l = msg[pos];
    if (l & 0xC0) return 0;
    pos += 1u + l;
    if (!l) return pos - at;
  }
  return 0;
}

}  // namespace

std::string upstream_query(uint16_t id, const std::string& name, uint16_t qtype) {
  std::string q;
  append16(q, id);
  append16(q, 0x0100);  // RD
  append16(q, 1);
  append16(q, 0);
  append16(q, 0);
  append16(q, 1);
  q += name;
  append16(q, qtype);
  append16(q, kClassIn);
  q.push_back(0);  // OPT: root owner
  append16(q, kTypeOpt);
  append16(q, kEdnsSize);
  q.append(6, '\0');  // extended RCODE, version, flags, RDLENGTH
  return q;
}

bool parse_upstream(const uint8_t* msg, size_t len, uint16_t id, const std::string& name,
                    uint16_t qtype, uint32_t ttl_max, upstream_answer& out) {
  out = {};
  if (len < kHeaderSize || get16(msg) != id || !(get16(msg + 2) & kQr) || get16(msg + 4) != 1) {
    return false;
  }
  const uint16_t flags = get16(msg + 2);
  std::string owner;
  size_t pos = read_name(msg, len, kHeaderSize, owner);
  if (!pos || owner != name || pos + 4 > len || get16(msg + pos) != qtype) return false;
  pos += 4;
  out.rcode = flags & kRcodeMask;
  if (flags & kTc) out.rcode = kServFail;  // no TCP retry here: the client may ask again
  out.ttl = ttl_max;
  std::vector<std::string> chain = {name};  // names the kept records lead to
  size_t bytes = 0;
  const uint16_t an = get16(msg + 6), ns = get16(msg + 8);
  for (uint32_t i = 0; i < an + ns; ++i) {
    pos = read_name(msg, len, pos, owner);
    if (!pos || pos + 10 > len) return false;
    const uint16_t type = get16(msg + pos), klass = get16(msg + pos + 2);
    uint32_t ttl = get32(msg + pos + 4);
    const uint16_t rdlen = get16(msg + pos + 8);
    const size_t data = pos + 10;
    if (data + rdlen > len) return false;
    pos = data + rdlen;
    if (klass != kClassIn) continue;
    if (i >= an) {  // authority: a negative answer's SOA says how long it holds
      if (type == kTypeSoa) out.ttl = std::min(out.ttl, ttl);
      continue;
    }
    if (std::find(chain.begin(), chain.end(), owner) == chain.end()) continue;
    if (ttl > ttl_max) ++out.capped;
    upstream_answer::record rec{owner, type, std::min(ttl, ttl_max), {}};
    if (type == kTypeCname) {
      std::string target;
      if (!read_name(msg, len, data, target)) return false;
      chain.push_back(target);
      rec.rdata = std::move(target);
    } else if (type == qtype && (type == kTypeA || type == kTypeAaaa || type == kTypeTxt)) {
      rec.rdata.assign(reinterpret_cast<const char*>(msg + data), rdlen);
    } else {
      continue;
    }
    bytes += rec.owner.size() + 10 + rec.rdata.size();
    if (out.records.size() >= kMaxUpstreamRecords || bytes > kMaxUpstreamBytes) continue;
    out.ttl = std::min(out.ttl, rec.ttl);
    out.records.push_back(std::move(rec));
  }
  if (out.rcode != 0 && out.rcode != kNxDomain) out.records.clear();
  return true;
}

size_t complete(uint8_t* msg, size_t len, size_t cap, const answer_result& r,
                const upstream_answer& a, uint32_t age) {
  const bool opt = get16(msg + 10) == 1 && len >= kHeaderSize + kOpt;
  size_t end = opt ? len - kOpt : len;
  uint8_t saved[kOpt];
  if (opt) std::memcpy(saved, msg + end, kOpt);
  const size_t limit = std::min(cap, r.limit) - (opt ? kOpt : 0);
  const std::string target(reinterpret_cast<const char*>(msg + r.target_at),
                           name_len_at(msg, r.target_at, end));
  uint16_t ancount = get16(msg + 6);
  bool truncated = false;
  for (const auto& rec : a.records) {
    const bool pointer = rec.owner == target && r.target_at <= 0x3FFF;
    const size_t owner = pointer ? 2 : rec.owner.size();
    if (end + owner + 10 + rec.rdata.size() > limit) {
      truncated = true;
      break;
    }
    uint8_t* p = msg + end;
    if (pointer) {
      put16(p, static_cast<uint16_t>(0xC000 | r.target_at));
    } else {
      std::memcpy(p, rec.owner.data(), owner);
    }
    p += owner;
    put16(p, rec.type);
    put16(p + 2, kClassIn);
    const uint32_t ttl = rec.ttl > age ? rec.ttl - age : 0;
    put16(p + 4, static_cast<uint16_t>(ttl >> 16));
    put16(p + 6, static_cast<uint16_t>(ttl));
    put16(p + 8, static_cast<uint16_t>(rec.rdata.size()));
    std::memcpy(p + 10, rec.rdata.data(), rec.rdata.size());
    end += owner + 10 + rec.rdata.size();
    ++ancount;
  }
  uint16_t flags = get16(msg + 2) & ~kRcodeMask;
  if (truncated) {  // as the responder truncates: the question alone, TC
    end = kHeaderSize + name_len_at(msg, kHeaderSize, len) + 4;
    ancount = 0;
    put16(msg + 8, 0);
    flags |= kTc;
  } else {
    flags |= a.rcode;
  }
  put16(msg + 2, flags);
  put16(msg + 6, ancount);
  if (opt) {
    std::memcpy(msg + end, saved, kOpt);
    end += kOpt;
  }
  return end;
}

void servfail(uint8_t* msg, size_t len) {
  if (len >= kHeaderSize) put16(msg + 2, (get16(msg + 2) & ~kRcodeMask) | kServFail);
}

}  // namespace ferry::dns

namespace ferry::dp {

result<std::unique_ptr<dns_resolver>> dns_resolver::open(const dataplane& dp) {
  std::vector<int> fds;
  for (uint32_t a : dp.dns_addresses) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(dns::kPort);
    sa.sin_addr.s_addr = htonl(a);
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
      auto e = make_error(std::string("bind UDP port 53: ") + std::strerror(errno));
      if (fd >= 0) ::close(fd);
      for (int f : fds) ::close(f);
      return e;
    }
    fds.push_back(fd);
  }
  auto r = std::unique_ptr<dns_resolver>(
      new dns_resolver(std::move(fds), dp.dns_addresses.empty() ? 0 : dp.dns_addresses.front(),
                       dp.dns_external_ttl_max, dp.dns_external_cache));
  if (getrandom(&r->rng_, sizeof(r->rng_), 0) != sizeof(r->rng_)) r->rng_ = 0x9e3779b97f4a7c15ULL;
  r->netns_fd_ = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (r->netns_fd_ < 0) return make_error(std::string("open netns: ") + std::strerror(errno));
  return r;
}

dns_resolver::~dns_resolver() {
  for (int fd : client_fds_) ::close(fd);
  for (auto& f : inflight_) ::close(f.fd);
  if (netns_fd_ >= 0) ::close(netns_fd_);
}

void dns_resolver::poll_fds(std::vector<pollfd>& fds) const {
  for (int fd : client_fds_) fds.push_back({fd, POLLIN, 0});
  for (const auto& f : inflight_) fds.push_back({f.fd, POLLIN, 0});
}

void dns_resolver::serve(const pollfd* fds, dataplane& dp, unsigned qsbr_id) {
  if (!in_netns_) in_netns_ = setns(netns_fd_, CLONE_NEWNET) == 0;
  const auto now = clock::now();
  // Replies and timeouts first (inflight_ is what poll_fds saw), then new queries.
  const size_t n = inflight_.size();
  std::vector<bool> done(n, false);
  for (size_t i = 0; i < n; ++i) {
    inflight& f = inflight_[i];
    if (fds[client_fds_.size() + i].revents & POLLIN) on_reply(f, now);
    if (!f.waiters.empty() && now >= f.deadline) {
      finish(f, nullptr, now);
    } else if (!f.waiters.empty() && now - f.sent >= kRetry && f.tries < 2) {
      send_upstream(f);  // one more try, at the next upstream
    }
    done[i] = f.waiters.empty();
  }
  for (size_t i = n; i-- > 0;) {
    if (!done[i]) continue;
    ::close(inflight_[i].fd);
    inflight_.erase(inflight_.begin() + static_cast<long>(i));
  }
  for (size_t i = 0; i < client_fds_.size(); ++i) {
    if (fds[i].revents & POLLIN) on_query(client_fds_[i], dp, qsbr_id, now);
  }
}

std::vector<std::pair<uint32_t, uint16_t>> dns_resolver::upstreams(const snapshot* snap) {
  std::vector<std::pair<uint32_t, uint16_t>> ups;
  if (snap && snap->dns_upstream) {
    for (const auto& b : snap->dns_upstream->backends) {
      if (b.weight) ups.emplace_back(b.ip, b.port);
    }
  }
  return ups;
}

void dns_resolver::on_query(int fd, dataplane& dp, unsigned qsbr_id, clock::time_point now) {
  for (int budget = 64; budget; --budget) {  // bounded per poll round: TCP gets its turn
    waiter w;
    w.fd = fd;
    w.msg.assign(4096, '\0');
    auto* buf = reinterpret_cast<uint8_t*>(w.msg.data());
    const ssize_t got =
        recvfrom(fd, buf, 1500, 0, reinterpret_cast<sockaddr*>(&w.peer), &w.peer_len);
    if (got <= 0) return;
    stats_.queries.fetch_add(1, std::memory_order_relaxed);
    rte_rcu_qsbr_thread_online(dp.qsbr, qsbr_id);
    // acquire: pairs with the control thread's release store of the snapshot.
    const snapshot* snap = dp.snap.load(std::memory_order_acquire);
    auto ups = upstreams(snap);
    w.r = dns::answer(snap ? snap->dns.get() : nullptr, buf, static_cast<size_t>(got), w.msg.size(),
                      true, 1472, false, ups.empty() ? dns::chase::stop : dns::chase::write);
    rte_rcu_qsbr_thread_offline(dp.qsbr, qsbr_id);
    if (!w.r.len) continue;
    w.msg.resize(w.r.len);
    if (w.r.how != dns::outcome::resolve) {
      reply(w);
      continue;
    }
    resolve(std::move(w), std::move(ups), now);
  }
}

void dns_resolver::resolve_tcp(uint64_t conn, const uint8_t* msg, const dns::answer_result& r,
                               std::vector<std::pair<uint32_t, uint16_t>> ups) {
  stats_.queries.fetch_add(1, std::memory_order_relaxed);
  waiter w;
  w.tcp = conn;
  w.msg.assign(reinterpret_cast<const char*>(msg), r.len);
  w.r = r;
  resolve(std::move(w), std::move(ups), clock::now());
}

namespace {
// Room for the chain so far and every record an upstream's answer may add.
size_t with_room(size_t len) { return len + 2 * dns::kMaxUpstreamBytes; }
}  // namespace

// w.msg is the responder's answer so far (outcome resolve): the chain's target is asked of an
// upstream, or found in the cache.
void dns_resolver::resolve(waiter w, std::vector<std::pair<uint32_t, uint16_t>> ups,
                           clock::time_point now) {
  const uint8_t* m = reinterpret_cast<const uint8_t*>(w.msg.data());
  std::string name;
  for (size_t at = w.r.target_at; at < w.msg.size();) {
    const uint8_t l = m[at];
    name.append(w.msg, at, 1u + l);
    at += 1u + l;
    if (!l) break;
  }
  size_t qend = dns::kHeaderSize;
  while (qend < w.msg.size() && m[qend]) qend += 1u + m[qend];
  const uint16_t qtype = static_cast<uint16_t>(m[qend + 1] << 8 | m[qend + 2]);
  std::string key = name;
  key.push_back(static_cast<char>(qtype >> 8));
  key.push_back(static_cast<char>(qtype));

  if (auto c = cache_.find(key); c != cache_.end()) {
    if (now < c->second.expires) {
      stats_.cache_hits.fetch_add(1, std::memory_order_relaxed);
      const auto age = static_cast<uint32_t>(
          std::chrono::duration_cast<std::chrono::seconds>(now - c->second.stored).count());
      w.msg.resize(with_room(w.r.len));
      w.msg.resize(dns::complete(reinterpret_cast<uint8_t*>(w.msg.data()), w.r.len, w.msg.size(),
                                 w.r, c->second.answer, age));
      reply(w);
      return;
    }
    cache_.erase(c);
  }
  if (pending_ >= kMaxPending) {
    stats_.pending_full.fetch_add(1, std::memory_order_relaxed);
    stats_.servfail.fetch_add(1, std::memory_order_relaxed);
    dns::servfail(reinterpret_cast<uint8_t*>(w.msg.data()), w.msg.size());
    reply(w);
    return;
  }
  ++pending_;
  auto same = std::find_if(inflight_.begin(), inflight_.end(),
                           [&](const inflight& f) { return f.key == key; });
  if (same != inflight_.end()) {  // asked already: wait for that answer
    same->waiters.push_back(std::move(w));
    return;
  }
  inflight f;
  f.key = std::move(key);
  f.name = std::move(name);
  f.qtype = qtype;
  f.upstreams = std::move(ups);
  rng_ = rng_ * 6364136223846793005ULL + 1442695040888963407ULL;
  f.id = static_cast<uint16_t>(rng_ >> 48);
  f.deadline = now + kTimeout;
  f.waiters.push_back(std::move(w));
  if (!send_upstream(f)) {
    finish(f, nullptr, now);
    return;
  }
  inflight_.push_back(std::move(f));
}

// A fresh socket per query and try: a random source port as well as a random ID, and the
// kernel passes only the upstream's datagrams (connected).
bool dns_resolver::send_upstream(inflight& f) {
  if (f.upstreams.empty()) return false;
  const auto& [ip, port] = f.upstreams[(f.id + f.tries) % f.upstreams.size()];
  ++f.tries;
  if (f.fd >= 0) ::close(f.fd);
  f.fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (f.fd < 0) return false;
  sockaddr_in src{}, dst{};
  src.sin_family = dst.sin_family = AF_INET;
  src.sin_addr.s_addr = htonl(source_);
  dst.sin_addr.s_addr = htonl(ip);
  dst.sin_port = htons(port);
  const std::string q = dns::upstream_query(f.id, f.name, f.qtype);
  if (bind(f.fd, reinterpret_cast<sockaddr*>(&src), sizeof(src)) != 0 ||
      connect(f.fd, reinterpret_cast<sockaddr*>(&dst), sizeof(dst)) != 0 ||
      send(f.fd, q.data(), q.size(), 0) < 0) {
    return false;
  }
  stats_.upstream_queries.fetch_add(1, std::memory_order_relaxed);
  f.sent = clock::now();
  return true;
}

void dns_resolver::on_reply(inflight& f, clock::time_point now) {
  uint8_t buf[4096];
  for (ssize_t got; (got = recv(f.fd, buf, sizeof(buf), 0)) > 0;) {
    dns::upstream_answer a;
    if (!dns::parse_upstream(buf, static_cast<size_t>(got), f.id, f.name, f.qtype, ttl_max_, a)) {
      continue;  // not the answer: wait on
    }
    stats_.ttl_capped.fetch_add(a.capped, std::memory_order_relaxed);
    if (a.rcode == 0 || a.rcode == 3) {
      store(f.key, a, now);
      finish(f, &a, now);
    } else {
      finish(f, nullptr, now);
    }
    return;
  }
}

void dns_resolver::finish(inflight& f, const dns::upstream_answer* a, clock::time_point) {
  for (auto& w : f.waiters) {
    if (a) {
      const size_t len = w.msg.size();
      w.msg.resize(with_room(len));
      w.msg.resize(
          dns::complete(reinterpret_cast<uint8_t*>(w.msg.data()), len, w.msg.size(), w.r, *a, 0));
    } else {
      stats_.servfail.fetch_add(1, std::memory_order_relaxed);
      dns::servfail(reinterpret_cast<uint8_t*>(w.msg.data()), w.msg.size());
    }
    reply(w);
  }
  pending_ -= f.waiters.size();
  f.waiters.clear();
}

void dns_resolver::store(const std::string& key, const dns::upstream_answer& a,
                         clock::time_point now) {
  if (!cache_size_ || !a.ttl) return;
  if (cache_.size() >= cache_size_ && !cache_.count(key)) {
    // Full: drop what has expired; if nothing has, the entry closest to expiry.
    for (auto it = cache_.begin(); it != cache_.end();) {
      it = now >= it->second.expires ? cache_.erase(it) : std::next(it);
    }
    if (cache_.size() >= cache_size_) {
      auto oldest = std::min_element(
          cache_.begin(), cache_.end(),
          [](const auto& x, const auto& y) { return x.second.expires < y.second.expires; });
      cache_.erase(oldest);
      stats_.cache_evicted.fetch_add(1, std::memory_order_relaxed);
    }
  }
  cache_[key] = {a, now, now + std::chrono::seconds(a.ttl)};
}

void dns_resolver::reply(waiter& w) {
  if (w.tcp) {
    tcp_answers_.emplace_back(w.tcp, std::move(w.msg));
    return;
  }
  sendto(w.fd, w.msg.data(), w.msg.size(), 0, reinterpret_cast<const sockaddr*>(&w.peer),
         w.peer_len);
}

}  // namespace ferry::dp
