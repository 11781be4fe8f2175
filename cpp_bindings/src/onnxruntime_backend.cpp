#include "onnxruntime_backend.hpp"

#include <algorithm>
#include <mutex>

#include <onnxruntime_cxx_api.h>
#include <opencv2/core.hpp>

#include "pgn/errors.hpp"
#include "pgn/metadata.hpp"

namespace pgn {
namespace {

constexpr const char* kCpu = "CPUExecutionProvider";
constexpr const char* kCuda = "CUDAExecutionProvider";
constexpr const char* kTensorRT = "TensorrtExecutionProvider";

/// Checks the loaded library's API level against the headers once, then the process-wide Env.
Ort::Env& ort_env() {
  static std::once_flag once;
  static std::unique_ptr<Ort::Env> env;
  std::call_once(once, [] {
    const OrtApiBase* base = OrtGetApiBase();
    const OrtApi* api = base->GetApi(ORT_API_VERSION);
    if (api == nullptr)
      throw BackendUnavailableError(std::string("the ONNX Runtime library (version ") + base->GetVersionString() +
                                    ") is older than the headers pgn was built with (API " +
                                    std::to_string(ORT_API_VERSION) + "); rebuild pgn against it");
    Ort::InitApi(api);
    env = std::make_unique<Ort::Env>(ORT_LOGGING_LEVEL_ERROR, "pgn");
  });
  if (!env) throw BackendUnavailableError("ONNX Runtime failed to initialise in an earlier call");
  return *env;
}

std::string first_line(const std::string& text) {
  const auto end = text.find('\n');
  return text.substr(0, end);
}

ElementType element_type(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return ElementType::Float32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return ElementType::Float16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return ElementType::Int32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return ElementType::Int64;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return ElementType::UInt8;
    default: return ElementType::Unsupported;
  }
}

void require_provider(const std::string& provider, const std::string& backend) {
  const auto available = Ort::GetAvailableProviders();
  if (std::find(available.begin(), available.end(), provider) == available.end())
    throw BackendUnavailableError(backend + " needs the " + provider +
                                  ", which the linked ONNX Runtime library does not have; build pgn against "
                                  "an ONNX Runtime with it (PGN_ONNXRUNTIME_ROOT)");
}

/// Append the CUDA execution provider on GPU ``device_id`` through the C API (V2 options).
void append_cuda(Ort::SessionOptions& options, int device_id) {
  const OrtApi& api = Ort::GetApi();
  OrtCUDAProviderOptionsV2* cuda = nullptr;
  Ort::ThrowOnError(api.CreateCUDAProviderOptions(&cuda));
  std::unique_ptr<OrtCUDAProviderOptionsV2, decltype(api.ReleaseCUDAProviderOptions)> owned(
      cuda, api.ReleaseCUDAProviderOptions);
  const std::string device = std::to_string(device_id);
  const char* keys[] = {"device_id"};
  const char* values[] = {device.c_str()};
  Ort::ThrowOnError(api.UpdateCUDAProviderOptions(cuda, keys, values, 1));
  options.AppendExecutionProvider_CUDA_V2(*cuda);
}

/// Append the TensorRT execution provider on GPU ``device_id`` (V2 options).
void append_tensorrt(Ort::SessionOptions& options, int device_id) {
  const OrtApi& api = Ort::GetApi();
  OrtTensorRTProviderOptionsV2* trt = nullptr;
  Ort::ThrowOnError(api.CreateTensorRTProviderOptions(&trt));
  std::unique_ptr<OrtTensorRTProviderOptionsV2, decltype(api.ReleaseTensorRTProviderOptions)> owned(
      trt, api.ReleaseTensorRTProviderOptions);
  const std::string device = std::to_string(device_id);
  const char* keys[] = {"device_id"};
  const char* values[] = {device.c_str()};
  Ort::ThrowOnError(api.UpdateTensorRTProviderOptions(trt, keys, values, 1));
  options.AppendExecutionProvider_TensorRT_V2(*trt);
}

/// Per-caller state: the input value and the outputs of the last run, bound again as long as
/// the input (pointer and shape) and the fetched names repeat.
struct OrtContext : BackendContext {
  const void* input_data = nullptr;
  std::array<std::int64_t, 4> shape{};
  cv::Mat half;  // float16 copy of the input for a half-precision model
  Ort::Value input_value{nullptr};
  std::vector<std::string> fetch;
  std::vector<const char*> fetch_names;
  std::vector<Ort::Value> outputs;
  std::vector<TensorView> views;
};

class OrtBackend final : public Backend {
 public:
  OrtBackend(const std::string& path, const std::string& name, const std::vector<std::string>& providers,
             const BackendOptions& options)
      : name_(name), memory_(Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault)) {
    Ort::Env& env = ort_env();
    Ort::SessionOptions session_options;
    session_options.SetIntraOpNumThreads(options.intra_op_threads);
    session_options.SetInterOpNumThreads(options.inter_op_threads);
    session_options.SetLogSeverityLevel(3);  // errors only: fallbacks are reported by us
    try {
      for (const auto& provider : providers) {
        if (provider == kTensorRT) append_tensorrt(session_options, options.device_id);
        if (provider == kCuda) append_cuda(session_options, options.device_id);
      }
    } catch (const Ort::Exception& exc) {
      throw BackendUnavailableError(name + ": ONNX Runtime could not start " + providers[0] + " (" +
                                    first_line(exc.what()) + ")");
    }
    try {
      session_ = std::make_unique<Ort::Session>(env, path.c_str(), session_options);
    } catch (const Ort::Exception& exc) {
      const std::string message = first_line(exc.what());
      const bool unreadable = exc.GetOrtErrorCode() == ORT_INVALID_PROTOBUF ||
                              exc.GetOrtErrorCode() == ORT_NO_SUCHFILE ||
                              message.find("Protobuf parsing failed") != std::string::npos;
      if (unreadable) throw ModelLoadError(path + ": not a readable ONNX model (" + message + ")");
      if (providers[0] != kCpu)
        throw BackendUnavailableError(name + ": ONNX Runtime could not start " + providers[0] + " (" + message + ")");
      throw ModelLoadError(path + ": ONNX Runtime cannot load the model (" + message + ")");
    }
    Ort::AllocatorWithDefaultOptions allocator;
    dynamic_batch_ = true;
    for (size_t i = 0; i < session_->GetInputCount(); ++i) {
      input_names_.emplace_back(session_->GetInputNameAllocated(i, allocator).get());
      const Ort::TypeInfo type_info = session_->GetInputTypeInfo(i);  // owns what `info` views
      const auto info = type_info.GetTensorTypeAndShapeInfo();
      input_types_.push_back(element_type(info.GetElementType()));
      const auto shape = info.GetShape();
      if (!shape.empty() && shape[0] >= 0) dynamic_batch_ = false;
    }
    for (size_t i = 0; i < session_->GetOutputCount(); ++i)
      output_names_.emplace_back(session_->GetOutputNameAllocated(i, allocator).get());
    const auto metadata = session_->GetModelMetadata();
    auto text = metadata.LookupCustomMetadataMapAllocated(kMetadataKey, allocator);
    if (text) metadata_ = std::string(text.get());
  }

  const std::string& name() const override { return name_; }
  const std::vector<std::string>& input_names() const override { return input_names_; }
  const std::vector<std::string>& output_names() const override { return output_names_; }
  bool dynamic_batch() const override { return dynamic_batch_; }
  std::optional<std::string> embedded_metadata() const override { return metadata_; }
  std::unique_ptr<BackendContext> new_context() const override { return std::make_unique<OrtContext>(); }

  void run(BackendContext& context, const std::string& input_name, const void* input, ElementType input_type,
           const std::array<std::int64_t, 4>& shape, const std::vector<std::string>& fetch,
           std::vector<TensorView>& outputs) const override {
    auto& state = static_cast<OrtContext&>(context);
    const char* input_names[] = {input_name.c_str()};
    try {
      bind_input(state, input_name, input, input_type, shape);
      if (state.fetch != fetch) bind_fetch(state, fetch);
      if (state.outputs.empty()) {
        run_unbound(state, input_names);
      } else {
        try {  // the outputs of the last run, written in place
          session_->Run(run_options_, input_names, &state.input_value, 1, state.fetch_names.data(),
                        state.outputs.data(), state.outputs.size());
        } catch (const Ort::Exception&) {  // an output's shape changed: let ONNX Runtime allocate
          run_unbound(state, input_names);
        }
      }
    } catch (const Ort::Exception& exc) {
      state.outputs.clear();
      if (exc.GetOrtErrorCode() == ORT_INVALID_ARGUMENT)
        throw BadInputError(std::string("the model refused the input: ") + first_line(exc.what()));
      throw Error(name_ + ": inference failed: " + first_line(exc.what()));
    }
    outputs = state.views;
  }

 private:
  ElementType input_type(const std::string& input_name) const {
    for (size_t i = 0; i < input_names_.size(); ++i)
      if (input_names_[i] == input_name) return input_types_[i];
    return ElementType::Unsupported;
  }

  /// (Re)create the input value when the caller's buffer or the shape changed.
  void bind_input(OrtContext& state, const std::string& input_name, const void* input, ElementType given,
                  const std::array<std::int64_t, 4>& shape) const {
    const ElementType type = input_type(input_name);
    if ((given == ElementType::UInt8) != (type == ElementType::UInt8))
      throw UnsupportedModelError("the model's input " + input_name + (type == ElementType::UInt8
                                  ? " takes uint8 frames, not a float tensor" : " does not take uint8 frames"));
    if (type == ElementType::Float16) {  // numpy's float32 -> float16 (round to nearest even)
      const int rows = static_cast<int>(shape[0] * shape[1] * shape[2]);
      cv::Mat(rows, static_cast<int>(shape[3]), CV_32F, const_cast<void*>(input)).convertTo(state.half, CV_16F);
    } else if (type != ElementType::Float32 && type != ElementType::UInt8) {
      throw UnsupportedModelError("the model's input " + input_name + " is neither float32, float16 nor uint8");
    }
    if (state.input_value && state.input_data == input && state.shape == shape) return;
    const size_t count = static_cast<size_t>(shape[0] * shape[1] * shape[2] * shape[3]);
    if (type == ElementType::Float16)
      state.input_value = Ort::Value::CreateTensor(memory_, state.half.data, count * 2, shape.data(), 4,
                                                   ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16);
    else if (type == ElementType::UInt8)
      state.input_value = Ort::Value::CreateTensor<std::uint8_t>(
          memory_, static_cast<std::uint8_t*>(const_cast<void*>(input)), count, shape.data(), 4);
    else
      state.input_value = Ort::Value::CreateTensor<float>(memory_, static_cast<float*>(const_cast<void*>(input)), count,
                                                          shape.data(), 4);
    state.input_data = input;
    state.shape = shape;
    state.outputs.clear();  // new input shape: output shapes are unknown again
  }

  void bind_fetch(OrtContext& state, const std::vector<std::string>& fetch) const {
    state.fetch = fetch;
    state.fetch_names.clear();
    for (const auto& name : state.fetch) state.fetch_names.push_back(name.c_str());
    state.outputs.clear();
  }

  /// Run with outputs ONNX Runtime allocates; keep them (and their views) for the next runs.
  void run_unbound(OrtContext& state, const char* const* input_names) const {
    state.outputs = session_->Run(run_options_, input_names, &state.input_value, 1, state.fetch_names.data(),
                                  state.fetch_names.size());
    state.views.resize(state.outputs.size());
    for (size_t i = 0; i < state.outputs.size(); ++i) {
      const auto info = state.outputs[i].GetTensorTypeAndShapeInfo();
      state.views[i] = {state.outputs[i].GetTensorRawData(), element_type(info.GetElementType()), info.GetShape()};
    }
  }

  std::string name_;
  Ort::MemoryInfo memory_;
  Ort::RunOptions run_options_;
  // Ort::Session::Run is thread-safe; the C++ wrapper's Run is simply not marked const.
  std::unique_ptr<Ort::Session> session_;
  std::vector<std::string> input_names_;
  std::vector<ElementType> input_types_;
  std::vector<std::string> output_names_;
  bool dynamic_batch_ = true;
  std::optional<std::string> metadata_;
};

}  // namespace

std::unique_ptr<Backend> open_onnxruntime(const std::string& path, const std::string& name,
                                          const BackendOptions& options) {
  ort_env();
  if (name == "ort-cpu") return std::make_unique<OrtBackend>(path, name, std::vector<std::string>{kCpu}, options);
  if (name == "ort-cuda") {
    require_provider(kCuda, name);
    return std::make_unique<OrtBackend>(path, name, std::vector<std::string>{kCuda, kCpu}, options);
  }
  require_provider(kTensorRT, name);
  return std::make_unique<OrtBackend>(path, name, std::vector<std::string>{kTensorRT, kCuda, kCpu}, options);
}

}  // namespace pgn
