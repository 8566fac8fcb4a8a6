#include "envvars.hpp"

#include <cctype>
#include <map>
#include <variant>

#include "ferry/net.hpp"

namespace ferry::control {

namespace {

// The master Service kubelet always links, from the master service namespace (kubelet's
// masterServices and --master-service-namespace default).
constexpr const char* kMasterNamespace = "default";
constexpr const char* kMasterService = "kubernetes";

std::string lower(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

// v1helper.IsServiceIPSet: a ClusterIP that is neither "None" nor empty. An ExternalName
// Service has none in Kubernetes (validation forbids one), whatever a manifest wrote.
bool cluster_ip_set(const model::service& svc) {
  return svc.cluster_ip && !svc.headless && svc.type != model::service_type::external_name;
}

const model::service* service_at(const store& objects, const std::string& ns,
                                 const std::string& name) {
  auto it = objects.objects().find({"Service", ns, name});
  if (it == objects.objects().end()) return nullptr;
  return std::get_if<model::service>(&it->second.obj);
}

}  // namespace

std::string join_host_port(std::string_view host, uint16_t port) {
  std::string out;
  if (host.find(':') != std::string_view::npos) {
    out.append("[").append(host).append("]");
  } else {
    out.append(host);
  }
  return out + ":" + std::to_string(port);
}

std::string env_variable_name(std::string_view name) {
  std::string out(name);
  for (char& c : out) {
    c = c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return out;
}

std::vector<env_var> service_variables(const model::service& svc, std::string_view host) {
  std::vector<env_var> out;
  if (svc.ports.empty()) return out;
  const std::string prefix = env_variable_name(svc.meta.name);
  out.push_back({prefix + "_SERVICE_HOST", std::string(host)});
  // The first port under the backwards-compatible name, then every named port (only the
  // first may be unnamed).
  out.push_back({prefix + "_SERVICE_PORT", std::to_string(svc.ports[0].port)});
  for (const auto& p : svc.ports) {
    if (!p.name.empty()) {
      out.push_back(
          {prefix + "_SERVICE_PORT_" + env_variable_name(p.name), std::to_string(p.port)});
    }
  }
  // Docker links; Docker special-cases the first port.
  for (size_t i = 0; i < svc.ports.size(); ++i) {
    const auto& p = svc.ports[i];
    const std::string proto = proto_name(p.protocol);  // TCP, UDP, SCTP
    const std::string url = lower(proto) + "://" + join_host_port(host, p.port);
    if (i == 0) out.push_back({prefix + "_PORT", url});
    const std::string port_prefix = prefix + "_PORT_" + std::to_string(p.port) + "_" + proto;
    out.push_back({port_prefix, url});
    out.push_back({port_prefix + "_PROTO", lower(proto)});
    out.push_back({port_prefix + "_PORT", std::to_string(p.port)});
    out.push_back({port_prefix + "_ADDR", std::string(host)});
  }
  return out;
}

std::vector<env_var> service_environment(const store& objects, const std::string& ns,
                                         bool service_links) {
  // getServiceEnvVarMap keys the Services by name in a Go map, so kubelet's order is random;
  // ferry sorts by name for stable output.
  std::map<std::string, const model::service*> chosen;
  if (service_links) {
    const auto& all = objects.objects();
    for (auto it = all.lower_bound({"Service", ns, ""});
         it != all.end() && std::get<0>(it->first) == "Service" && std::get<1>(it->first) == ns;
         ++it) {
      const auto* svc = std::get_if<model::service>(&it->second.obj);
      if (svc && cluster_ip_set(*svc)) chosen[svc->meta.name] = svc;
    }
  }
  // The master Service is added only under a name not yet taken: a pod's own namespace's
  // "kubernetes" Service (links on) wins over default/kubernetes.
  if (const auto* master = service_at(objects, kMasterNamespace, kMasterService);
      master && cluster_ip_set(*master)) {
    chosen.emplace(kMasterService, master);
  }

  // kubelet collects the variables into a map too: should two Services produce one name
  // (service "a" port 80 has A_PORT_80_TCP_PORT, service "a-port-80-tcp" has it as its
  // _PORT), the later one in our order wins, in the earlier one's place.
  std::vector<env_var> out;
  std::map<std::string, size_t> index;
  for (const auto& [name, svc] : chosen) {
    for (auto& v : service_variables(*svc, format_ipv4(*svc->cluster_ip))) {
      auto [it, added] = index.emplace(v.name, out.size());
      if (added) {
        out.push_back(std::move(v));
      } else {
        out[it->second].value = std::move(v.value);
      }
    }
  }
  return out;
}

}  // namespace ferry::control
