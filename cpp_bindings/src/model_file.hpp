// Where a model keeps its pgn_deploy metadata (pgn_deploy.runtime.model_file):
//   * ONNX file: the "pgn_deploy" entry of its metadata_props (read through ONNX Runtime);
//   * TensorRT plan (.plan / .engine): the "metadata" of the sidecar JSON "<plan>.json" beside
//     it (pgn_deploy.runtime.backends.plan_sidecar, format 1).
#pragma once

#include <optional>
#include <string>

#include "pgn/metadata.hpp"

namespace pgn {

/// "model.plan" -> "model.plan.json".
std::string sidecar_path(const std::string& plan);

/// ModelLoadError "<path>: no such file" unless ``path`` is a regular file.
void require_model_file(const std::string& path);

/// The metadata of a plan, from its sidecar; ModelLoadError for a missing or malformed sidecar
/// (messages of pgn_deploy.runtime.backends.plan_sidecar.read_sidecar).
Metadata load_plan_metadata(const std::string& path);

/// The metadata of an ONNX model from its embedded JSON (nullopt: none); MissingMetadataError
/// worded as pgn_deploy.contract.read_metadata.
Metadata load_onnx_metadata(const std::string& path, const std::optional<std::string>& embedded);

}  // namespace pgn
