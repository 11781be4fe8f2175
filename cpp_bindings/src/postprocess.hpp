// From the backend's outputs to the Result's maps, bit for bit like pgn_deploy.runtime
// (runner._plane, result.resize_score / resize_labels, Result.instances):
//   * a map N x 1 x h x w (or N x h x w) gives its row as an h x w plane;
//   * maps at another size than the image are brought to it with cv::resize: scores
//     INTER_LINEAR on float32, the class map INTER_NEAREST on int32;
//   * without a pred output the class map is the argmax of the logits over classes (first
//     maximum on ties, first NaN wins, like numpy);
//   * instances: cv::connectedComponentsWithStats(mask, 8, CV_32S), numbered 1..n in raster
//     order of each component's first pixel, those with area >= min_area kept, mean score =
//     float64 row-major sum / area.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "pgn/backend.hpp"
#include "pgn/result.hpp"

namespace pgn {

/// Row ``row`` of an N x 1 x h x w or N x h x w output as an h x w cv::Mat of ``depth``
/// (CV_32F or CV_32S): a view of the output when its type matches, else converted into
/// ``buffer``. Throws Error for another shape.
cv::Mat output_plane(const TensorView& output, int row, const std::string& name, int depth, cv::Mat& buffer);

/// Row ``row`` of an N x C x h x w output as a C x (h * w) float32 Mat (a view, or converted into
/// ``buffer``). Throws Error for another rank.
cv::Mat output_planes(const TensorView& output, int row, const std::string& name, cv::Mat& buffer);

/// An h x w float32 plane at ``size`` (H, W): copied when equal, else bilinear.
Plane<float> resize_score(const cv::Mat& score, const std::array<int, 2>& size);

/// An h x w int32 class plane at ``size`` (H, W): copied when equal, else nearest.
Plane<std::int32_t> resize_labels(const cv::Mat& labels, const std::array<int, 2>& size);

/// argmax over the classes of C x h x w float32 ``logits`` (contiguous) into ``out`` (h x w
/// int32, created when its size differs).
void argmax_classes(const float* logits, int classes, int height, int width, cv::Mat& out);

/// The 8-connected components of ``mask`` (uint8 0/1) with at least ``min_area`` pixels and the
/// mean of ``score`` over each.
std::vector<Instance> connected_instances(const Plane<std::uint8_t>& mask, const Plane<float>& score, int min_area);

}  // namespace pgn
