#include "nimbus/inference/onnx_graph.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>

#include <fmt/format.h>

#include "nimbus/core/error.h"
#include "nimbus/inference/backend.h"

namespace nimbus::onnx_graph {
namespace {

[[noreturn]] void unsupported(const onnx::NodeProto& node, const std::string& what) {
  throw UnsupportedModelError(fmt::format("{}: {}", describe(node), what));
}

template <typename T>
std::vector<T> raw_values(const std::string& raw) {
  std::vector<T> v(raw.size() / sizeof(T));
  if (!v.empty()) std::memcpy(v.data(), raw.data(), v.size() * sizeof(T));
  return v;
}

std::vector<std::int64_t> strides_of(const std::vector<std::int64_t>& dims) {
  std::vector<std::int64_t> s(dims.size(), 1);
  for (int k = static_cast<int>(dims.size()) - 2; k >= 0; --k) s[k] = s[k + 1] * dims[k + 1];
  return s;
}

std::int64_t product(const std::vector<std::int64_t>& dims) {
  return std::accumulate(dims.begin(), dims.end(), std::int64_t{1}, std::multiplies<>());
}

// Gathers `src` elements into a tensor of `out_dims`, element k taken from index_of(k).
Tensor gather_elements(const Tensor& src, std::vector<std::int64_t> out_dims,
                       const std::function<std::int64_t(std::int64_t)>& index_of) {
  Tensor out;
  out.is_int = src.is_int;
  out.dims = std::move(out_dims);
  const std::int64_t n = product(out.dims);
  if (src.is_int) {
    out.i.resize(static_cast<std::size_t>(n));
    for (std::int64_t k = 0; k < n; ++k) out.i[k] = src.i[static_cast<std::size_t>(index_of(k))];
  } else {
    out.f.resize(static_cast<std::size_t>(n));
    for (std::int64_t k = 0; k < n; ++k) out.f[k] = src.f[static_cast<std::size_t>(index_of(k))];
  }
  return out;
}

// Index of element `k` of a tensor of `out_dims` into a broadcast source of `in_dims`.
std::int64_t broadcast_index(std::int64_t k, const std::vector<std::int64_t>& out_dims,
                             const std::vector<std::int64_t>& out_strides, const std::vector<std::int64_t>& in_dims) {
  const std::size_t offset = out_dims.size() - in_dims.size();
  std::int64_t index = 0, in_stride = 1;
  for (int d = static_cast<int>(out_dims.size()) - 1; d >= static_cast<int>(offset); --d) {
    const std::int64_t coord = (k / out_strides[d]) % out_dims[d];
    const std::int64_t in_dim = in_dims[d - offset];
    index += (in_dim == 1 ? 0 : coord) * in_stride;
    in_stride *= in_dim;
  }
  return index;
}

Tensor binary(const onnx::NodeProto& node, const Tensor& a, const Tensor& b,
              const std::function<double(double, double)>& fn, bool integer_division = false) {
  Tensor out;
  out.dims = broadcast_dims(a.dims, b.dims, node);
  out.is_int = a.is_int && b.is_int;
  const auto strides = strides_of(out.dims);
  const std::int64_t n = product(out.dims);
  for (std::int64_t k = 0; k < n; ++k) {
    const double x = a.value(static_cast<std::size_t>(broadcast_index(k, out.dims, strides, a.dims)));
    const double y = b.value(static_cast<std::size_t>(broadcast_index(k, out.dims, strides, b.dims)));
    if (out.is_int) {
      if (integer_division) {
        if (y == 0) unsupported(node, "integer division by zero in shape arithmetic");
        out.i.push_back(static_cast<std::int64_t>(std::trunc(x / y)));
      } else {
        out.i.push_back(static_cast<std::int64_t>(fn(x, y)));
      }
    } else {
      out.f.push_back(static_cast<float>(fn(x, y)));
    }
  }
  return out;
}

Tensor unary(const Tensor& a, const std::function<double(double)>& fn) {
  Tensor out = a;
  if (a.is_int) {
    for (auto& v : out.i) v = static_cast<std::int64_t>(fn(static_cast<double>(v)));
  } else {
    for (auto& v : out.f) v = static_cast<float>(fn(v));
  }
  return out;
}

const Tensor& need(const std::vector<const Tensor*>& inputs, std::size_t k, const onnx::NodeProto& node) {
  if (k >= inputs.size() || inputs[k] == nullptr) unsupported(node, fmt::format("input {} is missing", k));
  return *inputs[k];
}

}  // namespace

std::int64_t Tensor::numel() const { return product(dims); }

void Tensor::push(double v) {
  if (is_int) {
    i.push_back(static_cast<std::int64_t>(v));
  } else {
    f.push_back(static_cast<float>(v));
  }
}

std::vector<std::int64_t> Tensor::as_ints() const {
  if (is_int) return i;
  std::vector<std::int64_t> v;
  for (float x : f) v.push_back(static_cast<std::int64_t>(x));
  return v;
}

std::vector<float> Tensor::as_floats() const {
  if (!is_int) return f;
  std::vector<float> v;
  for (std::int64_t x : i) v.push_back(static_cast<float>(x));
  return v;
}

Tensor Tensor::ints(std::vector<std::int64_t> values, std::vector<std::int64_t> dims) {
  Tensor t;
  t.is_int = true;
  t.i = std::move(values);
  t.dims = std::move(dims);
  return t;
}

Tensor Tensor::floats(std::vector<float> values, std::vector<std::int64_t> dims) {
  Tensor t;
  t.f = std::move(values);
  t.dims = std::move(dims);
  return t;
}

Tensor tensor_from_proto(const onnx::TensorProto& p, const std::string& context) {
  if (p.data_location() == onnx::TensorProto::EXTERNAL || p.external_data_size() > 0) {
    throw InputError(fmt::format("{}: tensor '{}' keeps its data in an external file; Nimbus loads self-contained "
                                 "models only: re-export with the weights inside the .onnx "
                                 "(onnx.save_model(model, path, save_as_external_data=False))",
                                 context, p.name()));
  }
  Tensor t;
  t.dims.assign(p.dims().begin(), p.dims().end());
  for (std::int64_t d : t.dims) {
    if (d < 0) throw UnsupportedModelError(fmt::format("{}: tensor '{}' has a negative dimension", context, p.name()));
  }
  const std::int64_t n = product(t.dims);
  const std::string& raw = p.raw_data();
  switch (p.data_type()) {
    case onnx::TensorProto::FLOAT:
      t.f = p.float_data_size() ? std::vector<float>(p.float_data().begin(), p.float_data().end())
                                : raw_values<float>(raw);
      break;
    case onnx::TensorProto::DOUBLE: {
      const auto d = p.double_data_size() ? std::vector<double>(p.double_data().begin(), p.double_data().end())
                                          : raw_values<double>(raw);
      t.f.assign(d.begin(), d.end());
      break;
    }
    case onnx::TensorProto::INT64:
      t.is_int = true;
      t.i = p.int64_data_size() ? std::vector<std::int64_t>(p.int64_data().begin(), p.int64_data().end())
                                : raw_values<std::int64_t>(raw);
      break;
    case onnx::TensorProto::INT32:
    case onnx::TensorProto::INT16:
    case onnx::TensorProto::INT8:
    case onnx::TensorProto::UINT8:
    case onnx::TensorProto::UINT16:
    case onnx::TensorProto::BOOL: {
      t.is_int = true;
      if (p.int32_data_size()) {
        t.i.assign(p.int32_data().begin(), p.int32_data().end());
      } else if (p.data_type() == onnx::TensorProto::INT32) {
        const auto v = raw_values<std::int32_t>(raw);
        t.i.assign(v.begin(), v.end());
      } else if (p.data_type() == onnx::TensorProto::INT16) {
        const auto v = raw_values<std::int16_t>(raw);
        t.i.assign(v.begin(), v.end());
      } else if (p.data_type() == onnx::TensorProto::UINT16) {
        const auto v = raw_values<std::uint16_t>(raw);
        t.i.assign(v.begin(), v.end());
      } else if (p.data_type() == onnx::TensorProto::INT8) {
        const auto v = raw_values<std::int8_t>(raw);
        t.i.assign(v.begin(), v.end());
      } else {
        const auto v = raw_values<std::uint8_t>(raw);
        t.i.assign(v.begin(), v.end());
      }
      break;
    }
    default:
      throw UnsupportedModelError(fmt::format("{}: tensor '{}' has element type {}, which Nimbus does not compute in",
                                              context, p.name(), p.data_type()));
  }
  const std::size_t got = t.is_int ? t.i.size() : t.f.size();
  if (static_cast<std::int64_t>(got) != n) {
    throw InputError(fmt::format("{}: tensor '{}' declares {} values but holds {}; the model file is damaged, "
                                 "re-export or re-download it",
                                 context, p.name(), n, got));
  }
  return t;
}

namespace {
const onnx::AttributeProto* find_attr(const onnx::NodeProto& node, const char* name) {
  for (const auto& a : node.attribute()) {
    if (a.name() == name) return &a;
  }
  return nullptr;
}
}  // namespace

std::int64_t attr_int(const onnx::NodeProto& node, const char* name, std::int64_t fallback) {
  const auto* a = find_attr(node, name);
  return a ? a->i() : fallback;
}

float attr_float(const onnx::NodeProto& node, const char* name, float fallback) {
  const auto* a = find_attr(node, name);
  return a ? a->f() : fallback;
}

std::string attr_string(const onnx::NodeProto& node, const char* name, const std::string& fallback) {
  const auto* a = find_attr(node, name);
  return a ? a->s() : fallback;
}

std::vector<std::int64_t> attr_ints(const onnx::NodeProto& node, const char* name) {
  const auto* a = find_attr(node, name);
  return a ? std::vector<std::int64_t>(a->ints().begin(), a->ints().end()) : std::vector<std::int64_t>{};
}

std::vector<float> attr_floats(const onnx::NodeProto& node, const char* name) {
  const auto* a = find_attr(node, name);
  return a ? std::vector<float>(a->floats().begin(), a->floats().end()) : std::vector<float>{};
}

bool has_attr(const onnx::NodeProto& node, const char* name) { return find_attr(node, name) != nullptr; }

const onnx::TensorProto* attr_tensor(const onnx::NodeProto& node, const char* name) {
  const auto* a = find_attr(node, name);
  return a && a->has_t() ? &a->t() : nullptr;
}

std::string describe(const onnx::NodeProto& node) {
  return node.name().empty() ? fmt::format("{} node (output '{}')", node.op_type(),
                                           node.output_size() ? node.output(0) : std::string())
                             : fmt::format("{} node '{}'", node.op_type(), node.name());
}

std::vector<std::int64_t> broadcast_dims(const std::vector<std::int64_t>& a, const std::vector<std::int64_t>& b,
                                         const onnx::NodeProto& node) {
  const std::size_t rank = std::max(a.size(), b.size());
  std::vector<std::int64_t> out(rank);
  for (std::size_t k = 0; k < rank; ++k) {
    const std::int64_t x = k < rank - a.size() ? 1 : a[k - (rank - a.size())];
    const std::int64_t y = k < rank - b.size() ? 1 : b[k - (rank - b.size())];
    if (x != y && x != 1 && y != 1) {
      unsupported(node, fmt::format("shapes [{}] and [{}] do not broadcast", fmt::join(a, ","), fmt::join(b, ",")));
    }
    out[k] = x == 1 ? y : x;
  }
  return out;
}

int normalize_axis(std::int64_t axis, std::size_t rank, const onnx::NodeProto& node) {
  const auto r = static_cast<std::int64_t>(rank);
  if (axis < -r || axis >= r) unsupported(node, fmt::format("axis {} is out of range for rank {}", axis, rank));
  return static_cast<int>(axis < 0 ? axis + r : axis);
}

std::vector<std::int64_t> reshape_dims(const std::vector<std::int64_t>& in, const std::vector<std::int64_t>& shape,
                                       const onnx::NodeProto& node) {
  std::vector<std::int64_t> out(shape.size());
  int infer = -1;
  std::int64_t known = 1;
  for (std::size_t k = 0; k < shape.size(); ++k) {
    if (shape[k] == -1) {
      if (infer >= 0) unsupported(node, "more than one -1 in the target shape");
      infer = static_cast<int>(k);
      continue;
    }
    if (shape[k] == 0) {
      if (k >= in.size()) unsupported(node, "0 in the target shape beyond the input's rank");
      out[k] = in[k];
    } else if (shape[k] < 0) {
      unsupported(node, fmt::format("negative target dimension {}", shape[k]));
    } else {
      out[k] = shape[k];
    }
    known *= out[k];
  }
  const std::int64_t total = product(in);
  if (infer >= 0) {
    if (known == 0 || total % known != 0) unsupported(node, "the target shape does not divide the input");
    out[static_cast<std::size_t>(infer)] = total / known;
  } else if (known != total) {
    unsupported(node, fmt::format("cannot reshape [{}] to [{}]", fmt::join(in, ","), fmt::join(out, ",")));
  }
  return out;
}

SliceRange resolve_slice(const std::vector<std::int64_t>& dims, const std::vector<std::int64_t>& starts,
                         const std::vector<std::int64_t>& ends, const std::vector<std::int64_t>& axes_in,
                         const std::vector<std::int64_t>& steps_in, const onnx::NodeProto& node) {
  if (starts.size() != ends.size()) unsupported(node, "starts and ends differ in length");
  SliceRange r;
  r.starts.assign(dims.size(), 0);
  r.ends = dims;
  r.steps.assign(dims.size(), 1);
  for (std::size_t k = 0; k < starts.size(); ++k) {
    const int axis = axes_in.empty() ? static_cast<int>(k) : normalize_axis(axes_in[k], dims.size(), node);
    const std::int64_t step = steps_in.empty() ? 1 : steps_in[k];
    if (step == 0) unsupported(node, "a step of 0");
    const std::int64_t d = dims[static_cast<std::size_t>(axis)];
    auto clamp = [&](std::int64_t v, bool is_end) {
      if (v < 0) v += d;
      if (step > 0) return std::clamp<std::int64_t>(v, 0, d);
      return std::clamp<std::int64_t>(v, -1, d - 1) + (is_end ? 0 : 0);
    };
    r.starts[static_cast<std::size_t>(axis)] = clamp(starts[k], false);
    r.ends[static_cast<std::size_t>(axis)] = clamp(ends[k], true);
    r.steps[static_cast<std::size_t>(axis)] = step;
  }
  for (std::size_t a = 0; a < dims.size(); ++a) {
    const std::int64_t span = r.steps[a] > 0 ? r.ends[a] - r.starts[a] : r.starts[a] - r.ends[a];
    const std::int64_t step = std::abs(r.steps[a]);
    r.out_dims.push_back(span <= 0 ? 0 : (span + step - 1) / step);
  }
  return r;
}

bool fold_constant(const onnx::NodeProto& node, int opset, const std::vector<const Tensor*>& in,
                   std::vector<Tensor>& out) {
  const std::string& op = node.op_type();
  out.clear();
  if (op == "Constant") {
    if (const auto* t = attr_tensor(node, "value")) {
      out.push_back(tensor_from_proto(*t, describe(node)));
    } else if (has_attr(node, "value_float")) {
      out.push_back(Tensor::floats({attr_float(node, "value_float", 0)}, {}));
    } else if (has_attr(node, "value_floats")) {
      auto v = attr_floats(node, "value_floats");
      const auto n = static_cast<std::int64_t>(v.size());
      out.push_back(Tensor::floats(std::move(v), {n}));
    } else if (has_attr(node, "value_int")) {
      out.push_back(Tensor::ints({attr_int(node, "value_int", 0)}, {}));
    } else if (has_attr(node, "value_ints")) {
      auto v = attr_ints(node, "value_ints");
      const auto n = static_cast<std::int64_t>(v.size());
      out.push_back(Tensor::ints(std::move(v), {n}));
    } else {
      unsupported(node, "a Constant without a supported value attribute");
    }
    return true;
  }
  if (op == "Identity" || op == "Dropout") {
    out.push_back(need(in, 0, node));
    return true;
  }
  if (op == "Cast") {
    const auto to = attr_int(node, "to", onnx::TensorProto::FLOAT);
    Tensor t = need(in, 0, node);
    if (to == onnx::TensorProto::FLOAT || to == onnx::TensorProto::DOUBLE) {
      if (t.is_int) t = Tensor::floats(t.as_floats(), t.dims);
    } else if (to == onnx::TensorProto::INT64 || to == onnx::TensorProto::INT32 || to == onnx::TensorProto::BOOL) {
      if (!t.is_int) t = Tensor::ints(t.as_ints(), t.dims);
      if (to == onnx::TensorProto::BOOL) {
        for (auto& v : t.i) v = v != 0;
      }
    } else {
      unsupported(node, fmt::format("Cast to element type {}", to));
    }
    out.push_back(std::move(t));
    return true;
  }
  if (op == "Shape") {
    const Tensor& t = need(in, 0, node);
    auto dims = t.dims;
    const auto rank = static_cast<std::int64_t>(dims.size());
    std::int64_t start = attr_int(node, "start", 0), end = attr_int(node, "end", rank);
    if (start < 0) start += rank;
    if (end < 0) end += rank;
    start = std::clamp<std::int64_t>(start, 0, rank);
    end = std::clamp<std::int64_t>(end, start, rank);
    std::vector<std::int64_t> v(dims.begin() + start, dims.begin() + end);
    const auto n = static_cast<std::int64_t>(v.size());
    out.push_back(Tensor::ints(std::move(v), {n}));
    return true;
  }
  if (op == "Size") {
    out.push_back(Tensor::ints({need(in, 0, node).numel()}, {}));
    return true;
  }
  if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div" || op == "Min" || op == "Max" || op == "Pow" ||
      op == "Equal" || op == "Less" || op == "Greater") {
    const Tensor& a = need(in, 0, node);
    const Tensor& b = need(in, 1, node);
    std::function<double(double, double)> fn;
    if (op == "Add") fn = std::plus<double>();
    if (op == "Sub") fn = std::minus<double>();
    if (op == "Mul") fn = std::multiplies<double>();
    if (op == "Div") fn = std::divides<double>();
    if (op == "Min") fn = [](double x, double y) { return std::min(x, y); };
    if (op == "Max") fn = [](double x, double y) { return std::max(x, y); };
    if (op == "Pow") fn = [](double x, double y) { return std::pow(x, y); };
    if (op == "Equal") fn = [](double x, double y) { return x == y ? 1.0 : 0.0; };
    if (op == "Less") fn = [](double x, double y) { return x < y ? 1.0 : 0.0; };
    if (op == "Greater") fn = [](double x, double y) { return x > y ? 1.0 : 0.0; };
    Tensor r = binary(node, a, b, fn, op == "Div");
    if (op == "Equal" || op == "Less" || op == "Greater") r = Tensor::ints(r.as_ints(), r.dims);
    out.push_back(std::move(r));
    return true;
  }
  if (op == "Neg" || op == "Floor" || op == "Ceil" || op == "Sqrt" || op == "Abs" || op == "Reciprocal" ||
      op == "Not" || op == "Relu" || op == "Exp") {
    std::function<double(double)> fn;
    if (op == "Neg") fn = [](double x) { return -x; };
    if (op == "Floor") fn = [](double x) { return std::floor(x); };
    if (op == "Ceil") fn = [](double x) { return std::ceil(x); };
    if (op == "Sqrt") fn = [](double x) { return std::sqrt(x); };
    if (op == "Abs") fn = [](double x) { return std::fabs(x); };
    if (op == "Reciprocal") fn = [](double x) { return 1.0 / x; };
    if (op == "Not") fn = [](double x) { return x == 0 ? 1.0 : 0.0; };
    if (op == "Relu") fn = [](double x) { return std::max(x, 0.0); };
    if (op == "Exp") fn = [](double x) { return std::exp(x); };
    out.push_back(unary(need(in, 0, node), fn));
    return true;
  }
  if (op == "Unsqueeze" || op == "Squeeze") {
    const Tensor& t = need(in, 0, node);
    std::vector<std::int64_t> axes =
        opset >= 13 ? (in.size() > 1 && in[1] ? in[1]->as_ints() : std::vector<std::int64_t>{}) : attr_ints(node, "axes");
    std::vector<std::int64_t> dims = t.dims;
    if (op == "Unsqueeze") {
      const std::size_t rank = dims.size() + axes.size();
      std::vector<int> norm;
      for (auto a : axes) norm.push_back(normalize_axis(a, rank, node));
      std::sort(norm.begin(), norm.end());
      for (int a : norm) dims.insert(dims.begin() + a, 1);
    } else {
      std::vector<int> norm;
      for (auto a : axes) norm.push_back(normalize_axis(a, dims.size(), node));
      std::vector<std::int64_t> kept;
      for (std::size_t k = 0; k < dims.size(); ++k) {
        const bool listed = std::find(norm.begin(), norm.end(), static_cast<int>(k)) != norm.end();
        if ((axes.empty() && dims[k] == 1) || listed) continue;
        kept.push_back(dims[k]);
      }
      dims = kept;
    }
    Tensor r = t;
    r.dims = dims;
    out.push_back(std::move(r));
    return true;
  }
  if (op == "Reshape" || op == "Flatten") {
    Tensor r = need(in, 0, node);
    if (op == "Reshape") {
      r.dims = reshape_dims(r.dims, need(in, 1, node).as_ints(), node);
    } else {
      const int axis = normalize_axis(attr_int(node, "axis", 1), r.dims.size() + 1, node);
      std::int64_t outer = 1, inner = 1;
      for (std::size_t k = 0; k < r.dims.size(); ++k) (static_cast<int>(k) < axis ? outer : inner) *= r.dims[k];
      r.dims = {outer, inner};
    }
    out.push_back(std::move(r));
    return true;
  }
  if (op == "Concat") {
    std::vector<const Tensor*> parts;
    for (std::size_t k = 0; k < in.size(); ++k) parts.push_back(&need(in, k, node));
    const Tensor& first = *parts.front();
    const int axis = normalize_axis(attr_int(node, "axis", 0), first.dims.size(), node);
    Tensor r;
    r.is_int = std::all_of(parts.begin(), parts.end(), [](const Tensor* t) { return t->is_int; });
    r.dims = first.dims;
    r.dims[static_cast<std::size_t>(axis)] = 0;
    for (const Tensor* t : parts) {
      if (t->dims.size() != first.dims.size()) unsupported(node, "inputs of different ranks");
      r.dims[static_cast<std::size_t>(axis)] += t->dims[static_cast<std::size_t>(axis)];
    }
    std::int64_t outer = 1;
    for (int k = 0; k < axis; ++k) outer *= first.dims[static_cast<std::size_t>(k)];
    for (std::int64_t o = 0; o < outer; ++o) {
      for (const Tensor* t : parts) {
        const std::int64_t chunk = t->numel() / std::max<std::int64_t>(outer, 1);
        for (std::int64_t k = 0; k < chunk; ++k) {
          const std::size_t idx = static_cast<std::size_t>(o * chunk + k);
          if (r.is_int) {
            r.i.push_back(t->i[idx]);  // not through double: INT64_MAX slice ends must survive
          } else {
            r.f.push_back(static_cast<float>(t->value(idx)));
          }
        }
      }
    }
    out.push_back(std::move(r));
    return true;
  }
  if (op == "Gather") {
    const Tensor& data = need(in, 0, node);
    const auto indices = need(in, 1, node).as_ints();
    const auto& idims = in[1]->dims;
    const int axis = normalize_axis(attr_int(node, "axis", 0), data.dims.size(), node);
    std::vector<std::int64_t> out_dims(data.dims.begin(), data.dims.begin() + axis);
    out_dims.insert(out_dims.end(), idims.begin(), idims.end());
    out_dims.insert(out_dims.end(), data.dims.begin() + axis + 1, data.dims.end());
    const std::int64_t axis_dim = data.dims[static_cast<std::size_t>(axis)];
    std::int64_t inner = 1;
    for (std::size_t k = static_cast<std::size_t>(axis) + 1; k < data.dims.size(); ++k) inner *= data.dims[k];
    const auto n_idx = static_cast<std::int64_t>(indices.size());
    for (auto v : indices) {
      if (v < -axis_dim || v >= axis_dim) unsupported(node, fmt::format("index {} out of range {}", v, axis_dim));
    }
    out.push_back(gather_elements(data, out_dims, [&](std::int64_t k) {
      const std::int64_t in_pos = k % inner;
      const std::int64_t idx_pos = (k / inner) % std::max<std::int64_t>(n_idx, 1);
      const std::int64_t o = k / inner / std::max<std::int64_t>(n_idx, 1);
      std::int64_t v = indices[static_cast<std::size_t>(idx_pos)];
      if (v < 0) v += axis_dim;
      return (o * axis_dim + v) * inner + in_pos;
    }));
    return true;
  }
  if (op == "Slice") {
    const Tensor& data = need(in, 0, node);
    std::vector<std::int64_t> starts, ends, axes, steps;
    if (opset < 10) {
      starts = attr_ints(node, "starts");
      ends = attr_ints(node, "ends");
      axes = attr_ints(node, "axes");
    } else {
      starts = need(in, 1, node).as_ints();
      ends = need(in, 2, node).as_ints();
      if (in.size() > 3 && in[3]) axes = in[3]->as_ints();
      if (in.size() > 4 && in[4]) steps = in[4]->as_ints();
    }
    const SliceRange r = resolve_slice(data.dims, starts, ends, axes, steps, node);
    const auto in_strides = strides_of(data.dims);
    const auto out_strides = strides_of(r.out_dims);
    out.push_back(gather_elements(data, r.out_dims, [&](std::int64_t k) {
      std::int64_t index = 0;
      for (std::size_t d = 0; d < r.out_dims.size(); ++d) {
        const std::int64_t coord = (k / out_strides[d]) % r.out_dims[d];
        index += (r.starts[d] + coord * r.steps[d]) * in_strides[d];
      }
      return index;
    }));
    return true;
  }
  if (op == "ConstantOfShape") {
    const auto dims = need(in, 0, node).as_ints();
    Tensor value = Tensor::floats({0.0f}, {1});
    if (const auto* t = attr_tensor(node, "value")) value = tensor_from_proto(*t, describe(node));
    const auto n = static_cast<std::size_t>(product(dims));
    out.push_back(value.is_int ? Tensor::ints(std::vector<std::int64_t>(n, value.i.at(0)), dims)
                               : Tensor::floats(std::vector<float>(n, value.f.at(0)), dims));
    return true;
  }
  if (op == "Range") {
    const double start = need(in, 0, node).value(0), limit = need(in, 1, node).value(0),
                 delta = need(in, 2, node).value(0);
    if (delta == 0) unsupported(node, "a delta of 0");
    const auto n = static_cast<std::int64_t>(std::max(0.0, std::ceil((limit - start) / delta)));
    if (n > (1 << 24)) unsupported(node, "a range of more than 16M elements");
    Tensor r;
    r.is_int = in[0]->is_int;
    r.dims = {n};
    for (std::int64_t k = 0; k < n; ++k) {
      const double v = start + static_cast<double>(k) * delta;
      r.push(v);
    }
    out.push_back(std::move(r));
    return true;
  }
  if (op == "Transpose") {
    const Tensor& t = need(in, 0, node);
    auto perm = attr_ints(node, "perm");
    if (perm.empty()) {
      for (int k = static_cast<int>(t.dims.size()) - 1; k >= 0; --k) perm.push_back(k);
    }
    if (perm.size() != t.dims.size()) unsupported(node, "perm does not match the rank");
    std::vector<std::int64_t> out_dims;
    for (auto p : perm) out_dims.push_back(t.dims.at(static_cast<std::size_t>(p)));
    const auto in_strides = strides_of(t.dims);
    const auto out_strides = strides_of(out_dims);
    out.push_back(gather_elements(t, out_dims, [&](std::int64_t k) {
      std::int64_t index = 0;
      for (std::size_t d = 0; d < out_dims.size(); ++d) {
        index += ((k / out_strides[d]) % out_dims[d]) * in_strides[static_cast<std::size_t>(perm[d])];
      }
      return index;
    }));
    return true;
  }
  if (op == "Expand") {
    const Tensor& t = need(in, 0, node);
    const auto target = broadcast_dims(t.dims, need(in, 1, node).as_ints(), node);
    const auto strides = strides_of(target);
    out.push_back(gather_elements(t, target, [&](std::int64_t k) { return broadcast_index(k, target, strides, t.dims); }));
    return true;
  }
  if (op == "Where") {
    const Tensor& c = need(in, 0, node);
    const Tensor& x = need(in, 1, node);
    const Tensor& y = need(in, 2, node);
    const auto dims = broadcast_dims(broadcast_dims(c.dims, x.dims, node), y.dims, node);
    const auto strides = strides_of(dims);
    Tensor r;
    r.is_int = x.is_int && y.is_int;
    r.dims = dims;
    for (std::int64_t k = 0; k < product(dims); ++k) {
      const bool take_x = c.value(static_cast<std::size_t>(broadcast_index(k, dims, strides, c.dims))) != 0;
      const Tensor& src = take_x ? x : y;
      const double v = src.value(static_cast<std::size_t>(broadcast_index(k, dims, strides, src.dims)));
      r.push(v);
    }
    out.push_back(std::move(r));
    return true;
  }
  return false;
}

}  // namespace nimbus::onnx_graph
