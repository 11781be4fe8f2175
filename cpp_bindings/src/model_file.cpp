#include "model_file.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "metadata_json.hpp"
#include "pgn/errors.hpp"
#include "python_text.hpp"

namespace pgn {
namespace {

constexpr int kSidecarFormat = 1;  // pgn_deploy.runtime.backends.plan_sidecar.SIDECAR_FORMAT

}  // namespace

std::string sidecar_path(const std::string& plan) { return plan + ".json"; }

void require_model_file(const std::string& path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) throw ModelLoadError(path + ": no such file");
}

Metadata load_plan_metadata(const std::string& path) {
  const std::string sidecar = sidecar_path(path);
  std::error_code error;
  if (!std::filesystem::is_regular_file(sidecar, error))
    throw ModelLoadError(sidecar + ": no such file; a plan is loaded with the sidecar pgn-build writes beside it");
  std::ifstream file(sidecar);
  std::stringstream text;
  text << file.rdbuf();
  try {
    const nlohmann::json data = parse_json(text.str());
    const nlohmann::json format = data.is_object() && data.contains("format") ? data.at("format") : nlohmann::json();
    if (!((format.is_number() || format.is_boolean()) && format.get<double>() == kSidecarFormat))
      throw ModelLoadError("plan sidecar format " + py_repr(format) + " is not supported (expected " +
                           std::to_string(kSidecarFormat) + "); rebuild the plan with pgn-build");
    if (!data.contains("metadata")) throw MalformedMetadata{"KeyError", "'metadata'"};
    return metadata_from_json(data.at("metadata"));
  } catch (const MalformedMetadata& malformed) {
    throw ModelLoadError(sidecar + ": malformed plan sidecar (" + malformed.kind + ": " + malformed.detail + ")");
  }
}

Metadata load_onnx_metadata(const std::string& path, const std::optional<std::string>& embedded) {
  if (!embedded)
    throw MissingMetadataError(path +
                               " has no pgn_deploy metadata: it is not a grafted model; run pgn-export on it first");
  return Metadata::parse(*embedded);
}

}  // namespace pgn
