// result<T>: a value or an error message that names what was wrong (object, field, reason).
// Control-plane only: the message lives on the heap. Not thread-safe; pass by value.
#pragma once

#include <optional>
#include <string>
#include <utility>

namespace ferry {

struct error {
  std::string message;
};

/// Holds either a T or an error; callers test with ok() and read value() or message().
template <typename T>
class [[nodiscard]] result {
 public:
  result(T value) : value_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  result(error err) : error_(std::move(err)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return value_.has_value(); }
  explicit operator bool() const { return ok(); }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() { return *value_; }
  const T& operator*() const { return *value_; }
  const std::string& message() const { return error_.message; }
  const error& err() const { return error_; }

 private:
  std::optional<T> value_;
  error error_;
};

/// result<void>: success or an error.
template <>
class [[nodiscard]] result<void> {
 public:
  result() = default;
  result(error err) : failed_(true), error_(std::move(err)) {}  // NOLINT

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const std::string& message() const { return error_.message; }
  const error& err() const { return error_; }

 private:
  bool failed_ = false;
  error error_;
};

inline error make_error(std::string message) { return error{std::move(message)}; }

}  // namespace ferry
