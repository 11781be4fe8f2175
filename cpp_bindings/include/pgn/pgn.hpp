// pgn: segmentation plus PGN uncertainty maps from a grafted model, in C++17.
//
//   pgn::Runtime runtime("model.pgn.onnx");
//   pgn::Result result = runtime.run(pgn::ImageView{pixels, height, width}, "RGB");
//   auto regions = result.instances(/*threshold=*/2.0);
#pragma once

#include "pgn/backend.hpp"
#include "pgn/errors.hpp"
#include "pgn/image.hpp"
#include "pgn/metadata.hpp"
#include "pgn/result.hpp"
#include "pgn/runtime.hpp"
