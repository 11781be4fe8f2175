// Checks of the caller's images (pgn_deploy.runtime.preprocess.check_image / check_color).
#include "pgn/image.hpp"

#include "pgn/errors.hpp"
#include "python_text.hpp"

namespace pgn {

void check_image(const ImageView& image, const std::string& what) {
  const std::string shape = py_shape({image.height, image.width, image.channels});
  if (image.channels != 3)
    throw BadInputError(what + " has " + std::to_string(image.channels) + " channels (shape " + shape +
                        "); expected H x W x 3 (channels last; convert gray or RGBA images to 3 channels)");
  if (image.height <= 0 || image.width <= 0) throw BadInputError(what + " is empty (shape " + shape + ")");
  if (image.data == nullptr) throw BadInputError(what + " has no pixel data (null pointer)");
  if (image.row_stride != 0 && image.row_stride < static_cast<size_t>(image.width) * 3)
    throw BadInputError(what + ": row_stride " + std::to_string(image.row_stride) + " is below width x 3 = " +
                        std::to_string(image.width * 3) + " bytes");
}

void check_color(const std::string& color) {
  if (color != "RGB" && color != "BGR") throw BadInputError("color must be 'RGB' or 'BGR', got " + py_repr(color));
}

}  // namespace pgn
