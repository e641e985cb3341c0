// shimnn's compiled fast paths: the same ATen kernels, in the same order, as the Python code
// they replace (named at each function), called from C++ so that a small network's step does
// not pay Python's cost per kernel call. Loaded by shimnn/_native.py; every caller keeps its
// Python path, which runs when this module is unavailable or disabled.
#include <torch/extension.h>
#include <ATen/PythonTorchFunctionTLS.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/csrc/DynamicTypes.h>
#include <torch/csrc/jit/frontend/tracer.h>

#include "fused.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <mutex>
#include <queue>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace py = pybind11;
using at::Tensor;

namespace {

// Layer kinds, as shimnn/_chain.py numbers them (LINEAR, RELU, TANH).
constexpr int64_t LINEAR = 0, RELU = 1, TANH = 2;

// ops.linear._is_column_major / ops.linear._weight_is_row_major.
bool is_column_major(const Tensor& m) {
  return m.stride(0) == 1 && m.stride(1) == m.size(0);
}
bool weight_is_row_major(const Tensor& w) {
  return w.stride(1) == 1 && w.stride(0) == w.size(1);
}

// Lengths the verification runs: every tail position of vectorized bodies of up to 64 elements,
// several times, and longer vectorized runs.
const std::vector<int64_t>& verification_lengths() {
  static const std::vector<int64_t> lengths = [] {
    std::vector<int64_t> l;
    for (int trial = 0; trial < 3; ++trial) {
      for (int64_t n = 1; n <= 70; ++n) l.push_back(n);
    }
    l.insert(l.end(), {127, 128, 129, 257, 1031});
    return l;
  }();
  return lengths;
}

template <typename T>
Tensor test_tensor(shimnn_fused::TestValues& values, int64_t n, int low, int high,
                   bool positive = false) {
  Tensor t = at::empty({n}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
  T* data = t.data_ptr<T>();
  for (int64_t i = 0; i < n; ++i) data[i] = values.value<T>(low, high, positive);
  return t;
}

bool same_tensors(const Tensor& a, const Tensor& b) {
  if (a.scalar_type() == at::kFloat) {
    return shimnn_fused::same_values(a.data_ptr<float>(), b.data_ptr<float>(), a.numel());
  }
  return shimnn_fused::same_values(a.data_ptr<double>(), b.data_ptr<double>(), a.numel());
}

// Every verification made, for fused_checks(): (loop family and dtype, configuration key, ok),
// under verification_mutex() (a chain's backward runs its loops without the GIL).
std::vector<std::tuple<std::string, int64_t, bool>>& verifications() {
  static auto* all = new std::vector<std::tuple<std::string, int64_t, bool>>();
  return *all;
}

std::mutex& verification_mutex() {
  static auto* mutex = new std::mutex();
  return *mutex;
}

void record_verification(std::string family, int64_t key, bool ok) {
  std::lock_guard<std::mutex> lock(verification_mutex());
  verifications().emplace_back(std::move(family), key, ok);
}

// Whether the fused loop of `key` gave the ATen sequence's values on every test; computed once
// per key (`check` runs the comparison) and remembered for the process.
bool verified(std::unordered_map<int64_t, bool>& seen, const char* family, int64_t key,
              const std::function<bool()>& check) {
  auto found = seen.find(key);
  if (found != seen.end()) return found->second;
  bool ok = check();
  seen.emplace(key, ok);
  record_verification(family, key, ok);
  return ok;
}

// The verifications this process made, in order: [(family, key, ok)] (tests and `shimnn
// native` show which fused loops are in use).
py::list fused_checks() {
  std::vector<std::tuple<std::string, int64_t, bool>> made;
  {
    std::lock_guard<std::mutex> lock(verification_mutex());
    made = verifications();
  }
  py::list out;
  for (const auto& [family, key, ok] : made) out.append(py::make_tuple(family, key, ok));
  return out;
}

// The chain's element loops (fused.h), each used where verified for the dtype, else ATen's
// kernel: torch.relu, threshold_backward, tanh_backward (its product fused into the difference,
// or not), mse_loss_backward.
enum ChainLoop { RELU_LOOP, THRESHOLD_BACKWARD_LOOP, TANH_BACKWARD_FUSED_LOOP, TANH_BACKWARD_LOOP,
                 MSE_BACKWARD_LOOP, CHAIN_LOOPS };
constexpr const char* kChainLoopNames[CHAIN_LOOPS] = {
    "relu", "threshold_backward", "tanh_backward fused", "tanh_backward", "mse_loss_backward"};

template <typename T>
bool chain_loop_matches(ChainLoop kind) {
  shimnn_fused::TestValues values(7);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  for (int64_t n : verification_lengths()) {
    Tensor a = test_tensor<T>(values, n, -6, 3), b = test_tensor<T>(values, n, -6, 3);
    Tensor ref, out = at::empty_like(a);
    if (kind == RELU_LOOP) {
      ref = at::relu(a);
      shimnn_fused::relu_loop<T>(out.data_ptr<T>(), a.data_ptr<T>(), n);
    } else if (kind == THRESHOLD_BACKWARD_LOOP) {
      ref = at::threshold_backward(a, b, 0);
      shimnn_fused::threshold_backward_loop<T>(out.data_ptr<T>(), a.data_ptr<T>(),
                                               b.data_ptr<T>(), n);
    } else if (kind == TANH_BACKWARD_FUSED_LOOP || kind == TANH_BACKWARD_LOOP) {
      Tensor y = at::tanh(b);
      ref = at::tanh_backward(a, y);
      (kind == TANH_BACKWARD_FUSED_LOOP ? shimnn_fused::tanh_backward_loop<T, true>
                                     : shimnn_fused::tanh_backward_loop<T, false>)(
          out.data_ptr<T>(), a.data_ptr<T>(), y.data_ptr<T>(), n);
    } else {  // mse_loss_backward, mean and sum
      Tensor grad = test_tensor<T>(values, 1, -3, 3).reshape({});
      for (int64_t reduction : {at::Reduction::Mean, at::Reduction::Sum}) {
        ref = at::mse_loss_backward(grad, a, b, reduction);
        double norm = reduction == at::Reduction::Mean ? 2. / double(n) : 2.;
        shimnn_fused::mse_backward_loop<T>(out.data_ptr<T>(), a.data_ptr<T>(), b.data_ptr<T>(),
                                           T(norm), grad.item<T>(), n);
        if (!same_tensors(out, ref)) return false;
      }
    }
    if (!same_tensors(out, ref)) return false;
  }
  return true;
}

// The element loops may run: hardware fused multiply-add, and no Python dispatch mode (a mode,
// such as a logging or counting TorchDispatchMode, sees the ATen kernels instead, as it would
// under torch).
bool loops_allowed() {
  static const bool hardware = shimnn_fused::hardware_fma();
  return hardware && c10::impl::TorchDispatchModeTLS::stack_len() == 0;
}

// Whether chain loop `kind` is verified for T (once per process), and loops may run now. A
// chain's backward asks without the GIL: the first verification is made under a mutex.
template <typename T>
bool chain_loop_ok(ChainLoop kind) {
  if (!loops_allowed()) return false;
  static std::atomic<int8_t> state[CHAIN_LOOPS] = {};  // 0 not yet, 1 verified, -1 failed
  if (state[kind].load() == 0) {
    static std::mutex mutex;
    std::lock_guard<std::mutex> lock(mutex);
    if (state[kind].load() == 0) {
      bool ok = chain_loop_matches<T>(kind);
      record_verification(std::string(kChainLoopNames[kind]) +
                              (std::is_same_v<T, float> ? " float32" : " float64"),
                          0, ok);
      state[kind].store(ok ? 1 : -1);
    }
  }
  return state[kind].load() == 1;
}

// t's elements are T's and contiguous, like those of `like` (same shape).
bool loopable(const Tensor& t, const Tensor& like) {
  return t.is_contiguous() && like.is_contiguous() && t.scalar_type() == like.scalar_type() &&
         t.sizes().equals(like.sizes()) && !t.is_neg() && !like.is_neg() &&
         (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble);
}

template <typename F>
bool with_dtype(const Tensor& t, F&& f) {
  return t.scalar_type() == at::kFloat ? f(float{}) : f(double{});
}

// torch.relu(h) into h itself (h: a Linear's fresh output that nothing else holds): the
// loop where verified; false (h untouched) otherwise.
bool relu_in_place(const Tensor& h) {
  if (!loopable(h, h)) return false;
  return with_dtype(h, [&](auto zero) {
    using T = decltype(zero);
    if (!chain_loop_ok<T>(RELU_LOOP)) return false;
    T* x = h.data_ptr<T>();
    shimnn_fused::relu_loop<T>(x, x, h.numel());
    return true;
  });
}

// threshold_backward(g, y, 0) / tanh_backward(g, y): into g when `owned` (a gradient this
// backward made), else into a new tensor.
Tensor activation_backward(int64_t kind, const Tensor& g, const Tensor& y, bool owned) {
  if (loopable(g, y)) {
    Tensor out;
    bool done = with_dtype(g, [&](auto zero) {
      using T = decltype(zero);
      auto loop = &shimnn_fused::threshold_backward_loop<T>;
      if (kind == TANH) {
        if (chain_loop_ok<T>(TANH_BACKWARD_FUSED_LOOP)) {
          loop = &shimnn_fused::tanh_backward_loop<T, true>;
        } else if (chain_loop_ok<T>(TANH_BACKWARD_LOOP)) {
          loop = &shimnn_fused::tanh_backward_loop<T, false>;
        } else {
          return false;
        }
      } else if (!chain_loop_ok<T>(THRESHOLD_BACKWARD_LOOP)) {
        return false;
      }
      out = owned ? g : at::empty_like(g);
      loop(out.data_ptr<T>(), g.data_ptr<T>(), y.data_ptr<T>(), g.numel());
      return true;
    });
    if (done) return out;
  }
  return kind == TANH ? at::tanh_backward(g, y) : at::threshold_backward(g, y, 0);
}

// at::linear(rows, weight, bias) for a matrix input: with a bias, at::addmm(bias, rows,
// weight.t()), which copies the expanded bias into its fresh output (TensorIterator's copy)
// and adds the product into it (gemm, beta 1). Where the bias is a contiguous float32/float64
// vector, the rows of the output are filled with it here (memcpy: the same bits) and the same
// gemm adds into them (addmm_, beta 1); otherwise at::linear itself.
Tensor linear_forward(const Tensor& rows, const Tensor& weight, const Tensor& bias) {
  if (!bias.defined()) return at::linear(rows, weight, c10::nullopt);
  auto dtype = rows.scalar_type();
  if (rows.dim() != 2 || weight.dim() != 2 || bias.dim() != 1 || !bias.is_contiguous() ||
      !bias.is_cpu() || bias.is_neg() || bias.is_conj() || weight.scalar_type() != dtype ||
      bias.scalar_type() != dtype || (dtype != at::kFloat && dtype != at::kDouble) ||
      weight.size(0) != bias.size(0) || weight.size(1) != rows.size(1) ||
      c10::impl::TorchDispatchModeTLS::stack_len() != 0) {
    return at::linear(rows, weight, bias);
  }
  int64_t n = rows.size(0), width = bias.size(0);
  Tensor out = at::empty({n, width}, rows.options());
  auto bytes = static_cast<size_t>(width) * bias.element_size();
  const char* from = static_cast<const char*>(bias.const_data_ptr());
  char* to = static_cast<char*>(out.data_ptr());
  for (int64_t i = 0; i < n; ++i) std::memcpy(to + i * bytes, from, bytes);
  return out.addmm_(rows, weight.t());
}

// One recorded layer of a fused chain (the records of _chain._run_mlp).
struct Record {
  int64_t kind;
  Tensor a;  // LINEAR: the rows it multiplied (if need_weight); RELU/TANH: its output
  Tensor weight;  // LINEAR: the weight (if need_input)
  bool need_input = false, need_weight = false, need_bias = false;
  bool rows_column_major = false, weight_row_major = false;
};

// The backward of a fused Linear/ReLU/Tanh chain (_chain._run_mlp's backward): each
// layer's saved tensors are freed as soon as that layer is done, unless the graph is retained.
class Chain {
 public:
  explicit Chain(std::vector<Record> records) : records_(std::move(records)) {}

  // grad of the chain's output -> [grad of the input, then for each recorded Linear, newest
  // first: grad of its bias, grad of its weight] (undefined where not needed).
  std::vector<Tensor> backward_tensors(Tensor grad, bool retain_graph) {
    Tensor g = std::move(grad);
    bool owned = false;  // g made by this backward (not the caller's): its kernels may reuse it
    std::vector<Tensor> out(1);  // the input's gradient first, set last
    {
      py::gil_scoped_release no_gil;
      // Out-of-place kernels only: straight to them, past the autograd dispatch keys.
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      out.reserve(1 + 2 * records_.size());
      for (auto i = records_.size(); i-- > 0;) {
        Record r = retain_graph ? records_[i] : std::move(records_[i]);
        if (!retain_graph) records_[i] = Record{};
        if (r.kind == LINEAR) {
          // ops.linear.linear_rows_backward
          Tensor grad_input, grad_weight, grad_bias;
          if (r.need_input) {
            grad_input = r.rows_column_major ? r.weight.t().mm(g.t()).t() : g.mm(r.weight);
          }
          if (r.need_weight) {
            grad_weight = r.weight_row_major ? g.t().mm(r.a) : r.a.t().mm(g).t();
          }
          if (r.need_bias) grad_bias = g.sum(0);
          out.push_back(std::move(grad_bias));
          out.push_back(std::move(grad_weight));
          g = std::move(grad_input);
          owned = true;
        } else {
          // ops.activation._threshold_backward / _tanh_backward
          g = activation_backward(r.kind, g, r.a, owned);
          owned = true;
        }
      }
    }
    out[0] = std::move(g);
    return out;
  }

  // backward_tensors for a Python caller (the Python walk): None where not needed.
  py::list backward(Tensor grad, bool retain_graph) {
    py::list grads;
    for (auto& t : backward_tensors(std::move(grad), retain_graph)) {
      grads.append(t.defined() ? py::cast(std::move(t)) : py::none());
    }
    return grads;
  }

 private:
  std::vector<Record> records_;
};

// at::mse_loss_backward(grad, input, target, reduction): the loop where verified, for a
// reduced loss's 0-d gradient; ATen's kernel otherwise.
Tensor mse_backward(const Tensor& grad, const Tensor& input, const Tensor& target,
                    int64_t reduction) {
  if (reduction != at::Reduction::None && grad.dim() == 0 && grad.is_cpu() &&
      grad.scalar_type() == input.scalar_type() && loopable(input, target)) {
    Tensor out;
    bool done = with_dtype(input, [&](auto zero) {
      using T = decltype(zero);
      if (!chain_loop_ok<T>(MSE_BACKWARD_LOOP)) return false;
      double norm = reduction == at::Reduction::Mean ? 2. / double(input.numel()) : 2.;
      out = at::empty_like(input);
      shimnn_fused::mse_backward_loop<T>(out.data_ptr<T>(), input.data_ptr<T>(),
                                         target.data_ptr<T>(), T(norm), grad.item<T>(),
                                         input.numel());
      return true;
    });
    if (done) return out;
  }
  return at::mse_loss_backward(grad, input, target, reduction);
}

// ops.loss.mse_loss_forward for an input and target of the same shape and floating dtype
// on CPU (no broadcasting, nothing to sum back): the backward of MseLossBackward0.
class MseLoss {
 public:
  MseLoss(Tensor input, Tensor target, int64_t reduction, bool need_input, bool need_target)
      : input_(std::move(input)), target_(std::move(target)), reduction_(reduction),
        need_input_(need_input), need_target_(need_target) {}

  // grad of the loss -> [grad of the input, grad of the target] (undefined where not needed).
  std::vector<Tensor> backward_tensors(const Tensor& grad) {
    Tensor grad_input, grad_target;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      if (need_input_) grad_input = mse_backward(grad, input_, target_, reduction_);
      if (need_target_) grad_target = mse_backward(grad, target_, input_, reduction_);
    }
    return {std::move(grad_input), std::move(grad_target)};
  }

  py::tuple backward(const Tensor& grad) {
    auto grads = backward_tensors(grad);
    return py::make_tuple(grads[0].defined() ? py::cast(std::move(grads[0])) : py::none(),
                          grads[1].defined() ? py::cast(std::move(grads[1])) : py::none());
  }

 private:
  Tensor input_, target_;
  int64_t reduction_;
  bool need_input_, need_target_;
};

// Returns None outside that case (the Python path), else (loss, backward, saved, versions).
py::object mse_loss_forward(const Tensor& input, const Tensor& target, int64_t reduction,
                            bool need_input, bool need_target) {
  if (!input.sizes().equals(target.sizes()) || input.scalar_type() != target.scalar_type() ||
      !at::isFloatingType(input.scalar_type()) || !input.is_cpu() || !target.is_cpu()) {
    return py::none();
  }
  Tensor out;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    out = at::mse_loss(input, target, reduction);
  }
  py::object backward = py::cast(
      std::make_shared<MseLoss>(input, target, reduction, need_input, need_target));
  return py::make_tuple(std::move(out), backward, py::make_tuple(input, target),
                        py::make_tuple(input._version(), target._version()));
}

py::object edge_of(const Tensor& p, const py::handle& obj) {
  // A module parameter is a leaf: its edge is itself when it requires grad (graph.edge).
  return p.requires_grad() ? py::reinterpret_borrow<py::object>(obj) : py::none();
}

// Python's truth of `value` (an error from its __bool__ propagates).
bool is_true(PyObject* value) {
  int truth = PyObject_IsTrue(value);
  if (truth < 0) throw py::error_already_set();
  return truth == 1;
}

// `dict[key]` exists and is true.
bool dict_entry_truthy(PyObject* dict, PyObject* key) {
  PyObject* value = dict ? PyDict_GetItem(dict, key) : nullptr;  // borrowed
  return value != nullptr && is_true(value);
}

// A module's instance dict holds a forward, forward-pre, backward or backward-pre hook.
bool has_module_hooks(PyObject* dict) {
  static PyObject* keys[] = {
      PyUnicode_InternFromString("_forward_hooks"),
      PyUnicode_InternFromString("_forward_pre_hooks"),
      PyUnicode_InternFromString("_backward_hooks"),
      PyUnicode_InternFromString("_backward_pre_hooks")};
  for (PyObject* key : keys) {
    if (dict_entry_truthy(dict, key)) return true;
  }
  return false;
}

// _chain._layers_fusable for layers of the matrix kinds: no module hook, and an in-place
// ReLU only right after a Linear.
bool layers_fusable(const py::tuple& layers, const std::vector<int64_t>& kinds) {
  static PyObject* inplace_key = PyUnicode_InternFromString("inplace");
  for (size_t i = 0; i < kinds.size(); ++i) {
    PyObject** dict_ptr = _PyObject_GetDictPtr(layers[i].ptr());
    PyObject* dict = dict_ptr ? *dict_ptr : nullptr;
    if (has_module_hooks(dict)) return false;
    if (dict_entry_truthy(dict, inplace_key) && (i == 0 || kinds[i - 1] != LINEAR)) {
      return false;
    }
  }
  return true;
}

// _chain._run_mlp for a matrix input (with grad_mode false: the plain loop of
// _chain._run_chain, recording nothing): returns False when the layers cannot run fused
// (layers_fusable), None where the Python path must run (a layer it does not handle), or
// (output, backward or None, edges, saved, versions, node name).
py::object chain_forward(const py::tuple& layers, const std::vector<int64_t>& kinds,
                         const Tensor& input, const py::object& e_input, bool grad_mode) {
  static const py::str weight_key("weight"), bias_key("bias"), params_key("_parameters"),
      inplace_key("inplace");
  // CPU only: on other devices the Python path runs (what the GPU parity check verified).
  if (layers.size() != kinds.size() || !input.is_cpu()) return py::none();
  if (!layers_fusable(layers, kinds)) return py::bool_(false);
  bool upstream = !e_input.is_none();
  std::vector<Record> records;
  std::vector<py::object> param_edges;  // weight, bias per recorded Linear, oldest first
  std::vector<Tensor> saved;
  std::vector<int64_t> versions;
  const char* name = "";
  Tensor h = input;
  // Straight to the kernels, past the autograd dispatch keys (which would only record what
  // grad mode off makes them skip); the one in-place kernel bumps its version itself below.
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  for (size_t i = 0; i < kinds.size(); ++i) {
    py::handle m = layers[i];
    int64_t kind = kinds[i];
    if (kind == LINEAR) {
      py::dict params = py::reinterpret_borrow<py::dict>(m.attr(params_key));
      PyObject* w_obj = PyDict_GetItem(params.ptr(), weight_key.ptr());
      PyObject* b_obj = PyDict_GetItem(params.ptr(), bias_key.ptr());
      if (w_obj == nullptr || w_obj == Py_None || !THPVariable_Check(w_obj)) return py::none();
      bool has_bias = b_obj != nullptr && b_obj != Py_None;
      if (has_bias && !THPVariable_Check(b_obj)) return py::none();
      const Tensor& weight = THPVariable_Unpack(w_obj);
      Tensor bias = has_bias ? THPVariable_Unpack(b_obj) : Tensor();
      if (!weight.is_cpu() || (has_bias && !bias.is_cpu())) return py::none();
      bool need_weight = grad_mode && weight.requires_grad();
      bool need_bias = grad_mode && has_bias && bias.requires_grad();
      Tensor rows = h;
      h = linear_forward(rows, weight, bias);
      name = has_bias ? "AddmmBackward0" : "MmBackward0";
      if (upstream || need_weight || need_bias) {
        Record r;
        r.kind = LINEAR;
        r.need_input = upstream;
        r.need_weight = need_weight;
        r.need_bias = need_bias;
        r.rows_column_major = upstream && is_column_major(rows);
        r.weight_row_major = need_weight && weight_is_row_major(weight);
        param_edges.push_back(edge_of(weight, w_obj));
        param_edges.push_back(has_bias ? edge_of(bias, b_obj) : py::none());
        if (need_weight) {
          saved.push_back(rows);
          versions.push_back(rows._version());
          r.a = rows;
        }
        if (upstream) {
          saved.push_back(weight);
          versions.push_back(weight._version());
          r.weight = weight;
        }
        records.push_back(std::move(r));
        upstream = true;
      }
    } else if (kind == TANH) {
      h = at::tanh(h);
      name = "TanhBackward0";
      if (upstream) {
        saved.push_back(h);
        versions.push_back(h._version());
        records.push_back(Record{TANH, h});
      }
    } else if (kind == RELU) {
      // ReLU(inplace=True) overwrites the previous Linear's fresh output (torch.relu_).
      PyObject** dict_ptr = _PyObject_GetDictPtr(m.ptr());
      bool inplace = dict_entry_truthy(dict_ptr ? *dict_ptr : nullptr, inplace_key.ptr());
      // Right after a Linear, h is that Linear's fresh output, which nothing else holds: the
      // non-in-place ReLU's output can take its memory.
      bool after_linear = i > 0 && kinds[i - 1] == LINEAR;
      if (inplace) {
        if (!relu_in_place(h)) at::relu_(h);
        h.unsafeGetTensorImpl()->bump_version();  // as torch's in-place dispatch does
      } else if (!(after_linear && relu_in_place(h))) {
        h = at::relu(h);
      }
      name = inplace ? "ReluBackward1" : "ReluBackward0";
      if (upstream) {
        saved.push_back(h);
        versions.push_back(h._version());
        records.push_back(Record{RELU, h});
      }
    } else {
      return py::none();
    }
  }
  if (h.is_complex()) return py::none();  // the Python path raises torch's error
  if (records.empty()) {
    return py::make_tuple(std::move(h), py::none(), py::none(), py::none(), py::none(), name);
  }
  py::tuple edges(param_edges.size() + 1);
  // Input first, then the newest layer's bias and weight first (_chain._run_mlp).
  edges[0] = e_input;
  for (size_t i = 0; i < param_edges.size(); ++i) {
    edges[i + 1] = param_edges[param_edges.size() - 1 - i];
  }
  py::tuple saved_t(saved.size()), versions_t(versions.size());
  for (size_t i = 0; i < saved.size(); ++i) {
    saved_t[i] = py::cast(saved[i]);
    versions_t[i] = py::int_(versions[i]);
  }
  py::object backward = py::cast(std::make_shared<Chain>(std::move(records)));
  return py::make_tuple(std::move(h), backward, edges, saved_t, versions_t, name);
}

py::object steal(PyObject* obj) {
  if (obj == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(obj);
}

py::object get_attr(PyObject* obj, PyObject* name) {
  PyObject* value = PyObject_GetAttr(obj, name);
  if (value == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(value);
}

bool truthy_attr(PyObject* obj, PyObject* name) {
  return is_true(get_attr(obj, name).ptr());
}

// A tensor's `_backward_hooks` or `_post_accumulate_grad_hooks` (the fields those attributes
// read) holds a hook.
bool has_tensor_hooks(PyObject* obj) {
  auto* var = reinterpret_cast<THPVariable*>(obj);
  for (PyObject* hooks : {var->backward_hooks, var->post_accumulate_grad_hooks}) {
    if (hooks != nullptr && is_true(hooks)) return true;
  }
  return false;
}

// _engine._non_overlapping_and_dense / _obeys_layout_contract / _clone_obey_contract (torch's
// gradient layout contract).
bool obeys_layout_contract(const Tensor& grad, const Tensor& leaf) {
  if (leaf.is_non_overlapping_and_dense()) {
    for (int64_t i = 0; i < grad.dim(); ++i) {
      if (grad.size(i) != 1) {
        if (grad.stride(i) != leaf.stride(i)) return false;
      } else if (grad.stride(i) == 0) {
        return false;
      }
    }
    return true;
  }
  return grad.is_contiguous();
}

Tensor clone_obey_contract(const Tensor& grad, const Tensor& leaf) {
  if (leaf.is_non_overlapping_and_dense()) {
    return grad.new_empty_strided(leaf.sizes(), leaf.strides(), grad.options()).copy_(grad);
  }
  return grad.clone(at::MemoryFormat::Contiguous);
}

// A gradient on its way through the walk: a C++ tensor that no Python object references (what
// the compiled backward functions return), or a Python object (a root's gradient, what a Python
// backward function or hook returned, the list of gradients of a node with several outputs).
struct Grad {
  Tensor t;
  py::object obj;

  Grad() = default;
  explicit Grad(Tensor tensor) : t(std::move(tensor)) {}
  explicit Grad(py::object object) : obj(std::move(object)) {}

  explicit operator bool() const { return t.defined() || static_cast<bool>(obj); }
  bool is_tensor() const { return t.defined() || THPVariable_Check(obj.ptr()); }
  // The gradient as a Python object, which the caller then holds alone (a C++ tensor gets its
  // Python object now, as the Python walk's tensors have theirs).
  py::object take_py() {
    if (obj) return std::move(obj);
    return steal(THPVariable_Wrap(std::move(t)));
  }
  // The gradient as a tensor, given up by this Grad (is_tensor() must hold).
  Tensor take_tensor() {
    if (t.defined()) return std::move(t);
    Tensor tensor = THPVariable_Unpack(obj.ptr());
    obj = py::object();
    return tensor;
  }
};

// `prev + g` as the Python walk sums (torch's input buffer: old + new): the same add kernel.
Grad add_grads(Grad prev, Grad g) {
  if (prev.t.defined() && g.t.defined()) return Grad(at::add(prev.t, g.t));
  py::object a = prev.take_py(), b = g.take_py();
  return Grad(steal(PyNumber_Add(a.ptr(), b.ptr())));
}

// _engine._accumulate_leaf's common case: no hooks, a leaf that still requires grad, a gradient
// of the leaf's dtype. Stored as is when nothing else references it (no other Python reference
// to its object, no other owner of its tensor) and it has the leaf's layout, else a copy with the
// leaf's layout; later gradients are added in place. Returns false, having done nothing, outside
// that case (the Python function runs).
bool accumulate_leaf(PyObject* leaf_obj, Grad& g) {
  if (!THPVariable_Check(leaf_obj) || !g.is_tensor() || has_tensor_hooks(leaf_obj)) return false;
  const Tensor& leaf = THPVariable_Unpack(leaf_obj);
  const Tensor& grad = g.t.defined() ? g.t : THPVariable_Unpack(g.obj.ptr());
  if (grad.scalar_type() != leaf.scalar_type() || !leaf.requires_grad() ||
      !grad.sizes().equals(leaf.sizes()) || grad.device() != leaf.device() ||
      grad.layout() != leaf.layout()) {
    return false;  // the Python function (torch's checks and errors)
  }
  at::AutoGradMode no_grad(false);
  Tensor& old = leaf.mutable_grad();
  if (!old.defined()) {
    bool unshared = grad.use_count() == 1 && (!g.obj || Py_REFCNT(g.obj.ptr()) == 1);
    if (unshared && obeys_layout_contract(grad, leaf)) {
      old = grad.is_view() ? grad.detach() : grad;
    } else {
      old = clone_obey_contract(grad, leaf);
    }
  } else {
    old.add_(grad);
  }
  g = Grad();
  return true;
}

// _engine._check_saved's version test: the index of the first saved tensor whose version is
// not the one recorded, or -1.
int64_t first_changed(PyObject* saved, PyObject* versions) {
  if (!PyTuple_Check(saved) || !PyTuple_Check(versions)) return 0;
  auto n = std::min(PyTuple_GET_SIZE(saved), PyTuple_GET_SIZE(versions));
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* t = PyTuple_GET_ITEM(saved, i);
    if (!THPVariable_Check(t)) return static_cast<int64_t>(i);
    if (static_cast<int64_t>(THPVariable_Unpack(t)._version()) !=
        PyLong_AsLongLong(PyTuple_GET_ITEM(versions, i))) {
      return static_cast<int64_t>(i);
    }
  }
  return -1;
}

// What the engine needs from Python, as _engine.NATIVE_ENGINE passes it: the types of the
// graph, and the Python functions for what the compiled walk does not do itself.
struct Callbacks {
  PyTypeObject *node, *output, *tracked;
  PyObject *run_hooks, *check_saved, *leaf_ready, *seeds, *acc_hooks, *run_acc_hooks, *local;
  explicit Callbacks(const py::tuple& c) {
    if (c.size() != 10 || !PyDict_Check(c[7].ptr())) {
      throw std::invalid_argument("shimnn: engine callbacks");
    }
    node = reinterpret_cast<PyTypeObject*>(c[0].ptr());
    output = reinterpret_cast<PyTypeObject*>(c[1].ptr());
    tracked = reinterpret_cast<PyTypeObject*>(c[2].ptr());
    run_hooks = c[3].ptr();  // _engine._run_tensor_hooks(node, grad) -> grad
    check_saved = c[4].ptr();  // _engine._check_saved(node): raises torch's error
    leaf_ready = c[5].ptr();  // _engine._leaf_ready(leaf, [grad]): AccumulateGrad in Python
    seeds = c[6].ptr();  // _engine._SEEDS
    acc_hooks = c[7].ptr();  // _engine._ACCUMULATE_GRAD_HOOKS
    run_acc_hooks = c[8].ptr();  // _engine._run_accumulate_grad_hooks(leaf)
    local = c[9].ptr();  // _engine._callbacks: .stack, the final callbacks of each walk
  }
};

py::object call(PyObject* fn, std::initializer_list<PyObject*> args) {
  py::tuple tuple(args.size());
  Py_ssize_t i = 0;
  for (PyObject* a : args) {
    Py_INCREF(a);
    PyTuple_SET_ITEM(tuple.ptr(), i++, a);
  }
  return steal(PyObject_Call(fn, tuple.ptr(), nullptr));
}

// _engine._Walk for a backward without `inputs` (every reachable node runs, leaves accumulate)
// and without anomaly detection: its plan (_engine._reachable, _count_leaf_edges), send,
// no_gradient, leaf_ready, run and flush, the same steps in the same order, with the pending
// gradients held in C++ (a compiled node's gradients never become Python objects unless a hook or
// a Python function needs them).
class Engine {
 public:
  Engine(const Callbacks& cb, bool retain_graph) : cb_(cb), retain_graph_(retain_graph) {}

  // _engine._reachable and _count_leaf_edges, in their order: every node reachable from the
  // roots once (depth first, a node taken when popped); for each leaf edge of theirs, and each
  // root that is a leaf, one more gradient that leaf waits for.
  void plan(const std::vector<PyObject*>& root_edges) {
    static PyObject* inputs_name = PyUnicode_InternFromString("inputs");
    std::vector<py::object> stack, order;  // order: the inputs of each node, in _reachable's order
    std::unordered_set<PyObject*> seen;  // the graph keeps every node alive meanwhile
    for (PyObject* e : root_edges) {
      py::object node = node_of(e);
      if (node) stack.push_back(std::move(node));
    }
    while (!stack.empty()) {
      py::object node = std::move(stack.back());
      stack.pop_back();
      if (!seen.insert(node.ptr()).second) continue;
      py::object inputs = get_attr(node.ptr(), inputs_name);
      if (!PyTuple_Check(inputs.ptr())) throw std::invalid_argument("shimnn: Node.inputs");
      for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(inputs.ptr()); ++i) {
        py::object child = node_of(PyTuple_GET_ITEM(inputs.ptr(), i));
        if (child && seen.count(child.ptr()) == 0) stack.push_back(std::move(child));
      }
      order.push_back(std::move(inputs));
    }
    for (const py::object& inputs : order) {
      for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(inputs.ptr()); ++i) {
        count_leaf(PyTuple_GET_ITEM(inputs.ptr(), i));
      }
    }
    for (PyObject* e : root_edges) count_leaf(e);
  }

  // _Walk.send: the first gradient of a node is stored, later ones added (old + new); a leaf's
  // are summed until its last one has arrived.
  void send(PyObject* e, Grad g) {
    static PyObject* seq_name = PyUnicode_InternFromString("seq");
    static PyObject* node_name = PyUnicode_InternFromString("node");
    static PyObject* nr_name = PyUnicode_InternFromString("nr");
    static PyObject* outputs_name = PyUnicode_InternFromString("outputs");
    if (Py_TYPE(e) == cb_.node) {
      auto it = pending_.find(e);
      if (it == pending_.end()) {
        push(py::reinterpret_borrow<py::object>(e), std::move(g));
      } else {
        it->second.grad = add_grads(std::move(it->second.grad), std::move(g));
      }
    } else if (Py_TYPE(e) == cb_.output) {
      py::object node = get_attr(e, node_name);
      Py_ssize_t nr = PyLong_AsSsize_t(get_attr(e, nr_name).ptr());
      if (nr == -1 && PyErr_Occurred()) throw py::error_already_set();
      auto it = pending_.find(node.ptr());
      if (it == pending_.end()) {
        Py_ssize_t outputs = PyLong_AsSsize_t(get_attr(node.ptr(), outputs_name).ptr());
        if (outputs == -1 && PyErr_Occurred()) throw py::error_already_set();
        py::list grads(outputs);  // [None] * node.outputs
        for (Py_ssize_t i = 0; i < outputs; ++i) {
          Py_INCREF(Py_None);
          PyList_SET_ITEM(grads.ptr(), i, Py_None);
        }
        it = push(node, Grad(py::object(std::move(grads))));
      }
      PyObject* grads = it->second.grad.obj.ptr();
      if (nr < 0 || nr >= PyList_GET_SIZE(grads)) {
        PyErr_SetString(PyExc_IndexError, "list index out of range");
        throw py::error_already_set();
      }
      PyObject* prev = PyList_GET_ITEM(grads, nr);  // borrowed
      py::object value = g.take_py();
      if (prev != Py_None) value = steal(PyNumber_Add(prev, value.ptr()));
      PyList_SetItem(grads, nr, value.release().ptr());  // steals it
    } else {
      leaf_done(e, std::move(g));
    }
  }

  // _Walk.run, then _Walk.flush.
  void run() {
    static PyObject* hooks_name = PyUnicode_InternFromString("hooks");
    static PyObject* retained_name = PyUnicode_InternFromString("retained");
    static PyObject* backward_name = PyUnicode_InternFromString("backward");
    static PyObject* saved_name = PyUnicode_InternFromString("saved");
    static PyObject* versions_name = PyUnicode_InternFromString("versions");
    static PyObject* takes_retain_name = PyUnicode_InternFromString("takes_retain");
    static PyObject* inputs_name = PyUnicode_InternFromString("inputs");
    static PyTypeObject* chain_type =
        reinterpret_cast<PyTypeObject*>(py::type::of<Chain>().ptr());
    static PyTypeObject* mse_type =
        reinterpret_cast<PyTypeObject*>(py::type::of<MseLoss>().ptr());
    while (!heap_.empty()) {
      PyObject* key = heap_.top().second;
      heap_.pop();
      auto it = pending_.find(key);
      py::object node = std::move(it->second.node);
      Grad grad = std::move(it->second.grad);
      pending_.erase(it);
      if (truthy_attr(node.ptr(), hooks_name) || truthy_attr(node.ptr(), retained_name)) {
        grad = Grad(call(cb_.run_hooks, {node.ptr(), grad.take_py().ptr()}));
      }
      py::object backward = get_attr(node.ptr(), backward_name);
      py::object saved = get_attr(node.ptr(), saved_name);
      if (backward.is_none() || saved.is_none() ||
          first_changed(saved.ptr(), get_attr(node.ptr(), versions_name).ptr()) >= 0) {
        call(cb_.check_saved, {node.ptr()});  // raises torch's error
        backward = get_attr(node.ptr(), backward_name);
      }
      if (!retain_graph_ && is_true(saved.ptr())) {  // Node.release
        if (PyObject_SetAttr(node.ptr(), backward_name, Py_None) < 0 ||
            PyObject_SetAttr(node.ptr(), saved_name, Py_None) < 0) {
          throw py::error_already_set();
        }
      }
      saved = py::object();
      // The node's gradient is handed over, not kept here (a fused chain frees it once its
      // last layer has used it); a list this walk owns of what the backward returned.
      std::vector<Grad> grads;
      PyTypeObject* kind = Py_TYPE(backward.ptr());
      if ((kind == chain_type || kind == mse_type) && grad.is_tensor()) {
        // this module's own nodes: called directly, their gradients kept as C++ tensors
        std::vector<Tensor> out =
            kind == chain_type
                ? backward.cast<Chain&>().backward_tensors(grad.take_tensor(), retain_graph_)
                : backward.cast<MseLoss&>().backward_tensors(grad.take_tensor());
        grads.reserve(out.size());
        for (auto& t : out) grads.emplace_back(std::move(t));
      } else {
        py::object g = grad.take_py();
        py::object result =
            truthy_attr(node.ptr(), takes_retain_name)
                ? call(backward.ptr(), {g.ptr(), retain_graph_ ? Py_True : Py_False})
                : call(backward.ptr(), {g.ptr()});
        g = py::object();  // as the Python walk's `del grad`: the node's outputs are ours
        py::object list = steal(PySequence_List(result.ptr()));
        result = py::object();
        Py_ssize_t n = PyList_GET_SIZE(list.ptr());
        grads.reserve(n);
        for (Py_ssize_t i = 0; i < n; ++i) {
          PyObject* item = PyList_GET_ITEM(list.ptr(), i);
          if (item == Py_None) {
            grads.emplace_back();
            continue;
          }
          Py_INCREF(Py_None);
          PyList_SET_ITEM(list.ptr(), i, Py_None);  // the list's reference is now ours
          grads.emplace_back(py::reinterpret_steal<py::object>(item));
        }
      }
      backward = py::object();
      py::object edges = get_attr(node.ptr(), inputs_name);
      if (!PyTuple_Check(edges.ptr())) throw std::invalid_argument("shimnn: Node.inputs");
      Py_ssize_t n = std::min(PyTuple_GET_SIZE(edges.ptr()),
                              static_cast<Py_ssize_t>(grads.size()));
      for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject* e = PyTuple_GET_ITEM(edges.ptr(), i);
        if (e == Py_None) continue;
        if (!grads[i]) {
          // torch's undefined gradient: a leaf waits for one fewer
          if (Py_TYPE(e) != cb_.node && Py_TYPE(e) != cb_.output) leaf_done(e, Grad());
          continue;
        }
        send(e, std::move(grads[i]));
      }
    }
    flush();
  }

 private:
  struct Pending {
    py::object node;
    Grad grad;
  };
  struct Leaf {
    py::object leaf;
    long remaining = 0;
    Grad grad;
    bool arrived = false;  // a gradient came (its place in the flush order is taken)
  };

  std::unordered_map<PyObject*, Pending>::iterator push(py::object node, Grad g) {
    static PyObject* seq_name = PyUnicode_InternFromString("seq");
    long long seq = PyLong_AsLongLong(get_attr(node.ptr(), seq_name).ptr());
    if (seq == -1 && PyErr_Occurred()) throw py::error_already_set();
    PyObject* key = node.ptr();
    auto it = pending_.emplace(key, Pending{std::move(node), std::move(g)}).first;
    heap_.emplace(seq, key);  // the newest node runs first, as torch's engine runs them
    return it;
  }

  // _engine._node_of: the node an edge leads to, or null (None, a leaf).
  py::object node_of(PyObject* e) const {
    static PyObject* node_name = PyUnicode_InternFromString("node");
    if (Py_TYPE(e) == cb_.node) return py::reinterpret_borrow<py::object>(e);
    if (Py_TYPE(e) == cb_.output) return get_attr(e, node_name);
    return py::object();
  }

  // _count_leaf_edges for one edge: a leaf waits for one more gradient.
  void count_leaf(PyObject* e) {
    if (e == Py_None || Py_TYPE(e) == cb_.node || Py_TYPE(e) == cb_.output) return;
    Leaf& leaf = leaves_[e];
    if (!leaf.leaf) {
      leaf.leaf = py::reinterpret_borrow<py::object>(e);
      planned_.push_back(e);
    }
    ++leaf.remaining;
  }

  // _engine._run_accumulate_grad_hooks(leaf), where any hook on an AccumulateGrad exists.
  void accumulate_grad_hooks(const py::object& leaf) {
    if (PyDict_GET_SIZE(cb_.acc_hooks) > 0) call(cb_.run_acc_hooks, {leaf.ptr()});
  }

  // _Walk.send for a leaf, and _Walk.no_gradient (an undefined `g`): summed with the others;
  // once the last one has arrived, accumulated.
  void leaf_done(PyObject* e, Grad g) {
    auto it = leaves_.find(e);
    if (it == leaves_.end()) return;  // a leaf nobody asked for
    Leaf& leaf = it->second;
    if (g) {
      if (!leaf.grad) {
        leaf.grad = std::move(g);
        if (!leaf.arrived) {
          leaf.arrived = true;
          arrivals_.push_back(e);
        }
      } else {
        leaf.grad = add_grads(std::move(leaf.grad), std::move(g));
      }
    }
    if (--leaf.remaining > 0) return;
    py::object tensor = std::move(leaf.leaf);
    Grad grad = std::move(leaf.grad);
    leaves_.erase(it);
    if (grad) {
      leaf_ready(tensor, std::move(grad));
    } else {
      accumulate_grad_hooks(tensor);  // torch runs AccumulateGrad, with no gradient
    }
  }

  // _engine._leaf_ready (AccumulateGrad, then the hooks on it): the common case here, the
  // others in Python.
  void leaf_ready(const py::object& leaf, Grad g) {
    if (accumulate_leaf(leaf.ptr(), g)) {
      accumulate_grad_hooks(leaf);
      return;
    }
    py::list box(1);
    PyList_SET_ITEM(box.ptr(), 0, g.take_py().release().ptr());  // the box holds it alone
    call(cb_.leaf_ready, {leaf.ptr(), box.ptr()});
  }

  // _Walk.flush: leaves still waiting (a node on their path got no gradient) get what did
  // arrive, in the order their first gradient came.
  void flush() {
    for (PyObject* e : arrivals_) {
      auto it = leaves_.find(e);
      if (it == leaves_.end() || !it->second.grad) continue;
      py::object tensor = std::move(it->second.leaf);
      Grad grad = std::move(it->second.grad);
      leaves_.erase(it);
      leaf_ready(tensor, std::move(grad));
    }
    if (PyDict_GET_SIZE(cb_.acc_hooks) == 0) return;
    // Leaves that no gradient reached: torch's engine still runs their AccumulateGrad.
    for (PyObject* e : planned_) {
      auto it = leaves_.find(e);
      if (it == leaves_.end()) continue;
      py::object tensor = std::move(it->second.leaf);
      leaves_.erase(it);
      accumulate_grad_hooks(tensor);
    }
  }

  const Callbacks& cb_;
  bool retain_graph_;
  std::unordered_map<PyObject*, Pending> pending_;  // node -> its gradient (a list: several)
  std::priority_queue<std::pair<long long, PyObject*>> heap_;  // (sequence number, node)
  std::unordered_map<PyObject*, Leaf> leaves_;
  std::vector<PyObject*> arrivals_;
  std::vector<PyObject*> planned_;  // the leaves in the order the plan met them
};

// Sets grad mode off and torch function dispatch for subclasses off (_graph.no_dispatch), as
// _engine._run does around a walk; restored after.
struct WalkGuards {
  at::AutoGradMode no_grad{false};
  at::impl::TorchFunctionDisabledState previous = at::impl::PythonTorchFunctionTLS::get_disabled_state();
  WalkGuards() {
    if (previous == at::impl::TorchFunctionDisabledState::ENABLED) {
      at::impl::PythonTorchFunctionTLS::set_disabled_state(
          at::impl::TorchFunctionDisabledState::SUBCLASSES_DISABLED);
    }
  }
  ~WalkGuards() { at::impl::PythonTorchFunctionTLS::set_disabled_state(previous); }
};

// _engine._run's final callbacks (queue_callback) for a walk run from C++: a list of its own on
// _callbacks.stack while it runs; run() calls them in the order queued (one may queue more).
class FinalCallbacks {
 public:
  explicit FinalCallbacks(PyObject* local) {
    static PyObject* stack_name = PyUnicode_InternFromString("stack");
    PyObject* stack = PyObject_GetAttr(local, stack_name);
    if (stack == nullptr) {
      if (!PyErr_ExceptionMatches(PyExc_AttributeError)) throw py::error_already_set();
      PyErr_Clear();
      stack = PyList_New(0);
      if (stack == nullptr || PyObject_SetAttr(local, stack_name, stack) < 0) {
        Py_XDECREF(stack);
        throw py::error_already_set();
      }
    }
    stack_ = steal(stack);
    if (!PyList_Check(stack_.ptr())) throw std::invalid_argument("shimnn: _callbacks.stack");
    if (PyList_Append(stack_.ptr(), callbacks_.ptr()) < 0) throw py::error_already_set();
  }
  FinalCallbacks(const FinalCallbacks&) = delete;
  FinalCallbacks& operator=(const FinalCallbacks&) = delete;

  void run() {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(callbacks_.ptr()); ++i) {
      py::object callback = py::reinterpret_borrow<py::object>(PyList_GET_ITEM(callbacks_.ptr(), i));
      steal(PyObject_CallNoArgs(callback.ptr()));
    }
  }

  ~FinalCallbacks() {  // stack.pop(), whatever else is under way
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    Py_ssize_t n = PyList_GET_SIZE(stack_.ptr());
    if (n > 0 && PyList_SetSlice(stack_.ptr(), n - 1, n, nullptr) < 0) PyErr_Clear();
    PyErr_Restore(type, value, traceback);
  }

 private:
  py::object stack_;
  py::list callbacks_;
};

// _engine._run's walk for a backward without `inputs` and without anomaly detection, roots'
// gradients given (the list is emptied: the walk holds them alone).
void backward(const py::list& root_edges, const py::list& root_grads, bool retain_graph,
              const py::tuple& callbacks) {
  Callbacks cb(callbacks);
  WalkGuards guards;
  Engine engine(cb, retain_graph);
  std::vector<PyObject*> edges;
  for (py::handle e : root_edges) edges.push_back(e.ptr());
  engine.plan(edges);
  Py_ssize_t n = std::min(PyList_GET_SIZE(root_edges.ptr()), PyList_GET_SIZE(root_grads.ptr()));
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* g = PyList_GET_ITEM(root_grads.ptr(), i);
    Py_INCREF(Py_None);
    PyList_SET_ITEM(root_grads.ptr(), i, Py_None);  // the list's reference is now ours
    engine.send(edges[i], Grad(py::reinterpret_steal<py::object>(g)));
  }
  engine.run();
}

// _engine._seed / _recycle for a 0-d CPU root: a ones from the pool, or a new one.
py::object take_seed(const Callbacks& cb, const Tensor& root) {
  PyObject* dtype = reinterpret_cast<PyObject*>(torch::getTHPDtype(root.scalar_type()));
  PyObject* pool = PyDict_GetItemWithError(cb.seeds, dtype);  // borrowed
  if (pool == nullptr && PyErr_Occurred()) throw py::error_already_set();
  if (pool != nullptr && PyList_Check(pool) && PyList_GET_SIZE(pool) > 0) {
    Py_ssize_t last = PyList_GET_SIZE(pool) - 1;
    py::object seed = py::reinterpret_borrow<py::object>(PyList_GET_ITEM(pool, last));
    if (PyList_SetSlice(pool, last, last + 1, nullptr) < 0) throw py::error_already_set();
    return seed;
  }
  return steal(THPVariable_Wrap(at::ones({}, root.options())));
}

void recycle_seed(const Callbacks& cb, py::object seed, int64_t version) {
  const Tensor& t = THPVariable_Unpack(seed.ptr());
  // nothing references it (its object, its tensor, its memory) and nothing modified it
  if (Py_REFCNT(seed.ptr()) != 1 || t.use_count() != 1 || t.storage().use_count() != 1 ||
      static_cast<int64_t>(t._version()) != version) {
    return;
  }
  PyObject* dtype = reinterpret_cast<PyObject*>(torch::getTHPDtype(t.scalar_type()));
  PyObject* pool = PyDict_GetItemWithError(cb.seeds, dtype);  // borrowed
  if (pool == nullptr) {
    if (PyErr_Occurred()) throw py::error_already_set();
    py::list fresh;
    if (PyDict_SetItem(cb.seeds, dtype, fresh.ptr()) < 0) throw py::error_already_set();
    pool = fresh.ptr();  // the dict holds it
  }
  if (PyList_Append(pool, seed.ptr()) < 0) throw py::error_already_set();
}

// TrackedTensor.backward() of a loss: _engine.tensor_backward -> backward -> _run for a root
// that is a 0-d floating CPU TrackedTensor with a node of one output (not a view, no gradient
// given, no `inputs`; the caller checks that anomaly detection is off): its seed, the walk, the
// seed recycled. Returns false, having done nothing, outside that case.
bool backward_root(const py::handle& root, bool retain_graph, const py::tuple& callbacks) {
  static PyObject* node_name = PyUnicode_InternFromString("_node");
  static PyObject* view_name = PyUnicode_InternFromString("_view_version");
  static PyObject* outputs_name = PyUnicode_InternFromString("outputs");
  Callbacks cb(callbacks);
  if (Py_TYPE(root.ptr()) != cb.tracked) return false;
  const Tensor& t = THPVariable_Unpack(root.ptr());
  if (t.dim() != 0 || !t.is_cpu() || !at::isFloatingType(t.scalar_type())) return false;
  py::object node = get_attr(root.ptr(), node_name);
  if (Py_TYPE(node.ptr()) != cb.node || !get_attr(node.ptr(), outputs_name).is_none() ||
      !get_attr(root.ptr(), view_name).is_none()) {
    return false;
  }
  py::object seed = take_seed(cb, t);
  int64_t version = THPVariable_Unpack(seed.ptr())._version();
  {
    WalkGuards guards;
    FinalCallbacks callbacks(cb.local);
    Engine engine(cb, retain_graph);
    engine.plan({node.ptr()});
    engine.send(node.ptr(), Grad(seed));
    engine.run();
    callbacks.run();
  }
  recycle_seed(cb, std::move(seed), version);
  return true;
}

// ---------------------------------------------------------------------------------------------
// Module calls: torch's Module.__call__ (no hook: straight to forward) of a fused Sequential
// and of MSELoss, with what their forward does, in one call
// ---------------------------------------------------------------------------------------------

// What the compiled module calls take from Python, as modules.module.NATIVE_CALLS passes it.
struct CallContext {
  PyTypeObject *tracked, *node, *sequential, *mse_loss;
  PyObject *module_globals, *refuse_recording_modes, *refuse_transforms, *edge;
  PyObject *forward_ad_globals, *functorch_active, *any_autocast;
  explicit CallContext(const py::tuple& c) {
    if (c.size() != 11) throw std::invalid_argument("shimnn: call context");
    tracked = reinterpret_cast<PyTypeObject*>(c[0].ptr());
    node = reinterpret_cast<PyTypeObject*>(c[1].ptr());
    sequential = reinterpret_cast<PyTypeObject*>(c[2].ptr());
    mse_loss = reinterpret_cast<PyTypeObject*>(c[3].ptr());
    module_globals = c[4].ptr();  // vars(torch.nn.modules.module): the global hooks
    refuse_recording_modes = c[5].ptr();  // _graph.refuse_recording_modes
    refuse_transforms = c[6].ptr();  // _graph.refuse_transforms
    edge = c[7].ptr();  // _graph.edge
    forward_ad_globals = c[8].ptr();  // vars(torch.autograd.forward_ad): _current_level
    functorch_active = c[9].ptr();  // torch._C._are_functorch_transforms_active
    any_autocast = c[10].ptr();  // torch._C._is_any_autocast_enabled
  }
};

// _graph.refuse_recording_modes (`recording`) or refuse_transforms: their tests, and where one
// of their modes is on, the Python function itself, which raises its error.
void refuse_modes(const CallContext& cx, bool recording) {
  static PyObject* level_key = PyUnicode_InternFromString("_current_level");
  PyObject* level = PyDict_GetItem(cx.forward_ad_globals, level_key);  // borrowed
  bool on = level == nullptr || !PyLong_Check(level) || PyLong_AsLong(level) >= 0 ||
            is_true(call(cx.functorch_active, {}).ptr()) ||
            (recording && is_true(call(cx.any_autocast, {}).ptr()));
  if (on) call(recording ? cx.refuse_recording_modes : cx.refuse_transforms, {});
}

// Sets torch function dispatch for subclasses off (_graph.no_dispatch) while it lives.
struct NoDispatch {
  at::impl::TorchFunctionDisabledState previous =
      at::impl::PythonTorchFunctionTLS::get_disabled_state();
  NoDispatch() {
    if (previous == at::impl::TorchFunctionDisabledState::ENABLED) {
      at::impl::PythonTorchFunctionTLS::set_disabled_state(
          at::impl::TorchFunctionDisabledState::SUBCLASSES_DISABLED);
    }
  }
  ~NoDispatch() { at::impl::PythonTorchFunctionTLS::set_disabled_state(previous); }
  NoDispatch(const NoDispatch&) = delete;
  NoDispatch& operator=(const NoDispatch&) = delete;
};

// torch's Module.__call__ takes its fast path (_wrapped_call_impl, then _call_impl without
// hooks: forward) and so does shimnn's Module._call_impl: not compiled (torch.compile), no hook
// on the module, no global module hook, no tracing.
bool plain_call(const CallContext& cx, PyObject* module) {
  static PyObject* global_keys[] = {
      PyUnicode_InternFromString("_global_forward_hooks"),
      PyUnicode_InternFromString("_global_forward_pre_hooks"),
      PyUnicode_InternFromString("_global_backward_hooks"),
      PyUnicode_InternFromString("_global_backward_pre_hooks")};
  static PyObject* compiled_key = PyUnicode_InternFromString("_compiled_call_impl");
  if (torch::jit::tracer::isTracing()) return false;
  PyObject** dict_ptr = _PyObject_GetDictPtr(module);
  PyObject* dict = dict_ptr ? *dict_ptr : nullptr;
  if (dict == nullptr) return false;
  PyObject* compiled = PyDict_GetItem(dict, compiled_key);  // borrowed
  if (compiled != nullptr && compiled != Py_None) return false;
  if (has_module_hooks(dict)) return false;
  for (PyObject* key : global_keys) {
    if (dict_entry_truthy(cx.module_globals, key)) return false;
  }
  return true;
}

// _graph.record / wrap's TrackedTensor for a kernel result: Tensor._make_subclass's non-view
// alias sharing storage and version counter (its metadata changeable), as a TrackedTensor.
py::object make_tracked(const CallContext& cx, const Tensor& result) {
  Tensor alias = result.detach();
  alias.unsafeGetTensorImpl()->set_allow_tensor_metadata_change(true);
  return steal(THPVariable_Wrap(alias, cx.tracked));
}

// _graph.record: the TrackedTensor of `result` whose node is Node(name, backward, inputs,
// saved, versions); `takes_retain` as the caller sets it.
py::object record_node(const CallContext& cx, const Tensor& result, PyObject* name,
                       const py::object& backward, const py::object& inputs,
                       const py::object& saved, const py::object& versions, bool takes_retain) {
  static PyObject* node_key = PyUnicode_InternFromString("_node");
  static PyObject* takes_retain_key = PyUnicode_InternFromString("takes_retain");
  py::object out = make_tracked(cx, result);
  py::object node = call(reinterpret_cast<PyObject*>(cx.node),
                         {name, backward.ptr(), inputs.ptr(), saved.ptr(), versions.ptr()});
  if (takes_retain && PyObject_SetAttr(node.ptr(), takes_retain_key, Py_True) < 0) {
    throw py::error_already_set();
  }
  if (PyObject_SetAttr(out.ptr(), node_key, node.ptr()) < 0) throw py::error_already_set();
  return out;
}

// _graph.edge under no_dispatch: the common cases here (a plain tensor that needs no gradient
// and is no view, a TrackedTensor of a one-output node that is no view), the rest in Python.
py::object edge_of_input(const CallContext& cx, PyObject* t) {
  static PyObject* node_key = PyUnicode_InternFromString("_node");
  static PyObject* view_key = PyUnicode_InternFromString("_view_version");
  static PyObject* outputs_key = PyUnicode_InternFromString("outputs");
  if (Py_TYPE(t) == reinterpret_cast<PyTypeObject*>(THPVariableClass)) {
    const Tensor& tensor = THPVariable_Unpack(t);
    if (!tensor.requires_grad()) {
      if (!tensor.is_view()) return py::none();
      // a view joins its base's graph only if the base is a TrackedTensor (edge: view_of)
      py::object base = steal(THPVariable_Wrap(tensor._base()));
      if (Py_TYPE(base.ptr()) != cx.tracked) return py::none();
    }
  } else if (Py_TYPE(t) == cx.tracked) {
    py::object node = get_attr(t, node_key);
    if (Py_TYPE(node.ptr()) == cx.node && get_attr(t, view_key).is_none() &&
        get_attr(node.ptr(), outputs_key).is_none()) {
      return node;
    }
  }
  NoDispatch no_dispatch;
  return call(cx.edge, {t});
}

// Sequential.__call__(input) for a Sequential whose plan _chain._chain_plan has cached (all its
// children matrix fast-path layers): Module.__call__ -> _call_impl -> Sequential.forward ->
// _chain.run -> _native_chain -> record. Returns NotImplemented where that case does not hold,
// having done nothing (the Python path then runs, and raises what is to be raised).
py::object chain_call(const CallContext& cx, const py::handle& seq, const py::handle& input) {
  static PyObject* plan_key = PyUnicode_InternFromString("_shim_chain_types");
  static PyObject* modules_key = PyUnicode_InternFromString("_modules");
  py::object not_here = py::reinterpret_borrow<py::object>(Py_NotImplemented);
  if (Py_TYPE(seq.ptr()) != cx.sequential || !THPVariable_Check(input.ptr()) ||
      !plain_call(cx, seq.ptr())) {
    return not_here;
  }
  const Tensor& x = THPVariable_Unpack(input.ptr());
  if (x.dim() != 2 || !x.is_cpu()) return not_here;
  // _chain_plan's cache: (children, all shimnn layers, their kinds), for these same children
  PyObject* dict = *_PyObject_GetDictPtr(seq.ptr());
  PyObject* plan = PyDict_GetItem(dict, plan_key);  // borrowed
  PyObject* modules = PyDict_GetItem(dict, modules_key);  // borrowed
  if (plan == nullptr || modules == nullptr || !PyTuple_Check(plan) ||
      PyTuple_GET_SIZE(plan) != 3 || !PyDict_Check(modules)) {
    return not_here;
  }
  PyObject* layers = PyTuple_GET_ITEM(plan, 0);
  PyObject* kinds_obj = PyTuple_GET_ITEM(plan, 2);
  if (!PyTuple_Check(layers) || !PyTuple_Check(kinds_obj) ||
      PyTuple_GET_SIZE(layers) != PyDict_GET_SIZE(modules)) {
    return not_here;
  }
  Py_ssize_t pos = 0, i = 0;
  PyObject *key, *value;
  while (PyDict_Next(modules, &pos, &key, &value)) {
    if (PyTuple_GET_ITEM(layers, i++) != value) return not_here;  // changed children
  }
  std::vector<int64_t> kinds;
  for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(kinds_obj); ++k) {
    kinds.push_back(PyLong_AsLongLong(PyTuple_GET_ITEM(kinds_obj, k)));
  }
  bool grad_mode = at::GradMode::is_enabled();
  refuse_modes(cx, grad_mode);  // may raise
  py::object e_input = grad_mode ? edge_of_input(cx, input.ptr()) : py::none();
  py::object result;
  try {
    result = chain_forward(py::reinterpret_borrow<py::tuple>(layers), kinds, x, e_input,
                           grad_mode);
  } catch (py::error_already_set&) {
    return not_here;  // the Python path raises it, naming the layer
  } catch (const std::exception&) {
    return not_here;
  }
  if (!PyTuple_Check(result.ptr())) return not_here;  // False (unfusable) or None
  const Tensor& out = THPVariable_Unpack(PyTuple_GET_ITEM(result.ptr(), 0));
  py::object backward = py::reinterpret_borrow<py::object>(PyTuple_GET_ITEM(result.ptr(), 1));
  if (backward.is_none()) return make_tracked(cx, out);
  return record_node(cx, out, PyTuple_GET_ITEM(result.ptr(), 5), backward,
                     py::reinterpret_borrow<py::object>(PyTuple_GET_ITEM(result.ptr(), 2)),
                     py::reinterpret_borrow<py::object>(PyTuple_GET_ITEM(result.ptr(), 3)),
                     py::reinterpret_borrow<py::object>(PyTuple_GET_ITEM(result.ptr(), 4)),
                     true);
}

// MSELoss.__call__(input, target): Module.__call__ -> _call_impl -> MSELoss.forward ->
// ops.loss.mse_loss (its compiled case: same shapes, one floating dtype, CPU) -> record, or under
// no_grad (or with nothing needing a gradient) the plain loss wrapped. Returns NotImplemented
// where that case does not hold, having done nothing.
py::object mse_call(const CallContext& cx, const py::handle& module, const py::handle& input,
                    const py::handle& target) {
  static PyObject* reduction_key = PyUnicode_InternFromString("reduction");
  static PyObject* name = PyUnicode_InternFromString("MseLossBackward0");
  py::object not_here = py::reinterpret_borrow<py::object>(Py_NotImplemented);
  if (Py_TYPE(module.ptr()) != cx.mse_loss || !THPVariable_Check(input.ptr()) ||
      !THPVariable_Check(target.ptr()) || !plain_call(cx, module.ptr())) {
    return not_here;
  }
  PyObject* dict = *_PyObject_GetDictPtr(module.ptr());
  PyObject* reduction_obj = PyDict_GetItem(dict, reduction_key);  // borrowed
  if (reduction_obj == nullptr || !PyUnicode_Check(reduction_obj)) return not_here;
  int64_t reduction;
  if (PyUnicode_CompareWithASCIIString(reduction_obj, "mean") == 0) {
    reduction = 1;
  } else if (PyUnicode_CompareWithASCIIString(reduction_obj, "sum") == 0) {
    reduction = 2;
  } else if (PyUnicode_CompareWithASCIIString(reduction_obj, "none") == 0) {
    reduction = 0;
  } else {
    return not_here;  // the Python path raises torch's error
  }
  const Tensor& x = THPVariable_Unpack(input.ptr());
  const Tensor& y = THPVariable_Unpack(target.ptr());
  if (!x.sizes().equals(y.sizes()) || x.scalar_type() != y.scalar_type() ||
      !at::isFloatingType(x.scalar_type()) || !x.is_cpu() || !y.is_cpu()) {
    return not_here;  // a warning to give, a cast, another device: the Python path
  }
  py::object e_input = py::none(), e_target = py::none();
  bool grad_mode = at::GradMode::is_enabled();
  if (grad_mode) {
    e_input = edge_of_input(cx, input.ptr());
    e_target = edge_of_input(cx, target.ptr());
  }
  if (e_input.is_none() && e_target.is_none()) {
    refuse_modes(cx, false);  // wrap()
    return make_tracked(cx, at::mse_loss(x, y, reduction));
  }
  refuse_modes(cx, true);  // record()
  py::object result = mse_loss_forward(x, y, reduction, !e_input.is_none(), !e_target.is_none());
  if (result.is_none()) return not_here;
  py::tuple inputs = py::make_tuple(e_input, e_target);
  return record_node(cx, THPVariable_Unpack(PyTuple_GET_ITEM(result.ptr(), 0)), name,
                     py::reinterpret_borrow<py::object>(PyTuple_GET_ITEM(result.ptr(), 1)),
                     inputs,
                     py::reinterpret_borrow<py::object>(PyTuple_GET_ITEM(result.ptr(), 2)),
                     py::reinterpret_borrow<py::object>(PyTuple_GET_ITEM(result.ptr(), 3)),
                     false);
}

// modules.module.Module.__call__ of a module whose class has a compiled call (exact types:
// a subclass may override forward): NotImplemented where the Python path must run.
py::object module_call(const py::handle& module, const py::tuple& args,
                       const py::tuple& context) {
  CallContext cx(context);
  PyTypeObject* type = Py_TYPE(module.ptr());
  if (type == cx.sequential && args.size() == 1) return chain_call(cx, module, args[0]);
  if (type == cx.mse_loss && args.size() == 2) return mse_call(cx, module, args[0], args[1]);
  return py::reinterpret_borrow<py::object>(Py_NotImplemented);
}

// The optimizers' compiled case for one parameter: float32/float64 on CPU with a dense
// gradient of its dtype.
bool float_cpu_dense(const Tensor& p, const Tensor& g) {
  auto dtype = p.scalar_type();
  return p.is_cpu() && g.is_cpu() && g.layout() == at::kStrided &&
         (dtype == at::kFloat || dtype == at::kDouble) && g.scalar_type() == dtype &&
         !p.is_inference() && !g.is_inference();
}

// The optimizers' kernels run below the autograd dispatch keys (whose work grad mode off makes
// a no-op), so an in-place kernel's version bump, which torch's in-place dispatch makes once per
// call and tensor, is made here: bumped(t) after each in-place call on t.
void bumped(const Tensor& t) { t.unsafeGetTensorImpl()->bump_version(); }

// torch.nn.utils.clip_grad_norm_ (foreach None, error_if_nonfinite False) where every gradient
// is a dense CPU float32/float64 torch.Tensor of one dtype: torch's kernels in its order (one
// device and dtype group: _foreach_norm, stack, linalg.vector_norm; max_norm / (norm + 1e-6) as
// Tensor.__rtruediv__ computes it, reciprocal then mul; clamp(max=1), _foreach_mul_), in grad
// mode off. Returns the total norm, or None, having done nothing, outside that case.
py::object clip_grad_norm(const py::list& params, double max_norm, double norm_type) {
  std::vector<Tensor> grads;
  for (py::handle obj : params) {
    if (!THPVariable_Check(obj.ptr())) return py::none();
    const Tensor& g = THPVariable_Unpack(obj.ptr()).grad();
    if (!g.defined()) continue;
    auto dtype = g.scalar_type();
    if (!g.is_cpu() || g.layout() != at::kStrided || (dtype != at::kFloat && dtype != at::kDouble) ||
        (!grads.empty() && dtype != grads[0].scalar_type())) {
      return py::none();
    }
    py::object wrapped = py::cast(g);  // its Python object: torch's foreach path wants a plain one
    if (Py_TYPE(wrapped.ptr()) != reinterpret_cast<PyTypeObject*>(THPVariableClass)) {
      return py::none();
    }
    grads.push_back(g);
  }
  if (grads.empty()) return py::none();
  Tensor total;
  {
    py::gil_scoped_release no_gil;
    at::AutoGradMode no_grad(false);
    std::vector<Tensor> norms = at::_foreach_norm(grads, norm_type);
    total = at::linalg_vector_norm(at::stack(norms), norm_type);
    Tensor coef = at::mul(at::reciprocal(at::add(total, 1e-6)), max_norm);
    at::_foreach_mul_(grads, at::clamp(coef, c10::nullopt, 1.0));
  }
  return py::cast(std::move(total));
}

// The kernels of optim.sgd.sgd's CPU path (torch's single-tensor SGD: torch._foreach_* run
// torch's per-tensor kernels on CPU) for dense float32/float64 tensors of one dtype; undefined
// buffers are created (first step). Kernels only: the caller bumps versions.
void sgd_aten(at::TensorList params, at::TensorList grads, c10::SmallVectorImpl<Tensor>& bufs,
              double lr, double momentum, double dampening, double weight_decay, bool nesterov,
              bool maximize) {
  at::AutoGradMode no_grad(false);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  std::vector<Tensor> g = grads.vec();
  if (maximize) g = at::_foreach_neg(g);
  if (weight_decay != 0) g = at::_foreach_add(g, params, weight_decay);
  if (momentum != 0) {
    bool all_bufs =
        std::all_of(bufs.begin(), bufs.end(), [](const Tensor& b) { return b.defined(); });
    if (all_bufs) {
      // optimizer._foreach_mul_: the momentum as a 0-d tensor of the buffers' dtype (the
      // last one made is kept, as optimizer._SCALARS keeps it; the GIL guards it).
      // float32, float64; never destroyed (a static tensor would be freed at exit after
      // torch's allocator may be gone)
      static auto* cached = new std::pair<double, Tensor>[2];
      auto dtype = params[0].scalar_type();
      auto& [value, scalar] = cached[dtype == at::kDouble];
      if (!scalar.defined() || value != momentum) {
        value = momentum;
        scalar = at::scalar_tensor(momentum, at::TensorOptions().dtype(dtype));
      }
      at::_foreach_mul_(bufs, scalar);
      at::_foreach_add_(bufs, g, 1 - dampening);
    } else {
      for (size_t i = 0; i < bufs.size(); ++i) {
        if (!bufs[i].defined()) {
          bufs[i] = g[i].detach().clone();
        } else {
          bufs[i].mul_(momentum).add_(g[i], 1 - dampening);
        }
      }
    }
    g = nesterov ? at::_foreach_add(g, bufs, momentum)
                 : std::vector<Tensor>(bufs.begin(), bufs.end());
  }
  at::_foreach_add_(params, g, -lr);
}

// f(begin, end) over [0, n): in one call up to ATen's grain size, above it split across
// threads as ATen splits its kernels (the loops' values do not depend on the split).
template <typename F>
void split(int64_t n, const F& f) {
  if (n <= at::internal::GRAIN_SIZE) {
    f(0, n);
  } else {
    at::parallel_for(0, n, at::internal::GRAIN_SIZE, f);
  }
}

// The fused loops (fused.h) can take these tensors (groups of `per_param`, the parameter first;
// undefined ones skipped): each loopable like its parameter, and no two of them sharing memory
// (each element then depends on its own index only, as in the kernels' passes).
bool fusable(c10::ArrayRef<const Tensor*> tensors, size_t per_param) {
  if (!loops_allowed()) return false;
  c10::SmallVector<const void*, 64> storages;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = *tensors[i];
    if (!t.defined()) continue;
    if (!loopable(t, *tensors[i - i % per_param])) return false;
    storages.push_back(t.storage().unsafeGetStorageImpl());
  }
  std::sort(storages.begin(), storages.end());
  return std::adjacent_find(storages.begin(), storages.end()) == storages.end();
}

// Hyper-parameters the verification also uses beside the caller's: values whose products round
// (a power of two or one would hide a rounding a formula does differently).
constexpr double kGenericLr = 0.0731, kGenericMomentum = 0.8317, kGenericDampening = 0.2913,
                 kGenericDecay = 0.0173;

template <typename T>
bool sgd_fused_matches(const shimnn_fused::SgdFlags& f, double lr, double momentum,
                       double dampening, double weight_decay, shimnn_fused::SgdLoop<T> loop) {
  if (loop == nullptr) return false;
  shimnn_fused::TestValues values(static_cast<uint64_t>(f.key()) + 1);
  for (int round = 0; round < 2; ++round) {
    double lr_ = round ? lr : kGenericLr;
    double mom = round ? momentum : kGenericMomentum;
    double damp = round ? dampening : kGenericDampening;
    double wd = round ? weight_decay : kGenericDecay;
    if (f.momentum == 0) mom = 0;
    if (!f.decay) wd = 0;
    shimnn_fused::SgdScalars<T> s{T(wd), T(mom), T(1 - damp), T(-lr_)};
    for (int64_t n : verification_lengths()) {
      Tensor p = test_tensor<T>(values, n, -4, 4), g = test_tensor<T>(values, n, -6, 2);
      Tensor b = f.momentum == 2 ? test_tensor<T>(values, n, -6, 2) : Tensor();
      std::vector<Tensor> ref_p{p.clone()};
      c10::SmallVector<Tensor, 1> ref_b{b.defined() ? b.clone() : Tensor()};
      sgd_aten(ref_p, {g}, ref_b, lr_, mom, damp, wd, f.nesterov, f.maximize);
      Tensor out_b = f.momentum == 2 ? b.clone() : (f.momentum == 1 ? at::empty_like(p) : Tensor());
      Tensor out_p = p.clone();
      loop(out_p.data_ptr<T>(), g.data_ptr<T>(), out_b.defined() ? out_b.data_ptr<T>() : nullptr,
           n, s);
      if (!same_tensors(out_p, ref_p[0]) || (out_b.defined() && !same_tensors(out_b, ref_b[0]))) {
        return false;
      }
    }
  }
  return true;
}

// One group's SGD update with the fused loops (each parameter's buffer created or updated and
// the parameter updated in one pass); false, having changed nothing, where the verification of
// a configuration failed.
template <typename T>
bool sgd_fused(at::TensorList params, at::TensorList grads, c10::SmallVectorImpl<Tensor>& bufs,
               double lr, double momentum, double dampening, double weight_decay, bool nesterov,
               bool maximize) {
  static std::unordered_map<int64_t, bool> seen;  // the GIL guards it
  c10::SmallVector<shimnn_fused::SgdLoop<T>, 16> loops(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    shimnn_fused::SgdFlags f{maximize, weight_decay != 0, nesterov && momentum != 0,
                             momentum == 0 ? 0 : (bufs[i].defined() ? 2 : 1)};
    const char* family = std::is_same_v<T, float> ? "sgd float32" : "sgd float64";
    bool ok = verified(seen, family, f.key(), [&] {
      return sgd_fused_matches<T>(f, lr, momentum, dampening, weight_decay,
                                  shimnn_fused::sgd_loop_for<T>(f));
    });
    if (!ok) return false;
    loops[i] = shimnn_fused::sgd_loop_for<T>(f);
  }
  shimnn_fused::SgdScalars<T> s{T(weight_decay), T(momentum), T(1 - dampening), T(-lr)};
  for (size_t i = 0; i < params.size(); ++i) {
    if (momentum != 0 && !bufs[i].defined()) bufs[i] = at::empty_like(grads[i]);
    T* buf = momentum != 0 ? bufs[i].data_ptr<T>() : nullptr;
    T* p = params[i].data_ptr<T>();
    const T* g = grads[i].data_ptr<T>();
    auto loop = loops[i];
    split(params[i].numel(), [&](int64_t a, int64_t b) {
      loop(p + a, g + a, buf ? buf + a : nullptr, b - a, s);
    });
  }
  return true;
}

// optim.sgd.SGD._step_group + optim.sgd.sgd for a group on CPU with torch's default
// single-tensor path (foreach None/False), dense float32/float64 gradients: torch's kernels'
// values (the fused loops where verified, else the same kernels in the same order), versions
// bumped as torch's in-place calls bump them. Returns False, having changed nothing, where
// that case does not hold: the Python path then runs.
bool sgd_step(const py::list& group_params, const py::object& state, double lr, double momentum,
              double dampening, double weight_decay, bool nesterov, bool maximize) {
  static const py::str buffer_key("momentum_buffer");
  c10::SmallVector<Tensor, 16> params, grads;
  c10::SmallVector<PyObject*, 16> owners;
  for (py::handle obj : group_params) {
    if (!THPVariable_Check(obj.ptr())) return false;
    const Tensor& p = THPVariable_Unpack(obj.ptr());
    const Tensor& g = p.grad();
    if (!g.defined()) continue;
    if (!float_cpu_dense(p, g)) return false;
    params.push_back(p);
    grads.push_back(g);
    owners.push_back(obj.ptr());
  }
  if (params.empty()) return true;
  auto dtype = params[0].scalar_type();
  for (const auto& p : params) {
    if (p.scalar_type() != dtype) return false;
  }
  c10::SmallVector<py::object, 16> states;
  c10::SmallVector<Tensor, 16> bufs(params.size());
  if (momentum != 0) {
    for (size_t i = 0; i < owners.size(); ++i) {
      PyObject* owner = owners[i];
      // state[p] (a defaultdict: a missing entry is created), then .get("momentum_buffer")
      PyObject* found = PyDict_Check(state.ptr()) ? PyDict_GetItem(state.ptr(), owner) : nullptr;
      py::object s = found ? py::reinterpret_borrow<py::object>(found)
                           : py::object(state[py::handle(owner)]);
      if (!PyDict_Check(s.ptr())) return false;
      PyObject* buf = PyDict_GetItem(s.ptr(), buffer_key.ptr());  // borrowed
      if (buf != nullptr && buf != Py_None) {
        if (!THPVariable_Check(buf)) return false;
        bufs[i] = THPVariable_Unpack(buf);
      }
      states.push_back(std::move(s));
    }
  }
  c10::SmallVector<bool, 16> updated(bufs.size());  // a buffer updated in place (mul_, add_)
  for (size_t i = 0; i < bufs.size(); ++i) updated[i] = bufs[i].defined();
  bool fused = false;
  {
    c10::SmallVector<const Tensor*, 48> per_param;  // (param, grad, buffer) for each
    for (size_t i = 0; i < params.size(); ++i) {
      per_param.append({&params[i], &grads[i], &bufs[i]});
    }
    // a buffer of another dtype: the kernels' type promotion, not the loops'
    bool buffers_typed = std::all_of(bufs.begin(), bufs.end(), [&](const Tensor& b) {
      return !b.defined() || (b.scalar_type() == dtype && b.is_cpu() && !b.is_inference());
    });
    if (buffers_typed && fusable(per_param, 3)) {
      fused = dtype == at::kFloat
                  ? sgd_fused<float>(params, grads, bufs, lr, momentum, dampening, weight_decay,
                                     nesterov, maximize)
                  : sgd_fused<double>(params, grads, bufs, lr, momentum, dampening, weight_decay,
                                      nesterov, maximize);
    }
  }
  if (!fused) {
    sgd_aten(params, grads, bufs, lr, momentum, dampening, weight_decay, nesterov, maximize);
  }
  for (size_t i = 0; i < params.size(); ++i) {
    if (updated[i]) {
      bumped(bufs[i]);
      bumped(bufs[i]);
    }
    bumped(params[i]);
  }
  for (size_t i = 0; i < states.size(); ++i) {
    // state["momentum_buffer"] = buf (a buffer updated in place is already there)
    PyObject* held = PyDict_GetItem(states[i].ptr(), buffer_key.ptr());  // borrowed
    if (held != nullptr && THPVariable_Check(held) &&
        THPVariable_Unpack(held).unsafeGetTensorImpl() == bufs[i].unsafeGetTensorImpl()) {
      continue;
    }
    if (PyDict_SetItem(states[i].ptr(), buffer_key.ptr(), py::cast(bufs[i]).ptr()) < 0) {
      throw py::error_already_set();
    }
  }
  return true;
}

// The kernels of optim.adam._single_tensor_adam's update of one parameter after its step count
// (amsgrad included), for dense CPU float32/float64 tensors. Kernels only: the caller bumps.
void adam_aten(Tensor param, const Tensor& grad_in, Tensor& exp_avg, Tensor& exp_avg_sq,
               Tensor& max_exp_avg_sq, double lr, double beta1, double beta2, double eps,
               double weight_decay, bool amsgrad, bool maximize, bool decoupled_weight_decay,
               double step_size, double bias_correction2_sqrt) {
  at::AutoGradMode no_grad(false);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  Tensor grad = maximize ? at::neg(grad_in) : grad_in;
  if (weight_decay != 0) {
    if (decoupled_weight_decay) {
      param.mul_(1 - lr * weight_decay);
    } else {
      grad = grad.add(param, weight_decay);
    }
  }
  exp_avg.lerp_(grad, 1 - beta1);
  exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
  if (amsgrad) at::maximum_out(max_exp_avg_sq, max_exp_avg_sq, exp_avg_sq);
  // (v.sqrt() / c).add_(eps), the division in place in sqrt's fresh result: the same kernel
  Tensor denom = at::sqrt(amsgrad ? max_exp_avg_sq : exp_avg_sq);
  denom.div_(bias_correction2_sqrt).add_(eps);
  param.addcdiv_(exp_avg, denom, -step_size);
}

template <typename T>
shimnn_fused::AdamScalars<T> adam_scalars(double lr, double beta1, double beta2, double eps,
                                          double weight_decay, bool decoupled, double step_size,
                                          double bias_correction2_sqrt) {
  return {T(decoupled ? 1 - lr * weight_decay : weight_decay), T(1 - beta1), T(beta2),
          T(1 - beta2), T(bias_correction2_sqrt), T(eps), T(-step_size)};
}

template <typename T>
shimnn_fused::AdamFlags adam_flags(double beta1, double weight_decay, bool maximize,
                                   bool decoupled) {
  // Lerp.h's is_lerp_weight_small, on the weight in the kernel's type
  return {maximize, std::abs(T(1 - beta1)) < T(0.5),
          weight_decay == 0 ? 0 : (decoupled ? 2 : 1)};
}

// One parameter's update with the fused loops: the moments, torch's sqrt, the parameter.
template <typename T>
void adam_fused_update(shimnn_fused::AdamLoop<T> moments, const Tensor& param, const Tensor& grad,
                       const Tensor& exp_avg, const Tensor& exp_avg_sq,
                       const shimnn_fused::AdamScalars<T>& s) {
  int64_t n = param.numel();
  T* p = param.data_ptr<T>();
  const T* g = grad.data_ptr<T>();
  T* m = exp_avg.data_ptr<T>();
  T* v = exp_avg_sq.data_ptr<T>();
  split(n, [&](int64_t a, int64_t b) { moments(p + a, g + a, m + a, v + a, b - a, s); });
  Tensor root;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    root = at::sqrt(exp_avg_sq);
  }
  const T* r = root.data_ptr<T>();
  split(n, [&](int64_t a, int64_t b) {
    shimnn_fused::adam_param_loop<T>(p + a, m + a, r + a, b - a, s);
  });
}

template <typename T>
bool adam_fused_matches(const shimnn_fused::AdamFlags& f, double lr, double beta1, double beta2,
                        double eps, double weight_decay, bool decoupled,
                        shimnn_fused::AdamLoop<T> loop) {
  if (loop == nullptr) return false;
  shimnn_fused::TestValues values(static_cast<uint64_t>(f.key()) + 101);
  for (int round = 0; round < 2; ++round) {
    // generic values first (on the weight's side of 0.5 the flags name), then the caller's
    double lr_ = round ? lr : 0.0731, b1 = round ? beta1 : (f.small_weight ? 0.8731 : 0.3127);
    double b2 = round ? beta2 : 0.9913, eps_ = round ? eps : 1.37e-3;
    double wd = f.decay == 0 ? 0 : (round ? weight_decay : 0.0173);
    double step_size = round ? lr_ / 0.271 : 0.2691, c2 = round ? 0.0613 : 0.7243;
    auto s = adam_scalars<T>(lr_, b1, b2, eps_, wd, decoupled, step_size, c2);
    for (int64_t n : verification_lengths()) {
      Tensor p = test_tensor<T>(values, n, -4, 4), g = test_tensor<T>(values, n, -8, 2);
      Tensor m = test_tensor<T>(values, n, -8, 2), v = test_tensor<T>(values, n, -16, 2, true);
      Tensor rp = p.clone(), rm = m.clone(), rv = v.clone(), unused;
      adam_aten(rp, g, rm, rv, unused, lr_, b1, b2, eps_, wd, false, f.maximize, decoupled,
                step_size, c2);
      adam_fused_update(loop, p, g, m, v, s);
      if (!same_tensors(p, rp) || !same_tensors(m, rm) || !same_tensors(v, rv)) return false;
    }
  }
  return true;
}

// The fused loop for a parameter (verified once per configuration), or nullptr: the kernels.
template <typename T>
shimnn_fused::AdamLoop<T> adam_fused_loop(double lr, double beta1, double beta2, double eps,
                                          double weight_decay, bool maximize, bool decoupled) {
  static std::unordered_map<int64_t, bool> seen;  // the GIL guards it
  auto f = adam_flags<T>(beta1, weight_decay, maximize, decoupled);
  bool ok = verified(seen, std::is_same_v<T, float> ? "adam float32" : "adam float64",
                     f.key() | (decoupled ? 64 : 0), [&] {
    return adam_fused_matches<T>(f, lr, beta1, beta2, eps, weight_decay, decoupled,
                                 shimnn_fused::adam_loop_for<T>(f));
  });
  return ok ? shimnn_fused::adam_loop_for<T>(f) : nullptr;
}

// optim.adam.Adam._step_group + optim.adam._single_tensor_adam for a group on CPU with
// torch's default single-tensor path (foreach None/False), number hyper-parameters, real
// float32/float64 parameters with dense gradients and state already created (the first step
// creates it in Python): per parameter, torch's kernels' values (the fused loop where verified,
// else the same kernels in the same order), and the bias corrections computed in double as
// Python computes them (pow from the C library, like `**`).
// Returns False, having changed nothing, where that case does not hold.
bool adam_step(const py::list& group_params, const py::object& state, double lr, double beta1,
               double beta2, double eps, double weight_decay, bool amsgrad, bool maximize,
               bool decoupled_weight_decay) {
  static const py::str step_key("step"), exp_avg_key("exp_avg"), exp_avg_sq_key("exp_avg_sq"),
      max_key("max_exp_avg_sq");
  struct Entry {
    Tensor param, grad, step, exp_avg, exp_avg_sq, max_exp_avg_sq;
  };
  std::vector<Entry> entries;
  for (py::handle obj : group_params) {
    if (!THPVariable_Check(obj.ptr())) return false;
    const Tensor& p = THPVariable_Unpack(obj.ptr());
    const Tensor& g = p.grad();
    if (!g.defined()) continue;
    if (!float_cpu_dense(p, g)) return false;
    PyObject* s = PyDict_Check(state.ptr()) ? PyDict_GetItem(state.ptr(), obj.ptr()) : nullptr;
    if (s == nullptr || !PyDict_Check(s)) return false;  // no state yet: the Python path
    Entry e{p, g};
    std::pair<const py::str*, Tensor*> fields[] = {
        {&step_key, &e.step}, {&exp_avg_key, &e.exp_avg}, {&exp_avg_sq_key, &e.exp_avg_sq},
        {&max_key, &e.max_exp_avg_sq}};
    for (auto& [key, field] : fields) {
      if (key == &max_key && !amsgrad) continue;
      PyObject* t = PyDict_GetItem(s, key->ptr());  // borrowed
      if (t == nullptr || !THPVariable_Check(t)) return false;
      *field = THPVariable_Unpack(t);
    }
    auto step_type = e.step.scalar_type();
    if (!e.step.is_cpu() || e.step.numel() != 1 || e.step.is_inference() ||
        (step_type != at::kFloat && step_type != at::kDouble)) {
      return false;
    }
    for (const Tensor* t : {&e.exp_avg, &e.exp_avg_sq, &e.max_exp_avg_sq}) {
      if (t->defined() && t->is_inference()) return false;
    }
    entries.push_back(std::move(e));
  }
  // The fused loops: amsgrad off, state of the parameter's dtype, the fused.h layout.
  bool fused = !amsgrad;
  if (fused) {
    c10::SmallVector<const Tensor*, 64> per_param;  // (param, grad, exp_avg, exp_avg_sq)
    for (const auto& e : entries) {
      auto dtype = e.param.scalar_type();
      fused = fused && e.exp_avg.scalar_type() == dtype && e.exp_avg_sq.scalar_type() == dtype &&
              e.exp_avg.is_cpu() && e.exp_avg_sq.is_cpu();
      per_param.append({&e.param, &e.grad, &e.exp_avg, &e.exp_avg_sq});
    }
    fused = fused && fusable(per_param, 4);
  }
  shimnn_fused::AdamLoop<float> loop_f = nullptr;
  shimnn_fused::AdamLoop<double> loop_d = nullptr;
  for (const auto& e : entries) {  // verified for the dtypes there are
    if (!fused) break;
    if (e.param.scalar_type() == at::kFloat && loop_f == nullptr) {
      loop_f = adam_fused_loop<float>(lr, beta1, beta2, eps, weight_decay, maximize,
                                      decoupled_weight_decay);
    } else if (e.param.scalar_type() == at::kDouble && loop_d == nullptr) {
      loop_d = adam_fused_loop<double>(lr, beta1, beta2, eps, weight_decay, maximize,
                                       decoupled_weight_decay);
    }
  }
  for (auto& e : entries) {
    // step_t += 1 on the 0-d float step: the add kernel computes a + alpha * b with alpha and b
    // one, a single rounding of a + 1, which is what this is; .item() reads the value back.
    double step;
    if (e.step.scalar_type() == at::kFloat) {
      float* value = e.step.data_ptr<float>();
      *value = *value + 1.0f;
      step = *value;
    } else {
      double* value = e.step.data_ptr<double>();
      *value = *value + 1.0;
      step = *value;
    }
    bumped(e.step);
    double bias_correction1 = 1 - std::pow(beta1, step);
    double bias_correction2 = 1 - std::pow(beta2, step);
    double step_size = lr / bias_correction1;
    double bias_correction2_sqrt = std::pow(bias_correction2, 0.5);
    bool is_float = e.param.scalar_type() == at::kFloat;
    if (is_float ? loop_f != nullptr : loop_d != nullptr) {
      if (is_float) {
        adam_fused_update(loop_f, e.param, e.grad, e.exp_avg, e.exp_avg_sq,
                          adam_scalars<float>(lr, beta1, beta2, eps, weight_decay,
                                              decoupled_weight_decay, step_size,
                                              bias_correction2_sqrt));
      } else {
        adam_fused_update(loop_d, e.param, e.grad, e.exp_avg, e.exp_avg_sq,
                          adam_scalars<double>(lr, beta1, beta2, eps, weight_decay,
                                               decoupled_weight_decay, step_size,
                                               bias_correction2_sqrt));
      }
    } else {
      adam_aten(e.param, e.grad, e.exp_avg, e.exp_avg_sq, e.max_exp_avg_sq, lr, beta1, beta2,
                eps, weight_decay, amsgrad, maximize, decoupled_weight_decay, step_size,
                bias_correction2_sqrt);
    }
    if (weight_decay != 0 && decoupled_weight_decay) bumped(e.param);
    bumped(e.exp_avg);
    bumped(e.exp_avg_sq);
    bumped(e.exp_avg_sq);
    if (amsgrad) bumped(e.max_exp_avg_sq);
    bumped(e.param);
  }
  return true;
}

// A group's entry as the compiled steps take it: a Python float or int (not a bool, not a
// tensor: optimizer._numbers), or a truth value (Python's, as `if group[key]:` reads it).
bool number_value(PyObject* value, double& out) {
  if (value == nullptr) return false;
  if (PyFloat_CheckExact(value)) {
    out = PyFloat_AS_DOUBLE(value);
    return true;
  }
  if (!PyLong_CheckExact(value)) return false;
  out = PyLong_AsDouble(value);
  if (out == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    return false;
  }
  return true;
}

bool number_entry(PyObject* group, PyObject* key, double& out) {
  return number_value(PyDict_GetItem(group, key), out);  // borrowed
}

bool flag_entry(PyObject* group, PyObject* key, bool& out) {
  PyObject* value = PyDict_GetItem(group, key);  // borrowed
  if (value == nullptr) return false;
  out = is_true(value);
  return true;
}

// optim.optimizer.ShimOptimizer.step() for an optimizer with one parameter group, no closure,
// hook or profiler (the caller checks those), `kind` 0 SGD, 1 Adam/AdamW: the group's
// hyper-parameters read here and its compiled step run (SGD._step_group / Adam._step_group
// with their checks). Returns False, having changed nothing, outside that case (the Python
// step then runs, and raises what it raises).
bool optimizer_step(int64_t kind, const py::handle& param_groups, const py::object& state) {
  static PyObject* keys[] = {
      PyUnicode_InternFromString("params"), PyUnicode_InternFromString("lr"),
      PyUnicode_InternFromString("weight_decay"), PyUnicode_InternFromString("maximize"),
      PyUnicode_InternFromString("foreach"), PyUnicode_InternFromString("differentiable"),
      PyUnicode_InternFromString("fused"), PyUnicode_InternFromString("capturable"),
      PyUnicode_InternFromString("momentum"), PyUnicode_InternFromString("dampening"),
      PyUnicode_InternFromString("nesterov"), PyUnicode_InternFromString("eps"),
      PyUnicode_InternFromString("betas"), PyUnicode_InternFromString("amsgrad"),
      PyUnicode_InternFromString("decoupled_weight_decay")};
  auto [params_key, lr_key, wd_key, maximize_key, foreach_key, differentiable_key, fused_key,
        capturable_key, momentum_key, dampening_key, nesterov_key, eps_key, betas_key,
        amsgrad_key, decoupled_key] = keys;
  if (!PyList_CheckExact(param_groups.ptr()) || PyList_GET_SIZE(param_groups.ptr()) != 1) {
    return false;
  }
  PyObject* group = PyList_GET_ITEM(param_groups.ptr(), 0);
  if (!PyDict_CheckExact(group)) return false;
  // a group the Python step refuses (differentiable, fused, capturable) or runs another way
  for (PyObject* key : {foreach_key, differentiable_key, fused_key, capturable_key}) {
    if (dict_entry_truthy(group, key)) return false;
  }
  PyObject* params = PyDict_GetItem(group, params_key);
  if (params == nullptr || !PyList_CheckExact(params)) return false;
  py::list param_list = py::reinterpret_borrow<py::list>(params);
  double lr, wd;
  bool maximize;
  if (!number_entry(group, lr_key, lr) || !number_entry(group, wd_key, wd) ||
      !flag_entry(group, maximize_key, maximize)) {
    return false;
  }
  if (kind == 0) {
    double momentum, dampening;
    bool nesterov;
    if (!number_entry(group, momentum_key, momentum) ||
        !number_entry(group, dampening_key, dampening) ||
        !flag_entry(group, nesterov_key, nesterov)) {
      return false;
    }
    return sgd_step(param_list, state, lr, momentum, dampening, wd, nesterov, maximize);
  }
  double eps, beta1, beta2;
  bool amsgrad, decoupled;
  PyObject* betas = PyDict_GetItem(group, betas_key);
  if (betas == nullptr || !(PyTuple_CheckExact(betas) || PyList_CheckExact(betas)) ||
      PySequence_Fast_GET_SIZE(betas) != 2 || !number_entry(group, eps_key, eps) ||
      !flag_entry(group, amsgrad_key, amsgrad) || !flag_entry(group, decoupled_key, decoupled)) {
    return false;
  }
  if (!number_value(PySequence_Fast_GET_ITEM(betas, 0), beta1) ||
      !number_value(PySequence_Fast_GET_ITEM(betas, 1), beta2)) {
    return false;
  }
  return adam_step(param_list, state, lr, beta1, beta2, eps, wd, amsgrad, maximize, decoupled);
}

// For the tests: loops one rounding away from the kernels (the update's product rounded
// before the add, where the kernels fuse it): the verification must reject each of them.
template <typename T>
void sgd_loop_unfused(T* p, const T* grad, T* buf, int64_t n, shimnn_fused::SgdScalars<T> s) {
  for (int64_t i = 0; i < n; ++i) p[i] = p[i] + s.neg_lr * grad[i];  // no contraction here
}
template <typename T>
void adam_moments_unfused(T* p, const T* grad, T* exp_avg, T* exp_avg_sq, int64_t n,
                          shimnn_fused::AdamScalars<T> s) {
  for (int64_t i = 0; i < n; ++i) {
    T g = grad[i], m = exp_avg[i];
    exp_avg[i] = shimnn_fused::fma(s.weight, g - m, m);
    exp_avg_sq[i] = exp_avg_sq[i] * s.beta2 + s.value * g * g;
  }
}

// Whether the verification tells those loops from the kernels (True: it rejects all four).
bool verification_rejects_unfused() {
  shimnn_fused::SgdFlags plain{false, false, false, 0};
  shimnn_fused::AdamFlags adam{false, true, 0};
  return !sgd_fused_matches<float>(plain, 0.1, 0, 0, 0, &sgd_loop_unfused<float>) &&
         !sgd_fused_matches<double>(plain, 0.1, 0, 0, 0, &sgd_loop_unfused<double>) &&
         !adam_fused_matches<float>(adam, 1e-3, 0.9, 0.999, 1e-8, 0, false,
                                    &adam_moments_unfused<float>) &&
         !adam_fused_matches<double>(adam, 1e-3, 0.9, 0.999, 1e-8, 0, false,
                                     &adam_moments_unfused<double>);
}

// optim.optimizer.ShimOptimizer.zero_grad(set_to_none=True): every parameter's .grad to None.
void clear_grads(const py::list& param_groups) {
  static const py::str params_key("params");
  for (py::handle group : param_groups) {
    for (py::handle p : group[params_key]) {
      if (!THPVariable_Check(p.ptr())) throw std::invalid_argument("not a tensor");
      THPVariable_Unpack(p.ptr()).mutable_grad().reset();
    }
  }
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "shimnn's compiled fast paths (see shimnn/_native.py)";
  py::class_<Chain, std::shared_ptr<Chain>>(m, "Chain")
      .def("__call__", &Chain::backward, py::arg("grad"), py::arg("retain_graph"));
  py::class_<MseLoss, std::shared_ptr<MseLoss>>(m, "MseLoss")
      .def("__call__", &MseLoss::backward, py::arg("grad"));
  m.def("chain_forward", &chain_forward);
  m.def("backward", &backward);
  m.def("backward_root", &backward_root);
  m.def("module_call", &module_call);
  m.def("mse_loss_forward", &mse_loss_forward);
  m.def("sgd_step", &sgd_step);
  m.def("adam_step", &adam_step);
  m.def("clear_grads", &clear_grads);
  m.def("optimizer_step", &optimizer_step);
  m.def("clip_grad_norm", &clip_grad_norm);
  m.def("fused_checks", &fused_checks);
  m.def("fused_hardware", &shimnn_fused::hardware_fma);
  m.def("verification_rejects_unfused", &verification_rejects_unfused);
}
