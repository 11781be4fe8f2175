// Result's OoD post-processing (pgn_deploy.runtime.result.Result): same rules and messages.
#include "pgn/result.hpp"

#include <cmath>

#include "pgn/errors.hpp"
#include "postprocess.hpp"
#include "python_text.hpp"

namespace pgn {
namespace {

// pgn_deploy.runtime.stats: an entry's "threshold", else (older calibrations) its q0.99.
constexpr const char* kLegacyThresholdQuantile = "0.99";

}  // namespace

const Plane<float>& Result::score(const std::string& name) const {
  const std::string& wanted = name.empty() ? default_score : name;
  for (size_t i = 0; i < score_names.size(); ++i)
    if (score_names[i] == wanted) return score_maps[i];
  std::string names;
  for (const auto& known : score_names) names += (names.empty() ? "" : ", ") + known;
  throw BadInputError("no score map " + py_repr(wanted) + "; the model has: " + names);
}

double Result::threshold(std::optional<double> threshold, const std::string& score) const {
  if (threshold) return *threshold;
  const std::string& name = score.empty() ? default_score : score;
  if (calibration) {
    const auto entry = calibration->find(name);
    if (entry != calibration->end()) {
      const double stored = entry->second.stat("threshold");
      if (!std::isnan(stored)) return stored;
      const auto quantile = entry->second.q.find(kLegacyThresholdQuantile);
      if (quantile != entry->second.q.end()) return quantile->second;
    }
  }
  throw BadInputError("no threshold given and the model has no calibration for " + py_repr(name) +
                      "; pass a threshold or run pgn-calibrate on in-distribution images");
}

Plane<std::uint8_t> Result::ood_mask(std::optional<double> threshold, const std::string& score) const {
  const Plane<float>& values = this->score(score);
  const float limit = static_cast<float>(this->threshold(threshold, score));
  Plane<std::uint8_t> mask(values.height, values.width);
  for (size_t i = 0; i < values.data.size(); ++i) mask.data[i] = values.data[i] >= limit ? 1 : 0;
  return mask;
}

std::vector<Instance> Result::instances(std::optional<double> threshold, int min_area, const std::string& score) const {
  if (min_area < 0) throw BadInputError("min_area must be >= 0, got " + std::to_string(min_area));
  return connected_instances(ood_mask(threshold, score), this->score(score), min_area);
}

}  // namespace pgn
