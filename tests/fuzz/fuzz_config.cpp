// libFuzzer target: TOML text into the config parser.
#include <cstdint>
#include <string_view>

#include "config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)ferry::control::parse_config(std::string_view(reinterpret_cast<const char*>(data), size),
                                     "fuzz.toml");
  return 0;
}
