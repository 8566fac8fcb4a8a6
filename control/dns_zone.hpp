// dns_zone: builds the cluster DNS zone (include/ferry/dns.hpp) from the store, following the
// Kubernetes DNS-based service discovery specification (kubernetes/dns,
// docs/specification.md, schema 1.1.0):
//   <svc>.<ns>.svc.<zone>              A: the ClusterIP; headless: one per ready endpoint
//   <host>.<svc>.<ns>.svc.<zone>       A: a headless endpoint (its hostname, else a-b-c-d)
//   _<port>._<proto>.<svc>.<ns>.svc... SRV for named ports (headless: one per endpoint)
//   <d>.<c>.<b>.<a>.in-addr.arpa       PTR for ClusterIPs and headless endpoints
//   <svc>.<ns>.svc.<zone>              CNAME for ExternalName Services
//   dns-version.<zone>                 TXT "1.1.0"; the zone's SOA and NS at its apex
// Incremental like compile: update() replaces what one Service contributes, and the zone
// it returns next shares every shard no touched name lives in.
//
// Control thread only.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ferry/config.hpp"
#include "ferry/dns.hpp"
#include "model.hpp"

namespace ferry::control {

class endpoint_index;

/// "web.default.svc.cluster.local" -> lower-case wire format; empty when it is not a valid
/// name (an empty label, a label over 63 bytes, over 255 bytes in all).
std::string dns_wire(std::string_view dotted);
/// Wire format -> dotted text (no trailing dot), for messages and tests.
std::string dns_text(std::string_view wire);
/// The reverse name of an address: 4.3.2.1.in-addr.arpa (wire format).
std::string dns_reverse(uint32_t ip);

class dns_zone_builder {
 public:
  dns_zone_builder(const dns_config& cfg, ipv4_prefix service_cidr);

  /// Replaces the records of one Service (svc nullptr: it is gone).
  void update(const model::service* svc, const std::string& ns, const std::string& name,
              const endpoint_index& endpoints);
  /// Drops every Service's records (before a full rebuild).
  void clear();
  /// The zone to publish; `serial` goes into the SOA records.
  std::shared_ptr<const dns::zone> build(uint32_t serial);
  size_t names() const { return names_.size(); }

 private:
  using owner = std::pair<std::string, std::string>;  // (namespace, Service); ("", "") the apex
  struct record {
    uint16_t type;
    std::string rdata;
    std::string extra_owner;  // SRV: the target's A record goes in the additional section
    uint32_t extra_ip = 0;
  };
  // One name: every owner's records there, and how many claims (from owners with names
  // below it) keep it in existence without records of its own: an empty non-terminal
  // answers NODATA, not NXDOMAIN. The claims are a count, so a change to one of the 10k
  // Services of a namespace never walks the namespace's name.
  struct name_state {
    std::map<owner, std::vector<record>> records;
    uint32_t claims = 0;
  };

  void add(const owner& o, const std::string& wire, record r);
  void claim(const owner& o, const std::string& wire);
  void touch(const std::string& wire);
  void remove_owner(const owner& o);
  void add_apex();
  std::shared_ptr<const dns::name_entry> entry_of(const std::string& wire,
                                                  const name_state& n) const;

  dns_config cfg_;
  std::string zone_wire_;
  std::vector<std::string> origins_;  // the zone, then the reverse zone of the service CIDR
  std::unordered_map<std::string, name_state> names_;
  // What each owner put where: (name, true) a claim, (name, false) records.
  std::map<owner, std::vector<std::pair<std::string, bool>>> owned_;
  std::vector<std::pair<uint64_t, std::string>> touched_;  // (name_hash, name) since the last build
  sharded_map<std::shared_ptr<const dns::name_entry>> table_;
  uint32_t serial_ = 0;
};

}  // namespace ferry::control
