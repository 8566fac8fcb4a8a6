#!/usr/bin/env bash
# Reserves 2 MiB hugepages (default 2048 = 4 GiB, or $1) and mounts hugetlbfs at
# /dev/hugepages if nothing is mounted there. Idempotent. Run as root.
set -euo pipefail
want=${1:-2048}
have=$(cat /proc/sys/vm/nr_hugepages)
if ((have < want)); then
  echo "$want" > /proc/sys/vm/nr_hugepages
  have=$(cat /proc/sys/vm/nr_hugepages)
  ((have >= want)) || { echo "only $have of $want hugepages could be reserved" >&2; exit 1; }
fi
if ! mount | grep -q ' type hugetlbfs '; then
  mkdir -p /dev/hugepages
  mount -t hugetlbfs nodev /dev/hugepages
fi
