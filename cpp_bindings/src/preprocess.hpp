// From a caller's uint8 image to the model's input tensor, exactly as the metadata says and
// bit for bit like pgn_deploy.runtime.preprocess.preprocess_image:
//   1. channel order reversed when the image's differs from InputInfo::channel_order;
//   2. resized to InputInfo::size with cv::resize(INTER_LINEAR) on the uint8 image when
//      InputInfo::resize and the size differs;
//   3. float32, one IEEE operation at a time: x = float(v); x /= scale; x -= mean[c]; x /= std[c]
//      (scale, mean and std rounded to float32);
//   4. HWC -> CHW.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include <opencv2/core.hpp>

#include "pgn/image.hpp"
#include "pgn/metadata.hpp"

namespace pgn {

/// (h, w) of the model input for an H x W image: InputInfo::size when the runtime resizes.
std::array<int, 2> model_input_size(const InputInfo& info, int height, int width);

/// Refuse a size a fixed-size model cannot take (after the optional resize); ``what`` names the
/// image ("image 0").
void check_size(const InputInfo& info, const std::array<int, 2>& size, const std::string& what);

/// For a model that takes uint8 frames (InputInfo::uint8()): write the h x w x 3 uint8 frame of
/// ``image`` to ``out`` (steps 1 and 2 only; the graph does the rest).
void frame_image(const ImageView& image, const std::string& color, const InputInfo& info, cv::Mat& resized,
                 std::uint8_t* out);

/// Write the 3 x h x w float32 input of ``image`` (a checked H x W x 3 view in ``color``) to
/// ``out``; ``resized`` is a reusable buffer for step 2 (grown when needed, else untouched).
void preprocess_image(const ImageView& image, const std::string& color, const InputInfo& info, cv::Mat& resized,
                      float* out);

}  // namespace pgn
