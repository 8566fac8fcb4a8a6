#include "ferry/net.hpp"

#include <arpa/inet.h>

#include <charconv>

namespace ferry {

std::optional<uint32_t> parse_ipv4(std::string_view text) {
  uint32_t addr = 0;
  const char* p = text.data();
  const char* end = p + text.size();
  for (int i = 0; i < 4; ++i) {
    unsigned octet = 0;
    auto [next, ec] = std::from_chars(p, end, octet);
    if (ec != std::errc{} || next == p || octet > 255 || next - p > 3) return std::nullopt;
    addr = (addr << 8) | octet;
    p = next;
    if (i < 3) {
      if (p == end || *p != '.') return std::nullopt;
      ++p;
    }
  }
  if (p != end) return std::nullopt;
  return addr;
}

std::string format_ipv4(uint32_t addr) {
  char buf[INET_ADDRSTRLEN];
  uint32_t net = htonl(addr);
  inet_ntop(AF_INET, &net, buf, sizeof(buf));
  return buf;
}

std::optional<ipv4_prefix> parse_ipv4_prefix(std::string_view text) {
  auto slash = text.find('/');
  auto addr = parse_ipv4(text.substr(0, slash));
  if (!addr) return std::nullopt;
  unsigned len = 32;
  if (slash != std::string_view::npos) {
    auto rest = text.substr(slash + 1);
    auto [next, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), len);
    if (ec != std::errc{} || next != rest.data() + rest.size() || len > 32) return std::nullopt;
  }
  return ipv4_prefix{*addr, static_cast<uint8_t>(len)};
}

std::optional<uint8_t> parse_proto(std::string_view text) {
  if (text == "TCP" || text == "tcp") return kProtoTcp;
  if (text == "UDP" || text == "udp") return kProtoUdp;
  if (text == "SCTP" || text == "sctp") return uint8_t{132};
  return std::nullopt;
}

const char* proto_name(uint8_t proto) {
  switch (proto) {
    case kProtoTcp:
      return "TCP";
    case kProtoUdp:
      return "UDP";
    case 132:
      return "SCTP";
    case kProtoIcmp:
      return "ICMP";
    default:
      return "?";
  }
}

}  // namespace ferry
