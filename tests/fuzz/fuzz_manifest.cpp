// libFuzzer target: manifest text (YAML or JSON) into the parser and, when accepted, into
// the store and the compiler.
#include <cstdint>
#include <string_view>

#include "compile.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto objs = ferry::model::parse_manifests(text, "fuzz");
  if (!objs) return 0;
  ferry::control::store st(ferry::ipv4_prefix{0xc6130000, 16});
  if (!st.apply(std::move(*objs), ferry::control::source::file)) return 0;
  (void)ferry::control::compiler(4099, 64).compile(st);
  return 0;
}
