// shimnn's compiled fast paths: the same ATen kernels, in the same order, as the Python code
// they replace (named at each function), called from C++ so that a small network's step does
// not pay Python's cost per kernel call. Loaded by shimnn/_native.py; every caller keeps its
// Python path, which runs when this module is unavailable or disabled.
#include <torch/extension.h>

#include <cmath>
#include <string>
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
  // first: grad of its weight, grad of its bias] (None where not needed).
  py::list backward(Tensor grad, bool retain_graph) {
    Tensor g = std::move(grad);
    py::list grads;
    std::vector<Tensor> out;  // weight and bias gradients, newest layer first
    {
      py::gil_scoped_release no_gil;
      // Out-of-place kernels only: straight to them, past the autograd dispatch keys.
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      out.reserve(2 * records_.size());
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
          out.push_back(std::move(grad_weight));
          out.push_back(std::move(grad_bias));
          g = std::move(grad_input);
        } else if (r.kind == RELU) {
          g = at::threshold_backward(g, r.a, 0);  // ops.activation._threshold_backward
        } else {
          g = at::tanh_backward(g, r.a);  // ops.activation._tanh_backward
        }
      }
    }
    grads.append(g.defined() ? py::cast(std::move(g)) : py::none());
    for (auto& t : out) grads.append(t.defined() ? py::cast(std::move(t)) : py::none());
    return grads;
  }

 private:
  std::vector<Record> records_;
};

// ops.loss.mse_loss_forward for an input and target of the same shape and floating dtype
// on CPU (no broadcasting, nothing to sum back): the backward of MseLossBackward0.
class MseLoss {
 public:
  MseLoss(Tensor input, Tensor target, int64_t reduction, bool need_input, bool need_target)
      : input_(std::move(input)), target_(std::move(target)), reduction_(reduction),
        need_input_(need_input), need_target_(need_target) {}

  py::tuple backward(const Tensor& grad) {
    Tensor grad_input, grad_target;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      if (need_input_) grad_input = at::mse_loss_backward(grad, input_, target_, reduction_);
      if (need_target_) grad_target = at::mse_loss_backward(grad, target_, input_, reduction_);
    }
    return py::make_tuple(grad_input.defined() ? py::cast(grad_input) : py::none(),
                          grad_target.defined() ? py::cast(grad_target) : py::none());
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

// _chain._layers_fusable for layers of the matrix kinds: no module hook, and an in-place
// ReLU only right after a Linear.
bool layers_fusable(const py::tuple& layers, const std::vector<int64_t>& kinds) {
  static PyObject* hook_keys[] = {
      PyUnicode_InternFromString("_forward_hooks"),
      PyUnicode_InternFromString("_forward_pre_hooks"),
      PyUnicode_InternFromString("_backward_hooks"),
      PyUnicode_InternFromString("_backward_pre_hooks")};
  static PyObject* inplace_key = PyUnicode_InternFromString("inplace");
  for (size_t i = 0; i < kinds.size(); ++i) {
    PyObject** dict_ptr = _PyObject_GetDictPtr(layers[i].ptr());
    PyObject* dict = dict_ptr ? *dict_ptr : nullptr;
    for (PyObject* key : hook_keys) {
      if (dict_entry_truthy(dict, key)) return false;
    }
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
  std::vector<py::object> param_edges;  // bias, weight per recorded Linear, oldest first
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
      h = at::linear(rows, weight, has_bias ? c10::optional<Tensor>(bias) : c10::nullopt);
      name = has_bias ? "AddmmBackward0" : "MmBackward0";
      if (upstream || need_weight || need_bias) {
        Record r;
        r.kind = LINEAR;
        r.need_input = upstream;
        r.need_weight = need_weight;
        r.need_bias = need_bias;
        r.rows_column_major = upstream && is_column_major(rows);
        r.weight_row_major = need_weight && weight_is_row_major(weight);
        param_edges.push_back(has_bias ? edge_of(bias, b_obj) : py::none());
        param_edges.push_back(edge_of(weight, w_obj));
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
      if (inplace) {
        at::relu_(h);
        h.unsafeGetTensorImpl()->bump_version();  // as torch's in-place dispatch does
      } else {
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
  edges[0] = e_input;  // input first, then the newest layer's weight and bias first
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

// _engine._accumulate_leaf's common case for a gradient `grad` that the caller owns (its only
// engine reference): no hooks, a leaf that still requires grad, the leaf's dtype. Stored as is
// when nothing else references it and it has the leaf's layout, else a copy with the leaf's
// layout; later gradients are added in place. Returns false, having done nothing, outside that
// case (the Python function runs).
bool accumulate_leaf(PyObject* leaf_obj, const py::object& grad_obj) {
  if (!THPVariable_Check(leaf_obj) || !THPVariable_Check(grad_obj.ptr()) ||
      has_tensor_hooks(leaf_obj)) {
    return false;
  }
  const Tensor& leaf = THPVariable_Unpack(leaf_obj);
  const Tensor& grad = THPVariable_Unpack(grad_obj.ptr());
  if (grad.scalar_type() != leaf.scalar_type() || !leaf.requires_grad() ||
      !grad.sizes().equals(leaf.sizes()) || grad.device() != leaf.device() ||
      grad.layout() != leaf.layout()) {
    return false;  // the Python function (torch's checks and errors)
  }
  at::AutoGradMode no_grad(false);
  Tensor& old = leaf.mutable_grad();
  if (!old.defined()) {
    if (Py_REFCNT(grad_obj.ptr()) == 1 && grad.use_count() == 1 &&
        obeys_layout_contract(grad, leaf)) {
      old = grad.is_view() ? grad.detach() : grad;
    } else {
      old = clone_obey_contract(grad, leaf);
    }
  } else {
    old.add_(grad);
  }
  return true;
}

// _engine._check_saved's version test: the index of the first saved tensor whose version is
// not the one recorded, or -1.
int64_t first_changed(const py::tuple& saved, const py::tuple& versions) {
  auto n = std::min(saved.size(), versions.size());
  for (size_t i = 0; i < n; ++i) {
    PyObject* t = PyTuple_GET_ITEM(saved.ptr(), i);
    if (!THPVariable_Check(t)) return static_cast<int64_t>(i);
    if (static_cast<int64_t>(THPVariable_Unpack(t)._version()) !=
        PyLong_AsLongLong(PyTuple_GET_ITEM(versions.ptr(), i))) {
      return static_cast<int64_t>(i);
    }
  }
  return -1;
}

py::object steal(PyObject* obj) {
  if (obj == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(obj);
}

// _engine._Walk.run for a walk without `inputs` (every reachable node runs, leaves accumulate):
// the same steps in the same order. `walk` is the Python _Walk: its dicts are used directly,
// and its methods for what this does not do itself (an Output edge, a leaf outside
// accumulate_leaf's case, the final flush); `run_hooks` is _engine._run_tensor_hooks and
// `check_saved` _engine._check_saved (which raises torch's errors).
class Walker {
 public:
  Walker(py::object walk, const py::handle& node_type, const py::handle& heappush,
         const py::handle& heappop, const py::handle& run_hooks, const py::handle& check_saved)
      : walk_(std::move(walk)),
        node_type_(node_type.ptr()),
        heappush_(py::reinterpret_borrow<py::object>(heappush)),
        heappop_(py::reinterpret_borrow<py::object>(heappop)),
        run_hooks_(py::reinterpret_borrow<py::object>(run_hooks)),
        check_saved_(py::reinterpret_borrow<py::object>(check_saved)) {
    static PyObject* names[] = {
        PyUnicode_InternFromString("node_grads"), PyUnicode_InternFromString("heap"),
        PyUnicode_InternFromString("leaf_grads"), PyUnicode_InternFromString("leaf_deps")};
    node_grads_ = steal(PyObject_GetAttr(walk_.ptr(), names[0]));
    heap_ = steal(PyObject_GetAttr(walk_.ptr(), names[1]));
    leaf_grads_ = steal(PyObject_GetAttr(walk_.ptr(), names[2]));
    leaf_deps_ = steal(PyObject_GetAttr(walk_.ptr(), names[3]));
  }

  void run(bool retain_graph) {
    static PyObject* hooks_name = PyUnicode_InternFromString("hooks");
    static PyObject* retained_name = PyUnicode_InternFromString("retained");
    static PyObject* backward_name = PyUnicode_InternFromString("backward");
    static PyObject* saved_name = PyUnicode_InternFromString("saved");
    static PyObject* versions_name = PyUnicode_InternFromString("versions");
    static PyObject* takes_retain_name = PyUnicode_InternFromString("takes_retain");
    static PyObject* inputs_name = PyUnicode_InternFromString("inputs");
    py::object retain = py::bool_(retain_graph);
    while (PyList_GET_SIZE(heap_.ptr()) > 0) {
      py::object item = heappop_(heap_);
      py::object node = py::reinterpret_borrow<py::object>(PyTuple_GET_ITEM(item.ptr(), 1));
      item = py::object();
      PyObject* pending = PyDict_GetItemWithError(node_grads_.ptr(), node.ptr());  // borrowed
      if (pending == nullptr) {
        if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, node.ptr());
        throw py::error_already_set();
      }
      py::object g = py::reinterpret_borrow<py::object>(pending);
      if (PyDict_DelItem(node_grads_.ptr(), node.ptr()) < 0) throw py::error_already_set();
      if (truthy_attr(node.ptr(), hooks_name) || truthy_attr(node.ptr(), retained_name)) {
        g = run_hooks_(node, std::move(g));
      }
      py::object backward = get_attr(node.ptr(), backward_name);
      py::object saved = get_attr(node.ptr(), saved_name);
      if (backward.is_none() || saved.is_none() || !PyTuple_Check(saved.ptr()) ||
          first_changed(py::reinterpret_borrow<py::tuple>(saved),
                        get_attr(node.ptr(), versions_name)) >= 0) {
        check_saved_(node);  // raises
        backward = get_attr(node.ptr(), backward_name);
      }
      if (!retain_graph && PyTuple_GET_SIZE(saved.ptr()) > 0) {  // Node.release
        if (PyObject_SetAttr(node.ptr(), backward_name, Py_None) < 0 ||
            PyObject_SetAttr(node.ptr(), saved_name, Py_None) < 0) {
          throw py::error_already_set();
        }
      }
      saved = py::object();
      py::object input_grads;
      if (THPVariable_Check(g.ptr()) && py::isinstance<Chain>(backward)) {
        // this module's own nodes: called directly, not through Python
        Tensor grad_tensor = THPVariable_Unpack(g.ptr());
        g = py::object();
        input_grads = backward.cast<Chain&>().backward(std::move(grad_tensor), retain_graph);
      } else if (THPVariable_Check(g.ptr()) && py::isinstance<MseLoss>(backward)) {
        input_grads = backward.cast<MseLoss&>().backward(THPVariable_Unpack(g.ptr()));
        g = py::object();
      } else {
        input_grads = truthy_attr(node.ptr(), takes_retain_name) ? backward(g, retain)
                                                                 : backward(g);
        g = py::object();  // as the Python walk's `del grad`: the node's outputs are ours
      }
      backward = py::object();
      // A list this walk owns (its gradients are taken out of it one by one, see send).
      py::object grads = steal(PySequence_List(input_grads.ptr()));
      input_grads = py::object();
      py::object edges = get_attr(node.ptr(), inputs_name);
      Py_ssize_t n = std::min(PyTuple_GET_SIZE(edges.ptr()), PyList_GET_SIZE(grads.ptr()));
      for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject* e = PyTuple_GET_ITEM(edges.ptr(), i);
        if (e == Py_None) continue;
        PyObject* gi = PyList_GET_ITEM(grads.ptr(), i);
        Py_INCREF(Py_None);
        PyList_SET_ITEM(grads.ptr(), i, Py_None);  // the list's reference is now ours
        py::object owned = py::reinterpret_steal<py::object>(gi);
        if (gi == Py_None) {
          // torch's undefined gradient: a leaf waits for one fewer
          if (THPVariable_Check(e)) leaf_done(e, py::object());
          continue;
        }
        send(e, std::move(owned));
      }
    }
    call_walk("flush");
  }

 private:
  template <typename... Args>
  void call_walk(const char* method, Args&&... args) {
    walk_.attr(method)(std::forward<Args>(args)...);
  }

  // _Walk.send with a gradient this walk owns.
  void send(PyObject* e, py::object g) {
    static PyObject* seq_name = PyUnicode_InternFromString("seq");
    if (Py_TYPE(e) == reinterpret_cast<PyTypeObject*>(node_type_)) {
      PyObject* prev = PyDict_GetItemWithError(node_grads_.ptr(), e);  // borrowed
      if (prev == nullptr) {
        if (PyErr_Occurred()) throw py::error_already_set();
        if (PyDict_SetItem(node_grads_.ptr(), e, g.ptr()) < 0) throw py::error_already_set();
        py::object seq = steal(PyObject_GetAttr(e, seq_name));
        py::object neg = steal(PyNumber_Negative(seq.ptr()));
        heappush_(heap_, py::make_tuple(neg, py::handle(e)));
      } else {
        py::object sum = steal(PyNumber_Add(prev, g.ptr()));
        if (PyDict_SetItem(node_grads_.ptr(), e, sum.ptr()) < 0) throw py::error_already_set();
      }
    } else if (THPVariable_Check(e)) {
      leaf_done(e, std::move(g));
    } else {  // an Output edge: the Python method
      py::list box(1);
      PyList_SET_ITEM(box.ptr(), 0, g.release().ptr());  // the box takes our reference
      call_walk("send", py::reinterpret_borrow<py::object>(e), box, 0);
    }
  }

  // A gradient for a leaf (an undefined one when `g` is null): summed with the others; once the
  // last one has arrived, accumulated.
  void leaf_done(PyObject* leaf, py::object g) {
    py::object key = steal(PyLong_FromVoidPtr(leaf));
    PyObject* remaining = PyDict_GetItemWithError(leaf_deps_.ptr(), key.ptr());  // borrowed
    if (remaining == nullptr) {
      if (PyErr_Occurred()) throw py::error_already_set();
      return;  // a leaf nobody asked for
    }
    long count = PyLong_AsLong(remaining);
    PyObject* entry = PyDict_GetItemWithError(leaf_grads_.ptr(), key.ptr());  // borrowed
    if (entry == nullptr && PyErr_Occurred()) throw py::error_already_set();
    if (g) {
      if (entry == nullptr) {
        py::list pair(2);
        Py_INCREF(leaf);
        PyList_SET_ITEM(pair.ptr(), 0, leaf);
        PyList_SET_ITEM(pair.ptr(), 1, g.release().ptr());  // the list takes our reference
        if (PyDict_SetItem(leaf_grads_.ptr(), key.ptr(), pair.ptr()) < 0) {
          throw py::error_already_set();
        }
        entry = pair.ptr();  // the dict keeps it alive
      } else {
        py::object sum = steal(PyNumber_Add(PyList_GET_ITEM(entry, 1), g.ptr()));
        g = py::object();
        PyList_SetItem(entry, 1, sum.release().ptr());  // steals the new sum
      }
    }
    if (count > 1) {
      py::object left = steal(PyLong_FromLong(count - 1));
      if (PyDict_SetItem(leaf_deps_.ptr(), key.ptr(), left.ptr()) < 0) {
        throw py::error_already_set();
      }
      return;
    }
    if (PyDict_DelItem(leaf_deps_.ptr(), key.ptr()) < 0) throw py::error_already_set();
    if (entry == nullptr) return;  // nothing arrived
    py::object pair = py::reinterpret_borrow<py::object>(entry);
    if (PyDict_DelItem(leaf_grads_.ptr(), key.ptr()) < 0) throw py::error_already_set();
    py::object grad = py::reinterpret_borrow<py::object>(PyList_GET_ITEM(pair.ptr(), 1));
    Py_INCREF(Py_None);
    PyList_SetItem(pair.ptr(), 1, Py_None);  // now only `grad` holds it
    pair = py::object();
    if (accumulate_leaf(leaf, grad)) return;
    py::list box(1);
    PyList_SET_ITEM(box.ptr(), 0, grad.release().ptr());  // the box takes our reference
    call_walk("leaf_ready", py::reinterpret_borrow<py::object>(leaf), box);
  }

  py::object walk_;
  PyObject* node_type_;
  py::object heappush_, heappop_, run_hooks_, check_saved_;
  py::object node_grads_, heap_, leaf_grads_, leaf_deps_;
};

// _engine._start's plan for a walk without `inputs` (_engine._reachable and the count of leaf
// edges): every node reachable from `root_edges`, once each; for each leaf edge of theirs, and
// each root that is a leaf, one more gradient that leaf waits for in `deps` (id -> count).
void leaf_dependencies(const py::list& root_edges, const py::handle& node_type,
                       const py::handle& output_type, py::dict deps) {
  static PyObject* inputs_name = PyUnicode_InternFromString("inputs");
  static PyObject* node_name = PyUnicode_InternFromString("node");
  auto* node_t = reinterpret_cast<PyTypeObject*>(node_type.ptr());
  auto* output_t = reinterpret_cast<PyTypeObject*>(output_type.ptr());
  std::vector<py::object> stack;
  std::unordered_set<PyObject*> seen;  // the graph keeps every node alive meanwhile
  auto visit = [&](PyObject* e) {
    if (e == Py_None) return;
    py::object node;
    if (Py_TYPE(e) == node_t) {
      node = py::reinterpret_borrow<py::object>(e);
    } else if (Py_TYPE(e) == output_t) {
      node = steal(PyObject_GetAttr(e, node_name));
    } else {
      py::object key = steal(PyLong_FromVoidPtr(e));
      PyObject* count = PyDict_GetItemWithError(deps.ptr(), key.ptr());  // borrowed
      if (count == nullptr && PyErr_Occurred()) throw py::error_already_set();
      py::object next = steal(PyLong_FromLong(count ? PyLong_AsLong(count) + 1 : 1));
      if (PyDict_SetItem(deps.ptr(), key.ptr(), next.ptr()) < 0) throw py::error_already_set();
      return;
    }
    if (seen.insert(node.ptr()).second) stack.push_back(std::move(node));
  };
  for (py::handle e : root_edges) visit(e.ptr());
  while (!stack.empty()) {
    py::object node = std::move(stack.back());
    stack.pop_back();
    py::object inputs = steal(PyObject_GetAttr(node.ptr(), inputs_name));
    if (!PyTuple_Check(inputs.ptr())) throw std::invalid_argument("Node.inputs");
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(inputs.ptr()); ++i) {
      visit(PyTuple_GET_ITEM(inputs.ptr(), i));
    }
  }
}

void walk(py::object walk, bool retain_graph, const py::handle& node_type,
          const py::handle& heappush, const py::handle& heappop, const py::handle& run_hooks,
          const py::handle& check_saved) {
  Walker(std::move(walk), node_type, heappush, heappop, run_hooks, check_saved)
      .run(retain_graph);
}

// The optimizers' compiled case for one parameter: float32/float64 on CPU with a dense
// gradient of its dtype.
bool float_cpu_dense(const Tensor& p, const Tensor& g) {
  auto dtype = p.scalar_type();
  return p.is_cpu() && g.is_cpu() && g.layout() == at::kStrided &&
         (dtype == at::kFloat || dtype == at::kDouble) && g.scalar_type() == dtype;
}

// optim.sgd.SGD._step_group + optim.sgd.sgd for a group on CPU with torch's default
// single-tensor path (foreach None/False), dense float32/float64 gradients: the same kernels
// in the same order (torch._foreach_* run torch's per-tensor kernels on CPU). Returns False,
// having changed nothing, where that case does not hold: the Python path then runs.
bool sgd_step(const py::list& group_params, const py::object& state, double lr, double momentum,
              double dampening, double weight_decay, bool nesterov, bool maximize) {
  static const py::str buffer_key("momentum_buffer");
  std::vector<Tensor> params, grads;
  std::vector<PyObject*> owners;
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
  std::vector<py::object> states;
  std::vector<Tensor> bufs;
  bool all_bufs = true;
  if (momentum != 0) {
    for (PyObject* owner : owners) {
      // state[p] (a defaultdict: a missing entry is created), then .get("momentum_buffer")
      PyObject* found = PyDict_Check(state.ptr()) ? PyDict_GetItem(state.ptr(), owner) : nullptr;
      py::object s = found ? py::reinterpret_borrow<py::object>(found)
                           : py::object(state[py::handle(owner)]);
      if (!PyDict_Check(s.ptr())) return false;
      PyObject* buf = PyDict_GetItem(s.ptr(), buffer_key.ptr());  // borrowed
      if (buf == nullptr || buf == Py_None) {
        all_bufs = false;
        bufs.emplace_back();
      } else {
        if (!THPVariable_Check(buf)) return false;
        bufs.push_back(THPVariable_Unpack(buf));
      }
      states.push_back(std::move(s));
    }
  }
  {
    at::AutoGradMode no_grad(false);
    std::vector<Tensor> g = grads;
    if (maximize) g = at::_foreach_neg(g);
    if (weight_decay != 0) g = at::_foreach_add(g, params, weight_decay);
    if (momentum != 0) {
      if (all_bufs) {
        // optimizer._foreach_mul_: the momentum as a 0-d tensor of the buffers' dtype (the
        // last one made is kept, as optimizer._SCALARS keeps it; the GIL guards it).
        // float32, float64; never destroyed (a static tensor would be freed at exit after
        // torch's allocator may be gone)
        static auto* cached = new std::pair<double, Tensor>[2];
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
      g = nesterov ? at::_foreach_add(g, bufs, momentum) : bufs;
    }
    at::_foreach_add_(params, g, -lr);
  }
  for (size_t i = 0; i < states.size(); ++i) {
    if (PyDict_SetItem(states[i].ptr(), buffer_key.ptr(), py::cast(bufs[i]).ptr()) < 0) {
      throw py::error_already_set();
    }
  }
  return true;
}

// optim.adam.Adam._step_group + optim.adam._single_tensor_adam for a group on CPU with
// torch's default single-tensor path (foreach None/False), number hyper-parameters, real
// float32/float64 parameters with dense gradients and state already created (the first step
// creates it in Python): per parameter, the same kernels in the same order, and the bias
// corrections computed in double as Python computes them (pow from the C library, like `**`).
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
    if (!e.step.is_cpu() || e.step.numel() != 1) return false;
    entries.push_back(std::move(e));
  }
  at::AutoGradMode no_grad(false);
  for (auto& e : entries) {
    Tensor grad = maximize ? at::neg(e.grad) : e.grad;
    e.step.add_(1);
    if (weight_decay != 0) {
      if (decoupled_weight_decay) {
        e.param.mul_(1 - lr * weight_decay);
      } else {
        grad = grad.add(e.param, weight_decay);
      }
    }
    e.exp_avg.lerp_(grad, 1 - beta1);
    e.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
    double step = e.step.item<double>();
    double bias_correction1 = 1 - std::pow(beta1, step);
    double bias_correction2 = 1 - std::pow(beta2, step);
    double step_size = lr / bias_correction1;
    double bias_correction2_sqrt = std::pow(bias_correction2, 0.5);
    Tensor denom;
    if (amsgrad) {
      at::maximum_out(e.max_exp_avg_sq, e.max_exp_avg_sq, e.exp_avg_sq);
      denom = (e.max_exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps);
    } else {
      denom = (e.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps);
    }
    e.param.addcdiv_(e.exp_avg, denom, -step_size);
  }
  return true;
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
  m.def("walk", &walk);
  m.def("leaf_dependencies", &leaf_dependencies);
  m.def("mse_loss_forward", &mse_loss_forward);
  m.def("sgd_step", &sgd_step);
  m.def("adam_step", &adam_step);
  m.def("clear_grads", &clear_grads);
}
