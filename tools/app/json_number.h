// Numbers in the configuration files (config.json, compare.json, the report): a float written as
// the shortest decimal that reads back to the same float ("0.1", not the double
// 0.10000000149011612), and a comparison of saved against current settings that takes a file
// written before that as equal.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

namespace sb {

// The JSON number of a float: std::to_chars's shortest round-trip text, read as a double, which
// nlohmann prints in its own shortest form, so the file shows "0.1". Reading it back as a float
// gives the same bits.
inline nlohmann::json json_float(float v) {
  if (!std::isfinite(v)) return nlohmann::json(static_cast<double>(v));
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return nlohmann::json(std::strtod(std::string(buf, r.ptr).c_str(), nullptr));
}

// Whether two JSON values mean the same setting: equal, or numbers that are the same float
// (a configuration saved before json_float wrote 0.10000000149011612 for 0.1f).
inline bool same_setting(const nlohmann::json& a, const nlohmann::json& b) {
  if (a == b) return true;
  if (a.is_number_float() || b.is_number_float())
    return a.is_number() && b.is_number() && static_cast<float>(a.get<double>()) == static_cast<float>(b.get<double>());
  if (a.is_array() && b.is_array() && a.size() == b.size()) {
    for (size_t i = 0; i < a.size(); ++i)
      if (!same_setting(a[i], b[i])) return false;
    return true;
  }
  if (a.is_object() && b.is_object() && a.size() == b.size()) {
    for (auto& [k, v] : a.items())
      if (!b.contains(k) || !same_setting(v, b.at(k))) return false;
    return true;
  }
  return false;
}

// A setting's value for a message: strings without quotes, floats as json_float shows them.
inline std::string setting_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>().empty() ? "\"\"" : v.get<std::string>();
  if (v.is_number_float()) return json_float(static_cast<float>(v.get<double>())).dump();
  return v.dump();
}

}  // namespace sb
