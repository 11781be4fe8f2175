// The backend registry and "auto" (pgn_deploy.runtime.backends.base.open_backend): same order,
// same messages.
#include "pgn/backend.hpp"

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "onnxruntime_backend.hpp"
#include "pgn/errors.hpp"
#include "python_text.hpp"
#ifdef PGN_WITH_TENSORRT
#include "tensorrt_backend.hpp"
#endif

namespace pgn {
namespace {

const std::vector<std::string> kRegistry{"ort-cpu", "ort-cuda", "ort-trt", "trt"};
const std::vector<std::string> kAutoOnnx{"ort-trt", "ort-cuda", "ort-cpu"};
const std::vector<std::string> kAutoPlan{"trt"};

std::unique_ptr<Backend> create(const std::string& path, const std::string& name, const BackendOptions& options) {
  if (std::find(kRegistry.begin(), kRegistry.end(), name) == kRegistry.end()) {
    std::string names = "auto";
    for (const auto& known : kRegistry) names += ", " + known;
    throw BadInputError("unknown backend " + py_repr(name) + "; choose from " + names);
  }
  if (name != "trt") return open_onnxruntime(path, name, options);
#ifdef PGN_WITH_TENSORRT
  return open_tensorrt(path, options);
#else
  throw BackendUnavailableError("backend 'trt' is not part of this build (configure pgn with -DPGN_WITH_TENSORRT=ON)");
#endif
}

void check_options(const BackendOptions& options) {
  const std::pair<const char*, int> fields[] = {{"intra_op_threads", options.intra_op_threads},
                                                {"inter_op_threads", options.inter_op_threads},
                                                {"device_id", options.device_id}};
  for (const auto& [field, value] : fields)
    if (value < 0) throw BadInputError(std::string(field) + " must be an integer >= 0, got " + std::to_string(value));
}

}  // namespace

std::vector<std::string> backend_names() {
#ifdef PGN_WITH_TENSORRT
  return kRegistry;
#else
  return {kRegistry.begin(), kRegistry.end() - 1};
#endif
}

bool is_plan(const std::string& path) {
  std::string suffix = std::filesystem::path(path).extension().string();
  std::transform(suffix.begin(), suffix.end(), suffix.begin(), [](unsigned char c) { return std::tolower(c); });
  return suffix == ".plan" || suffix == ".engine";
}

std::unique_ptr<Backend> open_backend(const std::string& path, const std::string& name, const BackendOptions& options,
                                      std::vector<std::string>* notes) {
  check_options(options);
  const bool plan = is_plan(path);
  if (name != "auto") {
    const bool known = std::find(kRegistry.begin(), kRegistry.end(), name) != kRegistry.end();
    if (known && plan != (name == "trt"))
      throw BadInputError(path + " is " + (plan ? "a TensorRT plan" : "an ONNX model") + ": backend " + py_repr(name) +
                          " cannot run it; use " + (plan ? "trt" : "an ort-* backend") + " or auto");
    return create(path, name, options);
  }
  std::vector<std::string> skipped;
  for (const auto& candidate : plan ? kAutoPlan : kAutoOnnx) {
    try {
      auto backend = create(path, candidate, options);
      if (notes) *notes = skipped;
      return backend;
    } catch (const BackendUnavailableError& exc) {
      skipped.push_back(candidate + ": " + exc.what());
    }
  }
  std::string joined;
  for (const auto& note : skipped) joined += (joined.empty() ? "" : "; ") + note;
  throw BackendUnavailableError("no backend can run " + path + ": " + joined);
}

}  // namespace pgn
