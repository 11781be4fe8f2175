// pgn::Runtime (pgn_deploy.runtime.runner.Runtime): checks, batching by size, the workspace pool.
#include "pgn/runtime.hpp"

#include <algorithm>
#include <chrono>

#include <opencv2/core.hpp>

#include "model_file.hpp"
#include "pgn/errors.hpp"
#include "postprocess.hpp"
#include "preprocess.hpp"
#include "python_text.hpp"

namespace pgn {

/// The reusable buffers of one call (see Runtime): kept at their largest size so far.
class Workspace {
 public:
  std::unique_ptr<BackendContext> context;
  std::vector<float> input;                // N x 3 x h x w model input
  std::vector<std::uint8_t> frames;        // N x h x w x 3 model input (uint8 input formats)
  cv::Mat resized;                         // one resized uint8 image
  std::vector<TensorView> outputs;         // the backend's outputs of the last call
  cv::Mat plane;                           // a converted output plane (float16 or int64 outputs)
  cv::Mat logits;                          // converted logits (float16 outputs)
  cv::Mat classes;                         // argmax of the logits
  std::vector<std::array<int, 2>> sizes;   // model input size per image
  std::vector<double> preprocess_ms;       // per image
  std::vector<char> grouped;               // per image: already in a run
  std::vector<std::vector<size_t>> runs;   // backend calls: image indices (first `run_count` used)
  size_t run_count = 0;
};

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

/// Image indices grouped by equal size (sizes in first-seen order, indices ascending), cut into
/// runs of at most ``max_batch``: the backend calls. Written into the workspace's reused vectors.
void group_by_size(Workspace& workspace, int max_batch) {
  const auto& sizes = workspace.sizes;
  workspace.grouped.assign(sizes.size(), 0);
  workspace.run_count = 0;
  for (size_t first = 0; first < sizes.size(); ++first) {
    if (workspace.grouped[first]) continue;
    std::vector<size_t>* run = nullptr;
    for (size_t i = first; i < sizes.size(); ++i) {
      if (workspace.grouped[i] || sizes[i] != sizes[first]) continue;
      if (run == nullptr || run->size() == static_cast<size_t>(max_batch)) {
        if (workspace.runs.size() == workspace.run_count) workspace.runs.emplace_back();
        run = &workspace.runs[workspace.run_count++];
        run->clear();
      }
      run->push_back(i);
      workspace.grouped[i] = 1;
    }
  }
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

bool contains(const std::vector<std::string>& items, const std::string& item) {
  return std::find(items.begin(), items.end(), item) != items.end();
}

/// Takes a workspace from the pool for one call and puts it back afterwards.
class Lease {
 public:
  Lease(std::mutex& mutex, std::vector<std::unique_ptr<Workspace>>& pool, const Backend& backend)
      : mutex_(mutex), pool_(pool) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!pool_.empty()) {
        workspace_ = std::move(pool_.back());
        pool_.pop_back();
      }
    }
    if (!workspace_) {
      workspace_ = std::make_unique<Workspace>();
      workspace_->context = backend.new_context();
    }
  }
  ~Lease() {
    std::lock_guard<std::mutex> lock(mutex_);
    pool_.push_back(std::move(workspace_));
  }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  Workspace& operator*() { return *workspace_; }

 private:
  std::mutex& mutex_;
  std::vector<std::unique_ptr<Workspace>>& pool_;
  std::unique_ptr<Workspace> workspace_;
};

}  // namespace

Runtime::Runtime(const std::string& model_path, const RuntimeOptions& options)
    : model_path_(py_path(model_path)), max_batch_(options.max_batch) {
  if (options.max_batch < 1)
    throw BadInputError("max_batch must be an integer >= 1, got " + std::to_string(options.max_batch));
  require_model_file(model_path_);
  const bool plan = is_plan(model_path_);
  if (plan) metadata_ = load_plan_metadata(model_path_);
  backend_ = open_backend(model_path_, options.backend, options.backend_options, &notes_);
  if (!plan) metadata_ = load_onnx_metadata(model_path_, backend_->embedded_metadata());
  score_names_ = metadata_.score_outputs();
  if (score_names_.empty())
    throw MissingMetadataError(model_path_ + ": the metadata lists no score maps; re-run pgn-export");
  default_score_ = metadata_.pgn_outputs.empty() ? score_names_[0] : metadata_.pgn_outputs[0];
  fetch_ = score_names_;
  if (metadata_.pred) fetch_.push_back(*metadata_.pred);
  fetch_logits_ = fetch_;
  if (!metadata_.pred) fetch_.push_back(metadata_.head.logits_output);
  fetch_logits_.push_back(metadata_.head.logits_output);
  check_model();
  for (const auto& name : backend_->input_names())
    if (name != metadata_.input.name && !(metadata_.ood_mask && name == metadata_.ood_mask->threshold_input))
      extra_inputs_.push_back(name);
}

Runtime::~Runtime() = default;

void Runtime::check_model() const {
  const auto& inputs = backend_->input_names();
  if (!contains(inputs, metadata_.input.name))
    throw ModelLoadError(model_path_ + ": the metadata names input " + py_repr(metadata_.input.name) +
                         ", the model has " + join(inputs));
  std::vector<std::string> missing;
  for (const auto& name : fetch_)
    if (!contains(backend_->output_names(), name)) missing.push_back(name);
  if (!missing.empty())
    throw ModelLoadError(model_path_ + ": the metadata lists outputs the model lacks: " + join(missing));
}

Result Runtime::run(const ImageView& image, const std::string& color, bool logits) const {
  return run_images({image}, true, color, logits).front();
}

std::vector<Result> Runtime::run(const std::vector<ImageView>& images, const std::string& color, bool logits) const {
  return run_images(images, false, color, logits);
}

std::vector<Result> Runtime::run_images(const std::vector<ImageView>& images, bool single, const std::string& color,
                                        bool logits) const {
  check_color(color);
  if (images.empty()) throw BadInputError("the list of images is empty");
  for (size_t i = 0; i < images.size(); ++i) check_image(images[i], single ? "the image" : "image " + std::to_string(i));
  if (!extra_inputs_.empty())
    throw UnsupportedModelError("the model also needs the inputs " + join(extra_inputs_) +
                                "; the C++ runtime feeds images only (use the Python runtime's extra_feeds)");
  const InputInfo& info = metadata_.input;
  Lease lease(pool_mutex_, pool_, *backend_);
  Workspace& workspace = *lease;
  workspace.sizes.clear();
  for (size_t i = 0; i < images.size(); ++i) {
    workspace.sizes.push_back(model_input_size(info, images[i].height, images[i].width));
    check_size(info, workspace.sizes.back(), "image " + std::to_string(i));
  }
  const std::vector<std::string>& fetch = logits ? fetch_logits_ : fetch_;
  group_by_size(workspace, backend_->dynamic_batch() ? max_batch_ : 1);
  workspace.preprocess_ms.assign(images.size(), 0.0);
  std::vector<Result> results(images.size());
  for (size_t r = 0; r < workspace.run_count; ++r) {
    const std::vector<size_t>& run = workspace.runs[r];
    const auto [height, width] = workspace.sizes[run.front()];
    const size_t stride = static_cast<size_t>(3) * height * width;
    const auto count = static_cast<std::int64_t>(run.size());
    if (info.uint8())
      workspace.frames.resize(run.size() * stride);
    else
      workspace.input.resize(run.size() * stride);
    for (size_t k = 0; k < run.size(); ++k) {
      const auto start = Clock::now();
      if (info.uint8())
        frame_image(images[run[k]], color, info, workspace.resized, workspace.frames.data() + k * stride);
      else
        preprocess_image(images[run[k]], color, info, workspace.resized, workspace.input.data() + k * stride);
      workspace.preprocess_ms[run[k]] = ms_since(start);
    }
    const auto start = Clock::now();
    if (info.uint8())
      backend_->run(*workspace.context, info.name, workspace.frames.data(), ElementType::UInt8,
                    {count, height, width, 3}, fetch, workspace.outputs);
    else
      backend_->run(*workspace.context, info.name, workspace.input.data(), ElementType::Float32,
                    {count, 3, height, width}, fetch, workspace.outputs);
    const double inference_ms = ms_since(start) / static_cast<double>(run.size());
    for (size_t k = 0; k < run.size(); ++k) {
      const ImageView& image = images[run[k]];
      results[run[k]] = postprocess(workspace, fetch, static_cast<int>(k), {image.height, image.width}, logits,
                                    {workspace.preprocess_ms[run[k]], inference_ms, 0.0});
    }
  }
  return results;
}

Result Runtime::postprocess(Workspace& workspace, const std::vector<std::string>& fetch, int row,
                            const std::array<int, 2>& size, bool logits, const Timings& timings) const {
  const auto start = Clock::now();
  Result result;
  result.score_names = score_names_;
  for (size_t i = 0; i < result.score_names.size(); ++i) {
    const cv::Mat plane = output_plane(workspace.outputs[i], row, fetch[i], CV_32F, workspace.plane);
    result.score_maps.push_back(resize_score(plane, size));
  }
  const size_t logits_index = fetch.size() - 1;
  const bool has_logits = fetch.back() == metadata_.head.logits_output;
  cv::Mat logits_map;
  if (has_logits) logits_map = output_planes(workspace.outputs[logits_index], row, fetch.back(), workspace.logits);
  const auto& logits_shape = workspace.outputs[logits_index].shape;
  if (metadata_.pred) {
    const size_t pred_index = result.score_names.size();
    result.pred = resize_labels(output_plane(workspace.outputs[pred_index], row, fetch[pred_index], CV_32S,
                                             workspace.plane), size);
  } else {
    argmax_classes(logits_map.ptr<float>(), logits_map.rows, static_cast<int>(logits_shape[2]),
                   static_cast<int>(logits_shape[3]), workspace.classes);
    result.pred = resize_labels(workspace.classes, size);
  }
  if (logits) {
    Plane<float> copy(static_cast<int>(logits_shape[2]), static_cast<int>(logits_shape[3]), logits_map.rows);
    std::copy(logits_map.ptr<float>(), logits_map.ptr<float>() + copy.data.size(), copy.data.begin());
    result.logits = std::move(copy);
  }
  result.default_score = default_score_;
  result.calibration = metadata_.calibration;
  result.timings = timings;
  result.timings.postprocess_ms = ms_since(start);
  return result;
}

}  // namespace pgn
