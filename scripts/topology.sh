#!/usr/bin/env bash
# Builds (or removes) the demo/test network in namespaces, all in 198.18.0.0/15:
#
#   PREFIX-client (198.18.0.1) --veth-- fe0 [PREFIX-node: ferryd] fe1 --veth-- br-pods
#                                                                          |-- PREFIX-pod1 198.18.1.11
#   ClusterIPs 198.19.0.0/16 are routed                                    |-- PREFIX-pod2 198.18.1.12
#   from the client to ferryd (198.18.0.254);                              |-- PREFIX-pod3 198.18.1.13
#   pods use ferryd (198.18.1.254) as gateway.                             `-- PREFIX-redis 198.18.1.21
#
# ferryd runs inside PREFIX-node with af_packet ports on fe0 and fe1 (the built-in config).
# usage: topology.sh up|down [PREFIX]   (default PREFIX: ferry)
set -euo pipefail
action=${1:?usage: topology.sh up|down [PREFIX]}
P=${2:-ferry}
pods=(pod1:198.18.1.11 pod2:198.18.1.12 pod3:198.18.1.13 redis:198.18.1.21)

down() {
  for ns in "$P-client" "$P-node" "${pods[@]/#/$P-}"; do
    ns=${ns%%:*}
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
}

# Namespace side of a veth: full checksums and no segmentation offload, so what reaches
# ferryd's af_packet socket is a real, finished frame.
plain() { ip netns exec "$1" ethtool -K "$2" tx off tso off gso off >/dev/null 2>&1 || true; }

up() {
  down
  ip netns add "$P-node"
  ip netns add "$P-client"
  ip -n "$P-node" link set lo up
  ip -n "$P-client" link set lo up

  ip link add "$P-c0" type veth peer name "$P-fe0"
  ip link set "$P-c0" netns "$P-client"
  ip link set "$P-fe0" netns "$P-node"
  ip -n "$P-client" link set "$P-c0" name eth0
  ip -n "$P-node" link set "$P-fe0" name fe0
  ip -n "$P-client" addr add 198.18.0.1/24 dev eth0
  ip -n "$P-client" link set eth0 up
  ip -n "$P-client" route add 198.19.0.0/16 via 198.18.0.254
  plain "$P-client" eth0

  ip -n "$P-node" link add br-pods type bridge
  ip -n "$P-node" link set br-pods up
  ip -n "$P-node" link add fe1 type veth peer name fe1-br
  ip -n "$P-node" link set fe1-br master br-pods
  ip -n "$P-node" link set fe1-br up
  for dev in fe0 fe1; do
    ip netns exec "$P-node" sysctl -qw "net.ipv6.conf.$dev.disable_ipv6=1"
    ip -n "$P-node" link set "$dev" up
  done

  local i=0
  for pod in "${pods[@]}"; do
    local name=${pod%%:*} addr=${pod#*:}
    ip netns add "$P-$name"
    ip -n "$P-$name" link set lo up
    ip link add "$P-p$i" type veth peer name "$P-b$i"
    ip link set "$P-p$i" netns "$P-$name"
    ip link set "$P-b$i" netns "$P-node"
    ip -n "$P-$name" link set "$P-p$i" name eth0
    ip -n "$P-$name" addr add "$addr/24" dev eth0
    ip -n "$P-$name" link set eth0 up
    ip -n "$P-$name" route add default via 198.18.1.254
    plain "$P-$name" eth0
    ip -n "$P-node" link set "$P-b$i" master br-pods
    ip -n "$P-node" link set "$P-b$i" up
    i=$((i + 1))
  done
}

case $action in
  up) up ;;
  down) down ;;
  *) echo "usage: topology.sh up|down [PREFIX]" >&2; exit 2 ;;
esac
