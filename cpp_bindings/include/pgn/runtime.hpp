// pgn::Runtime: a grafted model on one backend, run on uint8 images (pgn_deploy.runtime.Runtime).
#pragma once

#include <array>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "pgn/backend.hpp"
#include "pgn/export.hpp"
#include "pgn/image.hpp"
#include "pgn/metadata.hpp"
#include "pgn/result.hpp"

namespace pgn {

struct RuntimeOptions {
  /// "auto" or one of backend_names().
  std::string backend = "auto";
  BackendOptions backend_options;
  /// Most images per backend call when the model has a dynamic batch (same-size images are
  /// batched; otherwise one call per image).
  int max_batch = 8;
};

class Workspace;

/// A grafted model loaded on one backend, ready to run on images.
///
/// ``run`` is thread-safe. Memory: once warm (same image sizes as before), a call allocates only
/// what it returns (the Results and their maps). The buffers a call works in (resized image,
/// NCHW input batch, the backend's context with its bound outputs, converted planes, batching
/// bookkeeping) live in a Workspace taken from a pool for the call and put back afterwards; the
/// pool holds one workspace per concurrent caller, each keeps its buffers at their largest size
/// so far, and ONNX Runtime's output tensors stay bound while the input shape repeats. ONNX
/// Runtime's own intermediate tensors come from its arena allocator.
class PGN_API Runtime {
 public:
  /// Load ``model_path`` (ONNX with pgn_deploy metadata, or a TensorRT plan with its
  /// ``<plan>.json`` sidecar). Errors: ModelLoadError (missing or unreadable file),
  /// MissingMetadataError (no metadata), BackendUnavailableError, BadInputError (options).
  explicit Runtime(const std::string& model_path, const RuntimeOptions& options = {});
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  const Metadata& metadata() const { return metadata_; }
  const std::string& model_path() const { return model_path_; }
  /// The backend that runs the model (ort-cpu, ort-cuda, ort-trt, trt).
  const std::string& backend_name() const { return backend_->name(); }
  /// Why better "auto" candidates were skipped.
  const std::vector<std::string>& backend_notes() const { return notes_; }
  /// Every score map the model returns: the PGN maps, then the baselines.
  const std::vector<std::string>& score_names() const { return score_names_; }
  /// The map masks, instances and heatmaps use unless told otherwise (the first PGN map).
  const std::string& default_score() const { return default_score_; }
  int max_batch() const { return max_batch_; }

  /// One image (channel order ``color``: "RGB" or "BGR"); the result is at the image's size.
  Result run(const ImageView& image, const std::string& color = "RGB", bool logits = false) const;
  /// Several images of any sizes; same-size images share backend calls (up to max_batch).
  std::vector<Result> run(const std::vector<ImageView>& images, const std::string& color = "RGB",
                          bool logits = false) const;

 private:
  std::vector<Result> run_images(const std::vector<ImageView>& images, bool single, const std::string& color,
                                 bool logits) const;
  Result postprocess(Workspace& workspace, const std::vector<std::string>& fetch, int row,
                     const std::array<int, 2>& size, bool logits, const Timings& timings) const;
  void check_model() const;

  std::string model_path_;
  Metadata metadata_;
  std::unique_ptr<Backend> backend_;
  std::vector<std::string> notes_;
  std::vector<std::string> fetch_;         // score maps, then pred or the logits
  std::vector<std::string> fetch_logits_;  // the same, and the logits
  std::string default_score_;
  std::vector<std::string> score_names_;
  std::vector<std::string> extra_inputs_;  // graph inputs besides the image (C++ cannot feed them)
  int max_batch_;
  mutable std::mutex pool_mutex_;
  mutable std::vector<std::unique_ptr<Workspace>> pool_;
};

}  // namespace pgn
