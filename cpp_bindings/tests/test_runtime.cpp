// pgn::Runtime on the small grafted models of make_test_inputs.py (suite "runtime"; the folder is
// given by the environment variable PGN_TEST_INPUTS).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <thread>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "pgn/pgn.hpp"

namespace {

std::string inputs(const std::string& name) {
  const char* folder = std::getenv("PGN_TEST_INPUTS");
  REQUIRE_MESSAGE(folder != nullptr, "set PGN_TEST_INPUTS to the folder make_test_inputs.py wrote");
  return std::string(folder) + "/" + name;
}

cv::Mat load_image(int height = 0, int width = 0) {
  cv::Mat image = cv::imread(inputs("image.png"), cv::IMREAD_COLOR);
  REQUIRE_FALSE(image.empty());
  if (height > 0) cv::resize(image, image, cv::Size(width, height), 0, 0, cv::INTER_AREA);
  return image;
}

pgn::ImageView view_of(const cv::Mat& image) {
  return {image.data, image.rows, image.cols, image.channels(), image.step[0]};
}

pgn::RuntimeOptions cpu(int max_batch = 8) {
  pgn::RuntimeOptions options;
  options.backend = "ort-cpu";
  options.backend_options.intra_op_threads = 1;
  options.max_batch = max_batch;
  return options;
}

template <typename Error>
std::string message_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& error) {
    return error.what();
  }
  FAIL("no exception");
  return "";
}

void check_equal(const pgn::Result& a, const pgn::Result& b) {
  CHECK(a.pred.data == b.pred.data);
  REQUIRE(a.score_maps.size() == b.score_maps.size());
  for (size_t i = 0; i < a.score_maps.size(); ++i) CHECK(a.score_maps[i].data == b.score_maps[i].data);
}

/// Same class map; maps equal to float32 rounding (a batch of 2 may round differently from 1).
void check_close(const pgn::Result& a, const pgn::Result& b) {
  CHECK(a.pred.data == b.pred.data);
  REQUIRE(a.score_maps.size() == b.score_maps.size());
  for (size_t i = 0; i < a.score_maps.size(); ++i)
    for (size_t k = 0; k < a.score_maps[i].data.size(); ++k) {
      const float x = a.score_maps[i].data[k], y = b.score_maps[i].data[k];
      if (std::abs(x - y) > 1e-5f * std::max(1.0f, std::abs(y))) FAIL_CHECK("maps differ at " << k << ": " << x << " " << y);
    }
}

}  // namespace

TEST_SUITE("runtime") {
  TEST_CASE("one image: class map and every score map at the image's size") {
    const pgn::Runtime runtime(inputs("model.pgn.onnx"), cpu());
    CHECK(runtime.backend_name() == "ort-cpu");
    CHECK(runtime.score_names() == std::vector<std::string>{"pgn_uni_p0.5", "pgn_uni_p2", "msp", "entropy"});
    CHECK(runtime.default_score() == "pgn_uni_p0.5");
    const cv::Mat image = load_image();
    const pgn::Result result = runtime.run(view_of(image), "BGR");
    CHECK(result.size() == std::array<int, 2>{image.rows, image.cols});
    for (const auto& map : result.score_maps) {
      CHECK(map.height == image.rows);
      CHECK(map.width == image.cols);
    }
    for (auto label : result.pred.data) CHECK((label >= 0 && label < runtime.metadata().num_classes));
    CHECK_FALSE(result.logits.has_value());
    check_equal(runtime.run(view_of(image), "BGR"), result);  // reused workspace, same numbers
  }

  TEST_CASE("without a pred output the class map is the argmax of the logits") {
    const pgn::Runtime runtime(inputs("nopred.pgn.onnx"), cpu());
    const cv::Mat image = load_image();
    const pgn::Result result = runtime.run(view_of(image), "BGR", true);
    REQUIRE(result.logits.has_value());
    const auto& logits = *result.logits;
    CHECK(logits.channels == runtime.metadata().num_classes);
    CHECK(logits.height == 24);  // the model runs at input.size
    cv::Mat classes(logits.height, logits.width, CV_32S);
    for (int y = 0; y < logits.height; ++y)
      for (int x = 0; x < logits.width; ++x) {
        int best = 0;
        for (int c = 1; c < logits.channels; ++c)
          if (logits.at(y, x, c) > logits.at(y, x, best)) best = c;
        classes.at<int>(y, x) = best;
      }
    cv::resize(classes, classes, cv::Size(image.cols, image.rows), 0, 0, cv::INTER_NEAREST);
    CHECK(std::equal(result.pred.data.begin(), result.pred.data.end(), classes.ptr<int>()));
  }

  TEST_CASE("a list of images of several sizes equals one run per image, in order") {
    const pgn::Runtime runtime(inputs("model.pgn.onnx"), cpu(2));
    const cv::Mat a = load_image(), b = load_image(20, 26), c = load_image(), d = load_image();
    const auto results = runtime.run({view_of(a), view_of(b), view_of(c), view_of(d)}, "BGR");
    REQUIRE(results.size() == 4);
    CHECK(results[1].size() == std::array<int, 2>{20, 26});
    check_close(results[0], runtime.run(view_of(a), "BGR"));
    check_equal(results[1], runtime.run(view_of(b), "BGR"));  // alone in its batch
    check_close(results[3], runtime.run(view_of(d), "BGR"));
  }

  TEST_CASE("run is thread-safe: concurrent calls give the serial results") {
    const pgn::Runtime runtime(inputs("model.pgn.onnx"), cpu());
    const std::vector<cv::Mat> images{load_image(), load_image(20, 26), load_image(32, 40), load_image(21, 30)};
    std::vector<pgn::Result> serial;
    for (const auto& image : images) serial.push_back(runtime.run(view_of(image), "BGR"));
    std::vector<std::vector<pgn::Result>> parallel(images.size());
    std::vector<std::thread> threads;
    for (size_t t = 0; t < images.size(); ++t)
      threads.emplace_back([&, t] {
        for (int repeat = 0; repeat < 5; ++repeat) parallel[t].push_back(runtime.run(view_of(images[t]), "BGR"));
      });
    for (auto& thread : threads) thread.join();
    for (size_t t = 0; t < images.size(); ++t)
      for (const auto& result : parallel[t]) check_equal(result, serial[t]);
  }

  TEST_CASE("bad input raises the documented error with the Python runtime's message") {
    CHECK(message_of<pgn::ModelLoadError>([] { pgn::Runtime(inputs("missing.onnx"), cpu()); }) ==
          inputs("missing.onnx") + ": no such file");
    CHECK(message_of<pgn::MissingMetadataError>([] { pgn::Runtime(inputs("plain.onnx"), cpu()); }) ==
          inputs("plain.onnx") +
              " has no pgn_deploy metadata: it is not a grafted model; run pgn-export on it first");
    CHECK(message_of<pgn::ModelLoadError>([] { pgn::Runtime(inputs("corrupt.onnx"), cpu()); })
              .rfind(inputs("corrupt.onnx") + ": not a readable ONNX model (", 0) == 0);
    CHECK(message_of<pgn::ModelLoadError>([] { pgn::Runtime(inputs("nosidecar.plan"), pgn::RuntimeOptions{}); }) ==
          inputs("nosidecar.plan.json") + ": no such file; a plan is loaded with the sidecar pgn-build writes beside it");
    pgn::RuntimeOptions unknown = cpu();
    unknown.backend = "tpu";
    CHECK(message_of<pgn::BadInputError>([&] { pgn::Runtime(inputs("model.pgn.onnx"), unknown); }) ==
          "unknown backend 'tpu'; choose from auto, ort-cpu, ort-cuda, ort-trt, trt");
    CHECK(message_of<pgn::BadInputError>([] { pgn::Runtime(inputs("model.pgn.onnx"), cpu(0)); }) ==
          "max_batch must be an integer >= 1, got 0");
    const pgn::Runtime runtime(inputs("model.pgn.onnx"), cpu());
    cv::Mat rgba(8, 8, CV_8UC4, cv::Scalar(0));
    CHECK(message_of<pgn::BadInputError>([&] { runtime.run(view_of(rgba)); }) ==
          "the image has 4 channels (shape (8, 8, 4)); expected H x W x 3 (channels last; convert gray or RGBA "
          "images to 3 channels)");
    const cv::Mat image = load_image();
    CHECK(message_of<pgn::BadInputError>([&] { runtime.run({view_of(image), view_of(rgba)}); }) ==
          "image 1 has 4 channels (shape (8, 8, 4)); expected H x W x 3 (channels last; convert gray or RGBA "
          "images to 3 channels)");
    CHECK(message_of<pgn::BadInputError>([&] { runtime.run(std::vector<pgn::ImageView>{}); }) ==
          "the list of images is empty");
    CHECK(message_of<pgn::BadInputError>([&] { runtime.run(view_of(image), "HSV"); }) ==
          "color must be 'RGB' or 'BGR', got 'HSV'");
  }

  TEST_CASE("auto picks the best backend this build and machine have, and says why") {
    pgn::RuntimeOptions options = cpu();
    options.backend = "auto";
    const pgn::Runtime runtime(inputs("model.pgn.onnx"), options);
    if (runtime.backend_name() == "ort-cpu") CHECK(runtime.backend_notes().size() == 2);  // ort-trt, ort-cuda
  }
}
