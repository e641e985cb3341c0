// Fused element loops: one pass over a tensor's elements that computes, element by element,
// exactly what a sequence of torch's element-wise ATen kernels computes, with the same roundings
// in the same order, without dispatching one kernel per tensor and operation: the optimizers'
// updates (mul_, add_ with alpha, lerp_, addcmul_, div, addcdiv_) and the fused chain's ReLU,
// threshold_backward, tanh_backward and mse_loss_backward.
//
// Why this is exact: each of those kernels is element-wise, so element i of the result depends
// only on element i of the operands and on the kernel's formula. ATen's formulas (Lerp.h,
// PointwiseOpsKernel.cpp, the add ufunc) use fused multiply-adds where they are written as
// `a + alpha * b`: vec::fmadd in the vectorized body, and the compiler's contraction of the
// scalar expression in the tail. Which of the two a given build does is a property of that
// build, not of the formula written in torch's source, so shimnn does not assume it: a loop is
// used only after it has run against the ATen kernels on every vector and tail position of many
// lengths and values (native.cpp: `verified`, `chain_loop_ok`), and the kernels run otherwise.
// (One such run found that torch's float32 sqrt is MKL's, not the correctly rounded one: Adam's
// loops leave the square root to torch's kernel.)
//
// This file is compiled with -ffp-contract=off (shimnn/_native.py): a fused multiply-add
// happens exactly where fma is written, and nowhere else.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

namespace shimnn_fused {

// Hardware fused multiply-add (std::fma compiles to one instruction, and the loops vectorize).
#if defined(__x86_64__)
#if defined(__clang__)
#define SHIMNN_FUSED_TARGET __attribute__((target("avx2,fma")))
#else  // GCC vectorizes these loops from -O3 on
#define SHIMNN_FUSED_TARGET __attribute__((target("avx2,fma"), optimize("O3")))
#endif
inline bool hardware_fma() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#elif defined(__aarch64__)
#define SHIMNN_FUSED_TARGET
inline bool hardware_fma() { return true; }
#else
#define SHIMNN_FUSED_TARGET
inline bool hardware_fma() { return false; }  // std::fma would be a slow library call
#endif

// fma as one instruction inside the loops (std::fma, compiled without the loops' target,
// would not be inlined into them); IEEE's single rounding either way.
#if defined(__GNUC__)
SHIMNN_FUSED_TARGET inline float fma(float a, float b, float c) {
  return __builtin_fmaf(a, b, c);
}
SHIMNN_FUSED_TARGET inline double fma(double a, double b, double c) {
  return __builtin_fma(a, b, c);
}
#else
using std::fma;
#endif

// SGD (optim.sgd.sgd's single-tensor update of one parameter). The hyper-parameters in the
// parameter's dtype, as ATen casts a Scalar to the kernel's compute type.
template <typename T>
struct SgdScalars {
  T weight_decay;  // grad.add(param, alpha=weight_decay)
  T momentum;      // buf.mul_(momentum); grad.add(buf, alpha=momentum) under Nesterov
  T keep;          // buf.add_(grad, alpha=1 - dampening)
  T neg_lr;        // param.add_(grad, alpha=-lr)
};

// MOMENTUM: 0 none, 1 first step (buf = clone(grad)), 2 later steps (buf updated in place).
//   g = maximize ? -grad : grad;  g = fma(p, wd, g)            (weight decay)
//   b = g | fma(g, keep, b * momentum);  g = nesterov ? fma(b, momentum, g) : b
//   p = fma(g, -lr, p)
template <typename T, bool MAXIMIZE, bool DECAY, int MOMENTUM, bool NESTEROV>
SHIMNN_FUSED_TARGET void sgd_loop(T* __restrict p, const T* __restrict grad, T* __restrict buf,
                                  int64_t n, SgdScalars<T> s) {
  for (int64_t i = 0; i < n; ++i) {
    T g = MAXIMIZE ? -grad[i] : grad[i];
    if (DECAY) g = fma(p[i], s.weight_decay, g);
    if (MOMENTUM == 1) {
      buf[i] = g;
      if (NESTEROV) g = fma(g, s.momentum, g);
    } else if (MOMENTUM == 2) {
      T b = fma(g, s.keep, buf[i] * s.momentum);
      buf[i] = b;
      g = NESTEROV ? fma(b, s.momentum, g) : b;
    }
    p[i] = fma(g, s.neg_lr, p[i]);
  }
}

struct SgdFlags {
  bool maximize, decay, nesterov;
  int momentum;  // as sgd_loop's MOMENTUM
  int key() const {
    return (maximize ? 1 : 0) | (decay ? 2 : 0) | (nesterov ? 4 : 0) | momentum << 3;
  }
};

template <typename T>
using SgdLoop = void (*)(T*, const T*, T*, int64_t, SgdScalars<T>);

// The instantiation for `f` (all 24 combinations exist; NESTEROV needs MOMENTUM).
template <typename T>
SgdLoop<T> sgd_loop_for(const SgdFlags& f) {
#define SHIMNN_SGD_CASE(MAX, DEC, MOM, NES)                                        \
  if (f.maximize == MAX && f.decay == DEC && f.momentum == MOM && f.nesterov == NES) \
    return &sgd_loop<T, MAX, DEC, MOM, NES>;
#define SHIMNN_SGD_MOM(MAX, DEC)        \
  SHIMNN_SGD_CASE(MAX, DEC, 0, false)   \
  SHIMNN_SGD_CASE(MAX, DEC, 1, false)   \
  SHIMNN_SGD_CASE(MAX, DEC, 1, true)    \
  SHIMNN_SGD_CASE(MAX, DEC, 2, false)   \
  SHIMNN_SGD_CASE(MAX, DEC, 2, true)
  SHIMNN_SGD_MOM(false, false)
  SHIMNN_SGD_MOM(false, true)
  SHIMNN_SGD_MOM(true, false)
  SHIMNN_SGD_MOM(true, true)
#undef SHIMNN_SGD_MOM
#undef SHIMNN_SGD_CASE
  return nullptr;
}

// Adam (optim.adam._single_tensor_adam's update of one parameter, amsgrad off), the
// hyper-parameters in the parameter's dtype.
template <typename T>
struct AdamScalars {
  T decay;          // DECAY 1: grad.add(param, alpha=weight_decay); 2: param.mul_(1 - lr * wd)
  T weight;         // exp_avg.lerp_(grad, 1 - beta1)
  T beta2;          // exp_avg_sq.mul_(beta2)
  T value;          // exp_avg_sq.addcmul_(grad, grad, value=1 - beta2)
  T bias_correction2_sqrt;  // denom = exp_avg_sq.sqrt() / bias_correction2_sqrt
  T eps;            // denom.add_(eps)
  T neg_step_size;  // param.addcdiv_(exp_avg, denom, value=-step_size)
};

// DECAY: 0 none, 1 L2 (into the gradient), 2 decoupled (AdamW: into the parameter).
// The moments, before torch's sqrt (ATen's sqrt is MKL's, not IEEE's correctly rounded one: it
// runs between the two loops, as ATen's kernel):
//   lerp (Lerp.h): |w| < 0.5 ? fma(w, g - m, m) : fma(w - 1, g - m, g)
//   v = fma(value * g, g, v * beta2)
template <typename T, bool MAXIMIZE, int DECAY, bool SMALL_WEIGHT>
SHIMNN_FUSED_TARGET void adam_moments_loop(T* __restrict p, const T* __restrict grad,
                                           T* __restrict exp_avg, T* __restrict exp_avg_sq,
                                           int64_t n, AdamScalars<T> s) {
  const T coeff = SMALL_WEIGHT ? s.weight : s.weight - T(1);
  for (int64_t i = 0; i < n; ++i) {
    T g = MAXIMIZE ? -grad[i] : grad[i];
    if (DECAY == 1) g = fma(p[i], s.decay, g);
    if (DECAY == 2) p[i] = p[i] * s.decay;
    T m = exp_avg[i];
    exp_avg[i] = fma(coeff, g - m, SMALL_WEIGHT ? m : g);
    exp_avg_sq[i] = fma(s.value * g, g, exp_avg_sq[i] * s.beta2);
  }
}

// The update from root = sqrt(v) (torch's): p = p + (-step_size * m) / (root / c2 + eps).
template <typename T>
SHIMNN_FUSED_TARGET void adam_param_loop(T* __restrict p, const T* __restrict exp_avg,
                                         const T* __restrict root, int64_t n, AdamScalars<T> s) {
  for (int64_t i = 0; i < n; ++i) {
    T d = root[i] / s.bias_correction2_sqrt + s.eps;
    p[i] = p[i] + (s.neg_step_size * exp_avg[i]) / d;
  }
}

struct AdamFlags {
  bool maximize, small_weight;
  int decay;  // as adam_loop's DECAY
  int key() const { return (maximize ? 1 : 0) | (small_weight ? 2 : 0) | decay << 2; }
};

template <typename T>
using AdamLoop = void (*)(T*, const T*, T*, T*, int64_t, AdamScalars<T>);  // the moments

template <typename T>
AdamLoop<T> adam_loop_for(const AdamFlags& f) {
#define SHIMNN_ADAM_CASE(MAX, DEC, SMALL) \
  if (f.maximize == MAX && f.decay == DEC && f.small_weight == SMALL)  \
    return &adam_moments_loop<T, MAX, DEC, SMALL>;
#define SHIMNN_ADAM_DEC(MAX, DEC) SHIMNN_ADAM_CASE(MAX, DEC, true) SHIMNN_ADAM_CASE(MAX, DEC, false)
  SHIMNN_ADAM_DEC(false, 0)
  SHIMNN_ADAM_DEC(false, 1)
  SHIMNN_ADAM_DEC(false, 2)
  SHIMNN_ADAM_DEC(true, 0)
  SHIMNN_ADAM_DEC(true, 1)
  SHIMNN_ADAM_DEC(true, 2)
#undef SHIMNN_ADAM_DEC
#undef SHIMNN_ADAM_CASE
  return nullptr;
}

// The fused chain's element kernels (a Linear/ReLU/Tanh chain and its MSE loss), each as its
// ATen kernel writes it; `out` may be an input (in place). ATen's scalar and vector bodies
// agree on these formulas (verified like the optimizers' loops).
//   relu (clamp_min(x, 0)): x < 0 ? 0 : x             (-0 and NaN pass through)
//   threshold_backward(g, y, 0): y <= 0 ? 0 : g
//   tanh_backward(g, y): g * (1 - y * y), the product either fused into the difference or not
//   mse_loss_backward: (norm * (input - target)) * grad
template <typename T>
SHIMNN_FUSED_TARGET void relu_loop(T* out, const T* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] < T(0) ? T(0) : x[i];
}

template <typename T>
SHIMNN_FUSED_TARGET void threshold_backward_loop(T* out, const T* g, const T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = y[i] <= T(0) ? T(0) : g[i];
}

template <typename T, bool FUSED>
SHIMNN_FUSED_TARGET void tanh_backward_loop(T* out, const T* g, const T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = g[i] * (FUSED ? fma(-y[i], y[i], T(1)) : T(1) - y[i] * y[i]);
  }
}

template <typename T>
SHIMNN_FUSED_TARGET void mse_backward_loop(T* out, const T* input, const T* target, T norm,
                                           T grad, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = (norm * (input[i] - target[i])) * grad;
}

// Deterministic test values for the verification (never torch's generator: a user's random
// stream must not move): signs, magnitudes over many binades, zeros of both signs and
// subnormals, so that a formula with a different rounding shows on many elements.
class TestValues {
 public:
  explicit TestValues(uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ull + 1) {}

  uint64_t next() {
    state_ ^= state_ << 13;
    state_ ^= state_ >> 7;
    state_ ^= state_ << 17;
    return state_;
  }

  // A value of magnitude about 2^[low, high) (or a special value, one in 32).
  template <typename T>
  T value(int low, int high, bool positive = false) {
    uint64_t r = next();
    T sign = (positive || (r & 1)) ? T(1) : T(-1);
    switch ((r >> 1) & 31) {
      case 0: return sign * T(0);
      case 1: return sign * std::numeric_limits<T>::denorm_min() * T(1 + (r >> 40) % 1000);
      default: break;
    }
    double mantissa = 1.0 + double(r >> 11 & ((1ull << 52) - 1)) / double(1ull << 52);
    int exponent = low + int((r >> 6) % uint64_t(high - low));
    return sign * T(std::ldexp(mantissa, exponent));
  }

 private:
  uint64_t state_;
};

// Two results are the same: the same bits, or both NaN (a NaN's payload is not a value).
template <typename T>
bool same_values(const T* a, const T* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(a[i]) && std::isnan(b[i])) continue;
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return false;
  }
  return true;
}

}  // namespace shimnn_fused
