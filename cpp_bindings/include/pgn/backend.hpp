// One small interface over the inference backends (as pgn_deploy.runtime.backends.base):
//
//   ort-cpu   ONNX Runtime, CPU execution provider (the embedded default)
//   ort-cuda  ONNX Runtime, CUDA execution provider (an ONNX Runtime build with CUDA, a GPU)
//   ort-trt   ONNX Runtime, TensorRT execution provider (ONNX Runtime with TensorRT, a GPU)
//   trt       a native TensorRT plan (.plan / .engine); compiled only with PGN_WITH_TENSORRT
//
// "auto" tries, for a plan file, trt; for an ONNX file ort-trt, ort-cuda and ort-cpu in that
// order, keeping the first that loads.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pgn/export.hpp"

namespace pgn {

enum class ElementType { Float32, Float16, Int32, Int64, UInt8, Unsupported };

/// A host tensor owned by a BackendContext: valid until the next run on that context.
struct TensorView {
  const void* data = nullptr;
  ElementType type = ElementType::Unsupported;
  std::vector<std::int64_t> shape;
};

/// Per-caller state of a backend (bound buffers, an execution context): one thread at a time.
class PGN_API BackendContext {
 public:
  virtual ~BackendContext() = default;
};

/// Settings every backend receives (each ignores those that do not apply to it):
/// CPU thread pools (0: the library's default) and the GPU to use.
struct BackendOptions {
  int intra_op_threads = 0;
  int inter_op_threads = 0;
  int device_id = 0;
};

/// A loaded model mapping a float32 NCHW host input to named host outputs.
///
/// ``run`` is const and safe to call from several threads at once, each with its own context:
/// everything a call mutates lives in the context.
class PGN_API Backend {
 public:
  virtual ~Backend() = default;
  /// Registry name: ort-cpu, ort-cuda, ort-trt or trt.
  virtual const std::string& name() const = 0;
  virtual const std::vector<std::string>& input_names() const = 0;
  virtual const std::vector<std::string>& output_names() const = 0;
  /// Whether the batch dimension of every input is free.
  virtual bool dynamic_batch() const = 0;
  /// The pgn_deploy metadata stored in the model itself (ONNX); nullopt where there is none.
  virtual std::optional<std::string> embedded_metadata() const = 0;
  virtual std::unique_ptr<BackendContext> new_context() const = 0;
  /// Run once: ``input`` is host data of ``shape`` for graph input ``input_name``, of
  /// ``input_type`` Float32 (NCHW; converted to the model's input type when that is float16) or
  /// UInt8 (NHWC frames for a model whose input is uint8); ``outputs[i]`` receives ``fetch[i]``.
  /// Throws BadInputError when the model refuses the input, Error otherwise.
  virtual void run(BackendContext& context, const std::string& input_name, const void* input, ElementType input_type,
                   const std::array<std::int64_t, 4>& shape, const std::vector<std::string>& fetch,
                   std::vector<TensorView>& outputs) const = 0;
};

/// Every backend name this build knows ("trt" only with PGN_WITH_TENSORRT).
PGN_API std::vector<std::string> backend_names();

/// Whether ``path`` names a native TensorRT plan (suffix .plan or .engine, any case).
PGN_API bool is_plan(const std::string& path);

/// Load the model at ``path`` with backend ``name`` (or "auto"). Returns the backend; ``notes``
/// receives why better auto candidates were skipped. An unavailable backend raises
/// BackendUnavailableError naming what is missing; a wrong name or a plan/ONNX mismatch
/// BadInputError; an unreadable model ModelLoadError.
PGN_API std::unique_ptr<Backend> open_backend(const std::string& path, const std::string& name,
                                              const BackendOptions& options, std::vector<std::string>* notes);

}  // namespace pgn
