// The cluster DNS zone as workers answer from it: every name ferry serves, with its records
// already in wire format, so an answer is a hash lookup and a few copies. Built by the control
// thread (control/dns_zone.cpp) and published inside the snapshot, with the same RCU rules:
// immutable once published; per-shard parts are shared between consecutive snapshots.
//
// Thread-safety: read-only after publication; any number of concurrent readers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/flat_map.hpp"
#include "ferry/hash.hpp"

namespace ferry::dns {

constexpr uint16_t kTypeA = 1, kTypeNs = 2, kTypeCname = 5, kTypeSoa = 6, kTypePtr = 12,
                   kTypeTxt = 16, kTypeAaaa = 28, kTypeSrv = 33, kTypeOpt = 41, kTypeAny = 255;
constexpr uint16_t kClassIn = 1;
constexpr size_t kHeaderSize = 12;
constexpr size_t kMaxName = 255;  // wire-format bytes, root label included
constexpr uint16_t kPort = 53;
/// The EDNS payload size ferry advertises (the DNS flag day 2020 value: no IP fragments).
constexpr uint16_t kEdnsSize = 1232;

/// Records of one type at one name, as resource records whose owner is a compression pointer
/// to the question's name (offset 12): copied into an answer as they are.
struct rrset {
  uint16_t type = 0;
  uint16_t count = 0;
  std::string wire;
};

/// One name of the zone.
struct name_entry {
  std::string name;          // lower-case wire format (length-prefixed labels, root included)
  std::vector<rrset> sets;   // by type; a CNAME, when present, is the only set
  uint16_t extra_count = 0;  // additional section for SRV answers: its targets' A records,
  std::string extra;         // with full owner names

  const rrset* find(uint16_t type) const {
    for (const auto& s : sets) {
      if (s.type == type) return &s;
    }
    return nullptr;
  }
  bool is_cname() const { return sets.size() == 1 && sets[0].type == kTypeCname; }
};

/// A zone ferry is authoritative for: names below it that it does not have are NXDOMAIN,
/// answered with its SOA.
struct authority {
  std::string origin;  // lower-case wire format
  std::string soa;     // the SOA record with its full owner name, for authority sections
  // The same record compressed against the question, which always ends in the origin: owner
  // and the SOA's two names become pointers to it (an NXDOMAIN answer 40 bytes shorter).
  // Empty when the SOA's names are not under the origin (reverse zones).
  std::string mname_labels, rname_labels;  // the labels before the origin
  std::string soa_fixed;                   // TTL (4) then serial .. minimum (20)
};

/// Hash of a lower-case wire-format name (fixed seed: same on every node).
inline uint64_t name_hash(const uint8_t* name, size_t len) {
  uint64_t h = 0x6665727279000004ULL;  // "ferry" + 4
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    __builtin_memcpy(&w, name + i, 8);
    h = hash2(h, w, len);
  }
  uint64_t tail = 0;
  __builtin_memcpy(&tail, name + i, len - i);
  return hash2(h, tail, len + 1);
}
inline uint64_t name_hash(std::string_view wire) {
  return name_hash(reinterpret_cast<const uint8_t*>(wire.data()), wire.size());
}

struct zone {
  std::vector<authority> authorities;  // the cluster domain first, then reverse zones
  sharded_map<std::shared_ptr<const name_entry>> names;  // by name_hash

  const name_entry* find(const uint8_t* name, size_t len, uint64_t hash) const {
    const auto* e = names.find(hash);
    if (!e) return nullptr;
    const std::string& n = (*e)->name;
    return n.size() == len && __builtin_memcmp(n.data(), name, len) == 0 ? e->get() : nullptr;
  }
  /// The zone a name falls in (its origin is a suffix at a label boundary), or nullptr.
  const authority* authority_for(const uint8_t* name, size_t len) const {
    for (const auto& a : authorities) {
      const size_t n = a.origin.size();
      if (n > len || __builtin_memcmp(name + len - n, a.origin.data(), n) != 0) continue;
      // Walk the labels: the suffix must start where a label does.
      for (size_t at = 0; at <= len - n; at += name[at] + 1u) {
        if (at == len - n) return &a;
        if (!name[at]) break;
      }
    }
    return nullptr;
  }
};

/// How a query ended; the worker counts each.
enum class outcome : uint8_t {
  noerror,   // records answered
  nodata,    // name exists, no records of that type (SOA in authority)
  nxdomain,  // name does not exist in a zone of ours (SOA in authority)
  refused,   // outside every zone ferry serves, or a class other than IN
  formerr,   // malformed question or counts
  notimp,    // opcode other than QUERY
  badvers,   // EDNS version other than 0
  drop,      // not answerable: shorter than a header, or a response (QR set)
  forward,   // outside every zone, and upstreams exist: the query goes there untouched
  resolve,   // a CNAME chain leaving the zones: the rest is resolved upstream (see `chase`)
};
constexpr size_t kNumOutcomes = 10;
constexpr std::string_view kOutcomeNames[kNumOutcomes] = {
    "noerror", "nodata",  "nxdomain", "refused",   "formerr",
    "notimp",  "badvers", "dropped",  "forwarded", "cname_upstream"};

/// CNAME chains (ExternalName Services) are followed through the zone for this many links
/// at most, as CoreDNS does (RFC 1034 4.3.2); a longer chain, or a loop, is answered as far
/// as it got.
constexpr size_t kMaxCnameChain = 8;

/// What the responder does when a CNAME chain leaves every zone ferry serves.
enum class chase : uint8_t {
  stop,      // answer the chain so far (no upstreams)
  hand_off,  // outcome resolve with the buffer untouched, for the caller to pass the query
             // to something that can wait for an upstream (a worker hands it to the DNS thread)
  write,     // write the chain, then outcome resolve with `target_at`: the caller appends the
             // target's records (the DNS thread, after asking an upstream)
};

struct answer_result {
  size_t len = 0;  // bytes of the response (0: drop)
  outcome how = outcome::drop;
  bool truncated = false;  // TC set: the answer did not fit
  // outcome resolve, chase::write: where the chain's last target name (uncompressed, lower
  // case) starts in the message, and how long the response may grow (the client's UDP size).
  size_t target_at = 0, limit = 0;
};

/// Answers the query in msg[0, len) in place: the response overwrites the buffer (header
/// and question kept as asked) and may grow up to `cap` bytes. `udp` limits the response to
/// the client's payload size (512, or its EDNS size) capped at `max_udp`; over TCP (udp
/// false) only `cap` limits it. Never reads outside [0, len) nor writes outside [0, cap).
/// `forward_outside`: a name outside every zone ferry serves (class IN) gives outcome
/// forward with the buffer untouched, for the caller to send upstream, instead of REFUSED.
/// A CNAME at the name asked is followed through the zone (kMaxCnameChain links): its
/// targets' records follow it, owners pointing at the CNAME's data, and the RCODE is the last
/// name's (RFC 6604); `outside` says what happens when the chain leaves the zones.
/// No allocation, no exceptions: safe on a worker.
answer_result answer(const zone* z, uint8_t* msg, size_t len, size_t cap, bool udp, size_t max_udp,
                     bool forward_outside = false, chase outside = chase::stop);

/// Response rate limiting's slip: turns the query in msg[0, len) into an answer with TC set,
/// the question and nothing else (no records, no OPT), whatever the name, so that a real
/// client retries over TCP while a reflection gains nothing in size. The length of that
/// answer (header + question), or 0 when msg holds no well-formed query with one question.
size_t slip(uint8_t* msg, size_t len);

}  // namespace ferry::dns
