// The DNS responder of the worker lcores (and of the TCP server): one query in, one response
// out, in the same buffer. Bounds are checked before every read and write; compression
// pointers are never followed (a question may not hold one, and additional records are only
// skipped), so no input can loop or read outside the message.
#include "ferry/dns.hpp"

#include <algorithm>
#include <cstring>

namespace ferry::dns {
namespace {

constexpr uint16_t kQr = 0x8000, kOpcodeMask = 0x7800, kAa = 0x0400, kTc = 0x0200, kRd = 0x0100,
                   kCd = 0x0010;
constexpr uint16_t kNoError = 0, kFormErr = 1, kNxDomain = 3, kNotImp = 4, kRefused = 5;
constexpr size_t kOptSize = 11;  // root name, type, class, TTL, RDLENGTH 0

uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
void put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

// Position after the name at pos, which may end in a compression pointer; 0 when it runs
// out of the message or uses a reserved label type.
size_t skip_name(const uint8_t* msg, size_t len, size_t pos) {
  while (pos < len) {
    const uint8_t l = msg[pos];
    if ((l & 0xC0) == 0xC0) return pos + 2 <= len ? pos + 2 : 0;
    if (l & 0xC0) return 0;
    pos += 1u + l;
    if (l == 0) return pos;
  }
  return 0;
}

struct writer {
  uint8_t* msg;
  size_t pos, limit;

  bool fits(size_t n) const { return pos + n <= limit; }
  void put(const std::string& bytes) {
    std::memcpy(msg + pos, bytes.data(), bytes.size());
    pos += bytes.size();
  }
};

// The zone's SOA for an authority section; `origin_at`: where the question's name reaches
// the zone's origin. False when it does not fit.
bool put_soa(writer& w, const authority& a, size_t origin_at) {
  if (a.soa_fixed.empty()) {
    if (!w.fits(a.soa.size())) return false;
    w.put(a.soa);
    return true;
  }
  const size_t rdlen = a.mname_labels.size() + 2 + a.rname_labels.size() + 2 + 20;
  if (!w.fits(2 + 4 + 4 + 2 + rdlen)) return false;
  const auto pointer = static_cast<uint16_t>(0xC000 | origin_at);
  uint8_t* p = w.msg + w.pos;
  put16(p, pointer);
  put16(p + 2, kTypeSoa);
  put16(p + 4, kClassIn);
  std::memcpy(p + 6, a.soa_fixed.data(), 4);  // TTL
  put16(p + 10, static_cast<uint16_t>(rdlen));
  p += 12;
  std::memcpy(p, a.mname_labels.data(), a.mname_labels.size());
  put16(p += a.mname_labels.size(), pointer);
  std::memcpy(p += 2, a.rname_labels.data(), a.rname_labels.size());
  put16(p += a.rname_labels.size(), pointer);
  std::memcpy(p + 2, a.soa_fixed.data() + 4, 20);
  w.pos += 12 + rdlen;
  return true;
}

void put_opt(uint8_t* at, uint8_t extended_rcode) {
  at[0] = 0;
  put16(at + 1, kTypeOpt);
  put16(at + 3, kEdnsSize);
  at[5] = extended_rcode;
  at[6] = 0;         // version 0
  put16(at + 7, 0);  // flags: DO clear (ferry does not sign)
  put16(at + 9, 0);  // no options
}

// Length of the uncompressed name at msg[at, end) (the zone writes CNAME targets whole, lower
// case); 0 when it is not one.
size_t plain_name_len(const uint8_t* msg, size_t at, size_t end) {
  for (size_t pos = at; pos < end && pos - at < kMaxName;) {
    const uint8_t l = msg[pos];
    if (l & 0xC0) return 0;
    pos += 1u + l;
    if (!l) return pos <= end && pos - at <= kMaxName ? pos - at : 0;
  }
  return 0;
}

// The zone's target of a CNAME record set (its one record's data).
const uint8_t* cname_target(const rrset& s, size_t& len) {
  const auto* rr = reinterpret_cast<const uint8_t*>(s.wire.data());
  len = s.wire.size() >= 12 ? plain_name_len(rr, 12, s.wire.size()) : 0;
  return rr + 12;
}

// True when following the CNAME at `e` (through the zone, kMaxCnameChain links) ends at a
// name outside every zone: read only, so a worker can decide before it writes anything.
bool chain_leaves_zones(const zone& z, const name_entry* e) {
  for (size_t hop = 0; hop < kMaxCnameChain && e && e->is_cname(); ++hop) {
    size_t len = 0;
    const uint8_t* target = cname_target(e->sets[0], len);
    if (!len) return false;
    const name_entry* next = z.find(target, len, name_hash(target, len));
    if (!next) return !z.authority_for(target, len);
    e = next;
  }
  return false;
}

struct chased {
  uint16_t rcode = 0, answers = 0, authority = 0;
  bool truncated = false;
  size_t outside_at = 0;  // the last target, when it is outside every zone
};

// RFC 1034 4.3.2 step 3a: the CNAME at cname_rr (already written) is followed through the
// zone; each target's records are copied with their owner (a pointer to the question) turned
// into a pointer to the previous CNAME's data. The RCODE and any SOA are the last name's
// (RFC 6604). Bounded by kMaxCnameChain links, so a loop ends.
chased follow_cname(const zone& z, writer& w, size_t cname_rr, uint16_t qtype) {
  chased c;
  for (size_t hop = 0; hop < kMaxCnameChain; ++hop) {
    const size_t target_at = cname_rr + 12;
    const size_t len = plain_name_len(w.msg, target_at, w.pos);
    if (!len || target_at > 0x3FFF) return c;  // no pointer can reach it: stop here
    const uint8_t* target = w.msg + target_at;
    const name_entry* e = z.find(target, len, name_hash(target, len));
    const authority* auth = z.authority_for(target, len);
    if (!e && !auth) {
      c.outside_at = target_at;
      return c;
    }
    bool any = false;
    if (e) {
      for (const auto& s : e->sets) {
        if (e->is_cname() || qtype == kTypeAny || s.type == qtype) any = true;
      }
    }
    if (!any) {  // NXDOMAIN or NODATA at the target: its zone's SOA says for how long
      if (!e) c.rcode = kNxDomain;
      if (auth) {
        if (!put_soa(w, *auth, target_at + len - auth->origin.size())) {
          c.truncated = true;
          return c;
        }
        c.authority = 1;
      }
      return c;
    }
    size_t next_cname = 0;
    for (const auto& s : e->sets) {
      if (!(e->is_cname() || qtype == kTypeAny || s.type == qtype)) continue;
      if (!w.fits(s.wire.size())) {
        c.truncated = true;
        return c;
      }
      const size_t at = w.pos;
      w.put(s.wire);
      for (size_t rr = at; rr + 12 <= w.pos; rr += 12u + get16(w.msg + rr + 10)) {
        put16(w.msg + rr, static_cast<uint16_t>(0xC000 | target_at));
      }
      c.answers += s.count;
      if (s.type == kTypeCname) next_cname = at;
    }
    if (!next_cname || qtype == kTypeCname) return c;
    cname_rr = next_cname;
  }
  return c;
}

}  // namespace

answer_result answer(const zone* z, uint8_t* msg, size_t len, size_t cap, bool udp, size_t max_udp,
                     bool forward_outside, chase outside) {
  answer_result r;
  if (len < kHeaderSize || cap < len) return r;
  const uint16_t flags = get16(msg + 2);
  if (flags & kQr) return r;  // a response: answering it could start a loop
  const uint16_t out_flags = kQr | (flags & (kOpcodeMask | kRd | kCd));
  auto header_only = [&](uint16_t rcode, outcome how) {
    put16(msg + 2, out_flags | rcode);
    std::memset(msg + 4, 0, 8);
    r.len = kHeaderSize;
    r.how = how;
    return r;
  };
  if (flags & kOpcodeMask) return header_only(kNotImp, outcome::notimp);
  if (get16(msg + 4) != 1 || get16(msg + 6) || get16(msg + 8)) {
    return header_only(kFormErr, outcome::formerr);
  }

  // The question: labels only (no pointer can be valid this early), lower-cased for lookup.
  uint8_t name[kMaxName];
  size_t name_len = 0, pos = kHeaderSize;
  for (;;) {
    if (pos >= len) return header_only(kFormErr, outcome::formerr);
    const uint8_t l = msg[pos];
    if (l & 0xC0 || name_len + 1u + l > kMaxName || pos + 1u + l > len) {
      return header_only(kFormErr, outcome::formerr);
    }
    name[name_len++] = l;
    for (size_t i = 1; i <= l; ++i) {
      const uint8_t c = msg[pos + i];
      name[name_len++] = c >= 'A' && c <= 'Z' ? c | 0x20 : c;
    }
    pos += 1u + l;
    if (!l) break;
  }
  if (pos + 4 > len) return header_only(kFormErr, outcome::formerr);
  const uint16_t qtype = get16(msg + pos), qclass = get16(msg + pos + 2);
  const size_t question_end = pos + 4;

  // Additional records: one OPT at most (EDNS0); anything else is skipped.
  bool edns = false;
  uint16_t client_size = 512;
  uint8_t edns_version = 0;
  pos = question_end;
  for (uint16_t i = get16(msg + 10); i; --i) {
    const size_t at = skip_name(msg, len, pos);
    if (!at || at + 10 > len || at + 10u + get16(msg + at + 8) > len) {
      return header_only(kFormErr, outcome::formerr);
    }
    if (get16(msg + at) == kTypeOpt) {
      if (edns || at != pos + 1) return header_only(kFormErr, outcome::formerr);  // root owner
      edns = true;
      client_size = std::max<uint16_t>(512, get16(msg + at + 2));
      edns_version = msg[at + 5];
    }
    pos = at + 10u + get16(msg + at + 8);
  }

  size_t limit = cap;
  if (udp) limit = std::min<size_t>(limit, std::min<size_t>(client_size, max_udp));
  const size_t reserve = edns ? kOptSize : 0;
  uint16_t rcode = kNoError;
  bool aa = false;
  uint16_t ancount = 0, nscount = 0, arcount = 0;
  writer w{msg, question_end, limit > reserve ? limit - reserve : 0};

  if (edns && edns_version != 0) {
    r.how = outcome::badvers;
  } else if (qclass != kClassIn) {
    rcode = kRefused;
    r.how = outcome::refused;
  } else {
    const authority* auth = z ? z->authority_for(name, name_len) : nullptr;
    const name_entry* e = z ? z->find(name, name_len, name_hash(name, name_len)) : nullptr;
    if (!e && !auth && forward_outside && edns_version == 0) {
      r.how = outcome::forward;  // nothing written yet: the query goes on as it came
      return r;
    }
    if (!e && !auth) {
      rcode = kRefused;
      r.how = outcome::refused;
    } else {
      aa = true;
      // What the answer section holds: the CNAME whatever was asked, every set for ANY,
      // else the set of the type asked.
      const rrset* only = nullptr;
      bool all = false;
      if (e && e->is_cname()) {
        if (outside == chase::hand_off && qtype != kTypeCname && chain_leaves_zones(*z, e)) {
          r.how = outcome::resolve;  // nothing written yet: the query goes on as it came
          return r;
        }
        only = &e->sets[0];
      } else if (e && qtype == kTypeAny) {
        all = !e->sets.empty();
      } else if (e) {
        only = e->find(qtype);
      }
      if (only || all) {
        r.how = outcome::noerror;
        size_t bytes = 0;
        for (const auto& s : e->sets) {
          if (all || &s == only) bytes += s.wire.size();
        }
        if (!w.fits(bytes)) {
          r.truncated = true;
        } else {
          for (const auto& s : e->sets) {
            if (!all && &s != only) continue;
            w.put(s.wire);
            ancount += s.count;
          }
          if (e->is_cname() && qtype != kTypeCname) {
            const chased c = follow_cname(*z, w, question_end, qtype);
            ancount += c.answers;
            nscount += c.authority;
            rcode = c.rcode;
            r.truncated = c.truncated;
            if (c.rcode == kNxDomain) r.how = outcome::nxdomain;
            if (c.outside_at && outside == chase::write) {
              r.how = outcome::resolve;
              r.target_at = c.outside_at;
            }
          } else if ((qtype == kTypeSrv || all) && e->extra_count && w.fits(e->extra.size())) {
            w.put(e->extra);
            arcount += e->extra_count;
          }
        }
      } else {
        r.how = e ? outcome::nodata : outcome::nxdomain;
        if (!e) rcode = kNxDomain;
        if (auth) {
          if (put_soa(w, *auth, kHeaderSize + name_len - auth->origin.size())) {
            nscount = 1;
          } else {
            r.truncated = true;
          }
        }
      }
    }
  }
  if (r.truncated) {
    w.pos = question_end;
    ancount = nscount = arcount = 0;
  }
  if (edns) {
    if (w.pos + kOptSize > cap) return header_only(kFormErr, outcome::formerr);  // no room at all
    put_opt(msg + w.pos, r.how == outcome::badvers ? 1 : 0);
    w.pos += kOptSize;
    ++arcount;
  }
  put16(msg + 2, out_flags | (aa ? kAa : 0) | (r.truncated ? kTc : 0) | rcode);
  put16(msg + 4, 1);
  put16(msg + 6, ancount);
  put16(msg + 8, nscount);
  put16(msg + 10, arcount);
  r.len = w.pos;
  r.limit = limit;
  return r;
}

size_t slip(uint8_t* msg, size_t len) {
  if (len < kHeaderSize) return 0;
  const uint16_t flags = get16(msg + 2);
  if (flags & (kQr | kOpcodeMask) || get16(msg + 4) != 1) return 0;
  size_t pos = kHeaderSize;
  for (;;) {  // the question's labels, as answer() reads them
    if (pos >= len || msg[pos] & 0xC0 || pos - kHeaderSize + 1u + msg[pos] > kMaxName) return 0;
    const uint8_t l = msg[pos];
    pos += 1u + l;
    if (!l) break;
  }
  if (pos + 4 > len) return 0;
  put16(msg + 2, kQr | kTc | (flags & (kRd | kCd)));
  std::memset(msg + 6, 0, 6);
  return pos + 4;
}

}  // namespace ferry::dns
