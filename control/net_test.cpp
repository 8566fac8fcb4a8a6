#include "ferry/net.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ferry {
namespace {

TEST(parse_ipv4, accepts_dotted_quad) {
  EXPECT_EQ(parse_ipv4("198.18.0.1"), std::optional<uint32_t>(0xc6120001));
  EXPECT_EQ(parse_ipv4("0.0.0.0"), std::optional<uint32_t>(0));
  EXPECT_EQ(parse_ipv4("255.255.255.255"), std::optional<uint32_t>(0xffffffff));
  EXPECT_EQ(parse_ipv4("10.0.0.1"), std::optional<uint32_t>(0x0a000001));
  EXPECT_EQ(parse_ipv4("1.2.3.4"), std::optional<uint32_t>(0x01020304));
}

TEST(parse_ipv4, rejects_empty_text) {
  EXPECT_EQ(parse_ipv4(""), std::nullopt);
  EXPECT_EQ(parse_ipv4("..."), std::nullopt);
}

TEST(parse_ipv4, rejects_leading_junk) {
  EXPECT_EQ(parse_ipv4(" 1.2.3.4"), std::nullopt);
  EXPECT_EQ(parse_ipv4("x1.2.3.4"), std::nullopt);
  EXPECT_EQ(parse_ipv4("+1.2.3.4"), std::nullopt);
  EXPECT_EQ(parse_ipv4("-1.2.3.4"), std::nullopt);
  EXPECT_EQ(parse_ipv4(".1.2.3.4"), std::nullopt);
}

TEST(parse_ipv4, rejects_trailing_junk) {
  EXPECT_EQ(parse_ipv4("1.2.3.4 "), std::nullopt);
  EXPECT_EQ(parse_ipv4("1.2.3.4."), std::nullopt);
  EXPECT_EQ(parse_ipv4("1.2.3.4x"), std::nullopt);
  EXPECT_EQ(parse_ipv4("1.2.3.4/24"), std::nullopt);
  EXPECT_EQ(parse_ipv4("1.2.3.4.5"), std::nullopt);
}

TEST(parse_ipv4, rejects_octet_over_255) {
  EXPECT_EQ(parse_ipv4("256.0.0.1"), std::nullopt);
  EXPECT_EQ(parse_ipv4("1.2.3.256"), std::nullopt);
  EXPECT_EQ(parse_ipv4("1.2.999.4"), std::nullopt);
  EXPECT_EQ(parse_ipv4("1.2.3.4294967297"), std::nullopt);  // would wrap in 32 bits
}

TEST(parse_ipv4, rejects_more_than_three_digits_per_octet) {
  EXPECT_EQ(parse_ipv4("0001.2.3.4"), std::nullopt);
}

TEST(parse_ipv4, rejects_missing_octets) {
  EXPECT_EQ(parse_ipv4("1.2.3"), std::nullopt);
  EXPECT_EQ(parse_ipv4("1.2.3."), std::nullopt);
  EXPECT_EQ(parse_ipv4("1..3.4"), std::nullopt);
  EXPECT_EQ(parse_ipv4("1"), std::nullopt);
  EXPECT_EQ(parse_ipv4("1.2"), std::nullopt);
}

TEST(parse_ipv4, reads_only_the_given_view) {
  // The view ends before the junk; parsing must not look past it.
  std::string_view text("10.1.2.3junk");
  EXPECT_EQ(parse_ipv4(text.substr(0, 8)), std::optional<uint32_t>(0x0a010203));
}

TEST(format_ipv4, formats_dotted_quad) {
  EXPECT_EQ(format_ipv4(0xc6120001), "198.18.0.1");
  EXPECT_EQ(format_ipv4(0), "0.0.0.0");
  EXPECT_EQ(format_ipv4(0xffffffff), "255.255.255.255");
}

TEST(format_ipv4, round_trips_through_parse) {
  for (const char* text :
       {"198.18.0.254", "10.96.0.1", "0.0.0.0", "255.255.255.255", "1.2.3.4", "172.16.254.3"}) {
    auto addr = parse_ipv4(text);
    ASSERT_TRUE(addr) << text;
    EXPECT_EQ(format_ipv4(*addr), text);
  }
  for (uint32_t addr : {0x01020304u, 0xc0a80101u, 0x7f000001u, 0xfffffffeu}) {
    EXPECT_EQ(parse_ipv4(format_ipv4(addr)), std::optional<uint32_t>(addr));
  }
}

TEST(parse_ipv4_prefix, reads_address_and_length) {
  auto p = parse_ipv4_prefix("198.18.0.254/24");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->addr, 0xc61200feu);  // host bits kept as written
  EXPECT_EQ(p->len, 24);
  EXPECT_EQ(p->mask(), 0xffffff00u);
}

TEST(parse_ipv4_prefix, accepts_zero_length) {
  auto p = parse_ipv4_prefix("0.0.0.0/0");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->addr, 0u);
  EXPECT_EQ(p->len, 0);
  EXPECT_EQ(p->mask(), 0u);
}

TEST(parse_ipv4_prefix, accepts_full_length) {
  auto p = parse_ipv4_prefix("10.0.0.1/32");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->addr, 0x0a000001u);
  EXPECT_EQ(p->len, 32);
  EXPECT_EQ(p->mask(), 0xffffffffu);
}

TEST(parse_ipv4_prefix, bare_address_is_slash_32) {
  auto p = parse_ipv4_prefix("10.0.0.1");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->addr, 0x0a000001u);
  EXPECT_EQ(p->len, 32);
}

TEST(parse_ipv4_prefix, rejects_bad_lengths) {
  EXPECT_EQ(parse_ipv4_prefix("10.0.0.0/33"), std::nullopt);
  EXPECT_EQ(parse_ipv4_prefix("10.0.0.0/-1"), std::nullopt);
  EXPECT_EQ(parse_ipv4_prefix("10.0.0.0/"), std::nullopt);
  EXPECT_EQ(parse_ipv4_prefix("10.0.0.0/x"), std::nullopt);
  EXPECT_EQ(parse_ipv4_prefix("10.0.0.0/24x"), std::nullopt);
  EXPECT_EQ(parse_ipv4_prefix("10.0.0.0/24 "), std::nullopt);
  EXPECT_EQ(parse_ipv4_prefix("10.0.0.0/+8"), std::nullopt);
  EXPECT_EQ(parse_ipv4_prefix("10.0.0.0/24/8"), std::nullopt);
  EXPECT_EQ(parse_ipv4_prefix("10.0.0.0/4294967304"), std::nullopt);  // 2^32 + 8
}

TEST(parse_ipv4_prefix, rejects_bad_addresses) {
  EXPECT_EQ(parse_ipv4_prefix(""), std::nullopt);
  EXPECT_EQ(parse_ipv4_prefix("/24"), std::nullopt);
  EXPECT_EQ(parse_ipv4_prefix("10.0.0/24"), std::nullopt);
  EXPECT_EQ(parse_ipv4_prefix("10.0.0.256/24"), std::nullopt);
}

TEST(ipv4_prefix, contains_addresses_of_its_subnet) {
  auto p = *parse_ipv4_prefix("198.18.0.254/24");
  EXPECT_TRUE(p.contains(*parse_ipv4("198.18.0.0")));
  EXPECT_TRUE(p.contains(*parse_ipv4("198.18.0.1")));
  EXPECT_TRUE(p.contains(*parse_ipv4("198.18.0.254")));
  EXPECT_TRUE(p.contains(*parse_ipv4("198.18.0.255")));
  EXPECT_FALSE(p.contains(*parse_ipv4("198.18.1.1")));
  EXPECT_FALSE(p.contains(*parse_ipv4("198.17.255.255")));
  EXPECT_FALSE(p.contains(*parse_ipv4("10.0.0.1")));
}

TEST(ipv4_prefix, zero_length_contains_everything) {
  auto p = *parse_ipv4_prefix("0.0.0.0/0");
  EXPECT_TRUE(p.contains(0));
  EXPECT_TRUE(p.contains(0xffffffff));
  EXPECT_TRUE(p.contains(*parse_ipv4("198.18.0.1")));
}

TEST(ipv4_prefix, full_length_contains_only_itself) {
  auto p = *parse_ipv4_prefix("10.0.0.1");
  EXPECT_TRUE(p.contains(0x0a000001));
  EXPECT_FALSE(p.contains(0x0a000000));
  EXPECT_FALSE(p.contains(0x0a000002));
}

TEST(ipv4_prefix, odd_lengths_split_on_the_right_bit) {
  auto p = *parse_ipv4_prefix("198.19.0.0/15");
  EXPECT_TRUE(p.contains(*parse_ipv4("198.18.0.1")));
  EXPECT_TRUE(p.contains(*parse_ipv4("198.19.255.255")));
  EXPECT_FALSE(p.contains(*parse_ipv4("198.20.0.0")));
  EXPECT_FALSE(p.contains(*parse_ipv4("198.17.255.255")));
}

TEST(parse_proto, accepts_kubernetes_and_lower_case_spellings) {
  EXPECT_EQ(parse_proto("TCP"), std::optional<uint8_t>(kProtoTcp));
  EXPECT_EQ(parse_proto("tcp"), std::optional<uint8_t>(kProtoTcp));
  EXPECT_EQ(parse_proto("UDP"), std::optional<uint8_t>(kProtoUdp));
  EXPECT_EQ(parse_proto("udp"), std::optional<uint8_t>(kProtoUdp));
  EXPECT_EQ(parse_proto("SCTP"), std::optional<uint8_t>(132));
  EXPECT_EQ(parse_proto("sctp"), std::optional<uint8_t>(132));
}

TEST(parse_proto, rejects_anything_else) {
  EXPECT_EQ(parse_proto(""), std::nullopt);
  EXPECT_EQ(parse_proto("Tcp"), std::nullopt);
  EXPECT_EQ(parse_proto("ICMP"), std::nullopt);
  EXPECT_EQ(parse_proto("TCP "), std::nullopt);
  EXPECT_EQ(parse_proto("6"), std::nullopt);
}

TEST(parse_proto, matches_the_enum_values) {
  EXPECT_EQ(parse_proto("TCP"), std::optional<uint8_t>(static_cast<uint8_t>(l4_proto::tcp)));
  EXPECT_EQ(parse_proto("UDP"), std::optional<uint8_t>(static_cast<uint8_t>(l4_proto::udp)));
  EXPECT_EQ(parse_proto("SCTP"), std::optional<uint8_t>(static_cast<uint8_t>(l4_proto::sctp)));
}

TEST(proto_name, names_known_protocols) {
  EXPECT_STREQ(proto_name(kProtoTcp), "TCP");
  EXPECT_STREQ(proto_name(kProtoUdp), "UDP");
  EXPECT_STREQ(proto_name(132), "SCTP");
  EXPECT_STREQ(proto_name(kProtoIcmp), "ICMP");
  EXPECT_STREQ(proto_name(47), "?");
}

}  // namespace
}  // namespace ferry
