// What the runtime returns per image, and the OoD post-processing on it. Mirrors
// pgn_deploy.runtime.result (Result, Instance): same rules, same numbers, same messages.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "pgn/export.hpp"
#include "pgn/metadata.hpp"

namespace pgn {

/// A row-major H x W (or C x H x W with ``channels`` > 1) array that owns its values.
template <typename T>
struct Plane {
  int channels = 1;
  int height = 0;
  int width = 0;
  std::vector<T> data;

  Plane() = default;
  Plane(int h, int w, int c = 1) : channels(c), height(h), width(w), data(static_cast<size_t>(c) * h * w) {}
  T& at(int y, int x, int c = 0) { return data[(static_cast<size_t>(c) * height + y) * width + x]; }
  const T& at(int y, int x, int c = 0) const { return data[(static_cast<size_t>(c) * height + y) * width + x]; }
};

/// One connected OoD region: ``label_id`` (1..n in raster order of the components' first
/// pixels), ``area`` in pixels, ``box`` (x, y, w, h) in pixels and the ``mean_score`` of the map
/// over its pixels.
struct Instance {
  int label_id = 0;
  int area = 0;
  std::array<int, 4> box{};
  double mean_score = 0.0;
};

/// Wall times of one image in milliseconds (the backend call's time divided by its images).
struct Timings {
  double preprocess_ms = 0.0;
  double inference_ms = 0.0;
  double postprocess_ms = 0.0;
};

/// The output for one image, at the image's size H x W.
///
/// ``pred``: int32 class ids (the graph's ``pred`` output, else the argmax of the logits over
/// classes, first maximum on ties); ``score_names`` / ``score_maps``: float32 maps in the
/// metadata's order (PGN maps, then baselines); ``logits``: C x h x w as the graph returns them
/// (converted to float32), only when asked.
class PGN_API Result {
 public:
  Plane<std::int32_t> pred;
  std::vector<std::string> score_names;
  std::vector<Plane<float>> score_maps;
  std::optional<Plane<float>> logits;
  Timings timings;
  std::string default_score;
  std::optional<std::map<std::string, MapCalibration>> calibration;

  /// (H, W) of the image.
  std::array<int, 2> size() const { return {pred.height, pred.width}; }

  /// The map ``name`` ("": the first PGN map). BadInputError for an unknown name.
  const Plane<float>& score(const std::string& name = "") const;

  /// ``threshold``, or the calibrated default of map ``score`` (its q0.99); BadInputError when
  /// neither exists.
  double threshold(std::optional<double> threshold = std::nullopt, const std::string& score = "") const;

  /// uint8 H x W, 1 where ``score >= float32(threshold)``, else 0 (NaN never passes).
  Plane<std::uint8_t> ood_mask(std::optional<double> threshold = std::nullopt, const std::string& score = "") const;

  /// The 8-connected components of ood_mask() (cv::connectedComponentsWithStats) numbered 1..n
  /// in raster order of their first pixel, those with at least ``min_area`` pixels, in that
  /// order; ``mean_score`` is the float64 sum of the component's float32 scores in row-major
  /// order divided by its area.
  std::vector<Instance> instances(std::optional<double> threshold = std::nullopt, int min_area = 1,
                                  const std::string& score = "") const;
};

}  // namespace pgn
