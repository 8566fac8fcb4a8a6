// libFuzzer target: control-socket request bodies into the request handler (what
// socket_server does after reading a connection), on a node with no dataplane.
#include <cstdint>
#include <string_view>

#include "config.hpp"
#include "node.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static ferry::node_config cfg = *ferry::control::default_config();
  static ferry::control::node n(cfg, [](std::unique_ptr<const ferry::snapshot>) {});
  auto req = nlohmann::json::parse(std::string_view(reinterpret_cast<const char*>(data), size),
                                   nullptr, false);
  if (req.is_discarded()) return 0;
  try {
    (void)n.handle(req);
  } catch (const nlohmann::json::exception&) {
    // socket_server answers these as errors; anything else escaping is a finding.
  }
  return 0;
}
