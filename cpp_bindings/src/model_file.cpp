#include "model_file.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "pgn/errors.hpp"

namespace pgn {

std::string sidecar_path(const std::string& plan) { return plan + ".json"; }

void require_model_file(const std::string& path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) throw ModelLoadError(path + ": no such file");
}

Metadata load_plan_metadata(const std::string& path) {
  const std::string sidecar = sidecar_path(path);
  std::error_code error;
  if (!std::filesystem::is_regular_file(sidecar, error))
    throw MissingMetadataError(path + ": its metadata file " + std::filesystem::path(sidecar).filename().string() +
                               " is missing; build the plan with pgn-build");
  std::ifstream file(sidecar);
  std::stringstream text;
  text << file.rdbuf();
  return Metadata::parse(text.str());
}

Metadata load_onnx_metadata(const std::string& path, const std::optional<std::string>& embedded) {
  if (!embedded)
    throw MissingMetadataError(path +
                               " has no pgn_deploy metadata: it is not a grafted model; run pgn-export on it first");
  return Metadata::parse(*embedded);
}

}  // namespace pgn
