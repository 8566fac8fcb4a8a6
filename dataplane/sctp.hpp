// SCTP (RFC 9260) as the packet path reads it: the 12-byte common header (ports, verification
// tag, CRC32c checksum), the chunk types conntrack follows, and the checksum over a whole packet
// (chained mbufs too). Pure functions over packet bytes: any thread, no state.
//
// The checksum is CRC32c (Castagnoli) over the SCTP packet with its checksum field zero, no
// pseudo-header (RFC 9260 appendix A): so NAT of addresses leaves it right, and only a changed
// port makes it recomputed. rte_hash_crc_*byte give the reflected CRC32c update (the SSE4.2
// crc32 instruction where the CPU has it, a table otherwise) without the initial and final
// inversion, which are done here; the result is stored least significant byte first.
#pragma once

#include <rte_byteorder.h>
#include <rte_hash_crc.h>
#include <rte_mbuf.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace ferry::dp::sctp {

constexpr uint16_t kHeader = 12;      // source port, destination port, verification tag, checksum
constexpr uint16_t kChecksumAt = 8;   // offset of the checksum in the common header
constexpr uint16_t kChunkHeader = 4;  // type, flags, length
// Chunks looked at per packet for their types (conntrack's events); the packet is forwarded
// whatever follows. A bound on the work one packet makes; INIT and INIT ACK must travel alone,
// and ABORT and SHUTDOWN* are control chunks, which come before any DATA.
constexpr unsigned kMaxChunks = 16;

// Chunk types (RFC 9260 3.2); all of these are below 16, so a packet's set fits a uint16_t.
enum chunk : uint8_t {
  data = 0,
  init = 1,
  init_ack = 2,
  sack = 3,
  heartbeat = 4,
  heartbeat_ack = 5,
  abort = 6,
  shutdown = 7,
  shutdown_ack = 8,
  error = 9,
  cookie_echo = 10,
  cookie_ack = 11,
  shutdown_complete = 14,
};
constexpr uint16_t bit(chunk c) { return static_cast<uint16_t>(1u << c); }
/// Chunks that end an association (conntrack: closing).
constexpr uint16_t kEnds = bit(abort) | bit(shutdown) | bit(shutdown_ack) | bit(shutdown_complete);
/// Chunks a peer sends only on an association it has.
constexpr uint16_t kLive = bit(data) | bit(sack) | bit(heartbeat) | bit(heartbeat_ack);

/// The set of chunk types (bit per type below 16) of the chunks in [l4 + kHeader, l4 + len),
/// at most kMaxChunks of them; false when there is no chunk or one is shorter than its header.
inline bool chunk_types(const uint8_t* l4, uint32_t len, uint16_t& types) {
  types = 0;
  uint32_t at = kHeader;
  if (len < kHeader + kChunkHeader) return false;
  for (unsigned i = 0; i < kMaxChunks && at + kChunkHeader <= len; ++i) {
    const uint8_t type = l4[at];
    uint16_t clen;
    std::memcpy(&clen, l4 + at + 2, 2);
    clen = rte_be_to_cpu_16(clen);
    if (clen < kChunkHeader) return false;
    if (type < 16) types |= static_cast<uint16_t>(1u << type);
    at += (clen + 3u) & ~3u;  // chunks are padded to 4 bytes
  }
  return true;
}

/// The CRC32c update over n bytes at p. rte_hash_crc would do, but it dereferences 8-byte
/// words wherever they lie (an SCTP payload is seldom 8-byte aligned: undefined behaviour,
/// and UBSan says so); the words are loaded with memcpy here, which x86 does as one
/// unaligned load, into the same crc32 instructions.
inline uint32_t crc_update(const uint8_t* p, uint32_t n, uint32_t crc) {
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    crc = rte_hash_crc_8byte(v, crc);
  }
  if (n >= 4) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    crc = rte_hash_crc_4byte(v, crc);
    p += 4;
    n -= 4;
  }
  for (; n; ++p, --n) crc = rte_hash_crc_1byte(*p, crc);
  return crc;
}

/// The CRC32c of the SCTP packet that starts `off` bytes into m's first segment (which holds
/// its common header) and is `len` bytes long, over every segment, the checksum field taken as
/// zero: the value the header must hold (host order).
inline uint32_t crc32c(const rte_mbuf* m, uint32_t off, uint32_t len) {
  const uint8_t* p = rte_pktmbuf_mtod_offset(m, const uint8_t*, off);
  uint32_t crc = crc_update(p, kChecksumAt, 0xffffffff);
  crc = rte_hash_crc_4byte(0, crc);
  uint32_t here = std::min<uint32_t>(m->data_len - off, len);
  crc = crc_update(p + kHeader, here - kHeader, crc);
  len -= here;
  for (const rte_mbuf* s = m->next; s && len; s = s->next) {
    here = std::min<uint32_t>(s->data_len, len);
    crc = crc_update(rte_pktmbuf_mtod(s, const uint8_t*), here, crc);
    len -= here;
  }
  return ~crc;
}

/// The checksum the header holds (host order).
inline uint32_t stored_crc(const uint8_t* l4) {
  uint32_t v;
  std::memcpy(&v, l4 + kChecksumAt, 4);
  return rte_le_to_cpu_32(v);
}

inline void store_crc(uint8_t* l4, uint32_t crc) {
  const uint32_t v = rte_cpu_to_le_32(crc);
  std::memcpy(l4 + kChecksumAt, &v, 4);
}

}  // namespace ferry::dp::sctp
