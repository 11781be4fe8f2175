// The pgn_deploy metadata document (format version 1): what a grafted model promises.
// Mirrors pgn_deploy.contract.Metadata; read from the ONNX metadata key "pgn_deploy" or from a
// TensorRT plan's sidecar JSON file.
#pragma once

#include <array>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "pgn/export.hpp"

namespace pgn {

inline constexpr const char* kMetadataKey = "pgn_deploy";
inline constexpr int kFormatVersion = 1;

/// What was grafted: exponents p, auxiliary labels ("uni", "oh", "gt"), form and options.
struct PGNSpec {
  std::vector<double> p{0.5};
  std::vector<std::string> labels{"uni"};
  std::string form = "paper";
  bool bias = false;
  std::string resolution = "feature";
  bool keep_feature_size = false;
  bool pred = false;
  bool baselines = false;
  /// How the maps were upsampled: "matmul" or "resize" ("auto" is resolved by the graft);
  /// metadata written before the field existed means "resize".
  std::string upsample = "auto";
};

/// How the graph input is fed: NCHW float32 of ``(uint8 / scale - mean) / std`` per channel, in
/// ``channel_order``; ``size`` (H, W) the model was exported at, ``resize``: the runtime resizes
/// images to ``size``; ``assumed_normalization``: mean/std/channel order are pgn-export's
/// defaults, not read from the checkpoint.
struct InputInfo {
  std::string name = "input";
  std::string layout = "NCHW";
  std::string channel_order = "RGB";
  double scale = 255.0;
  std::array<double, 3> mean{0.485, 0.456, 0.406};
  std::array<double, 3> std{0.229, 0.224, 0.225};
  std::optional<std::array<int, 2>> size;
  bool resize = false;
  bool dynamic_batch = true;
  bool dynamic_size = true;
  bool assumed_normalization = false;
  /// "float-nchw" (the preprocessed float tensor) or "uint8-nhwc-rgb"/"uint8-nhwc-bgr" (camera
  /// frames, uint8 N x H x W x 3, normalised inside the graph; ``layout`` is then "NHWC").
  std::string format = "float-nchw";

  /// Whether the graph takes uint8 frames.
  bool uint8() const { return format != "float-nchw"; }
  /// Channel order of the frames the graph takes ("RGB"/"BGR"): the format's, else channel_order.
  std::string frame_order() const { return uint8() ? (format == "uint8-nhwc-bgr" ? "BGR" : "RGB") : channel_order; }
};

/// The classifier head the graft found (node and tensor names of the original graph); ``resize``
/// the interpolation mirrored for the maps ("none", "bilinear", ...), ``align_corners`` its
/// flag, ``feature_resize`` per branch the resize applied before the branches' sum.
struct HeadInfo {
  std::vector<std::string> conv_nodes;
  std::vector<std::string> features;
  std::string logits;
  std::string head_logits;
  std::string logits_output;
  std::string resize = "none";
  bool align_corners = false;
  std::vector<std::string> feature_resize;
};

/// Per-map calibration from pgn-calibrate over in-distribution images: ``q``, quantiles of the
/// finite pixels ("0.5", "0.9", "0.95", "0.99", "0.999" -> value), and ``stats``, the other
/// numbers of the entry ("min", "max", "mean", "n_images", "n_pixels", "n_nonfinite").
struct MapCalibration {
  std::map<std::string, double> q;
  std::map<std::string, double> stats;
  /// The entry's text values ("threshold_rule": how ``stats["threshold"]`` was chosen).
  std::map<std::string, std::string> text;

  /// ``stats[name]``, NaN when absent.
  double stat(const std::string& name) const {
    const auto found = stats.find(name);
    return found == stats.end() ? std::numeric_limits<double>::quiet_NaN() : found->second;
  }
};

/// The in-graph OoD mask: ``output`` = uint8(``map``_norm >= ``threshold_input``).
struct OodMaskInfo {
  std::string output;
  std::string map;
  std::string threshold_input;
  double default_threshold = 0.0;
  std::string rule;
};

/// The whole document. Output maps are float32 N x 1 x H x W; ``pred`` is int32 N x H x W.
struct PGN_API Metadata {
  PGNSpec spec;
  HeadInfo head;
  int num_classes = 0;
  InputInfo input;
  std::vector<std::string> original_outputs;
  std::vector<std::string> pgn_outputs;
  std::optional<std::string> pred;
  std::vector<std::string> baselines;
  std::optional<std::vector<std::string>> class_names;
  std::optional<std::map<std::string, MapCalibration>> calibration;
  std::string precision = "fp32";
  std::optional<std::string> gt_input;
  std::string producer;
  int format_version = kFormatVersion;
  /// map -> its in-graph percentile-rank output ("<map>_norm").
  std::map<std::string, std::string> normalized;
  /// The in-graph ``ood_mask`` output (``output``, ``map``, ``threshold_input``: the optional
  /// graph input that sets its threshold, ``default`` threshold and its ``rule``).
  std::optional<OodMaskInfo> ood_mask;
  /// Outputs removed by pgn-export --outputs.
  std::vector<std::string> dropped_outputs;

  /// Every per-pixel score map: the PGN maps then the baselines.
  std::vector<std::string> score_outputs() const;

  /// Parse the JSON text. Throws MissingMetadataError (unsupported format version, malformed
  /// document: same messages as Metadata.loads in Python) or BadInputError (invalid spec values).
  static Metadata parse(const std::string& json_text);
};

/// How p is written in output names: Python's ``format(p, "g")`` (0.5 -> "0.5", 1.0 -> "1").
PGN_API std::string format_p(double p);

/// Output name of the PGN map for ``label`` and exponent ``p``: ``pgn_<label>_p<p>``.
PGN_API std::string pgn_output_name(const std::string& label, double p);

}  // namespace pgn
