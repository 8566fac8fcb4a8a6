// libFuzzer target: manifest text (YAML or JSON) into the parser and, when accepted, into
// the store and the compiler. Text that is a JSON object also goes through the API path
// (parse_object reads the JSON value directly), whose result must match the text path's.
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string_view>

#include "compile.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_object() && !(j.contains("kind") && j["kind"] == "List")) {  // one object, not a List
    auto from_json = ferry::model::parse_object(j, "fuzz");
    // The text path reads nlohmann's own rendering of the value: yaml-cpp and nlohmann read
    // some texts differently (carriage returns, duplicate keys), and that is not the
    // decoders' business.
    auto from_text = ferry::model::parse_manifests(j.dump(), "fuzz");
    if (from_json.ok() != from_text.ok()) std::abort();
    if (from_json && from_text->size() == 1 && !((*from_text)[0] == *from_json)) std::abort();
  }
  auto objs = ferry::model::parse_manifests(text, "fuzz");
  if (!objs) return 0;
  ferry::control::store st(ferry::ipv4_prefix{0xc6130000, 16});
  if (!st.apply(std::move(*objs), ferry::control::source::file)) return 0;
  (void)ferry::control::compiler(4099, 64).compile(st);
  return 0;
}
