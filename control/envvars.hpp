// envvars: the Service environment variables kubelet gives a container (REDIS_MASTER_SERVICE_HOST,
// the Docker-links style REDIS_MASTER_PORT_6379_TCP_ADDR, ...), computed from the store the way
// kubelet computes them: pkg/kubelet/envvars/envvars.go (FromServices) over the Services that
// pkg/kubelet/kubelet_pods.go (getServiceEnvVarMap) picks. Pure functions; they read a store the
// caller holds, so control thread only, like the store.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "model.hpp"
#include "store.hpp"

namespace ferry::control {

struct env_var {
  std::string name, value;

  bool operator==(const env_var&) const = default;
};

/// "host:port", or "[host]:port" when the host is an IPv6 address (Go's net.JoinHostPort).
std::string join_host_port(std::string_view host, uint16_t port);

/// kubelet's makeEnvVariableName: upper case, '-' -> '_' ("redis-master" -> "REDIS_MASTER").
std::string env_variable_name(std::string_view name);

/// One Service's variables in kubelet's order (FromServices), its ClusterIP written as `host`:
/// X_SERVICE_HOST, X_SERVICE_PORT, X_SERVICE_PORT_<NAME> per named port, X_PORT, then per port
/// X_PORT_<port>_<PROTO> and its _PROTO, _PORT, _ADDR. Nothing for a Service without ports
/// (kubelet would index Ports[0]; API validation never lets one have a ClusterIP).
std::vector<env_var> service_variables(const model::service& svc, std::string_view host);

/// The variables kubelet gives a pod in namespace `ns`: every Service of `ns` with a ClusterIP
/// (not headless, not ExternalName) when `service_links` (the pod's enableServiceLinks) is on,
/// and default/kubernetes always; with links on, a Service named kubernetes in `ns` itself
/// takes its place. Services in name order (kubelet's is a Go map's: random).
std::vector<env_var> service_environment(const store& objects, const std::string& ns,
                                         bool service_links);

}  // namespace ferry::control
