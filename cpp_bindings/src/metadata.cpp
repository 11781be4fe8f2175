// Parsing of the pgn_deploy metadata JSON with nlohmann-json; messages follow
// pgn_deploy.contract (Metadata.loads, Metadata.from_json, PGNSpec validation).
#include "pgn/metadata.hpp"

#include <cmath>
#include <cstdio>
#include <set>

#include <nlohmann/json.hpp>

#include "pgn/errors.hpp"
#include "metadata_json.hpp"
#include "python_text.hpp"

namespace pgn {
namespace {

using nlohmann::json;

const std::vector<std::string> kLabels{"uni", "oh", "gt"};
const std::vector<std::string> kForms{"paper", "exact"};
const std::vector<std::string> kResolutions{"feature", "output"};
const std::vector<std::string> kUpsamples{"auto", "matmul", "resize"};

const json& at(const json& object, const std::string& key) {
  if (!object.is_object() || !object.contains(key)) throw MalformedMetadata{"KeyError", py_repr(key)};
  return object.at(key);
}

template <typename T>
T value_or(const json& object, const std::string& key, T fallback) {
  if (!object.contains(key) || object.at(key).is_null()) return fallback;
  return object.at(key).get<T>();
}

bool contains(const std::vector<std::string>& items, const std::string& item) {
  for (const auto& candidate : items)
    if (candidate == item) return true;
  return false;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

/// PGNSpec.__post_init__: same checks, same BadInputError messages.
void validate(const PGNSpec& spec) {
  if (spec.p.empty()) throw BadInputError("at least one p is needed");
  for (double p : spec.p)
    if (!(std::isfinite(p) && p > 0)) throw BadInputError("p must be a finite number > 0, got " + format_p(p));
  if (spec.labels.empty()) throw BadInputError("at least one label is needed");
  for (const auto& label : spec.labels)
    if (!contains(kLabels, label))
      throw BadInputError("unknown label " + py_repr(label) + "; choose from " + join(kLabels));
  if (!contains(kForms, spec.form))
    throw BadInputError("unknown form " + py_repr(spec.form) + "; choose from " + join(kForms));
  if (contains(spec.labels, "gt") && spec.form != "exact")
    throw BadInputError("label 'gt' needs --form exact (the paper form has no gt label)");
  if (!contains(kResolutions, spec.resolution))
    throw BadInputError("unknown resolution " + py_repr(spec.resolution) + "; choose from " + join(kResolutions));
  if (!contains(kUpsamples, spec.upsample))
    throw BadInputError("unknown upsample " + py_repr(spec.upsample) + "; choose from " + join(kUpsamples));
  if (spec.resolution == "output" && spec.keep_feature_size)
    throw BadInputError("--keep-feature-size contradicts --resolution output");
  const std::set<double> ps(spec.p.begin(), spec.p.end());
  const std::set<std::string> labels(spec.labels.begin(), spec.labels.end());
  if (ps.size() != spec.p.size() || labels.size() != spec.labels.size())
    throw BadInputError("p values and labels must not repeat");
}

PGNSpec parse_spec(const json& data) {
  PGNSpec spec;
  spec.p = value_or(data, "p", spec.p);
  spec.labels = value_or(data, "labels", spec.labels);
  spec.form = value_or(data, "form", spec.form);
  spec.bias = value_or(data, "bias", spec.bias);
  spec.resolution = value_or(data, "resolution", spec.resolution);
  spec.keep_feature_size = value_or(data, "keep_feature_size", spec.keep_feature_size);
  spec.pred = value_or(data, "pred", spec.pred);
  spec.baselines = value_or(data, "baselines", spec.baselines);
  spec.upsample = value_or(data, "upsample", std::string("resize"));  // older files: the model's ops
  validate(spec);
  return spec;
}

/// HeadInfo(**data): the required fields, missing ones reported like Python's TypeError.
HeadInfo parse_head(const json& data) {
  const std::vector<std::string> required{"conv_nodes", "features", "logits", "head_logits", "logits_output"};
  std::vector<std::string> absent;
  for (const auto& key : required)
    if (!data.contains(key)) absent.push_back(key);
  if (!absent.empty()) throw MalformedMetadata{"TypeError", py_missing_arguments("HeadInfo.__init__()", absent)};
  HeadInfo head;
  head.conv_nodes = data.at("conv_nodes").get<std::vector<std::string>>();
  head.features = data.at("features").get<std::vector<std::string>>();
  head.logits = data.at("logits").get<std::string>();
  head.head_logits = data.at("head_logits").get<std::string>();
  head.logits_output = data.at("logits_output").get<std::string>();
  head.resize = value_or(data, "resize", head.resize);
  head.align_corners = value_or(data, "align_corners", head.align_corners);
  head.feature_resize = value_or(data, "feature_resize", head.feature_resize);
  return head;
}

InputInfo parse_input(const json& data) {
  InputInfo input;
  input.mean = at(data, "mean").get<std::array<double, 3>>();
  input.std = at(data, "std").get<std::array<double, 3>>();
  input.name = value_or(data, "name", input.name);
  input.layout = value_or(data, "layout", input.layout);
  input.channel_order = value_or(data, "channel_order", input.channel_order);
  input.scale = value_or(data, "scale", input.scale);
  if (data.contains("size") && !data.at("size").is_null() && !data.at("size").empty())
    input.size = data.at("size").get<std::array<int, 2>>();
  input.resize = value_or(data, "resize", input.resize);
  input.dynamic_batch = value_or(data, "dynamic_batch", input.dynamic_batch);
  input.dynamic_size = value_or(data, "dynamic_size", input.dynamic_size);
  input.assumed_normalization = value_or(data, "assumed_normalization", input.assumed_normalization);
  input.format = value_or(data, "format", input.format);
  return input;
}

std::optional<std::map<std::string, MapCalibration>> parse_calibration(const json& data) {
  if (!data.contains("calibration") || data.at("calibration").is_null()) return std::nullopt;
  std::map<std::string, MapCalibration> calibration;
  for (const auto& [name, entry] : data.at("calibration").items()) {
    MapCalibration map;
    for (const auto& [key, value] : entry.items()) {
      if (key == "q")
        map.q = value.get<std::map<std::string, double>>();
      else if (value.is_number())
        map.stats.emplace(key, value.get<double>());
      else if (value.is_string())
        map.text.emplace(key, value.get<std::string>());
    }
    calibration.emplace(name, std::move(map));
  }
  return calibration;
}

/// Python's ``version != FORMAT_VERSION`` for a JSON value (1, 1.0 and true equal 1).
bool is_supported_version(const json& version) {
  return (version.is_number() || version.is_boolean()) && version.get<double>() == kFormatVersion;
}

Metadata from_json(const json& data) {
  const json version = data.is_object() && data.contains("format_version") ? data.at("format_version") : json();
  if (!is_supported_version(version))
    throw MissingMetadataError("pgn_deploy metadata format " + py_repr(version) + " is not supported (expected " +
                               std::to_string(kFormatVersion) +
                               "); re-export the model with this version of pgn-export");
  const json& outputs = at(data, "outputs");
  Metadata meta;
  meta.spec = parse_spec(at(data, "spec"));
  meta.head = parse_head(at(data, "head"));
  meta.num_classes = at(data, "num_classes").get<int>();
  meta.input = parse_input(at(data, "input"));
  meta.original_outputs = at(outputs, "original").get<std::vector<std::string>>();
  meta.pgn_outputs = at(outputs, "pgn").get<std::vector<std::string>>();
  if (outputs.contains("pred") && !outputs.at("pred").is_null()) meta.pred = outputs.at("pred").get<std::string>();
  meta.baselines = value_or(outputs, "baselines", meta.baselines);
  if (data.contains("class_names") && !data.at("class_names").is_null())
    meta.class_names = data.at("class_names").get<std::vector<std::string>>();
  meta.calibration = parse_calibration(data);
  meta.precision = value_or(data, "precision", meta.precision);
  if (data.contains("gt_input") && !data.at("gt_input").is_null()) meta.gt_input = data.at("gt_input").get<std::string>();
  meta.producer = value_or(data, "producer", meta.producer);
  meta.normalized = value_or(outputs, "normalized", meta.normalized);
  meta.dropped_outputs = value_or(outputs, "dropped", meta.dropped_outputs);
  if (outputs.contains("ood_mask") && !outputs.at("ood_mask").is_null()) {
    const json& mask = outputs.at("ood_mask");
    meta.ood_mask = OodMaskInfo{at(mask, "output").get<std::string>(), at(mask, "map").get<std::string>(),
                                at(mask, "threshold_input").get<std::string>(), at(mask, "default").get<double>(),
                                at(mask, "rule").get<std::string>()};
  }
  return meta;
}

}  // namespace

Metadata metadata_from_json(const json& data) {
  try {
    return from_json(data);
  } catch (const json::exception& exc) {  // a value of the wrong JSON type
    throw MalformedMetadata{"TypeError", exc.what()};
  }
}

std::vector<std::string> Metadata::score_outputs() const {
  std::vector<std::string> names = pgn_outputs;
  names.insert(names.end(), baselines.begin(), baselines.end());
  return names;
}

Metadata Metadata::parse(const std::string& json_text) {
  try {
    return metadata_from_json(parse_json(json_text));
  } catch (const MalformedMetadata& malformed) {
    throw MissingMetadataError("the pgn_deploy metadata is malformed: " + malformed.detail);
  }
}

json parse_json(const std::string& text) {
  try {
    return json::parse(text);
  } catch (const json::exception& exc) {
    throw MalformedMetadata{"JSONDecodeError", exc.what()};
  }
}

std::string format_p(double p) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", p);
  return text;
}

std::string pgn_output_name(const std::string& label, double p) { return "pgn_" + label + "_p" + format_p(p); }

}  // namespace pgn
