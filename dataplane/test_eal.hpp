// Test support: brings up a minimal EAL (no hugepages, no PCI, one lcore, its own file
// prefix) once per test binary, for tests that need DPDK memory, mempools or RCU.
#pragma once

#include <gtest/gtest.h>
#include <rte_eal.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

namespace ferry::dp::testing {

class eal_environment : public ::testing::Environment {
 public:
  void SetUp() override {
    std::string prefix = "ferry-test-" + std::to_string(getpid());
    std::vector<std::string> args{"test",     "--no-huge",   "-m",      "512",
                                  "--no-pci", "-l",          "0",       "--file-prefix",
                                  prefix,     "--log-level", "*:error", "--no-telemetry"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    ASSERT_GE(rte_eal_init(static_cast<int>(argv.size()), argv.data()), 0);
  }
  void TearDown() override {
    rte_eal_cleanup();
    // EAL leaves its runtime directory behind; tests leave nothing.
    std::filesystem::remove_all("/var/run/dpdk/ferry-test-" + std::to_string(getpid()));
  }
};

}  // namespace ferry::dp::testing

#define FERRY_TEST_MAIN_WITH_EAL()                                                \
  int main(int argc, char** argv) {                                               \
    ::testing::InitGoogleTest(&argc, argv);                                       \
    ::testing::AddGlobalTestEnvironment(new ferry::dp::testing::eal_environment); \
    return RUN_ALL_TESTS();                                                       \
  }
