#include "conntrack.hpp"

#include <rte_malloc.h>
#include <rte_prefetch.h>

#include <bit>
#include <new>

#include "ferry/hash.hpp"

namespace ferry::dp {

const char* flow_state_name(flow_state s) {
  switch (s) {
    case flow_state::free:
      return "free";
    case flow_state::tcp_syn:
      return "SYN_SENT";
    case flow_state::tcp_syn_recv:
      return "SYN_RECV";
    case flow_state::tcp_established:
      return "ESTABLISHED";
    case flow_state::tcp_closing:
      return "CLOSING";
    case flow_state::tcp_reset:
      return "RESET";
    case flow_state::udp:
      return "UDP";
    case flow_state::sctp_init:
      return "SCTP_INIT";
    case flow_state::sctp_established:
      return "SCTP_ESTABLISHED";
    case flow_state::sctp_closing:
      return "SCTP_CLOSING";
    case flow_state::count:
      break;
  }
  return "?";
}

conntrack::conntrack(uint32_t capacity, unsigned workers, rte_rcu_qsbr* qsbr, uint64_t tsc_hz,
                     const conntrack_config& cfg)
    : capacity_(std::max<uint32_t>(capacity, 1024)), workers_(workers), qsbr_(qsbr) {
  // Two keys per flow in at most half the slots: bit_ceil(capacity) / 2 buckets of 8 (a
  // power of two, for masking). Entries are exactly `capacity`: 64 bytes each, plus 32 to
  // 64 bytes of index per entry.
  uint64_t buckets = std::bit_ceil(capacity_) / 2;
  bucket_mask_ = buckets - 1;
  entries_ =
      static_cast<flow_entry*>(rte_zmalloc("ferry_flows", sizeof(flow_entry) * capacity_, 64));
  buckets_ = static_cast<bucket*>(rte_zmalloc("ferry_flow_index", sizeof(bucket) * buckets, 64));
  if (!entries_ || !buckets_) {
    rte_free(entries_);
    rte_free(buckets_);
    entries_ = nullptr;
    buckets_ = nullptr;
    capacity_ = 0;
    return;
  }
  for (uint32_t i = 0; i < capacity_; ++i) new (&entries_[i]) flow_entry{};
  for (uint64_t i = 0; i < buckets; ++i) new (&buckets_[i]) bucket{};
  touch_tick_ = tsc_hz / 8;
  // Every entry is looked at within 2 s of its timeout; timeouts are seconds or more.
  sweep_period_ = tsc_hz * 2;
  timeouts_[static_cast<size_t>(flow_state::free)] = 0;
  timeouts_[static_cast<size_t>(flow_state::tcp_syn)] = tsc_hz * cfg.tcp_syn_timeout;
  timeouts_[static_cast<size_t>(flow_state::tcp_syn_recv)] = tsc_hz * cfg.tcp_syn_timeout;
  timeouts_[static_cast<size_t>(flow_state::tcp_established)] =
      tsc_hz * cfg.tcp_established_timeout;
  timeouts_[static_cast<size_t>(flow_state::tcp_closing)] = tsc_hz * cfg.tcp_closing_timeout;
  timeouts_[static_cast<size_t>(flow_state::tcp_reset)] = tsc_hz * cfg.tcp_rst_timeout;
  timeouts_[static_cast<size_t>(flow_state::udp)] = tsc_hz * cfg.udp_timeout;
  timeouts_[static_cast<size_t>(flow_state::sctp_init)] = tsc_hz * cfg.sctp_init_timeout;
  timeouts_[static_cast<size_t>(flow_state::sctp_established)] =
      tsc_hz * cfg.sctp_established_timeout;
  timeouts_[static_cast<size_t>(flow_state::sctp_closing)] = tsc_hz * cfg.sctp_closing_timeout;
  const uint32_t syn_total = cfg.syn_max ? std::min(cfg.syn_max, capacity_) : capacity_ / 8;
  syn_max_ = std::max<uint32_t>(1, syn_total / workers_);
  rst_window_ = cfg.tcp_rst_window;
  seq_tick_ = rst_window_ / 4;
  lines_per_row_ = (2 * workers_ + 7) / 8;
  ledger_ = std::make_unique<ledger_line[]>(size_t{workers_} * lines_per_row_);
}

conntrack::~conntrack() {
  rte_free(entries_);
  rte_free(buckets_);
}

void conntrack::init_worker(conntrack_worker& w, unsigned index, uint32_t qsbr_thread) const {
  uint32_t share = capacity_ / workers_;
  w.index = index;
  w.qsbr_thread = qsbr_thread;
  w.sweep_begin = index * share;
  w.sweep_end = index + 1 == workers_ ? capacity_ : w.sweep_begin + share;
  w.sweep_cursor = w.sweep_begin;
  w.free.clear();
  w.free.reserve(w.sweep_end - w.sweep_begin);
  // Pop from the back: hand out low indices first (nicer to read in `get flows`).
  for (uint32_t i = w.sweep_end; i > w.sweep_begin; --i) w.free.push_back(i - 1);
  w.reclaim.assign(w.sweep_end - w.sweep_begin, {});
  w.reclaim_head = w.reclaim_count = 0;
}

bool conntrack::key_matches(const flow_entry& e, flow_dir dir, const flow_key& k) {
  if (e.proto != k.proto) return false;
  if (dir == flow_dir::forward) {
    return e.client_ip == k.src_ip && e.vip == k.dst_ip && e.client_port == k.src_port &&
           e.vport == k.dst_port;
  }
  return e.backend_ip == k.src_ip && e.peer_ip() == k.dst_ip && e.backend_port == k.src_port &&
         e.peer_port() == k.dst_port;
}

flow_match conntrack::lookup(const flow_key& k, uint64_t hash, uint64_t hint) const {
  // The slot stage 2 saw first: on a hit (nearly every packet of an established flow) the
  // bucket needs no second scan. A stale hint just fails the key check.
  if (hint) {
    uint32_t code = static_cast<uint32_t>(hint) - 1;
    flow_entry& e = entries_[code >> 1];
    auto dir = static_cast<flow_dir>(code & 1);
    if (e.state.load(std::memory_order_relaxed) != flow_state::free && key_matches(e, dir, k) &&
        !e.flushed.load(std::memory_order_relaxed)) {
      return {&e, dir};
    }
  }
  const auto sig = static_cast<uint32_t>(hash >> 32);
  for (unsigned p = 0; p < kMaxProbe; ++p) {
    const bucket& b = buckets_[(hash + p) & bucket_mask_];
    bool saw_empty = false;
    for (const auto& slot : b.slot) {
      // acquire: pairs with the release CAS in link(); the entry's fields are visible.
      uint64_t v = slot.load(std::memory_order_acquire);
      if (v == kEmpty) {
        saw_empty = true;
        continue;
      }
      if (v == kTomb || static_cast<uint32_t>(v >> 32) != sig) continue;
      uint32_t code = static_cast<uint32_t>(v) - 1;
      flow_entry& e = entries_[code >> 1];
      auto dir = static_cast<flow_dir>(code & 1);
      if (e.state.load(std::memory_order_relaxed) != flow_state::free && key_matches(e, dir, k) &&
          !e.flushed.load(std::memory_order_relaxed)) {
        return {&e, dir};
      }
    }
    if (saw_empty) break;
  }
  return {};
}

bool conntrack::link(uint64_t hash, uint32_t entry, flow_dir dir, uint32_t& slot_out) {
  const uint64_t value =
      (hash >> 32 << 32) | (uint64_t{entry} * 2 + static_cast<uint32_t>(dir) + 1);
  for (unsigned p = 0; p < kMaxProbe; ++p) {
    uint64_t bi = (hash + p) & bucket_mask_;
    bucket& b = buckets_[bi];
    for (unsigned s = 0; s < kSlotsPerBucket; ++s) {
      uint64_t v = b.slot[s].load(std::memory_order_relaxed);
      if (v != kEmpty && v != kTomb) continue;
      // release: the entry was filled in before it becomes reachable.
      if (b.slot[s].compare_exchange_strong(v, value, std::memory_order_release,
                                            std::memory_order_relaxed)) {
        slot_out = static_cast<uint32_t>(bi * kSlotsPerBucket + s);
        return true;
      }
    }
  }
  return false;
}

void conntrack::unlink(unsigned by, flow_entry& e) {
  for (uint32_t s : e.slots) {
    if (s == UINT32_MAX) continue;
    // relaxed: readers that still see the old value are covered by the grace period.
    buckets_[s / kSlotsPerBucket].slot[s % kSlotsPerBucket].store(kTomb, std::memory_order_relaxed);
  }
  // An exchange, not a store: a worker may move the entry out of embryo meanwhile, and
  // exactly one of us counts it leaving.
  if (embryonic_state(e.state.exchange(flow_state::free, std::memory_order_relaxed))) {
    left(by, e.owner).add();
  }
}

flow_entry* conntrack::insert(conntrack_worker& w, const flow_key& fwd, const flow_nat& nat,
                              uint32_t service_id, flow_state state, uint64_t now, tcp_seq seq) {
  if (w.free.empty()) return nullptr;
  uint32_t idx = w.free.back();
  flow_entry& e = entries_[idx];
  e.client_ip = fwd.src_ip;
  e.vip = fwd.dst_ip;
  e.client_port = fwd.src_port;
  e.vport = fwd.dst_port;
  e.proto = fwd.proto;
  e.backend_ip = nat.backend_ip;
  e.backend_port = nat.backend_port;
  e.snat_ip = nat.snat_ip;
  e.snat_port = nat.snat_port;
  e.owner = static_cast<uint8_t>(w.index);
  e.service_id = service_id;
  e.created = now;
  e.slots[0] = e.slots[1] = UINT32_MAX;
  e.last_seen.store(now, std::memory_order_relaxed);
  e.seq_end[0].store(seq.forward, std::memory_order_relaxed);
  e.seq_end[1].store(seq.reply, std::memory_order_relaxed);
  e.flushed.store(false, std::memory_order_relaxed);
  e.state.store(state, std::memory_order_relaxed);
  if (embryonic_state(state)) entered(w.index, w.index).add();

  flow_key rev{e.backend_ip, e.peer_ip(), e.backend_port, e.peer_port(), fwd.proto};
  if (!link(hash(fwd), idx, flow_dir::forward, e.slots[0]) ||
      !link(hash(rev), idx, flow_dir::reply, e.slots[1])) {
    // A reader may already have seen the first slot: recycle through the grace period.
    unlink(w.index, e);
    w.reclaim[(w.reclaim_head + w.reclaim_count++) % w.reclaim.size()] = {
        idx, rte_rcu_qsbr_start(qsbr_)};
    w.free.pop_back();
    return nullptr;
  }
  w.free.pop_back();
  return &e;
}

uint32_t conntrack::sweep(conntrack_worker& w, uint64_t now, uint32_t budget) {
  // Recycle what has waited out its grace period (FIFO: tokens only grow).
  while (w.reclaim_count) {
    auto& p = w.reclaim[w.reclaim_head];
    if (rte_rcu_qsbr_check(qsbr_, p.token, false) != 1) break;
    w.free.push_back(p.entry);
    w.reclaim_head = (w.reclaim_head + 1) % w.reclaim.size();
    --w.reclaim_count;
  }

  uint32_t expired = 0;
  uint64_t token = 0;
  bool started = false;  // one grace period for the whole pass
  for (uint32_t n = 0; n < budget; ++n) {
    flow_entry& e = entries_[w.sweep_cursor];
    if (++w.sweep_cursor == w.sweep_end) w.sweep_cursor = w.sweep_begin;
    flow_state s = e.state.load(std::memory_order_relaxed);
    if (s == flow_state::free) continue;
    // Another worker may have stamped a slightly later TSC than our burst's `now`.
    uint64_t seen = e.last_seen.load(std::memory_order_relaxed);
    const bool flushed = e.flushed.load(std::memory_order_relaxed);
    if (!flushed && (now <= seen || now - seen <= timeouts_[static_cast<size_t>(s)])) continue;
    unlink(w.index, e);
    if (!started) {
      token = rte_rcu_qsbr_start(qsbr_);
      started = true;
    }
    expired += !flushed;
    w.reclaim[(w.reclaim_head + w.reclaim_count++) % w.reclaim.size()] = {
        static_cast<uint32_t>(&e - entries_), token};
  }
  return expired;
}

}  // namespace ferry::dp
