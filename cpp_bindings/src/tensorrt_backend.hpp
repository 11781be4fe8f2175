// The native TensorRT backend ("trt"): a serialized plan run with the TensorRT 10 C++ API
// (IRuntime::deserializeCudaEngine, one IExecutionContext + CUDA stream per caller,
// setInputShape / setTensorAddress / enqueueV3). Compiled only with PGN_WITH_TENSORRT.
// Never compiled nor run in this project's CI (no TensorRT there); see docs/cpp.md.
#pragma once

#include <memory>
#include <string>

#include "pgn/backend.hpp"

namespace pgn {

/// ``trt`` on the plan file ``path``. ModelLoadError when TensorRT cannot deserialize it.
std::unique_ptr<Backend> open_tensorrt(const std::string& path, const BackendOptions& options);

}  // namespace pgn
