#!/usr/bin/env bash
# The demo: the seed's my-service (port 80 -> targetPort 9376, three pods) and redis-master
# (6379) served by ferryd through DPDK af_packet ports, with real curl and redis-cli traffic
# from a client namespace, the services' environment variables and their DNS names. Installs what it needs, builds, runs, and cleans up after itself.
# Run as root on Debian 12:  sudo ./scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
P=ferry-demo
SOCK=/run/ferry/ferry.sock

./scripts/install-deps.sh
./scripts/build.sh >/dev/null
ferryctl() { FERRY_SOCKET=$SOCK build/tools/ferryctl "$@"; }
client() { ip netns exec "$P-client" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  [ -n "${ferryd_pid:-}" ] && kill "$ferryd_pid" 2>/dev/null && wait "$ferryd_pid" 2>/dev/null
  ./scripts/topology.sh down "$P"
}
trap cleanup EXIT

say "network namespaces: client 198.18.0.1 -> [ferryd 198.18.0.254 | 198.18.1.254] -> pods 198.18.1.0/24"
./scripts/topology.sh up "$P"
for i in 1 2 3; do
  ip netns exec "$P-pod$i" /usr/bin/python3 scripts/pod_server.py --name "my-app-$i" \
    --http 9376 --udp 9376 &
done
ip netns exec "$P-redis" redis-server --port 6379 --bind 0.0.0.0 --save '' --appendonly no \
  --protected-mode no --daemonize no >/dev/null &

say "ferryd with the built-in default config (two af_packet ports, the seed's services)"
ip netns exec "$P-node" build/tools/ferryd &
ferryd_pid=$!
for _ in $(seq 50); do ferryctl get svc >/dev/null 2>&1 && break; sleep 0.2; done
ferryctl status
echo
ferryctl get services
ferryctl get endpoints

say "curl http://198.19.0.10/ (my-service ClusterIP, port 80 -> pods' 9376), 9 connections"
for _ in $(seq 9); do
  printf '  answered by: %s' "$(client curl -s -m 5 http://198.19.0.10/)"
  echo
done

say "redis-cli -h 198.19.0.11 (redis-master ClusterIP, port 6379)"
client redis-cli -h 198.19.0.11 -p 6379 set greeting "hello through ferry" | sed 's/^/  /'
client redis-cli -h 198.19.0.11 -p 6379 get greeting | sed 's/^/  /'

say "service discovery 1: the variables kubelet would give a pod in namespace default"
ferryctl env -n default | grep '^REDIS_MASTER' | sed 's/^/  /'
echo "  a command run with them (ferryctl exec), from the client namespace:"
client build/tools/ferryctl --socket "$SOCK" exec -n default -- \
  sh -c 'redis-cli -h "$REDIS_MASTER_SERVICE_HOST" -p "$REDIS_MASTER_SERVICE_PORT" get greeting' |
  sed 's/^/  /'

say "service discovery 2: DNS answered by ferryd's workers at 198.19.0.53 (dig from the client)"
for q in "my-service.default.svc.cluster.local A" "redis-master.default.svc.cluster.local A" \
         "-x 198.19.0.10"; do
  printf '  dig %-45s -> %s\n' "$q" "$(client dig @198.19.0.53 +short $q | tr '\n' ' ')"
done
printf '  dig %-45s -> %s\n' "nope.default.svc.cluster.local" \
  "$(client dig @198.19.0.53 nope.default.svc.cluster.local | grep -o 'status: [A-Z]*')"

say "connections ferryd is tracking"
ferryctl get flows --limit 12

say "a pod goes away: ferryctl apply removes my-app-3's endpoint"
cat <<'YAML' | ferryctl apply -f -
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: my-service-abc12
  labels: {kubernetes.io/service-name: my-service}
addressType: IPv4
ports: [{name: "", protocol: TCP, port: 9376}]
endpoints:
  - addresses: ["198.18.1.11"]
  - addresses: ["198.18.1.12"]
YAML
for _ in $(seq 6); do
  printf '  answered by: %s' "$(client curl -s -m 5 http://198.19.0.10/)"
  echo
done

say "Prometheus metrics: GET http://127.0.0.1:9100/metrics in ferryd's namespace (a few of them)"
ip netns exec "$P-node" curl -s -m 5 http://127.0.0.1:9100/metrics |
  grep -E '^ferry_(service_new_flows_total|conntrack_flows |change_to_dataplane_seconds_count)' |
  sed 's/^/  /'

say "operating it: Maglev's share per pod, what a packet would get, and draining a pod"
ferryctl describe service default/my-service
echo
ferryctl trace 198.18.0.1:40000 198.19.0.10:80 tcp
echo
ferryctl drain default/my-service 198.18.1.12
for _ in $(seq 4); do
  printf '  while drained: %s' "$(client curl -s -m 5 http://198.19.0.10/)"
  echo
done
ferryctl weight default/my-service 198.18.1.12 --reset

say "edge hardening: the node answers ping, a ClusterIP does not; a payload filter rule"
pinged() { client ping -n -c 1 -W 1 "$1" >/dev/null 2>&1 && echo answered || echo "no answer"; }
echo "  ping 198.18.0.254 (the node) -> $(pinged 198.18.0.254)"
echo "  ping 198.19.0.10 (a ClusterIP) -> $(pinged 198.19.0.10)"
ferryctl filter add block-admin --pattern '^GET /admin' --port 80 --depth 64
printf '  curl http://198.19.0.10/admin -> %s\n' "$(client curl -s -m 2 http://198.19.0.10/admin || echo "no answer (filtered)")"
printf '  curl http://198.19.0.10/ -> %s\n' "$(client curl -s -m 5 http://198.19.0.10/)"
ferryctl filter list
ferryctl filter del block-admin

say "NodePort: my-service becomes type NodePort 31002, reached on the node's own address"
cat <<'YAML' | ferryctl apply -f -
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  type: NodePort
  clusterIP: 198.19.0.10
  selector:
    app: MyApp
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
      nodePort: 31002
YAML
for _ in $(seq 4); do
  # /whoami: the pod answers with its name and the address it saw the request come from
  # (ferryd's own, 198.18.1.254: externalTrafficPolicy Cluster SNATs to the node).
  printf '  curl http://198.18.0.254:31002/whoami -> %s' "$(client curl -s -m 5 http://198.18.0.254:31002/whoami)"
  echo
done

say "LoadBalancer: an address from the node's pool (198.18.0.240/29), announced on the clients' subnet"
cat <<'YAML' | ferryctl apply -f -
apiVersion: v1
kind: Service
metadata:
  name: my-service-lb
spec:
  type: LoadBalancer
  sessionAffinity: ClientIP
  ports:
    - {protocol: TCP, port: 80, targetPort: 9376}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: my-service-lb-1
  labels: {kubernetes.io/service-name: my-service-lb}
addressType: IPv4
ports: [{name: "", protocol: TCP, port: 9376}]
endpoints:
  - addresses: ["198.18.1.11"]
  - addresses: ["198.18.1.12"]
  - addresses: ["198.18.1.13"]
YAML
ferryctl get services
lb=$(ferryctl get services -o json | /usr/bin/python3 -c \
  'import json,sys; print(next(s["load_balancer"][0] for s in json.load(sys.stdin)["items"] if s["name"] == "my-service-lb"))')
echo "  (sessionAffinity: ClientIP: every connection from this client goes to one pod)"
for _ in $(seq 4); do
  printf '  curl http://%s/ -> %s' "$lb" "$(client curl -s -m 5 "http://$lb/")"
  echo
done

say "counters"
ferryctl stats

# Last: the same node following a Kubernetes API server instead of manifests.
kill "$ferryd_pid" && wait "$ferryd_pid" || true
ferryd_pid=
/usr/bin/python3 scripts/demo_kube.py "$P" "$SOCK"
say "done (everything is removed on exit)"
