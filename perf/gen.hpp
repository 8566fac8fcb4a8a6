// ferry-perf gen: a DPDK traffic generator that plays both the clients and the backends of a
// Service around ferryd (or dpdk-testpmd) on two DPDK ports. See gen.cpp for what it measures
// and how. Single-threaded; owns the EAL of its process.
#pragma once

namespace ferry::perf {

/// Runs `ferry-perf gen ...` (argv[0] is "gen"); prints JSON lines, returns the exit code.
int gen_main(int argc, char** argv);

}  // namespace ferry::perf
