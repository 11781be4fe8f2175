// pgn_deploy._native: the C++ runtime for Python (wrapped by pgn_deploy/native.py, which checks
// the caller's arrays with the Python runtime's own functions before they reach this module).
//
// pgn::Error subclasses become the pgn_deploy.contract exceptions of the same name; result maps
// are numpy views of the C++ Result's memory (no copy), kept alive by the Result object.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "pgn/pgn.hpp"

namespace py = pybind11;

namespace {

void raise_as(const char* name, const std::exception& error) {
  const py::object type = py::module_::import("pgn_deploy.contract").attr(name);
  PyErr_SetString(type.ptr(), error.what());
}

void translate_errors(std::exception_ptr pointer) {
  try {
    if (pointer) std::rethrow_exception(pointer);
  } catch (const pgn::ModelLoadError& e) {
    raise_as("ModelLoadError", e);
  } catch (const pgn::BadInputError& e) {
    raise_as("BadInputError", e);
  } catch (const pgn::UnsupportedModelError& e) {
    raise_as("UnsupportedModelError", e);
  } catch (const pgn::MissingMetadataError& e) {
    raise_as("MissingMetadataError", e);
  } catch (const pgn::BackendUnavailableError& e) {
    raise_as("BackendUnavailableError", e);
  } catch (const pgn::Error& e) {
    raise_as("PGNError", e);
  }
}

/// A numpy view of ``plane`` that keeps ``owner`` (the Python Result) alive.
template <typename T>
py::array plane_view(const pgn::Plane<T>& plane, py::handle owner) {
  std::vector<py::ssize_t> shape{plane.height, plane.width};
  if (plane.channels > 1) shape.insert(shape.begin(), plane.channels);
  return py::array_t<T>(shape, plane.data.data(), owner);
}

/// The C++ metadata as the JSON-like dict of pgn_deploy.contract.Metadata.to_json().
py::dict metadata_dict(const pgn::Metadata& meta) {
  using namespace py::literals;
  const auto& spec = meta.spec;
  const auto& in = meta.input;
  py::object size = py::none();
  if (in.size) size = py::cast(std::vector<int>{(*in.size)[0], (*in.size)[1]});
  py::object calibration = py::none();
  if (meta.calibration) {
    py::dict maps;
    for (const auto& [name, entry] : *meta.calibration) {
      py::dict item("q"_a = entry.q);
      for (const auto& [key, value] : entry.stats) item[py::str(key)] = value;
      for (const auto& [key, value] : entry.text) item[py::str(key)] = value;
      maps[py::str(name)] = item;
    }
    calibration = maps;
  }
  py::object ood_mask = py::none();
  if (meta.ood_mask)
    ood_mask = py::dict("output"_a = meta.ood_mask->output, "map"_a = meta.ood_mask->map,
                        "threshold_input"_a = meta.ood_mask->threshold_input,
                        "default"_a = meta.ood_mask->default_threshold, "rule"_a = meta.ood_mask->rule);
  return py::dict(
      "format_version"_a = meta.format_version, "producer"_a = meta.producer,
      "spec"_a = py::dict("p"_a = spec.p, "labels"_a = spec.labels, "form"_a = spec.form, "bias"_a = spec.bias,
                          "resolution"_a = spec.resolution, "keep_feature_size"_a = spec.keep_feature_size,
                          "pred"_a = spec.pred, "baselines"_a = spec.baselines, "upsample"_a = spec.upsample),
      "head"_a = py::dict("conv_nodes"_a = meta.head.conv_nodes, "features"_a = meta.head.features,
                          "logits"_a = meta.head.logits, "head_logits"_a = meta.head.head_logits,
                          "logits_output"_a = meta.head.logits_output, "resize"_a = meta.head.resize,
                          "align_corners"_a = meta.head.align_corners,
                          "feature_resize"_a = meta.head.feature_resize),
      "num_classes"_a = meta.num_classes, "class_names"_a = meta.class_names,
      "input"_a = py::dict("name"_a = in.name, "layout"_a = in.layout, "channel_order"_a = in.channel_order,
                           "scale"_a = in.scale, "mean"_a = std::vector<double>(in.mean.begin(), in.mean.end()),
                           "std"_a = std::vector<double>(in.std.begin(), in.std.end()), "size"_a = size,
                           "resize"_a = in.resize, "dynamic_batch"_a = in.dynamic_batch,
                           "dynamic_size"_a = in.dynamic_size,
                           "assumed_normalization"_a = in.assumed_normalization, "format"_a = in.format),
      "outputs"_a = py::dict("original"_a = meta.original_outputs, "pgn"_a = meta.pgn_outputs, "pred"_a = meta.pred,
                             "baselines"_a = meta.baselines, "normalized"_a = meta.normalized,
                             "ood_mask"_a = ood_mask, "dropped"_a = meta.dropped_outputs),
      "calibration"_a = calibration, "precision"_a = meta.precision, "gt_input"_a = meta.gt_input);
}

/// A checked C-contiguous uint8 H x W x 3 array (native.py guarantees it) as an ImageView.
pgn::ImageView image_view(const py::array& array) {
  if (array.ndim() != 3 || array.dtype().kind() != 'u' || array.itemsize() != 1 ||
      !(array.flags() & py::array::c_style))
    throw pgn::BadInputError("images must be C-contiguous uint8 H x W x 3 arrays");
  return {static_cast<const std::uint8_t*>(array.data()), static_cast<int>(array.shape(0)),
          static_cast<int>(array.shape(1)), static_cast<int>(array.shape(2)), 0};
}

std::string optional_name(const std::optional<std::string>& name) { return name.value_or(""); }

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "The pgn C++ runtime (cpp_bindings/); use it through pgn_deploy.native";
  m.attr("__version__") = PGN_VERSION;
  py::register_exception_translator(&translate_errors);
  m.def("backend_names", &pgn::backend_names, "Every backend name this build knows");
  m.def("parse_metadata", [](const std::string& text) { return metadata_dict(pgn::Metadata::parse(text)); },
        "Parse pgn_deploy metadata JSON with the C++ reader; returns Metadata.to_json()'s dict");

  py::class_<pgn::Result>(m, "Result", "The C++ Result of one image (see pgn_deploy.runtime.Result)")
      .def_property_readonly("pred", [](py::object self) { return plane_view(self.cast<const pgn::Result&>().pred, self); })
      .def_property_readonly("scores",
                             [](py::object self) {
                               const auto& result = self.cast<const pgn::Result&>();
                               py::dict scores;
                               for (size_t i = 0; i < result.score_names.size(); ++i)
                                 scores[py::str(result.score_names[i])] = plane_view(result.score_maps[i], self);
                               return scores;
                             })
      .def_property_readonly("logits",
                             [](py::object self) -> py::object {
                               const auto& result = self.cast<const pgn::Result&>();
                               if (!result.logits) return py::none();
                               return plane_view(*result.logits, self);
                             })
      .def_property_readonly("timings",
                             [](const pgn::Result& result) {
                               using namespace py::literals;
                               return py::dict("preprocess_ms"_a = result.timings.preprocess_ms,
                                               "inference_ms"_a = result.timings.inference_ms,
                                               "postprocess_ms"_a = result.timings.postprocess_ms);
                             })
      .def_readonly("default_score", &pgn::Result::default_score)
      .def_property_readonly("size", [](const pgn::Result& result) { return py::make_tuple(result.size()[0], result.size()[1]); })
      .def(
          "score",
          [](py::object self, std::optional<std::string> name) {
            return plane_view(self.cast<const pgn::Result&>().score(optional_name(name)), self);
          },
          py::arg("name") = py::none())
      .def(
          "threshold",
          [](const pgn::Result& result, std::optional<double> threshold, std::optional<std::string> score) {
            return result.threshold(threshold, optional_name(score));
          },
          py::arg("threshold") = py::none(), py::arg("score") = py::none())
      .def(
          "ood_mask",
          [](const pgn::Result& result, std::optional<double> threshold, std::optional<std::string> score) {
            auto mask = std::make_unique<pgn::Plane<std::uint8_t>>(result.ood_mask(threshold, optional_name(score)));
            auto* raw = mask.get();
            py::capsule owner(mask.release(), [](void* p) { delete static_cast<pgn::Plane<std::uint8_t>*>(p); });
            return plane_view(*raw, owner);
          },
          py::arg("threshold") = py::none(), py::arg("score") = py::none())
      .def(
          "instances",
          [](const pgn::Result& result, std::optional<double> threshold, int min_area, std::optional<std::string> score) {
            const py::object instance = py::module_::import("pgn_deploy.runtime.result").attr("Instance");
            py::list found;
            for (const auto& item : result.instances(threshold, min_area, optional_name(score)))
              found.append(instance(item.label_id, item.area,
                                    py::make_tuple(item.box[0], item.box[1], item.box[2], item.box[3]),
                                    item.mean_score));
            return found;
          },
          py::arg("threshold") = py::none(), py::arg("min_area") = 1, py::arg("score") = py::none());

  py::class_<pgn::Runtime>(m, "Runtime", "The C++ pgn::Runtime (thread-safe run; the GIL is released while it runs)")
      .def(py::init([](const std::string& model_path, const std::string& backend, int intra_op_threads,
                       int inter_op_threads, int device_id, int max_batch) {
             pgn::RuntimeOptions options;
             options.backend = backend;
             options.backend_options = {intra_op_threads, inter_op_threads, device_id};
             options.max_batch = max_batch;
             py::gil_scoped_release release;
             return std::make_unique<pgn::Runtime>(model_path, options);
           }),
           py::arg("model_path"), py::arg("backend") = "auto", py::arg("intra_op_threads") = 0,
           py::arg("inter_op_threads") = 0, py::arg("device_id") = 0, py::arg("max_batch") = 8)
      .def_property_readonly("model_path", &pgn::Runtime::model_path)
      .def_property_readonly("backend_name", &pgn::Runtime::backend_name)
      .def_property_readonly("backend_notes", &pgn::Runtime::backend_notes)
      .def_property_readonly("score_names", &pgn::Runtime::score_names)
      .def_property_readonly("default_score", &pgn::Runtime::default_score)
      .def_property_readonly("max_batch", &pgn::Runtime::max_batch)
      .def_property_readonly("metadata", [](const pgn::Runtime& runtime) { return metadata_dict(runtime.metadata()); })
      .def(
          "run_image",
          [](const pgn::Runtime& runtime, const py::array& image, const std::string& color, bool logits) {
            const pgn::ImageView view = image_view(image);
            py::gil_scoped_release release;
            return runtime.run(view, color, logits);
          },
          py::arg("image"), py::arg("color") = "RGB", py::arg("logits") = false)
      .def(
          "run_images",
          [](const pgn::Runtime& runtime, const std::vector<py::array>& images, const std::string& color, bool logits) {
            std::vector<pgn::ImageView> views;
            for (const auto& image : images) views.push_back(image_view(image));
            py::gil_scoped_release release;
            return runtime.run(views, color, logits);
          },
          py::arg("images"), py::arg("color") = "RGB", py::arg("logits") = false);
}
