// The Python extension nimbus._nimbus: a thin layer over the library. Long-running
// calls release the GIL. Bad input raises nimbus.InputError (a ValueError).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <cpl_vsi.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "nimbus/batch/batch.h"
#include "nimbus/raster/stac_item.h"
#include "nimbus/core/error.h"
#include "nimbus/core/log.h"
#include "nimbus/version.h"
#include "nimbus/ops/merge_cloud_masks_simple.h"
#include "nimbus/ops/morphology.h"
#include "nimbus/pipeline/improve_cloud_mask.h"
#include "nimbus/pipeline/improve_cloud_mask_parameters.h"
#include "nimbus/raster/array_io.h"
#include "nimbus/raster/geotiff_writer.h"
#include "nimbus/workflow/runner.h"
#include "nimbus/workflow/single_op.h"
#include "nimbus/workflow/workflow_graph.h"

namespace py = pybind11;

namespace {

nimbus::Json to_json(const py::handle& h) {
  if (h.is_none()) return nullptr;
  if (py::isinstance<py::bool_>(h)) return h.cast<bool>();
  if (py::isinstance<py::int_>(h)) return h.cast<long long>();
  if (py::isinstance<py::float_>(h)) return h.cast<double>();
  if (py::isinstance<py::str>(h)) return h.cast<std::string>();
  if (py::isinstance<py::dict>(h)) {
    nimbus::Json o = nimbus::Json::object();
    for (const auto& item : h.cast<py::dict>()) o[py::str(item.first).cast<std::string>()] = to_json(item.second);
    return o;
  }
  if (py::isinstance<py::list>(h) || py::isinstance<py::tuple>(h)) {
    nimbus::Json a = nimbus::Json::array();
    for (const auto& item : h) a.push_back(to_json(item));
    return a;
  }
  throw nimbus::InputError(fmt::format("value {} of type {} cannot be a parameter; use None, bool, int, float or str",
                                       py::repr(h).cast<std::string>(), py::type::of(h).attr("__name__").cast<std::string>()));
}

std::string type_name(const py::handle& h) { return py::type::of(h).attr("__name__").cast<std::string>(); }

// A path argument as the file system's bytes: str (with surrogate escapes), bytes or
// os.PathLike, never the text of a bytes object's repr. `what` names the argument.
std::string path_text(const py::handle& h, const std::string& what) {
  const py::module_ os = py::module_::import("os");
  py::object path;
  try {
    path = os.attr("fspath")(h);
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_TypeError)) throw;
    throw nimbus::InputError(fmt::format("{} = {} has the wrong type ({}); give a path (str, bytes or os.PathLike)",
                                         what, py::repr(h).cast<std::string>(), type_name(h)));
  }
  const std::string bytes = os.attr("fsencode")(path).cast<py::bytes>();
  if (bytes.find('\0') != std::string::npos) {
    throw nimbus::InputError(fmt::format("{} = {} contains a NUL character; give a plain path", what,
                                         py::repr(h).cast<std::string>()));
  }
  return bytes;
}

// Ctrl-C during a long call: the library polls this between chips and stages (from
// the calling thread); it takes the GIL briefly and runs Python's signal handlers.
// A raised exception (KeyboardInterrupt) is kept, the call stops (Cancelled, partial
// outputs removed) and the exception is raised again in Python.
class PythonCancel {
 public:
  PythonCancel() = default;
  PythonCancel(const PythonCancel&) = delete;
  PythonCancel& operator=(const PythonCancel&) = delete;
  ~PythonCancel() {  // destroyed with the GIL held
    Py_XDECREF(type_);
    Py_XDECREF(value_);
    Py_XDECREF(traceback_);
  }

  nimbus::CancelCheck check() {
    return [this] { return poll(); };
  }
  bool fired() const { return fired_.load(); }
  // With the GIL held: raises the kept Python exception.
  [[noreturn]] void raise() {
    PyErr_Restore(type_, value_, traceback_);
    type_ = value_ = traceback_ = nullptr;
    if (!PyErr_Occurred()) PyErr_SetNone(PyExc_KeyboardInterrupt);
    throw py::error_already_set();
  }

 private:
  bool poll() {
    if (fired_.load()) return true;
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) {
      PyErr_Fetch(&type_, &value_, &traceback_);
      fired_.store(true);
    }
    return fired_.load();
  }

  std::atomic<bool> fired_{false};
  PyObject* type_ = nullptr;
  PyObject* value_ = nullptr;
  PyObject* traceback_ = nullptr;
};

// Runs `call` without the GIL, cancellable with Ctrl-C (see PythonCancel).
template <typename Call>
auto run_cancellable(nimbus::CancelCheck& slot, Call&& call) {
  PythonCancel cancel;
  slot = cancel.check();
  try {
    py::gil_scoped_release release;
    auto result = call();
    if (!cancel.fired()) return result;
  } catch (const nimbus::Cancelled&) {
    if (!cancel.fired()) throw;
  }
  cancel.raise();
}

// Python and numpy booleans (numpy.bool_ is not a bool subclass).
bool is_boolean(const py::handle& v) {
  if (py::isinstance<py::bool_>(v)) return true;
  return py::hasattr(v, "dtype") && py::hasattr(v, "shape") && py::len(v.attr("shape")) == 0 &&
         py::str(v.attr("dtype").attr("kind")).cast<std::string>() == "b";
}
bool is_number(const py::handle& v) {
  return !is_boolean(v) && (py::isinstance<py::int_>(v) || py::isinstance<py::float_>(v) ||
                            py::hasattr(v, "__index__") || py::hasattr(v, "__float__"));
}
bool is_integer(const py::handle& v) { return !is_boolean(v) && py::hasattr(v, "__index__"); }

// Parameter values of a declared operation from keyword arguments, typed by the
// declaration: True is not a threshold, 512.7 is not a window, paths may be
// str or os.PathLike. Unknown names are left to the declaration's check.
nimbus::Json values_from(const py::dict& kw, const nimbus::OperationSpec& operation) {
  nimbus::Json values = nimbus::Json::object();
  for (const auto& item : kw) {
    const std::string key = py::str(item.first);
    const py::handle v = item.second;
    if (v.is_none()) continue;  // keep the default
    const nimbus::ParamSpec* p = operation.parameter(key);
    if (p == nullptr) {
      values[key] = py::repr(v).cast<std::string>();  // resolve_parameters names it and lists the known ones
      continue;
    }
    const auto wrong_type = [&] {
      return nimbus::ParameterError(key, fmt::format("= {} has the wrong type ({}); give a {}",
                                                     py::repr(v).cast<std::string>(), type_name(v),
                                                     nimbus::param_type_name(p->type)));
    };
    switch (p->type) {
      case nimbus::ParamType::Bool:
        if (!is_boolean(v)) throw wrong_type();
        values[key] = v.cast<bool>();
        break;
      case nimbus::ParamType::Int:
        if (!is_integer(v)) throw wrong_type();
        try {
          values[key] = v.cast<long long>();
        } catch (const py::cast_error&) {
          throw nimbus::ParameterError(key, fmt::format("= {} is outside [{}, {}]", py::repr(v).cast<std::string>(),
                                                        std::max(p->min, double{std::numeric_limits<int>::min()}),
                                                        std::min(p->max, double{std::numeric_limits<int>::max()})));
        }
        break;
      case nimbus::ParamType::Float:
        if (!is_number(v)) throw wrong_type();
        values[key] = v.cast<double>();
        break;
      case nimbus::ParamType::Path: values[key] = path_text(v, key); break;
      case nimbus::ParamType::String:
        if (!py::isinstance<py::str>(v)) throw wrong_type();
        values[key] = v.cast<std::string>();
        break;
      case nimbus::ParamType::StringList:
        if (py::isinstance<py::str>(v) || !py::isinstance<py::sequence>(v)) throw wrong_type();
        values[key] = nimbus::Json::array();
        for (const py::handle item : v) {
          if (!py::isinstance<py::str>(item)) throw wrong_type();
          values[key].push_back(item.cast<std::string>());
        }
        break;
    }
  }
  return values;
}

// Options of improve-cloud-mask from keyword arguments named as its declared parameters.
nimbus::ImproveCloudMaskOptions options_from(const py::dict& kw) {
  return nimbus::improve_cloud_mask_options(values_from(kw, nimbus::improve_cloud_mask_operation()));
}

// Options for a batch: the scene's raster and output come from the scene list.
nimbus::ImproveCloudMaskOptions batch_options_from(const py::dict& kw) {
  return nimbus::batch_options(values_from(kw, nimbus::improve_cloud_mask_operation()));
}

// A library JSON value as Python objects (dicts, lists, numbers, text).
py::object to_python(const nimbus::Json& j) {
  return py::module_::import("json").attr("loads")(j.dump(-1, ' ', false, nimbus::Json::error_handler_t::replace));
}

nimbus::BatchScene scene_from(const py::dict& d) {
  nimbus::BatchScene s;
  if (!d.contains("s2_raster")) throw nimbus::InputError("a scene has no 's2_raster'; give {'s2_raster': PATH, ...}");
  s.s2_raster = path_text(d["s2_raster"], "s2_raster");
  if (d.contains("product_mask") && !d["product_mask"].is_none()) {
    s.product_mask = path_text(d["product_mask"], "product_mask");
  }
  if (d.contains("id") && !d["id"].is_none()) {
    const py::handle id = d["id"];
    if (py::isinstance<py::bytes>(id)) s.id = id.cast<std::string>();
    else if (py::isinstance<py::str>(id)) s.id = path_text(id, "id");
    else {
      throw nimbus::InputError(fmt::format("scene id {} has the wrong type ({}); give a str",
                                           py::repr(id).cast<std::string>(), type_name(id)));
    }
  } else {
    s.id = nimbus::scene_id_from_path(s.s2_raster);
  }
  return s;
}

// numpy dtype <-> GDAL type name.
std::string gdal_type_of(const py::dtype& dt) {
  const char kind = dt.kind();
  const auto size = dt.itemsize();
  if (kind == 'u' && size == 1) return "Byte";
  if (kind == 'u' && size == 2) return "UInt16";
  if (kind == 'i' && size == 2) return "Int16";
  if (kind == 'u' && size == 4) return "UInt32";
  if (kind == 'i' && size == 4) return "Int32";
  if (kind == 'f' && size == 4) return "Float32";
  if (kind == 'f' && size == 8) return "Float64";
  throw nimbus::InputError(fmt::format("arrays of dtype {} are not supported; use uint8, uint16, int16, uint32, int32, "
                                       "float32 or float64",
                                       py::repr(static_cast<const py::object&>(dt)).cast<std::string>()));
}

py::dtype numpy_type_of(const std::string& gdal) {
  static const std::map<std::string, std::string> types{{"Byte", "uint8"},    {"UInt16", "uint16"}, {"Int16", "int16"},
                                                        {"UInt32", "uint32"}, {"Int32", "int32"},   {"Float32", "float32"},
                                                        {"Float64", "float64"}};
  const auto it = types.find(gdal);
  if (it == types.end()) throw nimbus::InputError(fmt::format("raster data type {} is not supported", gdal));
  return py::dtype(it->second);
}

}  // namespace

PYBIND11_MODULE(_nimbus, m) {
  m.doc() = "Nimbus: trustworthy Sentinel-2 cloud masks (C++ engine)";
  m.attr("__version__") = nimbus::kVersion;
  static py::exception<nimbus::InputError> input_error(m, "InputError", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const nimbus::InputError& e) {
      // Parameters named by the library are Python keywords here: spelled as their names.
      input_error(nimbus::spell_parameters(e.what(), [](const std::string& name) { return name; }).c_str());
    } catch (const nimbus::InternalError& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });
  // Nothing process-wide is set at import: the library logs through its own logger
  // (warnings on stderr until set_log_level), never spdlog's default logger or level.
  m.def("set_log_level", [](const std::string& level) { nimbus::logger()->set_level(spdlog::level::from_str(level)); },
        py::arg("level"), "Library log level on stderr: 'debug', 'info', 'warn' (default), 'error', 'off'.");

  m.def(
      "improve_cloud_mask",
      [](const py::object& s2_raster, const py::object& out, const py::object& product_mask, const py::kwargs& kw) {
        py::dict all = kw;
        all["s2_raster"] = s2_raster;
        all["out"] = out;
        all["product_mask"] = product_mask;
        nimbus::ImproveCloudMaskOptions o = options_from(all);
        const nimbus::ImproveCloudMaskReport r =
            run_cancellable(o.cancel, [&o] { return nimbus::improve_cloud_mask(o); });
        return to_python(nimbus::report_json(r));
      },
      py::arg("s2_raster"), py::arg("out"), py::arg("product_mask") = py::none());

  m.def(
      "operation_parameters",
      [](const std::string& name) {
        if (name != nimbus::improve_cloud_mask_operation().name) {
          throw nimbus::InputError(fmt::format("unknown operation '{}'; the declared operation is {}", name,
                                               nimbus::improve_cloud_mask_operation().name));
        }
        return to_python(nimbus::parameters_json(nimbus::improve_cloud_mask_operation().parameters));
      },
      py::arg("name") = "improve-cloud-mask",
      "The declared parameters of an operation (name, type, default, help, range, choices, ...).");

  m.def(
      "run_workflow",
      [](const std::string& workflow, const std::map<std::string, std::string>& inputs, const std::string& out_dir,
         const py::dict& params, const std::string& cache_dir, int parallel_tasks, const std::string& workflows_dir,
         const std::string& geometry, const std::string& geometry_crs, bool overwrite) {
        const nimbus::Json overrides = to_json(params);
        nimbus::RunOptions options;
        options.inputs = inputs;
        options.out_dir = out_dir;
        options.geometry = geometry;
        options.geometry_crs = geometry_crs;
        options.overwrite = overwrite;
        options.cache_dir = cache_dir;
        options.max_parallel_tasks = parallel_tasks;
        // '' = the workflows shipped with this copy of the package (nimbus/_location.py, made by CMake).
        const std::string library_dir =
            workflows_dir.empty() ? py::module_::import("nimbus._location").attr("WORKFLOWS_DIR").cast<std::string>()
                                  : workflows_dir;
        const nimbus::RunReport report = run_cancellable(options.cancel, [&] {
          const nimbus::WorkflowLibrary library{library_dir};
          const nimbus::WorkflowGraph graph = nimbus::build_workflow_graph(workflow, overrides, library);
          return nimbus::run_workflow(graph, options);
        });
        return report.outputs;
      },
      py::arg("workflow"), py::arg("inputs"), py::arg("out_dir"), py::arg("params") = py::dict(),
      py::arg("cache_dir") = "", py::arg("parallel_tasks") = 2, py::arg("workflows_dir") = "",
      py::arg("geometry") = "", py::arg("geometry_crs") = "EPSG:4326", py::arg("overwrite") = false);

  m.def(
      "run_op",
      [](const std::string& op, const py::dict& input_paths, const py::dict& parameters,
         const py::object& output_dir_path) {
        std::map<std::string, std::string> inputs;
        for (const auto& [port, path] : input_paths) {
          const std::string name = py::str(port);
          inputs[name] = path_text(path, fmt::format("input {}", name));
        }
        const std::string output_dir = path_text(output_dir_path, "output_dir");
        const nimbus::Json params = to_json(parameters);
        nimbus::CancelCheck cancel;
        const nimbus::OpOutputs outputs =
            run_cancellable(cancel, [&] { return nimbus::run_single_op(op, inputs, params, output_dir, cancel); });
        std::map<std::string, std::string> paths;
        for (const auto& [port, artifact] : outputs) paths[port] = artifact.path;
        return paths;
      },
      py::arg("op"), py::arg("inputs"), py::arg("parameters") = py::dict(), py::arg("output_dir"));

  m.def(
      "merge_cloud_masks",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> cloud,
         py::array_t<float, py::array::c_style | py::array::forcecast> shadow,
         const py::array& product_any, double cloud_thr, double shadow_thr, long long closing_size,
         long long min_area) {
        if (cloud.ndim() != 2 || shadow.ndim() != 2 || product_any.ndim() != 2) {
          throw nimbus::InputError("merge_cloud_masks takes 2-D arrays (height x width)");
        }
        const auto h = cloud.shape(0), w = cloud.shape(1);
        if (shadow.shape(0) != h || shadow.shape(1) != w || product_any.shape(0) != h || product_any.shape(1) != w) {
          throw nimbus::InputError(fmt::format("cloud {}x{}, shadow {}x{} and product mask {}x{} differ in shape", h, w,
                                               shadow.shape(0), shadow.shape(1), product_any.shape(0),
                                               product_any.shape(1)));
        }
        if (h < 1 || w < 1 || h > std::numeric_limits<int>::max() || w > std::numeric_limits<int>::max()) {
          throw nimbus::InputError(fmt::format("merge_cloud_masks: arrays of {}x{} pixels; pass rasters of at least "
                                               "1x1 and at most 2^31-1 pixels per side",
                                               h, w));
        }
        // Non-zero means cloud whatever the dtype (QA60's 1024/2048, uint16 256, float 0.5, NaN): compared by
        // numpy in the array's own type, never cast to uint8 first.
        const py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast> product =
            py::module_::import("numpy").attr("not_equal")(product_any, 0);
        nimbus::MergeParams p;
        p.cloud_prob_threshold = cloud_thr;
        p.shadow_prob_threshold = shadow_thr;
        const auto as_int = [](long long v, const char* name) {
          if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max()) {
            throw nimbus::InputError(fmt::format("merge_cloud_masks: {} = {} is out of range; closing_size is at most "
                                                 "{}, min_area at most 2^31-1",
                                                 name, v, nimbus::kMaxClosingSize));
          }
          return static_cast<int>(v);
        };
        p.closing_size = as_int(closing_size, "closing_size");
        p.min_area = as_int(min_area, "min_area");
        const std::size_t n = static_cast<std::size_t>(h) * static_cast<std::size_t>(w);
        py::array_t<std::uint8_t> out({h, w});
        {
          py::gil_scoped_release release;
          const nimbus::FloatBuffer c(cloud.data(), cloud.data() + n), s(shadow.data(), shadow.data() + n);
          nimbus::MaskBuffer pm(n);
          for (std::size_t i = 0; i < n; ++i) pm[i] = product.data()[i] != 0;
          const nimbus::MaskBuffer mask =
              nimbus::merge_cloud_masks_simple(c, s, pm, static_cast<int>(w), static_cast<int>(h), p);
          std::memcpy(out.mutable_data(), mask.data(), n);
        }
        return out;
      },
      py::arg("cloud_probability"), py::arg("shadow_probability"), py::arg("product_mask"),
      py::arg("cloud_thr") = 0.3, py::arg("shadow_thr") = 0.2, py::arg("closing_size") = 5, py::arg("min_area") = 0);

  m.def(
      "write_raster",
      [](const py::object& path_arg, const py::array& array, const py::object& geotransform, const std::string& crs,
         const py::object& nodata) {
        const std::string path = path_text(path_arg, "path");
        if (array.ndim() != 2 && array.ndim() != 3) {
          throw nimbus::InputError("rasters are 2-D (height, width) or 3-D (bands, height, width) arrays");
        }
        const py::array data = py::array::ensure(array, py::array::c_style);
        nimbus::RasterLayout layout;
        layout.bands = data.ndim() == 3 ? static_cast<int>(data.shape(0)) : 1;
        layout.height = static_cast<int>(data.shape(data.ndim() - 2));
        layout.width = static_cast<int>(data.shape(data.ndim() - 1));
        layout.data_type = gdal_type_of(data.dtype());
        if (!geotransform.is_none()) {
          const auto gt = geotransform.cast<std::vector<double>>();
          if (gt.size() != 6) throw nimbus::InputError("geotransform must have 6 numbers (GDAL order)");
          std::copy(gt.begin(), gt.end(), layout.grid.geotransform.begin());
          layout.grid.has_geotransform = true;
        }
        layout.grid.crs_wkt = nimbus::crs_to_wkt(crs, "crs");
        if (!nodata.is_none()) layout.nodata = nodata.cast<double>();
        py::gil_scoped_release release;
        nimbus::write_array_raster(path, "raster", data.data(), layout);
      },
      py::arg("path"), py::arg("array"), py::arg("geotransform") = py::none(), py::arg("crs") = "",
      py::arg("nodata") = py::none());

  m.def(
      "read_raster",
      [](const py::object& path_arg) {
        const std::string path = path_text(path_arg, "path");
        const nimbus::RasterLayout layout = nimbus::read_raster_layout(path, "raster");
        py::array array(numpy_type_of(layout.data_type), {layout.bands, layout.height, layout.width});
        {
          void* dst = array.mutable_data();
          py::gil_scoped_release release;
          nimbus::read_array_raster(path, "raster", layout, dst);
        }
        py::dict d;
        d["array"] = array;
        d["geotransform"] = layout.grid.has_geotransform
                                ? py::cast(std::vector<double>(layout.grid.geotransform.begin(),
                                                               layout.grid.geotransform.end()))
                                : py::none();
        d["crs"] = layout.grid.crs_wkt;
        d["nodata"] = layout.nodata ? py::cast(*layout.nodata) : py::none();
        return d;
      },
      py::arg("path"));

  m.def("_unlink_vsimem", [](const std::string& path) { VSIUnlink(path.c_str()); }, py::arg("path"));

  m.def("scene_id_from_path", &nimbus::scene_id_from_path, py::arg("s2_raster"));
  m.def(
      "check_scene_ids",
      [](const std::vector<py::dict>& scenes) {
        std::vector<nimbus::BatchScene> s;
        for (const auto& d : scenes) s.push_back(scene_from(d));
        nimbus::check_scene_ids(s);
      },
      py::arg("scenes"));
  m.def(
      "check_batch_outputs",
      [](const std::vector<py::dict>& scenes, const py::object& out_dir, const py::dict& options, bool stac_items) {
        std::vector<nimbus::BatchScene> s;
        for (const auto& d : scenes) s.push_back(scene_from(d));
        const nimbus::ImproveCloudMaskOptions o = batch_options_from(options);
        nimbus::validate_creation_options(o.creation_options);
        nimbus::check_batch_outputs(s, path_text(out_dir, "out_dir"), o, {}, {}, stac_items);
      },
      py::arg("scenes"), py::arg("out_dir"), py::arg("options") = py::dict(), py::arg("stac_items") = false);
  m.def(
      "check_batch_items",
      [](const std::vector<py::dict>& scenes) {
        std::vector<nimbus::BatchScene> s;
        for (const auto& d : scenes) s.push_back(scene_from(d));
        py::gil_scoped_release release;
        return nimbus::check_batch_items(s);
      },
      py::arg("scenes"));
  m.def(
      "failed_scene",
      [](const py::dict& scene, const py::object& out_dir, const std::string& error) {
        return to_python(nimbus::outcome_json(nimbus::failed_scene(scene_from(scene), path_text(out_dir, "out_dir"),
                                                                   error)));
      },
      py::arg("scene"), py::arg("out_dir"), py::arg("error"));
  m.def(
      "write_batch_item_collection",
      [](const std::vector<std::string>& item_paths, const py::object& out_dir) {
        nimbus::write_batch_item_collection(item_paths, path_text(out_dir, "out_dir"));
      },
      py::arg("item_paths"), py::arg("out_dir"));
  m.def(
      "is_stac_item_collection",
      [](const py::object& location) { return nimbus::is_stac_item_collection(path_text(location, "location")); },
      py::arg("location"));
  m.def(
      "read_batch_manifest",
      [](const py::object& manifest) {
        py::list out;
        for (const auto& s : nimbus::read_batch_manifest(path_text(manifest, "manifest"))) {
          py::dict d;
          d["id"] = s.id;
          d["s2_raster"] = s.s2_raster;
          d["product_mask"] = s.product_mask.empty() ? py::none() : py::cast(s.product_mask);
          out.append(d);
        }
        return out;
      },
      py::arg("manifest"));
  m.def(
      "process_batch_scene",
      [](const py::dict& scene, const py::object& out_dir, const py::dict& options, bool stac_items) {
        const nimbus::BatchScene s = scene_from(scene);
        nimbus::ImproveCloudMaskOptions o = batch_options_from(options);
        const std::string dir = path_text(out_dir, "out_dir");
        const nimbus::SceneOutcome outcome =
            run_cancellable(o.cancel, [&] { return nimbus::process_batch_scene(s, dir, o, stac_items); });
        return to_python(nimbus::outcome_json(outcome));
      },
      py::arg("scene"), py::arg("out_dir"), py::arg("options") = py::dict(), py::arg("stac_items") = false);
  m.def(
      "remove_stale_partials",
      [](const std::vector<py::dict>& scenes, const py::object& out_dir, bool only_dead_processes) {
        std::vector<nimbus::BatchScene> s;
        for (const auto& d : scenes) s.push_back(scene_from(d));
        return nimbus::remove_stale_partials(s, path_text(out_dir, "out_dir"), only_dead_processes);
      },
      py::arg("scenes"), py::arg("out_dir"), py::arg("only_dead_processes") = true);
}
