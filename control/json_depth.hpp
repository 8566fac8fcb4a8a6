// How deeply JSON text nests, measured on the raw bytes before anything decodes it. nlohmann
// parses deep text without trouble, but dump(), copies and comparisons of the value recurse
// once per level, so every JSON input from outside (control socket requests, the API
// server's lists and watch events) is refused past a small depth before it is parsed.
// Plain values: no shared state; a scanner belongs to whoever feeds it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string_view>

namespace ferry::control {

/// Counts brackets outside strings, without decoding; feed() takes the text in pieces as it
/// arrives. Malformed text gives some depth; the parser refuses it later anyway.
class nesting_scanner {
 public:
  /// Scans more bytes; returns the deepest nesting seen so far.
  size_t feed(std::string_view bytes) {
    for (char ch : bytes) {
      if (in_string_) {
        if (escaped_) {
          escaped_ = false;
        } else if (ch == '\\') {
          escaped_ = true;
        } else if (ch == '"') {
          in_string_ = false;
        }
      } else if (ch == '"') {
        in_string_ = true;
      } else if (ch == '[' || ch == '{') {
        deepest_ = std::max(deepest_, ++depth_);
      } else if ((ch == ']' || ch == '}') && depth_ > 0) {
        --depth_;
      }
    }
    return deepest_;
  }
  size_t deepest() const { return deepest_; }

 private:
  size_t depth_ = 0;
  size_t deepest_ = 0;
  bool in_string_ = false;
  bool escaped_ = false;
};

/// Whether JSON text nests arrays and objects deeper than max.
inline bool nested_deeper_than(std::string_view text, size_t max) {
  return nesting_scanner().feed(text) > max;
}

}  // namespace ferry::control
