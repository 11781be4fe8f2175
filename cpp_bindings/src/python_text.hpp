// How Python writes values into error messages (repr, TypeError for missing arguments), so that
// the C++ library's messages equal pgn_deploy's for the same bad input.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace pgn {

/// Python's repr() of a str: 'text' (or "text" when it holds a ' and no ").
std::string py_repr(const std::string& text);

/// Python's repr() of the value json.loads gives for ``value`` (None, True, 2, 2.0, 'x', ...).
std::string py_repr(const nlohmann::json& value);

/// Python's TypeError text for missing arguments: "f() missing 2 required positional arguments:
/// 'a' and 'b'".
std::string py_missing_arguments(const std::string& function, const std::vector<std::string>& names);

/// Python's repr() of a tuple of ints: "(4, 5, 3)", "(5,)".
std::string py_shape(const std::vector<long long>& shape);

/// What Python prints for ``pathlib.Path(path)``: repeated and trailing slashes and "."
/// components dropped ("./a//b/" -> "a/b", "" -> ".").
std::string py_path(const std::string& path);

}  // namespace pgn
