// libFuzzer target: what reaches the metrics endpoint from outside (an HTTP request head,
// a listen address from the config) and the renderer on arbitrary stats JSON, which must
// never throw: an older or newer stats op, or one missing parts, still renders.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "metrics.hpp"

namespace m = ferry::control::metrics;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  std::string answer = m::http_answer(in, [] { return std::string("m 1\n"); });
  if (answer.rfind("HTTP/1.1 ", 0) != 0 || answer.find("\r\n\r\n") == std::string::npos) {
    std::abort();
  }
  (void)m::parse_listen_address(in);
  auto stats = nlohmann::json::parse(in, nullptr, false);
  if (!stats.is_discarded()) {
    static m::change_latency latency;
    std::string text = m::render(stats, latency, {"fuzz", 0});
    if (text.empty() || text.back() != '\n') std::abort();
  }
  return 0;
}
