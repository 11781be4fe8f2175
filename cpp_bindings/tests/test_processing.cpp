// Pre- and post-processing units (suite "unit"): the rules of docs/runtime.md, checked on small
// hand-made arrays.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <limits>

#include <opencv2/imgproc.hpp>

#include "pgn/errors.hpp"
#include "pgn/result.hpp"
#include "postprocess.hpp"
#include "preprocess.hpp"

namespace {

std::string message_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const pgn::Error& error) {
    return error.what();
  }
  return "";
}

cv::Mat pattern(int height, int width) {
  cv::Mat image(height, width, CV_8UC3);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      image.at<cv::Vec3b>(y, x) = {static_cast<uchar>((7 * x + 3 * y) % 256), static_cast<uchar>((5 * y) % 256),
                                   static_cast<uchar>((x * y) % 256)};
  return image;
}

pgn::ImageView view_of(const cv::Mat& image) {
  return {image.data, image.rows, image.cols, image.channels(), image.step[0]};
}

pgn::InputInfo imagenet() {
  pgn::InputInfo info;
  info.mean = {0.485, 0.456, 0.406};
  info.std = {0.229, 0.224, 0.225};
  return info;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("normalization: float32, one operation at a time, channels first") {
    const cv::Mat image = pattern(3, 4);
    const pgn::InputInfo info = imagenet();
    std::vector<float> out(3 * 3 * 4);
    cv::Mat resized;
    pgn::preprocess_image(view_of(image), "RGB", info, resized, out.data());
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 3; ++y)
        for (int x = 0; x < 4; ++x) {
          float expected = static_cast<float>(image.at<cv::Vec3b>(y, x)[c]);
          expected /= 255.0f;
          expected -= static_cast<float>(info.mean[c]);
          expected /= static_cast<float>(info.std[c]);
          CHECK(out[(c * 3 + y) * 4 + x] == expected);  // bit for bit
        }
    CHECK(resized.empty());  // no resize asked for
  }

  TEST_CASE("channel order reversed when the image's differs from the model's") {
    const cv::Mat image = pattern(5, 6);
    pgn::InputInfo info = imagenet();
    info.channel_order = "BGR";
    std::vector<float> from_rgb(3 * 30), from_bgr(3 * 30);
    cv::Mat swapped, resized;
    cv::cvtColor(image, swapped, cv::COLOR_RGB2BGR);
    pgn::preprocess_image(view_of(image), "RGB", info, resized, from_rgb.data());
    pgn::preprocess_image(view_of(swapped), "BGR", info, resized, from_bgr.data());
    CHECK(from_rgb == from_bgr);
  }

  TEST_CASE("resize to input.size with INTER_LINEAR on the uint8 image, swap first") {
    const cv::Mat image = pattern(17, 23);
    pgn::InputInfo info = imagenet();
    info.size = std::array<int, 2>{8, 12};
    info.resize = true;
    info.channel_order = "BGR";
    std::vector<float> out(3 * 8 * 12), expected(3 * 8 * 12);
    cv::Mat resized, swapped, reference, unused;
    pgn::preprocess_image(view_of(image), "RGB", info, resized, out.data());
    cv::cvtColor(image, swapped, cv::COLOR_RGB2BGR);  // Python: reverse, then resize
    cv::resize(swapped, reference, cv::Size(12, 8), 0, 0, cv::INTER_LINEAR);
    pgn::InputInfo same = info;
    same.resize = false;
    pgn::preprocess_image(view_of(reference), "BGR", same, unused, expected.data());
    CHECK(out == expected);
    CHECK(pgn::model_input_size(info, 17, 23) == std::array<int, 2>{8, 12});
    info.resize = false;
    CHECK(pgn::model_input_size(info, 17, 23) == std::array<int, 2>{17, 23});
  }

  TEST_CASE("bad images and sizes: the Python runtime's messages") {
    const cv::Mat gray(4, 5, CV_8UC1, cv::Scalar(0));
    CHECK(message_of([&] { pgn::check_image(view_of(gray)); }) ==
          "the image has 1 channels (shape (4, 5, 1)); expected H x W x 3 (channels last; convert gray or RGBA "
          "images to 3 channels)");
    const pgn::ImageView empty{gray.data, 0, 5, 3, 0};
    CHECK(message_of([&] { pgn::check_image(empty, "image 2"); }) == "image 2 is empty (shape (0, 5, 3))");
    CHECK(message_of([] { pgn::check_color("rgb"); }) == "color must be 'RGB' or 'BGR', got 'rgb'");
    pgn::InputInfo fixed = imagenet();
    fixed.size = std::array<int, 2>{8, 12};
    fixed.dynamic_size = false;
    CHECK(message_of([&] { pgn::check_size(fixed, {9, 12}, "image 0"); }) ==
          "image 0 is 9 x 12 but the model takes only 8 x 12 images; resize it first");
    CHECK(message_of([&] { pgn::check_size(fixed, {8, 12}, "image 0"); }).empty());
  }

  TEST_CASE("argmax over classes: first maximum wins, a NaN counts as the maximum") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    // 3 classes x 1 x 4 pixels
    const std::vector<float> logits{1, 5, nan, 0,   //
                                    2, 5, 9, nan,   //
                                    2, 4, 9, 7};
    cv::Mat out;
    pgn::argmax_classes(logits.data(), 3, 1, 4, out);
    CHECK(out.at<int>(0, 0) == 1);
    CHECK(out.at<int>(0, 1) == 0);
    CHECK(out.at<int>(0, 2) == 0);
    CHECK(out.at<int>(0, 3) == 1);
  }

  TEST_CASE("output planes: N x 1 x h x w and N x h x w rows, other shapes refused") {
    std::vector<float> data(2 * 3 * 4);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<float>(i);
    pgn::TensorView view{data.data(), pgn::ElementType::Float32, {2, 1, 3, 4}};
    cv::Mat buffer;
    const cv::Mat row1 = pgn::output_plane(view, 1, "pgn_uni_p0.5", CV_32F, buffer);
    CHECK(row1.at<float>(0, 0) == 12.0f);
    CHECK(row1.data == reinterpret_cast<uchar*>(data.data() + 12));  // a view, no copy
    view.shape = {2, 3, 4};
    CHECK(pgn::output_plane(view, 1, "pred", CV_32S, buffer).at<int>(2, 3) == 23);
    view.shape = {2, 2, 3, 2};
    CHECK(message_of([&] { pgn::output_plane(view, 0, "msp", CV_32F, buffer); }) ==
          "output 'msp' has shape (2, 2, 3, 2); expected N x 1 x H x W or N x H x W");
    std::vector<std::int64_t> wide{1, -1, 4294967298LL, 3};
    const pgn::TensorView labels{wide.data(), pgn::ElementType::Int64, {1, 2, 2}};
    const cv::Mat converted = pgn::output_plane(labels, 0, "pred", CV_32S, buffer);
    CHECK(converted.at<int>(0, 1) == -1);
    CHECK(converted.at<int>(1, 0) == 2);  // numpy's astype(int32) keeps the low 32 bits
  }

  TEST_CASE("maps are resized to the image: scores bilinear, labels nearest, equal sizes copied") {
    cv::Mat score(2, 3, CV_32F);
    for (int i = 0; i < 6; ++i) score.at<float>(i / 3, i % 3) = static_cast<float>(i * i);
    const pgn::Plane<float> same = pgn::resize_score(score, {2, 3});
    CHECK(same.data == std::vector<float>{0, 1, 4, 9, 16, 25});
    const pgn::Plane<float> big = pgn::resize_score(score, {5, 7});
    cv::Mat expected;
    cv::resize(score, expected, cv::Size(7, 5), 0, 0, cv::INTER_LINEAR);
    CHECK(std::equal(big.data.begin(), big.data.end(), expected.ptr<float>()));
    cv::Mat labels(2, 3, CV_32S);
    for (int i = 0; i < 6; ++i) labels.at<int>(i / 3, i % 3) = i;
    const pgn::Plane<std::int32_t> nearest = pgn::resize_labels(labels, {4, 6});
    CHECK(nearest.at(3, 5) == 5);
    CHECK(nearest.at(0, 1) == 0);
  }
}

TEST_SUITE("unit") {
  namespace {
  /// A 6 x 8 result with three regions above 1.0: one of 4 pixels, a diagonal pair (8-connected)
  /// and a single pixel whose first pixel comes first in raster order.
  pgn::Result sample_result() {
    pgn::Result result;
    result.pred = pgn::Plane<std::int32_t>(6, 8);
    pgn::Plane<float> score(6, 8);
    score.at(0, 7) = 5.0f;                                         // single pixel, raster index 7
    score.at(2, 1) = score.at(2, 2) = score.at(3, 1) = score.at(3, 2) = 2.0f;  // square
    score.at(3, 2) = 4.0f;
    score.at(4, 5) = 3.0f;
    score.at(5, 6) = 1.5f;  // diagonal neighbour of (4, 5)
    score.at(5, 0) = std::numeric_limits<float>::quiet_NaN();  // never passes
    result.score_names = {"pgn_uni_p0.5", "msp"};
    result.score_maps = {score, pgn::Plane<float>(6, 8)};
    result.default_score = "pgn_uni_p0.5";
    return result;
  }
  }  // namespace

  TEST_CASE("ood_mask: score >= float32(threshold), NaN never passes") {
    const pgn::Result result = sample_result();
    const auto mask = result.ood_mask(2.0);
    int count = 0;
    for (auto v : mask.data) count += v;
    CHECK(count == 6);  // 4 of the square, (4,5) and (0,7)
    CHECK(mask.at(5, 0) == 0);
    CHECK(result.ood_mask(1.0).at(5, 6) == 1);
  }

  TEST_CASE("instances: 8-connected, numbered in raster order of first pixels, min_area filter") {
    const pgn::Result result = sample_result();
    const auto found = result.instances(1.0);
    REQUIRE(found.size() == 3);
    CHECK(found[0].label_id == 1);
    CHECK(found[0].box == std::array<int, 4>{7, 0, 1, 1});
    CHECK(found[0].area == 1);
    CHECK(found[0].mean_score == 5.0);
    CHECK(found[1].box == std::array<int, 4>{1, 2, 2, 2});
    CHECK(found[1].mean_score == (2.0 + 2.0 + 2.0 + 4.0) / 4);
    CHECK(found[2].box == std::array<int, 4>{5, 4, 2, 2});
    CHECK(found[2].area == 2);
    CHECK(found[2].mean_score == (3.0 + 1.5) / 2);
    const auto large = result.instances(1.0, 2);
    REQUIRE(large.size() == 2);
    CHECK(large[0].label_id == 2);  // numbered before filtering
  }

  TEST_CASE("Result errors: unknown map, no threshold, negative min_area") {
    pgn::Result result = sample_result();
    CHECK(message_of([&] { result.score("pgn_oh_p1"); }) ==
          "no score map 'pgn_oh_p1'; the model has: pgn_uni_p0.5, msp");
    CHECK(message_of([&] { result.ood_mask(); }) ==
          "no threshold given and the model has no calibration for 'pgn_uni_p0.5'; pass a threshold or run "
          "pgn-calibrate on in-distribution images");
    CHECK(message_of([&] { result.instances(1.0, -1); }) == "min_area must be >= 0, got -1");
    pgn::MapCalibration calibrated;
    calibrated.q["0.99"] = 2.5;
    result.calibration = std::map<std::string, pgn::MapCalibration>{{"pgn_uni_p0.5", calibrated}};
    CHECK(result.threshold() == 2.5);
    CHECK(result.threshold(1.0) == 1.0);
  }
}
