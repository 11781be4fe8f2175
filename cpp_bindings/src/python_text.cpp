#include "python_text.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <nlohmann/json.hpp>

namespace pgn {
namespace {

/// Python's repr() of a float: the shortest text that reads back exactly, in scientific notation
/// when the decimal exponent is below -4 or at least 16.
std::string py_repr_float(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char text[64];
  for (int precision = 0; precision < 17; ++precision) {
    std::snprintf(text, sizeof text, "%.*e", precision, value);
    if (std::strtod(text, nullptr) == value) break;
  }
  const std::string scientific = text;  // d.ddde+XX
  const auto e = scientific.find('e');
  const int exponent = std::atoi(scientific.c_str() + e + 1);
  std::string digits = scientific.substr(0, e);
  const bool negative = digits[0] == '-';
  if (negative) digits.erase(0, 1);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  std::string out;
  if (exponent < -4 || exponent >= 16) {
    out = digits.substr(0, 1) + (digits.size() > 1 ? "." + digits.substr(1) : "");
    char exp_text[16];
    std::snprintf(exp_text, sizeof exp_text, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out += exp_text;
  } else if (exponent < 0) {
    out = "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
  } else {
    const auto integer_digits = static_cast<size_t>(exponent) + 1;
    if (digits.size() <= integer_digits)
      out = digits + std::string(integer_digits - digits.size(), '0') + ".0";
    else
      out = digits.substr(0, integer_digits) + "." + digits.substr(integer_digits);
  }
  return negative ? "-" + out : out;
}

}  // namespace

std::string py_repr(const std::string& text) {
  const bool has_single = text.find('\'') != std::string::npos;
  const bool has_double = text.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (const unsigned char c : text) {
    if (c == '\\') out += "\\\\";
    else if (c == quote) out += std::string("\\") + static_cast<char>(c);
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", c);
      out += escaped;
    } else out += static_cast<char>(c);
  }
  return out + quote;
}

std::string py_repr(const nlohmann::json& value) {
  if (value.is_null()) return "None";
  if (value.is_boolean()) return value.get<bool>() ? "True" : "False";
  if (value.is_number_integer()) return value.dump();
  if (value.is_number_float()) return py_repr_float(value.get<double>());
  if (value.is_string()) return py_repr(value.get<std::string>());
  return value.dump();  // lists and objects: JSON text, close to Python's repr
}

std::string py_missing_arguments(const std::string& function, const std::vector<std::string>& names) {
  std::string listed;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) listed += names.size() == 2 ? " and " : (i + 1 == names.size() ? ", and " : ", ");
    listed += py_repr(names[i]);
  }
  const bool one = names.size() == 1;
  return function + " missing " + std::to_string(names.size()) + " required positional argument" + (one ? "" : "s") +
         ": " + listed;
}

std::string py_shape(const std::vector<long long>& shape) {
  std::string out = "(";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + (shape.size() == 1 ? ",)" : ")");
}

std::string py_path(const std::string& path) {
  std::string out;
  size_t start = 0;
  const bool absolute = !path.empty() && path[0] == '/';
  const bool double_root = path.size() > 2 && path[0] == '/' && path[1] == '/' && path[2] != '/';
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    const std::string part = path.substr(start, end - start);
    if (!part.empty() && part != ".") out += (out.empty() ? "" : "/") + part;
    start = end + 1;
  }
  if (absolute) return (double_root ? "//" : "/") + out;
  return out.empty() ? "." : out;
}

}  // namespace pgn
