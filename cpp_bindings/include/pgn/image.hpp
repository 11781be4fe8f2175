// A caller's image: a view of uint8 H x W x 3 pixels (channels last) in RGB or BGR order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "pgn/export.hpp"

namespace pgn {

/// A non-owning view of an 8-bit image, channels last. ``row_stride`` is in bytes (0: packed,
/// width * channels). The channel order ("RGB" or "BGR") is given to Runtime::run.
struct ImageView {
  const std::uint8_t* data = nullptr;
  int height = 0;
  int width = 0;
  int channels = 3;
  std::size_t row_stride = 0;

  std::size_t stride() const { return row_stride ? row_stride : static_cast<std::size_t>(width) * channels; }
};

/// Throws BadInputError unless ``image`` is a usable H x W x 3 image; ``what`` names it in the
/// message ("the image", "image 2"). Same checks and messages as pgn_deploy.runtime.preprocess.
PGN_API void check_image(const ImageView& image, const std::string& what = "the image");

/// Throws BadInputError unless ``color`` is "RGB" or "BGR".
PGN_API void check_color(const std::string& color);

}  // namespace pgn
