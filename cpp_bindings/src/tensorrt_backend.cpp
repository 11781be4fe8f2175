#include "tensorrt_backend.hpp"

#include <fstream>
#include <iterator>
#include <mutex>

#include <NvInfer.h>
#include <cuda_runtime_api.h>
#include <opencv2/core.hpp>

#include "pgn/errors.hpp"

namespace pgn {
namespace {

/// Keeps TensorRT's last error message for the exception text; prints nothing.
class Logger final : public nvinfer1::ILogger {
 public:
  void log(Severity severity, nvinfer1::AsciiChar const* message) noexcept override {
    if (severity > Severity::kERROR || message == nullptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    last_error_ = message;
  }
  std::string last_error() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_error_.empty() ? "no message from TensorRT" : last_error_;
  }

 private:
  mutable std::mutex mutex_;
  std::string last_error_;
};

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw Error(std::string("trt: ") + what + " failed: " + cudaGetErrorString(status));
}

ElementType element_type(nvinfer1::DataType type) {
  switch (type) {
    case nvinfer1::DataType::kFLOAT: return ElementType::Float32;
    case nvinfer1::DataType::kHALF: return ElementType::Float16;
    case nvinfer1::DataType::kINT32: return ElementType::Int32;
    case nvinfer1::DataType::kINT64: return ElementType::Int64;
    case nvinfer1::DataType::kUINT8: return ElementType::UInt8;
    default: return ElementType::Unsupported;
  }
}

size_t element_size(ElementType type) {
  switch (type) {
    case ElementType::Float16: return 2;
    case ElementType::UInt8: return 1;
    case ElementType::Int64: return 8;
    default: return 4;
  }
}

struct DeviceBuffer {
  void* data = nullptr;
  size_t bytes = 0;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept : data(other.data), bytes(other.bytes) {
    other.data = nullptr;
    other.bytes = 0;
  }
  void reserve(size_t wanted) {  // grows only
    if (wanted <= bytes) return;
    if (data) cudaFree(data);
    data = nullptr;
    check_cuda(cudaMalloc(&data, wanted), "cudaMalloc");
    bytes = wanted;
  }
  ~DeviceBuffer() {
    if (data) cudaFree(data);
  }
};

/// Per-caller state: an execution context, a stream, device buffers for every I/O tensor and
/// host copies of the fetched outputs. Shapes are set again only when the input shape changes.
struct TrtContext : BackendContext {
  std::unique_ptr<nvinfer1::IExecutionContext> context;
  cudaStream_t stream = nullptr;
  std::array<std::int64_t, 4> shape{};
  cv::Mat half;
  DeviceBuffer input;
  std::vector<DeviceBuffer> outputs;                  // one per engine output
  std::vector<std::vector<std::uint8_t>> host;       // one per engine output
  std::vector<std::vector<std::int64_t>> shapes;     // one per engine output
  ~TrtContext() override {
    if (stream) cudaStreamDestroy(stream);
  }
};

class TrtBackend final : public Backend {
 public:
  TrtBackend(const std::string& path, const BackendOptions& options) : device_id_(options.device_id) {
    std::ifstream file(path, std::ios::binary);
    const std::vector<char> blob((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    if (!file.good() && !file.eof()) throw ModelLoadError(path + ": cannot read the plan");
    check_cuda(cudaSetDevice(device_id_), "cudaSetDevice");
    runtime_.reset(nvinfer1::createInferRuntime(logger_));
    if (!runtime_) throw BackendUnavailableError("trt: TensorRT could not create a runtime: " + logger_.last_error());
    engine_.reset(runtime_->deserializeCudaEngine(blob.data(), blob.size()));
    if (!engine_)
      throw ModelLoadError(path + ": TensorRT cannot load the plan (" + logger_.last_error() +
                           "); rebuild it with pgn-build for this GPU and TensorRT version");
    for (int32_t i = 0; i < engine_->getNbIOTensors(); ++i) {
      const char* tensor = engine_->getIOTensorName(i);
      if (engine_->getTensorIOMode(tensor) == nvinfer1::TensorIOMode::kINPUT) {
        input_names_.emplace_back(tensor);
        const auto dims = engine_->getTensorShape(tensor);
        if (dims.nbDims > 0 && dims.d[0] >= 0) dynamic_batch_ = false;
      } else {
        output_names_.emplace_back(tensor);
        output_types_.push_back(element_type(engine_->getTensorDataType(tensor)));
      }
    }
  }

  const std::string& name() const override { return name_; }
  const std::vector<std::string>& input_names() const override { return input_names_; }
  const std::vector<std::string>& output_names() const override { return output_names_; }
  bool dynamic_batch() const override { return dynamic_batch_; }
  std::optional<std::string> embedded_metadata() const override { return std::nullopt; }

  std::unique_ptr<BackendContext> new_context() const override {
    auto state = std::make_unique<TrtContext>();
    check_cuda(cudaSetDevice(device_id_), "cudaSetDevice");
    state->context.reset(engine_->createExecutionContext());
    if (!state->context) throw Error("trt: cannot create an execution context: " + logger_.last_error());
    check_cuda(cudaStreamCreate(&state->stream), "cudaStreamCreate");
    state->outputs.resize(output_names_.size());
    state->host.resize(output_names_.size());
    state->shapes.resize(output_names_.size());
    return state;
  }

  void run(BackendContext& context, const std::string& input_name, const void* input, ElementType given,
           const std::array<std::int64_t, 4>& shape, const std::vector<std::string>& fetch,
           std::vector<TensorView>& outputs) const override {
    auto& state = static_cast<TrtContext&>(context);
    check_cuda(cudaSetDevice(device_id_), "cudaSetDevice");
    const ElementType input_type = element_type(engine_->getTensorDataType(input_name.c_str()));
    if (input_type != ElementType::Float32 && input_type != ElementType::Float16 && input_type != ElementType::UInt8)
      throw UnsupportedModelError("the plan's input " + input_name + " is neither float32, float16 nor uint8");
    if ((given == ElementType::UInt8) != (input_type == ElementType::UInt8))
      throw UnsupportedModelError("the plan's input " + input_name + (input_type == ElementType::UInt8
                                  ? " takes uint8 frames, not a float tensor" : " does not take uint8 frames"));
    const size_t count = static_cast<size_t>(shape[0] * shape[1] * shape[2] * shape[3]);
    if (state.shape != shape) bind_shapes(state, input_name, shape, count * element_size(input_type));
    const void* host_input = input;
    if (input_type == ElementType::Float16) {
      cv::Mat(static_cast<int>(count / shape[3]), static_cast<int>(shape[3]), CV_32F, const_cast<void*>(input))
          .convertTo(state.half, CV_16F);
      host_input = state.half.data;
    }
    check_cuda(cudaMemcpyAsync(state.input.data, host_input, count * element_size(input_type), cudaMemcpyHostToDevice,
                               state.stream),
               "copy to the GPU");
    if (!state.context->enqueueV3(state.stream)) {
      cudaStreamSynchronize(state.stream);
      throw Error("trt: inference failed: " + logger_.last_error());
    }
    outputs.resize(fetch.size());
    for (size_t i = 0; i < fetch.size(); ++i) {
      const size_t k = output_index(fetch[i]);
      check_cuda(cudaMemcpyAsync(state.host[k].data(), state.outputs[k].data, state.host[k].size(),
                                 cudaMemcpyDeviceToHost, state.stream),
                 "copy from the GPU");
      outputs[i].data = state.host[k].data();
      outputs[i].type = output_types_[k];
      outputs[i].shape = state.shapes[k];
    }
    check_cuda(cudaStreamSynchronize(state.stream), "cudaStreamSynchronize");
  }

 private:
  struct Deleter {
    template <typename T>
    void operator()(T* object) const { delete object; }  // TensorRT 10: plain delete
  };

  size_t output_index(const std::string& name) const {
    for (size_t k = 0; k < output_names_.size(); ++k)
      if (output_names_[k] == name) return k;
    throw Error("trt: the plan has no output " + name);
  }

  /// Set the input shape, then size and bind every output for it.
  void bind_shapes(TrtContext& state, const std::string& input_name, const std::array<std::int64_t, 4>& shape,
                   size_t input_bytes) const {
    nvinfer1::Dims dims{};
    dims.nbDims = 4;
    for (int i = 0; i < 4; ++i) dims.d[i] = shape[i];
    if (!state.context->setInputShape(input_name.c_str(), dims))
      throw BadInputError("the model refused the input: " + logger_.last_error());
    state.input.reserve(input_bytes);
    state.context->setTensorAddress(input_name.c_str(), state.input.data);
    for (size_t k = 0; k < output_names_.size(); ++k) {
      const auto out = state.context->getTensorShape(output_names_[k].c_str());
      size_t elements = 1;
      state.shapes[k].assign(out.d, out.d + out.nbDims);
      for (int i = 0; i < out.nbDims; ++i) elements *= static_cast<size_t>(out.d[i]);
      const size_t bytes = elements * element_size(output_types_[k]);
      state.outputs[k].reserve(bytes);
      state.host[k].resize(bytes);
      state.context->setTensorAddress(output_names_[k].c_str(), state.outputs[k].data);
    }
    state.shape = shape;
  }

  const std::string name_ = "trt";
  int device_id_;
  mutable Logger logger_;
  std::unique_ptr<nvinfer1::IRuntime, Deleter> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine, Deleter> engine_;
  std::vector<std::string> input_names_;
  std::vector<std::string> output_names_;
  std::vector<ElementType> output_types_;
  bool dynamic_batch_ = true;
};

}  // namespace

std::unique_ptr<Backend> open_tensorrt(const std::string& path, const BackendOptions& options) {
  return std::make_unique<TrtBackend>(path, options);
}

}  // namespace pgn
