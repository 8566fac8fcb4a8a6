// IPv4 address helpers and the protocol numbers ferry handles. Pure functions, thread-safe.
// Addresses are kept in host byte order everywhere outside packet headers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ferry {

enum class l4_proto : uint8_t { tcp = 6, udp = 17, sctp = 132 };

constexpr uint8_t kProtoIcmp = 1;
constexpr uint8_t kProtoTcp = 6;
constexpr uint8_t kProtoUdp = 17;
constexpr uint8_t kProtoSctp = 132;

/// Parses dotted-quad IPv4 ("198.18.0.1"); nullopt on anything else.
std::optional<uint32_t> parse_ipv4(std::string_view text);

/// Formats a host-order IPv4 address as dotted quad.
std::string format_ipv4(uint32_t addr);

struct ipv4_prefix {
  uint32_t addr = 0;  // host order, host bits kept as written (node address)
  uint8_t len = 0;
  uint32_t mask() const { return len == 0 ? 0 : ~uint32_t{0} << (32 - len); }
  bool contains(uint32_t a) const { return (a & mask()) == (addr & mask()); }
  bool operator==(const ipv4_prefix&) const = default;
};

/// Parses "198.18.0.254/24" (or a bare address, which is /32).
std::optional<ipv4_prefix> parse_ipv4_prefix(std::string_view text);

/// "TCP" / "UDP" / "SCTP" (Kubernetes spelling) and lower case; nullopt otherwise.
std::optional<uint8_t> parse_proto(std::string_view text);
const char* proto_name(uint8_t proto);

}  // namespace ferry
