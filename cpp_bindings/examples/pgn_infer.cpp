// pgn-infer: run a grafted model on one image with the C++ library and write the PGN heatmap
// and the OoD mask as PNG files.
//
//   pgn-infer IMAGE MODEL [--threshold T] [--out DIR] [--score NAME] [--min-area N]
//             [--backend NAME] [--force]
//
// Writes <DIR>/<stem>.heatmap.png (the score map, INFERNO colours, range as pgn-run: the
// calibrated [min, q0.999], else this image's 1st..99th percentile) and, when a threshold is
// given or calibrated, <DIR>/<stem>.ood.png (255 where score >= threshold). Existing files are
// replaced only with --force; each file is written under a temporary name and renamed.
// Exit status: 0 done, 2 a user error (one line on stderr).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "pgn/pgn.hpp"

namespace fs = std::filesystem;

namespace {

constexpr const char* kUsage =
    "usage: pgn-infer IMAGE MODEL [--threshold T] [--out DIR] [--score NAME] [--min-area N] "
    "[--backend NAME] [--force]";

struct Options {
  std::string image;
  std::string model;
  std::optional<double> threshold;
  std::string out = ".";
  std::string score;
  int min_area = 1;
  std::string backend = "auto";
  bool force = false;
};

/// A command-line mistake: usage and exit status 2.
struct UsageError {
  std::string message;
};

Options parse_arguments(int argc, char** argv) {
  Options options;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError{arg + " needs a value"};
      return argv[++i];
    };
    try {
      if (arg == "--threshold") options.threshold = std::stod(value());
      else if (arg == "--out") options.out = value();
      else if (arg == "--score") options.score = value();
      else if (arg == "--min-area") options.min_area = std::stoi(value());
      else if (arg == "--backend") options.backend = value();
      else if (arg == "--force") options.force = true;
      else if (arg == "-h" || arg == "--help") throw UsageError{""};
      else if (!arg.empty() && arg[0] == '-') throw UsageError{"unknown option " + arg};
      else positional.push_back(arg);
    } catch (const std::logic_error&) {  // std::stod / std::stoi
      throw UsageError{arg + ": not a number: " + argv[i]};
    }
  }
  if (positional.size() != 2) throw UsageError{"expected IMAGE and MODEL"};
  options.image = positional[0];
  options.model = positional[1];
  return options;
}

/// numpy.percentile(values, q) with the default "linear" method (values sorted, finite).
double percentile(const std::vector<float>& sorted, double q) {
  const double index = q / 100.0 * static_cast<double>(sorted.size() - 1);
  const auto below = static_cast<size_t>(std::floor(index));
  const size_t above = std::min(below + 1, sorted.size() - 1);
  const double t = index - static_cast<double>(below);
  const float a = sorted[below], b = sorted[above];
  const double diff = static_cast<double>(b - a);  // numpy subtracts in float32
  return t >= 0.5 ? static_cast<double>(b) - diff * (1.0 - t) : static_cast<double>(a) + diff * t;
}

/// The heatmap's value range (pgn_deploy.runtime.stats.display_range): the calibrated
/// [min, q0.999] of the map, else this image's 1st..99th percentile of its finite values.
std::pair<double, double> display_range(const pgn::Result& result, const std::string& name, std::string& source) {
  if (result.calibration) {
    const auto entry = result.calibration->find(name);
    if (entry != result.calibration->end() && entry->second.q.count("0.999")) {
      source = "calibration (min..q0.999)";
      return {entry->second.stat("min"), entry->second.q.at("0.999")};
    }
  }
  source = "per-image percentiles 1..99 (uncalibrated)";
  std::vector<float> finite;
  for (float v : result.score(name).data)
    if (std::isfinite(v)) finite.push_back(v);
  if (finite.empty()) return {0.0, 0.0};
  std::sort(finite.begin(), finite.end());
  return {percentile(finite, 1.0), percentile(finite, 99.0)};
}

/// applyColorMap(rint(clip((s - lo) / (hi - lo), 0, 1) * 255), INFERNO); NaN shows as lo.
cv::Mat heatmap(const pgn::Plane<float>& score, double lo, double hi) {
  cv::Mat levels(score.height, score.width, CV_8U);
  for (int y = 0; y < score.height; ++y) {
    auto* row = levels.ptr<std::uint8_t>(y);
    for (int x = 0; x < score.width; ++x) {
      double v = score.at(y, x);
      v = std::isnan(v) ? lo : std::isinf(v) ? (v > 0 ? hi : lo) : v;
      const double scaled = hi > lo ? std::clamp((v - lo) / (hi - lo), 0.0, 1.0) : 0.0;
      row[x] = static_cast<std::uint8_t>(std::nearbyint(scaled * 255.0));
    }
  }
  cv::Mat colored;
  cv::applyColorMap(levels, colored, cv::COLORMAP_INFERNO);
  return colored;
}

fs::path output_path(const Options& options, const std::string& suffix) {
  return fs::path(options.out) / (fs::path(options.image).stem().string() + suffix);
}

/// PNG-encode ``image`` into a temporary file beside ``path``, then rename it over ``path``.
void write_png(const fs::path& path, const cv::Mat& image) {
  std::vector<std::uint8_t> bytes;
  if (!cv::imencode(".png", image, bytes)) throw pgn::Error(path.string() + ": PNG encoding failed");
  const fs::path tmp = path.parent_path() / ("." + path.filename().string() + ".tmp");
  {
    std::ofstream file(tmp, std::ios::binary);
    file.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!file) {
      std::error_code ignored;
      fs::remove(tmp, ignored);
      throw pgn::BadInputError(path.string() + ": cannot write the file");
    }
  }
  fs::rename(tmp, path);
}

int run(const Options& options) {
  if (!fs::is_directory(options.out)) throw pgn::BadInputError(options.out + ": no such folder");
  const std::vector<fs::path> outputs{output_path(options, ".heatmap.png"), output_path(options, ".ood.png")};
  for (const auto& path : outputs)
    if (fs::exists(path) && !options.force)
      throw pgn::BadInputError(path.string() + " exists; pass --force to overwrite it");

  const cv::Mat image = cv::imread(options.image, cv::IMREAD_COLOR);
  if (image.empty()) throw pgn::BadInputError(options.image + ": cannot read the image");
  pgn::RuntimeOptions runtime_options;
  runtime_options.backend = options.backend;
  const pgn::Runtime runtime(options.model, runtime_options);
  const pgn::ImageView view{image.data, image.rows, image.cols, 3, image.step[0]};
  const pgn::Result result = runtime.run(view, "BGR");

  const std::string name = options.score.empty() ? result.default_score : options.score;
  std::string range_source;
  const auto [lo, hi] = display_range(result, name, range_source);
  write_png(outputs[0], heatmap(result.score(name), lo, hi));
  std::cout << "backend " << runtime.backend_name() << "; " << image.cols << " x " << image.rows << "; score " << name
            << "; heatmap range [" << lo << ", " << hi << "] from " << range_source << "\n"
            << "wrote " << outputs[0].string() << "\n";

  std::optional<double> threshold;
  try {
    threshold = result.threshold(options.threshold, name);
  } catch (const pgn::BadInputError&) {
    std::cout << "no --threshold and no calibration for " << name << ": no OoD mask written\n";
    return 0;
  }
  const pgn::Plane<std::uint8_t> mask = result.ood_mask(threshold, name);
  cv::Mat mask_image(mask.height, mask.width, CV_8U);
  for (size_t i = 0; i < mask.data.size(); ++i) mask_image.data[i] = mask.data[i] ? 255 : 0;
  write_png(outputs[1], mask_image);
  const auto instances = result.instances(threshold, options.min_area, name);
  std::cout << "threshold " << *threshold << (options.threshold ? " (given)" : " (calibrated)") << "; "
            << instances.size() << " instance(s) with area >= " << options.min_area << "\n";
  for (const auto& instance : instances)
    std::cout << "  #" << instance.label_id << " area " << instance.area << " box (" << instance.box[0] << ", "
              << instance.box[1] << ", " << instance.box[2] << ", " << instance.box[3] << ") mean score "
              << instance.mean_score << "\n";
  std::cout << "wrote " << outputs[1].string() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_arguments(argc, argv));
  } catch (const UsageError& error) {
    std::cerr << kUsage << "\n";
    if (error.message.empty()) return 0;
    std::cerr << "pgn-infer: error: " << error.message << "\n";
    return 2;
  } catch (const pgn::Error& error) {
    std::cerr << "pgn-infer: error: " << error.what() << "\n";
    return 2;
  } catch (const std::exception& error) {  // a failed write or rename
    std::cerr << "pgn-infer: error: " << error.what() << "\n";
    return 1;
  }
}
