// libFuzzer target: arbitrary bytes as one control-socket request, through the same decode
// (answer_request) and handler (node::handle) the socket server uses, on a node with no
// dataplane. Every input must come back as an answer; an exception or crash is a finding.
#include <cstdint>
#include <string_view>

#include "config.hpp"
#include "node.hpp"
#include "socket_server.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static ferry::node_config cfg = *ferry::control::default_config();
  static ferry::control::node n(cfg, [](std::unique_ptr<const ferry::snapshot>) {});
  static bool loaded = (void(n.load_sources(cfg)), true);
  (void)loaded;
  // reload re-reads files from disk, which a fuzzer must not depend on; everything else goes.
  auto handler = [](const nlohmann::json& req) {
    if (req.value("op", nlohmann::json()) == "reload") {
      return nlohmann::json{{"ok", false}, {"error", "not fuzzed"}};
    }
    return n.handle(req);
  };
  std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto nl = text.find('\n'); nl != std::string_view::npos) text = text.substr(0, nl);
  auto answer = ferry::control::answer_request(text, handler);
  if (!answer.is_object() || !answer.contains("ok")) __builtin_trap();
  return 0;
}
