// The metadata reader's JSON layer, shared by Metadata::parse (ONNX metadata, errors worded as
// Metadata.loads) and the plan sidecar reader (errors worded as read_sidecar).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "pgn/metadata.hpp"

namespace pgn {

/// A malformed document as Python reports it: the exception ``kind`` ("KeyError",
/// "TypeError", "JSONDecodeError") and its text (for a KeyError the key's repr).
struct MalformedMetadata {
  std::string kind;
  std::string detail;
};

/// JSON text -> document; MalformedMetadata("JSONDecodeError") when it is not JSON.
nlohmann::json parse_json(const std::string& text);

/// Metadata.from_json: MissingMetadataError for an unsupported format version, BadInputError for
/// an invalid spec, MalformedMetadata for missing keys and wrong types.
Metadata metadata_from_json(const nlohmann::json& data);

}  // namespace pgn
