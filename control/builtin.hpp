// The built-in default that `ferryd` runs with no --config: the demo node of the README.
// Two af_packet ports, fe0 towards the clients and fe1 towards the pods (scripts/demo.sh
// builds that topology in network namespaces), and the seed's services and pods.
#pragma once

namespace ferry::control {

inline constexpr const char* kDefaultConfig = R"toml(
[node]
name = "ferry-demo"

[dataplane]
eal_args = ["-l", "0,1", "--no-huge", "-m", "512", "--no-pci", "--file-prefix", "ferry-demo",
            "--log-level", "*:notice"]
mbufs = 8191
idle_sleep_us = 20     # the demo shares two cores with its clients and pods

[[port]]
name = "eth0"
device = "net_af_packet0,iface=fe0"
address = "198.18.0.254/24"

[[port]]
name = "eth1"
device = "net_af_packet1,iface=fe1"
address = "198.18.1.254/24"

[control]
socket = "/run/ferry/ferry.sock"

[services]
service_cidr = "198.19.0.0/16"
load_balancer_pool = ["198.18.0.240/29"]  # on the clients' subnet: ferryd answers ARP for them

[conntrack]
capacity = 65536

[dns]
addresses = ["198.19.0.53"]  # cluster DNS, in the ClusterIP range the clients route to ferryd
)toml";

// The seed's Service (my-service: port 80 -> targetPort 9376, selector app: MyApp) with three
// pods, and redis-master on 6379. ClusterIPs come from 198.19.0.0/16, the benchmarking range
// the demo's namespaces use, not from 10.0.0.0/8.
inline constexpr const char* kDefaultManifests = R"yaml(
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  clusterIP: 198.19.0.10
  selector:
    app: MyApp
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: my-service-abc12
  labels:
    kubernetes.io/service-name: my-service
addressType: IPv4
ports:
  - name: ""
    protocol: TCP
    port: 9376
endpoints:
  - addresses: ["198.18.1.11"]
    conditions: {ready: true}
    targetRef: {kind: Pod, name: my-app-1}
  - addresses: ["198.18.1.12"]
    conditions: {ready: true}
    targetRef: {kind: Pod, name: my-app-2}
  - addresses: ["198.18.1.13"]
    conditions: {ready: true}
    targetRef: {kind: Pod, name: my-app-3}
---
apiVersion: v1
kind: Service
metadata:
  name: redis-master
  labels:
    name: redis-master
spec:
  clusterIP: 198.19.0.11
  selector:
    name: redis-master
  ports:
    - protocol: TCP
      port: 6379
      targetPort: 6379
---
apiVersion: v1
kind: Endpoints
metadata:
  name: redis-master
subsets:
  - addresses:
      - ip: 198.18.1.21
        targetRef: {kind: Pod, name: redis-master-0}
    ports:
      - port: 6379
        protocol: TCP
)yaml";

}  // namespace ferry::control
