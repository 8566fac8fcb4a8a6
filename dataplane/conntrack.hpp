// The connection table: every NATed flow, found by its forward key (client -> VIP) and by its
// reply key (backend -> client), so a reply is un-NATed on whichever worker it arrives.
//
// Concurrency contract:
// - Entries are partitioned by worker. Only the owning worker allocates, expires and frees
//   its entries (a private free list: no atomics). Any worker may find any entry and update
//   its state and last_seen (relaxed atomics: a lost update only shifts a timeout).
// - The index is an array of 64-byte buckets of 8 atomic slots. A slot is empty, a tombstone,
//   or (signature, entry, direction). Inserts claim the first empty-or-tombstone slot along
//   the probe sequence with a CAS (release); lookups load slots with acquire, so an entry's
//   fields are visible before its slot is. Slots never go back to empty, so a lookup can stop
//   at the first bucket that has an empty slot.
// - An expired entry is unlinked (slots -> tombstone, state -> free) and put back on the free
//   list only after a QSBR grace period of the same rte_rcu_qsbr the snapshot uses, so a
//   worker still holding it from a lookup never sees it reused.
// - The control thread may read entries (`ferryctl get flows`) for display, and flush them
//   (`ferryctl flush`): it only sets an entry's `flushed` flag. Every lookup treats a flushed
//   entry as absent from then on, so the next packet of the flow makes a new entry; the owner
//   unlinks and recycles the old one on its next sweep pass, like an expired one.
// - Embryonic (SYN_SENT, SYN_RECV) entries are capped per owner (`[conntrack] syn_max`, so a SYN
// flood
//   cannot fill the table and evict nothing but itself). The count is kept in a ledger of
//   single-writer counters: worker `by` counts the entries of owner `o` it moved into the
//   embryonic states and out of them (entered[by][o], left[by][o]); o's count is the sum of its
//   column. A move into or out of them is a CAS on the state (set_state), and freeing is
//   an exchange, so each move is counted exactly once, whichever worker makes it. Reads of
//   other workers' counters may lag by the moves in flight (nanoseconds): the cap holds to
//   within a few entries, never drifts. These are per-connection events (a locked instruction
//   per connection, on the entry's line); established packets never touch the ledger.
// - TCP sequence tracking (blind RSTs): seq_end[d] is where the next byte direction d sends
//   begins (the highest seq + length + SYN + FIN seen from d), 0 while unknown. The owner
//   seeds it in insert() before linking (published by the link's release CAS); after that
//   any worker handling a packet of the flow moves it forward (relaxed loads and stores).
//   Stores are rare: only when the end moved on by more than a quarter of tcp_rst_window (so
//   forward and reply traffic on two workers do not bounce the line on every packet), when
//   it was unknown (the first segment from that side), or when a SYN or SYN-ACK sets it
//   (tcp_syn_seen, tcp_restart). A flow picked up mid-stream is seeded at insert from its
//   first segment's seq and ACK. A lost update (two workers racing) leaves the end behind by
//   about a tick: the RST check allows for a tick, and the next segment writes it again.
#pragma once

#include <rte_prefetch.h>
#include <rte_rcu_qsbr.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <memory>
#include <vector>

#include "ferry/config.hpp"
#include "ferry/counters.hpp"
#include "ferry/hash.hpp"

namespace ferry::dp {

// tcp_syn: the client's SYN; tcp_syn_recv: the backend's SYN-ACK too (both embryonic, until
// the client's ACK); tcp_closing: a FIN was seen (tcp_fin_timeout); tcp_reset: a RST
// (tcp_rst_timeout).
// SCTP, Linux conntrack's states folded to the three ferry needs to expire entries:
// sctp_init from the client's INIT until a COOKIE-ACK (COOKIE_WAIT and COOKIE_ECHOED;
// embryonic), sctp_established, sctp_closing after SHUTDOWN, SHUTDOWN-ACK/COMPLETE or ABORT.
enum class flow_state : uint8_t {
  free = 0,
  tcp_syn,
  tcp_syn_recv,
  tcp_established,
  tcp_closing,
  tcp_reset,
  udp,
  sctp_init,
  sctp_established,
  sctp_closing,
  count
};
const char* flow_state_name(flow_state s);
/// SYN_SENT, SYN_RECV or SCTP_INIT: the handshake has not finished; capped by syn_max.
constexpr bool embryonic_state(flow_state s) {
  return s == flow_state::tcp_syn || s == flow_state::tcp_syn_recv || s == flow_state::sctp_init;
}

/// A flow's addresses as seen on the wire (host order).
struct flow_key {
  uint32_t src_ip = 0, dst_ip = 0;
  uint16_t src_port = 0, dst_port = 0;
  uint8_t proto = 0;
};

struct alignas(64) flow_entry {
  // Written by the owner before the entry is linked, then read-only until it is freed.
  uint32_t client_ip, vip, backend_ip;
  uint16_t client_port, vport, backend_port;
  uint8_t proto;
  uint8_t owner;        // worker index
  uint32_t service_id;  // counter slot of the service port
  uint32_t slots[2];    // index slots of the forward and reply keys, for unlinking
  uint64_t created;     // TSC
  std::atomic<flow_state> state{flow_state::free};
  std::atomic<bool> flushed{false};    // set by the control thread: gone for lookups
  uint16_t snat_port;                  // with snat_ip: the source port the backend sees
  uint32_t snat_ip;                    // 0, or the node address the client is masqueraded to
  std::atomic<uint64_t> last_seen{0};  // TSC; updated coarsely (see touch())
  // TCP: per direction (flow_dir), where the next sequence number sent that way begins; 0:
  // not known yet (see the header comment and tcp_rst_ok()).
  std::atomic<uint32_t> seq_end[2]{};

  /// What the backend sees as its peer: the client, or the node when masqueraded.
  uint32_t peer_ip() const { return snat_ip ? snat_ip : client_ip; }
  uint16_t peer_port() const { return snat_ip ? snat_port : client_port; }
};
static_assert(sizeof(flow_entry) == 64);

enum class flow_dir : uint8_t { forward = 0, reply = 1 };

struct flow_nat {
  uint32_t backend_ip = 0;
  uint16_t backend_port = 0;
  uint32_t snat_ip = 0;
  uint16_t snat_port = 0;
};

/// A TCP flow's sequence ends when its entry is made (flow_entry::seq_end; 0: unknown).
struct tcp_seq {
  uint32_t forward = 0, reply = 0;
};

struct flow_match {
  flow_entry* entry = nullptr;
  flow_dir dir = flow_dir::forward;
};

/// Per-worker private part of the table: free list and reclamation queue.
struct conntrack_worker {
  unsigned index = 0;
  uint32_t qsbr_thread = 0;
  std::vector<uint32_t> free;  // entry indices ready for reuse
  struct pending {
    uint32_t entry;
    uint64_t token;
  };
  std::vector<pending> reclaim;  // FIFO ring of unlinked entries waiting out a grace period
  size_t reclaim_head = 0, reclaim_count = 0;
  uint32_t sweep_begin = 0, sweep_end = 0, sweep_cursor = 0;
  uint64_t sweep_last = 0;  // TSC of the last paced sweep
};

class conntrack {
 public:
  /// capacity entries (at least 1024), split evenly between workers.
  conntrack(uint32_t capacity, unsigned workers, rte_rcu_qsbr* qsbr, uint64_t tsc_hz,
            const conntrack_config& cfg);
  ~conntrack();
  conntrack(const conntrack&) = delete;
  conntrack& operator=(const conntrack&) = delete;

  /// Sets up a worker's private part (its share of entries on its free list).
  void init_worker(conntrack_worker& w, unsigned index, uint32_t qsbr_thread) const;

  static uint64_t hash(const flow_key& k) {
    return hash_tuple(k.src_ip, k.dst_ip, k.src_port, k.dst_port, k.proto);
  }
  /// Stage 1 of a pipelined lookup: bring the key's first bucket towards the cache.
  void prefetch(uint64_t hash) const { rte_prefetch0(&buckets_[hash & bucket_mask_]); }
  /// Stage 2: with the bucket in cache, prefetch the entries whose signature matches, so
  /// lookup() (stage 3) finds both in cache. `hint` gets the first matching slot's value
  /// (0: none), which lookup() tries before scanning the bucket again.
  /// Returns false when the key is certainly absent (no candidate, and the bucket has room,
  /// so the probe sequence ends there).
  bool prefetch_entries(uint64_t hash, uint64_t& hint) const {
    const bucket& b = buckets_[hash & bucket_mask_];
    const auto sig = static_cast<uint32_t>(hash >> 32);
    // Branch-free over the 8 slots (their empty/used pattern is random, so per-slot
    // branches mispredict): a bitmask of signature matches and one of empty slots.
    unsigned match = 0, empty = 0;
    uint64_t v[kSlotsPerBucket];
    for (unsigned i = 0; i < kSlotsPerBucket; ++i) {
      // acquire: pairs with the release CAS in link(), as in lookup().
      v[i] = b.slot[i].load(std::memory_order_acquire);
      bool used = v[i] + 1 > 1;  // neither kEmpty (0) nor kTomb (~0)
      match |= unsigned{used && static_cast<uint32_t>(v[i] >> 32) == sig} << i;
      empty |= unsigned{v[i] == kEmpty} << i;
    }
    hint = match ? v[std::countr_zero(match)] : 0;
    for (unsigned m = match; m; m &= m - 1) {
      rte_prefetch0(&entries_[(static_cast<uint32_t>(v[std::countr_zero(m)]) - 1) >> 1]);
    }
    return match || !empty;
  }
  /// Prefetches the entry the worker's `ahead`-th next insert will use.
  void prefetch_free(const conntrack_worker& w, size_t ahead) const {
    if (ahead < w.free.size()) rte_prefetch0(&entries_[w.free[w.free.size() - 1 - ahead]]);
  }
  flow_match lookup(const flow_key& k, uint64_t hash, uint64_t hint = 0) const;
  /// Whether k is in the table: lookup() behind the branch-free first-bucket test, for the
  /// new-flow path's checks of keys that are nearly always absent.
  bool contains(const flow_key& k) const {
    const uint64_t h = hash(k);
    uint64_t hint;
    return prefetch_entries(h, hint) && lookup(k, h, hint).entry;
  }

  /// Links a new flow; nullptr when the worker has no free entry or no slot is left near
  /// either key's bucket (the caller forwards statelessly and counts it).
  /// `nat` says where the flow goes: the backend and, when masqueraded, the source address
  /// and port the backend sees (snat_ip 0: the client's own).
  flow_entry* insert(conntrack_worker& w, const flow_key& fwd, const flow_nat& nat,
                     uint32_t service_id, flow_state state, uint64_t now, tcp_seq seq = {});

  /// TCP: notes that direction `dir` sent up to `end` (seq + length + SYN + FIN). Writes only
  /// when the end is unknown, or moved on by more than a tick and at most a window and a
  /// segment (kMaxSegment) beyond it: a forged segment far ahead cannot drag the end to where
  /// its RST would fit (a gap from segments lost before ferry fills with their retransmissions).
  void tcp_advance(flow_entry& e, flow_dir dir, uint32_t end) const {
    std::atomic<uint32_t>& mine = e.seq_end[static_cast<unsigned>(dir)];
    const uint32_t known = mine.load(std::memory_order_relaxed);
    const uint32_t ahead = end - known;
    if (!known || (ahead > seq_tick_ && ahead <= seq_tick_ + rst_window_ + kMaxSegment)) {
      mine.store(end, std::memory_order_relaxed);
    }
  }
  /// TCP: sets where `dir` is from its SYN (its initial sequence number + 1).
  static void tcp_syn_seen(flow_entry& e, flow_dir dir, uint32_t syn_end) {
    e.seq_end[static_cast<unsigned>(dir)].store(syn_end, std::memory_order_relaxed);
  }
  /// TCP: whether a RST from `dir` with sequence number `seq` is within the window around
  /// where that direction is known to be (as Linux conntrack's tcp_in_window accepts one):
  /// within tcp_rst_window below or above the tracked end (plus the tick it may lag by). An
  /// unknown end accepts any (nothing to check against yet).
  bool tcp_rst_ok(const flow_entry& e, flow_dir dir, uint32_t seq) const {
    const uint32_t known = e.seq_end[static_cast<unsigned>(dir)].load(std::memory_order_relaxed);
    return !known || seq - known + rst_window_ <= 2 * rst_window_ + seq_tick_;
  }
  /// TCP: restarts sequence tracking for a new SYN from the client on an entry being reused.
  static void tcp_restart(flow_entry& e, uint32_t syn_end) {
    e.seq_end[0].store(syn_end, std::memory_order_relaxed);
    e.seq_end[1].store(0, std::memory_order_relaxed);
  }
  /// TCP: where `dir` is known to be (0: unknown).
  static uint32_t tcp_end(const flow_entry& e, flow_dir dir) {
    return e.seq_end[static_cast<unsigned>(dir)].load(std::memory_order_relaxed);
  }

  /// Moves e from state `from` (as the caller loaded it) to `to`, for worker `by`. Moves
  /// into or out of the embryonic states are a CAS and counted in the embryonic ledger (false:
  /// another worker moved it first); the others are a relaxed store, as a lost one only shifts a
  /// timeout.
  bool set_state(unsigned by, flow_entry& e, flow_state from, flow_state to) {
    const bool was = embryonic_state(from), is = embryonic_state(to);
    if (!was && !is) {
      e.state.store(to, std::memory_order_relaxed);
      return true;
    }
    // relaxed: the CAS only decides who counts the move; no other data is published by it.
    if (!e.state.compare_exchange_strong(from, to, std::memory_order_relaxed)) return false;
    if (was && !is) left(by, e.owner).add();
    if (is && !was) entered(by, e.owner).add();
    return true;
  }

  /// Entries of worker `owner` in SYN_SENT or SYN_RECV (see the ledger in the header comment).
  uint32_t embryonic(unsigned owner) const {
    int64_t n = 0;
    for (unsigned by = 0; by < workers_; ++by) {
      n += static_cast<int64_t>(entered(by, owner).get() - left(by, owner).get());
    }
    return n > 0 ? static_cast<uint32_t>(n) : 0;
  }
  /// The per-worker cap on SYN_SENT entries.
  uint32_t syn_max() const { return syn_max_; }
  /// Whether worker w may make one more embryonic entry.
  bool syn_admit(const conntrack_worker& w) const { return embryonic(w.index) < syn_max_; }

  /// Marks the flow seen; writes last_seen only when it moved on by a tick, so forward and
  /// reply traffic on two workers do not bounce the cache line on every packet.
  void touch(flow_entry& e, uint64_t now) const {
    if (now - e.last_seen.load(std::memory_order_relaxed) > touch_tick_) {
      e.last_seen.store(now, std::memory_order_relaxed);
    }
  }

  /// Expires up to `budget` of this worker's entries and recycles those whose grace period
  /// has passed. Returns the number expired.
  uint32_t sweep(conntrack_worker& w, uint64_t now, uint32_t budget);

  /// The worker loop's sweep: visits the worker's whole share once per kSweepPeriod, paced by
  /// time rather than by loop count, so a busy worker does not spend cache lines on it.
  uint32_t sweep_paced(conntrack_worker& w, uint64_t now) {
    if (!w.sweep_last) w.sweep_last = now;
    uint64_t due = (now - w.sweep_last) * (w.sweep_end - w.sweep_begin) / sweep_period_;
    if (!due && !w.reclaim_count) return 0;
    if (due) w.sweep_last = now;
    return sweep(w, now,
                 static_cast<uint32_t>(std::min<uint64_t>(due, w.sweep_end - w.sweep_begin)));
  }

  /// Control thread: marks every live entry that `match(entry)` accepts as flushed; returns
  /// how many. An entry the owner recycles while this runs could be marked in its new life:
  /// the creation time is checked again after marking and the mark undone if it moved.
  template <typename Match>
  uint32_t flush(Match&& match) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < capacity_; ++i) {
      flow_entry& e = entries_[i];
      if (e.state.load(std::memory_order_acquire) == flow_state::free ||
          e.flushed.load(std::memory_order_relaxed) || !match(e)) {
        continue;
      }
      const uint64_t created = e.created;
      // seq_cst: visible to the workers' next lookups before the operator hears "done".
      e.flushed.store(true);
      if (e.created != created || e.state.load() == flow_state::free) {
        e.flushed.store(false);
        continue;
      }
      ++n;
    }
    return n;
  }

  uint32_t capacity() const { return capacity_; }
  /// Hugepage memory of the entries and the index.
  uint64_t memory_bytes() const {
    return uint64_t{sizeof(flow_entry)} * capacity_ + sizeof(bucket) * (bucket_mask_ + 1);
  }
  const flow_entry& entry(uint32_t i) const { return entries_[i]; }
  uint64_t timeout(flow_state s) const { return timeouts_[static_cast<size_t>(s)]; }
  unsigned workers() const { return workers_; }

 private:
  static constexpr uint64_t kEmpty = 0;
  static constexpr uint64_t kTomb = ~uint64_t{0};
  static constexpr unsigned kSlotsPerBucket = 8;
  static constexpr unsigned kMaxProbe = 8;        // buckets
  static constexpr uint32_t kMaxSegment = 65535;  // the most one TCP segment (IPv4) carries

  struct alignas(64) bucket {
    std::atomic<uint64_t> slot[kSlotsPerBucket];
  };

  // One cache line of ledger counters; row `by` is lines_per_row_ lines: entered[0..n),
  // left[0..n) (n = workers).
  struct alignas(64) ledger_line {
    counter c[8];
  };
  counter& ledger(unsigned by, unsigned i) const {
    return ledger_[by * lines_per_row_ + i / 8].c[i % 8];
  }
  counter& entered(unsigned by, unsigned owner) const { return ledger(by, owner); }
  counter& left(unsigned by, unsigned owner) const { return ledger(by, workers_ + owner); }

  bool link(uint64_t hash, uint32_t entry, flow_dir dir, uint32_t& slot_out);
  void unlink(unsigned by, flow_entry& e);
  static bool key_matches(const flow_entry& e, flow_dir dir, const flow_key& k);

  uint32_t capacity_;
  unsigned workers_;
  rte_rcu_qsbr* qsbr_;
  flow_entry* entries_;
  bucket* buckets_;
  uint64_t bucket_mask_;
  uint64_t touch_tick_;
  uint64_t sweep_period_;
  uint64_t timeouts_[static_cast<size_t>(flow_state::count)];
  uint32_t syn_max_;     // per worker
  uint32_t rst_window_;  // [conntrack] tcp_rst_window
  uint32_t seq_tick_;    // rst_window_ / 4: how far seq_end may lag before it is written
  unsigned lines_per_row_;
  std::unique_ptr<ledger_line[]> ledger_;
};

}  // namespace ferry::dp
