#include "postprocess.hpp"

#include <algorithm>
#include <cmath>

#include <opencv2/imgproc.hpp>

#include "pgn/errors.hpp"
#include "python_text.hpp"

namespace pgn {
namespace {

int cv_depth(ElementType type) {
  switch (type) {
    case ElementType::Float32: return CV_32F;
    case ElementType::Float16: return CV_16F;
    case ElementType::Int32: return CV_32S;
    default: return -1;
  }
}

size_t element_size(ElementType type) {
  switch (type) {
    case ElementType::Float16: return 2;
    case ElementType::Int64: return 8;
    default: return 4;
  }
}

/// ``count`` values of ``output`` from element ``offset`` as an h x w Mat of ``depth``.
cv::Mat typed_view(const TensorView& output, size_t offset, int rows, int cols, int depth, cv::Mat& buffer) {
  const auto* base = static_cast<const std::uint8_t*>(output.data) + offset * element_size(output.type);
  void* data = const_cast<std::uint8_t*>(base);  // read only: the Mat is never written
  if (output.type == ElementType::Int64) {  // numpy's astype(int32): keep the low 32 bits
    buffer.create(rows, cols, CV_32S);
    const auto* values = static_cast<const std::int64_t*>(data);
    auto* target = buffer.ptr<std::int32_t>();
    for (size_t i = 0, n = static_cast<size_t>(rows) * cols; i < n; ++i)
      target[i] = static_cast<std::int32_t>(static_cast<std::uint32_t>(values[i]));
    if (depth == CV_32S) return buffer;
    buffer.convertTo(buffer, depth);
    return buffer;
  }
  const int source_depth = cv_depth(output.type);
  if (source_depth < 0) throw Error("an output has an unsupported element type");
  cv::Mat view(rows, cols, source_depth, data);
  if (source_depth == depth) return view;
  view.convertTo(buffer, depth);
  return buffer;
}

std::vector<long long> shape_of(const TensorView& output) {
  return std::vector<long long>(output.shape.begin(), output.shape.end());
}

}  // namespace

cv::Mat output_plane(const TensorView& output, int row, const std::string& name, int depth, cv::Mat& buffer) {
  const auto& shape = output.shape;
  const bool planes4 = shape.size() == 4 && shape[1] == 1;
  if (!planes4 && shape.size() != 3)
    throw Error("output " + py_repr(name) + " has shape " + py_shape(shape_of(output)) +
                "; expected N x 1 x H x W or N x H x W");
  const auto height = static_cast<int>(shape[shape.size() - 2]);
  const auto width = static_cast<int>(shape[shape.size() - 1]);
  return typed_view(output, static_cast<size_t>(row) * height * width, height, width, depth, buffer);
}

cv::Mat output_planes(const TensorView& output, int row, const std::string& name, cv::Mat& buffer) {
  const auto& shape = output.shape;
  if (shape.size() != 4)
    throw Error("output " + py_repr(name) + " has shape " + py_shape(shape_of(output)) + "; expected N x C x H x W");
  const auto classes = static_cast<int>(shape[1]);
  const auto plane = static_cast<int>(shape[2] * shape[3]);
  return typed_view(output, static_cast<size_t>(row) * classes * plane, classes, plane, CV_32F, buffer);
}

Plane<float> resize_score(const cv::Mat& score, const std::array<int, 2>& size) {
  Plane<float> out(size[0], size[1]);
  cv::Mat target(size[0], size[1], CV_32F, out.data.data());
  if (score.rows == size[0] && score.cols == size[1])
    score.copyTo(target);
  else
    cv::resize(score, target, cv::Size(size[1], size[0]), 0, 0, cv::INTER_LINEAR);
  return out;
}

Plane<std::int32_t> resize_labels(const cv::Mat& labels, const std::array<int, 2>& size) {
  Plane<std::int32_t> out(size[0], size[1]);
  cv::Mat target(size[0], size[1], CV_32S, out.data.data());
  if (labels.rows == size[0] && labels.cols == size[1])
    labels.copyTo(target);
  else
    cv::resize(labels, target, cv::Size(size[1], size[0]), 0, 0, cv::INTER_NEAREST);
  return out;
}

void argmax_classes(const float* logits, int classes, int height, int width, cv::Mat& out) {
  out.create(height, width, CV_32S);
  const size_t plane = static_cast<size_t>(height) * width;
  auto* target = out.ptr<std::int32_t>();
  for (size_t i = 0; i < plane; ++i) {
    int best = 0;
    float best_value = logits[i];
    for (int c = 1; c < classes && !std::isnan(best_value); ++c) {
      const float value = logits[c * plane + i];
      if (value > best_value || std::isnan(value)) {
        best = c;
        best_value = value;
      }
    }
    target[i] = best;
  }
}

std::vector<Instance> connected_instances(const Plane<std::uint8_t>& mask, const Plane<float>& score, int min_area) {
  const cv::Mat mask_mat(mask.height, mask.width, CV_8U, const_cast<std::uint8_t*>(mask.data.data()));
  cv::Mat labels, stats, centroids;
  const int count = cv::connectedComponentsWithStats(mask_mat, labels, stats, centroids, 8, CV_32S);
  // Per label: the float64 row-major sum of its scores and the raster index of its first pixel.
  std::vector<double> sums(static_cast<size_t>(count), 0.0);
  std::vector<std::int64_t> first_pixel(static_cast<size_t>(count), -1);
  const auto* label = labels.ptr<std::int32_t>();
  for (size_t i = 0, n = score.data.size(); i < n; ++i) {
    sums[label[i]] += static_cast<double>(score.data[i]);
    if (first_pixel[label[i]] < 0) first_pixel[label[i]] = static_cast<std::int64_t>(i);
  }
  // Number the components 1..n in raster order of their first pixel (not OpenCV's order).
  std::vector<int> order;
  for (int id = 1; id < count; ++id) order.push_back(id);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return first_pixel[a] < first_pixel[b]; });
  std::vector<Instance> found;
  for (size_t k = 0; k < order.size(); ++k) {
    const int id = order[k];
    const int area = stats.at<int>(id, cv::CC_STAT_AREA);
    if (area < min_area) continue;
    found.push_back({static_cast<int>(k) + 1, area,
                     {stats.at<int>(id, cv::CC_STAT_LEFT), stats.at<int>(id, cv::CC_STAT_TOP),
                      stats.at<int>(id, cv::CC_STAT_WIDTH), stats.at<int>(id, cv::CC_STAT_HEIGHT)},
                     sums[id] / area});
  }
  return found;
}

}  // namespace pgn
