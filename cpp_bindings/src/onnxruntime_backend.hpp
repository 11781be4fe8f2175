// ONNX Runtime backends through its C++ API: ort-cpu, ort-cuda and ort-trt. One class; the
// three differ only in the execution providers they append (CUDA and TensorRT through the
// versioned C API, detected at run time with Ort::GetAvailableProviders).
#pragma once

#include <memory>
#include <string>

#include "pgn/backend.hpp"

namespace pgn {

/// ``ort-cpu``, ``ort-cuda`` or ``ort-trt`` on the ONNX file ``path`` (already shown as Python
/// would print it). BackendUnavailableError when the provider is not in this ONNX Runtime.
std::unique_ptr<Backend> open_onnxruntime(const std::string& path, const std::string& name,
                                          const BackendOptions& options);

}  // namespace pgn
