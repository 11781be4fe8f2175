#include "preprocess.hpp"

#include <opencv2/imgproc.hpp>

#include "pgn/errors.hpp"

namespace pgn {

std::array<int, 2> model_input_size(const InputInfo& info, int height, int width) {
  if (info.resize && info.size) return *info.size;
  return {height, width};
}

void check_size(const InputInfo& info, const std::array<int, 2>& size, const std::string& what) {
  if (info.size && !info.dynamic_size && size != *info.size)
    throw BadInputError(what + " is " + std::to_string(size[0]) + " x " + std::to_string(size[1]) +
                        " but the model takes only " + std::to_string((*info.size)[0]) + " x " +
                        std::to_string((*info.size)[1]) + " images; resize it first");
}

void preprocess_image(const ImageView& image, const std::string& color, const InputInfo& info, cv::Mat& resized,
                      float* out) {
  // cv::Mat over the caller's pixels: no copy (OpenCV does not write through a const source).
  cv::Mat source(image.height, image.width, CV_8UC3, const_cast<std::uint8_t*>(image.data), image.stride());
  const auto [height, width] = model_input_size(info, image.height, image.width);
  if (height != image.height || width != image.width) {
    // Resizing treats channels independently, so resizing before the channel swap equals
    // Python's swap-then-resize.
    cv::resize(source, resized, cv::Size(width, height), 0, 0, cv::INTER_LINEAR);
    source = resized;
  }
  const bool reverse = color != info.frame_order();
  const float scale = static_cast<float>(info.scale);
  const size_t plane = static_cast<size_t>(height) * width;
  for (int c = 0; c < 3; ++c) {
    const int from = reverse ? 2 - c : c;
    const float mean = static_cast<float>(info.mean[c]);
    const float std = static_cast<float>(info.std[c]);
    float* channel = out + c * plane;
    for (int y = 0; y < height; ++y) {
      const std::uint8_t* row = source.ptr<std::uint8_t>(y);
      float* target = channel + static_cast<size_t>(y) * width;
      for (int x = 0; x < width; ++x) {
        float v = static_cast<float>(row[3 * x + from]);
        v /= scale;
        v -= mean;
        v /= std;
        target[x] = v;
      }
    }
  }
}

void frame_image(const ImageView& image, const std::string& color, const InputInfo& info, cv::Mat& resized,
                 std::uint8_t* out) {
  cv::Mat source(image.height, image.width, CV_8UC3, const_cast<std::uint8_t*>(image.data), image.stride());
  const auto [height, width] = model_input_size(info, image.height, image.width);
  if (height != image.height || width != image.width) {
    cv::resize(source, resized, cv::Size(width, height), 0, 0, cv::INTER_LINEAR);
    source = resized;
  }
  const bool reverse = color != info.frame_order();
  for (int y = 0; y < height; ++y) {
    const std::uint8_t* row = source.ptr<std::uint8_t>(y);
    std::uint8_t* target = out + static_cast<size_t>(y) * width * 3;
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < 3; ++c) target[3 * x + c] = row[3 * x + (reverse ? 2 - c : c)];
  }
}

}  // namespace pgn
