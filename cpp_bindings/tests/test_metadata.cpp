// Metadata parsing and the Python-compatible texts (suite "unit").
#include <doctest/doctest.h>

#include <limits>

#include <nlohmann/json.hpp>

#include "pgn/errors.hpp"
#include "pgn/metadata.hpp"
#include "python_text.hpp"

using nlohmann::json;

namespace {

/// A complete document as pgn_deploy.contract.Metadata.to_json() writes it.
json document() {
  return json::parse(R"({
    "format_version": 1, "producer": "pgn_deploy 0.1.0",
    "spec": {"p": [0.5, 2.0], "labels": ["uni", "oh"], "form": "paper", "bias": false,
             "resolution": "feature", "keep_feature_size": false, "pred": true, "baselines": true},
    "head": {"conv_nodes": ["classifier"], "features": ["psi"], "logits": "logits",
             "head_logits": "head", "logits_output": "logits", "resize": "linear"},
    "num_classes": 5, "class_names": ["a", "b", "c", "d", "e"],
    "input": {"name": "input", "layout": "NCHW", "channel_order": "BGR", "scale": 255.0,
              "mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6], "size": [24, 32], "resize": true,
              "dynamic_batch": true, "dynamic_size": false},
    "outputs": {"original": ["logits"], "pgn": ["pgn_uni_p0.5", "pgn_uni_p2", "pgn_oh_p0.5", "pgn_oh_p2"],
                "pred": "pred", "baselines": ["msp", "entropy"]},
    "calibration": {"pgn_uni_p0.5": {"q": {"0.99": 3.5, "0.999": 4.0}, "min": 0.5, "max": 5.0,
                                     "mean": 1.0, "n_images": 3}},
    "precision": "fp32", "gt_input": null})");
}

std::string message_of(const json& data) {
  try {
    pgn::Metadata::parse(data.dump());
  } catch (const pgn::Error& error) {
    return error.what();
  }
  return "";
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("a complete document is read field by field") {
    const pgn::Metadata meta = pgn::Metadata::parse(document().dump());
    CHECK(meta.spec.p == std::vector<double>{0.5, 2.0});
    CHECK(meta.spec.labels == std::vector<std::string>{"uni", "oh"});
    CHECK(meta.spec.pred);
    CHECK(meta.head.conv_nodes == std::vector<std::string>{"classifier"});
    CHECK(meta.head.resize == "linear");
    CHECK(meta.num_classes == 5);
    CHECK(meta.class_names->size() == 5);
    CHECK(meta.input.channel_order == "BGR");
    CHECK(meta.input.mean[2] == 0.3);
    CHECK(meta.input.std[0] == 0.4);
    CHECK(*meta.input.size == std::array<int, 2>{24, 32});
    CHECK(meta.input.resize);
    CHECK_FALSE(meta.input.dynamic_size);
    CHECK(*meta.pred == "pred");
    CHECK(meta.score_outputs() ==
          std::vector<std::string>{"pgn_uni_p0.5", "pgn_uni_p2", "pgn_oh_p0.5", "pgn_oh_p2", "msp", "entropy"});
    const auto& entry = meta.calibration->at("pgn_uni_p0.5");
    CHECK(entry.q.at("0.99") == 3.5);
    CHECK(entry.stat("min") == 0.5);
    CHECK(entry.stat("n_images") == 3.0);
    CHECK(std::isnan(entry.stat("absent")));
    CHECK_FALSE(meta.gt_input.has_value());
  }

  TEST_CASE("optional fields take the contract's defaults") {
    json data = document();
    data["spec"] = json::object();
    data["input"] = {{"mean", {0.5, 0.5, 0.5}}, {"std", {0.5, 0.5, 0.5}}};
    data["outputs"].erase("pred");
    data["outputs"].erase("baselines");
    data.erase("calibration");
    const pgn::Metadata meta = pgn::Metadata::parse(data.dump());
    CHECK(meta.spec.p == std::vector<double>{0.5});
    CHECK(meta.spec.form == "paper");
    CHECK(meta.spec.upsample == "resize");  // written before the field existed
    CHECK(meta.input.name == "input");
    CHECK(meta.input.channel_order == "RGB");
    CHECK(meta.input.scale == 255.0);
    CHECK_FALSE(meta.input.size.has_value());
    CHECK_FALSE(meta.pred.has_value());
    CHECK(meta.baselines.empty());
    CHECK_FALSE(meta.calibration.has_value());
  }

  TEST_CASE("an unsupported format version is refused like Metadata.from_json") {
    json data = document();
    const std::string tail = " is not supported (expected 1); re-export the model with this version of pgn-export";
    data["format_version"] = 2;
    CHECK(message_of(data) == "pgn_deploy metadata format 2" + tail);
    data["format_version"] = "1";
    CHECK(message_of(data) == "pgn_deploy metadata format '1'" + tail);
    data["format_version"] = 2.5;
    CHECK(message_of(data) == "pgn_deploy metadata format 2.5" + tail);
    data.erase("format_version");
    CHECK(message_of(data) == "pgn_deploy metadata format None" + tail);
    data["format_version"] = 1.0;  // 1.0 == 1 in Python
    CHECK(message_of(data).empty());
  }

  TEST_CASE("missing keys are reported like Python's KeyError and TypeError") {
    json data = document();
    data.erase("outputs");
    CHECK(message_of(data) == "the pgn_deploy metadata is malformed: 'outputs'");
    data = document();
    data["input"].erase("std");
    CHECK(message_of(data) == "the pgn_deploy metadata is malformed: 'std'");
    data = document();
    data["head"].erase("logits");
    data["head"].erase("logits_output");
    CHECK(message_of(data) ==
          "the pgn_deploy metadata is malformed: HeadInfo.__init__() missing 2 required positional arguments: "
          "'logits' and 'logits_output'");
    CHECK_THROWS_AS(pgn::Metadata::parse("not json"), pgn::MissingMetadataError);
  }

  TEST_CASE("an invalid spec raises BadInputError with PGNSpec's messages") {
    json data = document();
    data["spec"]["labels"] = {"uni", "bad"};
    CHECK(message_of(data) == "unknown label 'bad'; choose from uni, oh, gt");
    data = document();
    data["spec"]["p"] = {-1.0};
    CHECK(message_of(data) == "p must be a finite number > 0, got -1");
    data = document();
    data["spec"]["labels"] = {"gt"};
    CHECK(message_of(data) == "label 'gt' needs --form exact (the paper form has no gt label)");
    data = document();
    data["spec"]["p"] = {0.5, 0.5};
    CHECK_THROWS_AS(pgn::Metadata::parse(data.dump()), pgn::BadInputError);
  }

  TEST_CASE("output names follow format(p, 'g')") {
    CHECK(pgn::pgn_output_name("uni", 0.5) == "pgn_uni_p0.5");
    CHECK(pgn::pgn_output_name("oh", 1.0) == "pgn_oh_p1");
    CHECK(pgn::format_p(1e-5) == "1e-05");
    CHECK(pgn::format_p(1234567.0) == "1.23457e+06");
  }

  TEST_CASE("Python's repr and pathlib texts") {
    CHECK(pgn::py_repr(json(nullptr)) == "None");
    CHECK(pgn::py_repr(json(true)) == "True");
    CHECK(pgn::py_repr(json(3.0)) == "3.0");
    CHECK(pgn::py_repr(json(0.1)) == "0.1");
    CHECK(pgn::py_repr(json(1e16)) == "1e+16");
    CHECK(pgn::py_repr(json(1.5e-7)) == "1.5e-07");
    CHECK(pgn::py_repr(json(0.0001)) == "0.0001");
    CHECK(pgn::py_repr(std::string("it's")) == "\"it's\"");
    CHECK(pgn::py_shape({5}) == "(5,)");
    CHECK(pgn::py_shape({4, 5, 3}) == "(4, 5, 3)");
    CHECK(pgn::py_path("./a//b/") == "a/b");
    CHECK(pgn::py_path("") == ".");
    CHECK(pgn::py_path("/x/./y") == "/x/y");
  }
}
