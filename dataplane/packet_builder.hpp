// Test support: builds Ethernet/IPv4/TCP/UDP/SCTP/ARP frames as byte vectors with correct
// checksums, so a table-driven test can state an input packet and the exact expected output.
#pragma once

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "checksum.hpp"

namespace ferry::dp::testing {

using bytes = std::vector<uint8_t>;
using mac = std::array<uint8_t, 6>;

struct ip_opts {
  uint8_t ttl = 64;
  uint16_t frag = 0;  // flags + offset, host order (0x2000 = MF)
  uint8_t ihl = 5;    // > 5 adds NOP options
  int version = 4;
  int total_length_delta = 0;  // lie about the total length
  uint16_t id = 0x1234;
};

inline void put16(bytes& b, size_t at, uint16_t v) {
  b[at] = static_cast<uint8_t>(v >> 8);
  b[at + 1] = static_cast<uint8_t>(v);
}
inline void put32(bytes& b, size_t at, uint32_t v) {
  put16(b, at, static_cast<uint16_t>(v >> 16));
  put16(b, at + 2, static_cast<uint16_t>(v));
}

inline bytes ether(const mac& dst, const mac& src, uint16_t type) {
  bytes b(14);
  std::memcpy(&b[0], dst.data(), 6);
  std::memcpy(&b[6], src.data(), 6);
  put16(b, 12, type);
  return b;
}

/// Ethernet + IPv4 + the given L4 bytes (whose checksum is filled when l4_check_at >= 0).
inline bytes ipv4(const mac& dst, const mac& src, uint32_t sip, uint32_t dip, uint8_t proto,
                  bytes l4, int l4_check_at, const ip_opts& o = {}) {
  bytes b = ether(dst, src, 0x0800);
  size_t ip_at = b.size();
  size_t ihl = o.ihl * 4u;
  b.resize(ip_at + std::max<size_t>(ihl, 20), 0);
  b[ip_at] = static_cast<uint8_t>((o.version << 4) | o.ihl);
  put16(b, ip_at + 2,
        static_cast<uint16_t>(std::max<size_t>(ihl, 20) + l4.size() + o.total_length_delta));
  put16(b, ip_at + 4, o.id);
  put16(b, ip_at + 6, o.frag);
  b[ip_at + 8] = o.ttl;
  b[ip_at + 9] = proto;
  put32(b, ip_at + 12, sip);
  put32(b, ip_at + 16, dip);
  for (size_t i = 20; i < ihl; ++i) b[ip_at + i] = 1;  // NOP options
  uint16_t c = csum(&b[ip_at], std::max<size_t>(ihl, 20));
  std::memcpy(&b[ip_at + 10], &c, 2);
  if (l4_check_at >= 0) {
    // Pseudo-header: addresses, protocol, L4 length.
    bytes pseudo(12);
    put32(pseudo, 0, sip);
    put32(pseudo, 4, dip);
    pseudo[9] = proto;
    put16(pseudo, 10, static_cast<uint16_t>(l4.size()));
    l4[l4_check_at] = l4[l4_check_at + 1] = 0;
    uint16_t lc = csum(l4.data(), l4.size(), csum_add(pseudo.data(), pseudo.size()));
    if (proto == 17 && lc == 0) lc = 0xffff;
    std::memcpy(&l4[l4_check_at], &lc, 2);
  }
  b.insert(b.end(), l4.begin(), l4.end());
  return b;
}

/// A TCP segment with the given sequence and acknowledgment numbers.
inline bytes tcp_seq_ack(const mac& dst, const mac& src, uint32_t sip, uint16_t sport, uint32_t dip,
                         uint16_t dport, uint8_t flags, uint32_t seq, uint32_t ack,
                         const std::string& payload = "", const ip_opts& o = {}) {
  bytes l4(20 + payload.size(), 0);
  put16(l4, 0, sport);
  put16(l4, 2, dport);
  put32(l4, 4, seq);
  put32(l4, 8, ack);
  l4[12] = 5 << 4;
  l4[13] = flags;
  put16(l4, 14, 65535);
  std::memcpy(&l4[20], payload.data(), payload.size());
  return ipv4(dst, src, sip, dip, 6, l4, 16, o);
}

/// A TCP segment with seq 1000 and, with ACK set, ack 2000.
inline bytes tcp(const mac& dst, const mac& src, uint32_t sip, uint16_t sport, uint32_t dip,
                 uint16_t dport, uint8_t flags, const std::string& payload = "",
                 const ip_opts& o = {}) {
  bytes l4(20 + payload.size(), 0);
  put16(l4, 0, sport);
  put16(l4, 2, dport);
  put32(l4, 4, 1000);
  put32(l4, 8, flags & 0x10 ? 2000 : 0);
  l4[12] = 5 << 4;
  l4[13] = flags;
  put16(l4, 14, 65535);
  std::memcpy(&l4[20], payload.data(), payload.size());
  return ipv4(dst, src, sip, dip, 6, l4, 16, o);
}

inline bytes udp(const mac& dst, const mac& src, uint32_t sip, uint16_t sport, uint32_t dip,
                 uint16_t dport, const std::string& payload, bool checksum = true,
                 const ip_opts& o = {}) {
  bytes l4(8 + payload.size(), 0);
  put16(l4, 0, sport);
  put16(l4, 2, dport);
  put16(l4, 4, static_cast<uint16_t>(l4.size()));
  std::memcpy(&l4[8], payload.data(), payload.size());
  return ipv4(dst, src, sip, dip, 17, l4, checksum ? 6 : -1, o);
}

// SCTP's CRC32c, bit by bit (the reflected Castagnoli polynomial): independent of the
// rte_hash_crc the packet path uses, so a test compares the two.
inline uint32_t crc32c_bitwise(const uint8_t* p, size_t n) {
  uint32_t c = 0xffffffff;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
  }
  return ~c;
}

/// One SCTP chunk: type, flags, value (padded to 4 bytes; the length field leaves the padding out).
inline bytes sctp_chunk(uint8_t type, const bytes& value = {}, uint8_t flags = 0) {
  bytes c(4 + value.size(), 0);
  c[0] = type;
  c[1] = flags;
  put16(c, 2, static_cast<uint16_t>(c.size()));
  std::memcpy(c.data() + 4, value.data(), value.size());
  c.resize((c.size() + 3) & ~size_t{3}, 0);
  return c;
}

/// An SCTP packet (common header + the chunks as given) with its CRC32c right, stored least
/// significant byte first as RFC 9260 appendix A has it (crc_delta spoils it).
inline bytes sctp_packet(const mac& dst, const mac& src, uint32_t sip, uint16_t sport, uint32_t dip,
                         uint16_t dport, uint32_t vtag, const bytes& chunks, const ip_opts& o = {},
                         uint32_t crc_delta = 0) {
  bytes l4(12, 0);
  put16(l4, 0, sport);
  put16(l4, 2, dport);
  put32(l4, 4, vtag);
  l4.insert(l4.end(), chunks.begin(), chunks.end());
  const uint32_t crc = crc32c_bitwise(l4.data(), l4.size()) ^ crc_delta;
  for (int i = 0; i < 4; ++i) l4[8 + i] = static_cast<uint8_t>(crc >> (8 * i));
  return ipv4(dst, src, sip, dip, 132, l4, -1, o);
}

inline bytes arp(const mac& dst, const mac& src, uint16_t op, const mac& sha, uint32_t sip,
                 const mac& tha, uint32_t tip) {
  bytes b = ether(dst, src, 0x0806);
  bytes a(28, 0);
  put16(a, 0, 1);
  put16(a, 2, 0x0800);
  a[4] = 6;
  a[5] = 4;
  put16(a, 6, op);
  std::memcpy(&a[8], sha.data(), 6);
  put32(a, 14, sip);
  std::memcpy(&a[18], tha.data(), 6);
  put32(a, 24, tip);
  b.insert(b.end(), a.begin(), a.end());
  return b;
}

}  // namespace ferry::dp::testing
