// The Kubernetes objects ferry understands, as plain values decoded from manifests.
// Built and owned by the control thread only; never seen by workers. Addresses are IPv4,
// host byte order.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "ferry/net.hpp"
#include "ferry/result.hpp"

namespace ferry::model {

using labels = std::map<std::string, std::string>;

struct object_meta {
  std::string ns = "default";  // metadata.namespace ("default" when absent)
  std::string name;            // metadata.name (required)
  labels label_map;            // metadata.labels
  labels annotations;          // metadata.annotations

  bool operator==(const object_meta&) const = default;
};

/// spec.ports[] of a Service. target_port holds a number or a named container port.
struct service_port {
  std::string name;
  uint8_t protocol = 6;  // IPPROTO_TCP / UDP / SCTP
  uint16_t port = 0;
  std::variant<uint16_t, std::string> target_port = uint16_t{0};  // 0: same as port
  uint16_t node_port = 0;                                         // 0: none

  bool operator==(const service_port&) const = default;
};

enum class service_type { cluster_ip, node_port, load_balancer, external_name };

/// externalTrafficPolicy / internalTrafficPolicy: any endpoint, or only this node's.
enum class traffic_policy : uint8_t { cluster, local };

struct service {
  object_meta meta;
  service_type type = service_type::cluster_ip;
  std::optional<uint32_t> cluster_ip;  // nullopt: not yet allocated (or headless)
  bool headless = false;               // spec.clusterIP: None
  labels selector;                     // spec.selector (empty: endpoints managed by hand)
  std::vector<service_port> ports;
  std::vector<uint32_t> external_ips;  // spec.externalIPs
  std::string external_name;           // spec.externalName
  bool affinity_client_ip = false;     // spec.sessionAffinity: ClientIP
  uint32_t affinity_timeout = 10800;   // sessionAffinityConfig.clientIP.timeoutSeconds
  traffic_policy external_policy = traffic_policy::cluster;
  traffic_policy internal_policy = traffic_policy::cluster;
  std::optional<uint32_t> load_balancer_ip;  // spec.loadBalancerIP
  std::vector<ipv4_prefix> source_ranges;    // spec.loadBalancerSourceRanges
  bool allocate_node_ports = true;           // spec.allocateLoadBalancerNodePorts
  bool publish_not_ready = false;            // spec.publishNotReadyAddresses
  /// status.loadBalancer.ingress[].ip, or the address ferry allocated from its pool.
  std::vector<uint32_t> lb_ingress;
  bool lb_allocated = false;  // lb_ingress came from ferry's pool (kept across updates)

  /// The load balancer's addresses: status ingress (or ferry's pick), else spec.loadBalancerIP.
  std::vector<uint32_t> lb_addresses() const {
    if (!lb_ingress.empty()) return lb_ingress;
    if (load_balancer_ip) return {*load_balancer_ip};
    return {};
  }
  bool has_node_ports() const {
    return type == service_type::node_port ||
           (type == service_type::load_balancer && allocate_node_ports);
  }
  /// Forwarded at all: headless and ExternalName Services exist for DNS only, and a Service
  /// labelled service.kubernetes.io/service-proxy-name belongs to another proxy (kube-proxy
  /// skips those too).
  bool forwarded() const {
    return cluster_ip && !headless && type != service_type::external_name &&
           !meta.label_map.count("service.kubernetes.io/service-proxy-name");
  }

  bool operator==(const service&) const = default;
};

/// One port of an EndpointSlice (or of a legacy Endpoints subset).
struct endpoint_port {
  std::string name;
  uint8_t protocol = 6;
  uint16_t port = 0;

  bool operator==(const endpoint_port&) const = default;
};

struct endpoint {
  std::vector<uint32_t> addresses;
  bool ready = true;  // conditions.ready; absent means ready
  bool serving = true;
  bool terminating = false;
  std::string node_name;
  std::string target_pod;  // targetRef.name when kind is Pod
  std::string zone;        // EndpointSlice zone
  std::string hostname;    // endpoints[].hostname (headless Services' per-pod DNS names)
  // hints.forZones[].name and hints.forNodes[].name: where the EndpointSlice controller
  // wants this endpoint used (topology-aware routing, trafficDistribution).
  std::vector<std::string> for_zones, for_nodes;

  bool operator==(const endpoint&) const = default;
};

/// Ports plus endpoints: an EndpointSlice body or one subset of a legacy Endpoints object.
struct endpoint_group {
  std::vector<endpoint_port> ports;
  std::vector<endpoint> endpoints;

  bool operator==(const endpoint_group&) const = default;
};

struct endpoint_slice {
  object_meta meta;
  std::string service_name;  // label kubernetes.io/service-name
  bool ipv4 = true;          // addressType IPv4; other families are kept but not used
  endpoint_group group;

  bool operator==(const endpoint_slice&) const = default;
};

/// Legacy v1 Endpoints; notReadyAddresses become endpoints with ready = false.
struct endpoints {
  object_meta meta;
  std::vector<endpoint_group> subsets;

  bool operator==(const endpoints&) const = default;
};

struct container_port {
  std::string name;
  uint8_t protocol = 6;
  uint16_t port = 0;

  bool operator==(const container_port&) const = default;
};

struct pod {
  object_meta meta;
  std::optional<uint32_t> ip;  // status.podIP
  bool ready = false;          // status.conditions[type=Ready].status == "True"
  bool terminating = false;    // metadata.deletionTimestamp is set
  std::string node_name;       // spec.nodeName
  std::string hostname;        // spec.hostname and spec.subdomain: the pod's DNS name under
  std::string subdomain;       // the headless Service named by subdomain
  std::vector<container_port> ports;

  bool operator==(const pod&) const = default;
};

/// v1 Node: its addresses and topology labels (this node's name says which endpoints are
/// local; see node_config::node_name).
struct node {
  object_meta meta;
  std::vector<uint32_t> addresses;  // status.addresses[] InternalIP and ExternalIP (IPv4)
  std::string zone;                 // label topology.kubernetes.io/zone

  bool operator==(const node&) const = default;
};

using object = std::variant<service, endpoint_slice, endpoints, pod, node>;

/// "Service", "EndpointSlice", "Endpoints", "Pod" or "Node".
std::string_view kind_name(const object& obj);
const object_meta& meta_of(const object& obj);

/// Decodes YAML or JSON text: one or many documents ("---"), or a kind: List with items.
/// Unknown fields are ignored; a wrong field fails the whole text with a message naming the
/// origin, the object (Kind ns/name) and the field path. Empty documents are skipped.
result<std::vector<object>> parse_manifests(std::string_view text, std::string_view origin);

/// Decodes one object already parsed from JSON (an API list item or watch event), with the
/// same checks and messages as parse_manifests.
result<object> parse_object(const nlohmann::json& obj, std::string_view origin);

}  // namespace ferry::model
