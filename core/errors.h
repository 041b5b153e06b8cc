// The one exception type smallbatch throws, and SB_CHECK for building its messages.
// Library code never aborts: it throws sb::Error; the command line turns that into a message
// on stderr and a non-zero exit status.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace sb {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// "(2, 3, 32, 32)"
inline std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

// A value from outside (an environment variable), fit to quote in a message: printable ASCII as
// it is, other bytes as \xNN, and past 80 bytes cut, with the length said, so a long or binary
// value cannot flood or drive the terminal.
inline std::string shown(const std::string& value) {
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < value.size() && i < 80; ++i) {
    const unsigned char c = static_cast<unsigned char>(value[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') s += static_cast<char>(c);
    else s += std::string("\\x") + hex[c >> 4] + hex[c & 15];
  }
  if (value.size() > 80) s += "... (" + std::to_string(value.size()) + " bytes)";
  return s;
}

namespace detail {
inline void append(std::ostringstream&) {}
template <class T, class... Rest>
void append(std::ostringstream& os, const T& v, const Rest&... rest) {
  if constexpr (std::is_same_v<T, std::vector<int64_t>>) os << shape_str(v);
  else os << v;
  append(os, rest...);
}
}  // namespace detail

// Concatenates the pieces (shapes print as "(2, 3)") into one message.
template <class... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  detail::append(os, args...);
  return os.str();
}

template <class... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(str(args...));
}

}  // namespace sb

// SB_CHECK(x.dim() == 4, "conv2d: expected a 4-d input but got ", x.shape());
#define SB_CHECK(cond, ...)                    \
  do {                                         \
    if (!(cond)) ::sb::fail(__VA_ARGS__);      \
  } while (0)
