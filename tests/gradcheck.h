// Finite-difference gradient checking and tensor comparison helpers shared by the tests.
#pragma once

#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "core/ops.h"

namespace sbtest {

struct Closeness {
  bool ok = true;
  double max_abs_err = 0, scale = 0;
  std::string report;
};

// Elementwise |got - want| <= atol + rtol * |want|, where atol defaults to rtol times the largest
// |want| (errors are judged relative to the tensor's scale, so values near zero don't demand the
// impossible of float32). Reports the worst element.
inline Closeness allclose(const sb::Tensor& got, const sb::Tensor& want, double rtol = 1e-5,
                          double atol = -1) {
  Closeness c;
  std::ostringstream os;
  if (got.shape() != want.shape()) {
    c.ok = false;
    os << "shape " << sb::shape_str(got.shape()) << " vs expected " << sb::shape_str(want.shape());
    c.report = os.str();
    return c;
  }
  for (int64_t i = 0; i < want.numel(); ++i) c.scale = std::max(c.scale, (double)std::fabs(want[i]));
  if (atol < 0) atol = rtol * c.scale;
  int64_t worst = -1;
  double worst_excess = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    double err = std::fabs((double)got[i] - (double)want[i]);
    if (!std::isfinite(got[i])) err = INFINITY;
    c.max_abs_err = std::max(c.max_abs_err, err);
    double excess = err - (atol + rtol * std::fabs(want[i]));
    if (excess > 0 && (worst < 0 || excess > worst_excess)) worst = i, worst_excess = excess;
  }
  c.ok = worst < 0;
  os << "max abs err " << c.max_abs_err << " (scale " << c.scale << ", rtol " << rtol << ")";
  if (!c.ok) os << "; worst at flat index " << worst << ": got " << got[worst] << " expected " << want[worst];
  c.report = os.str();
  return c;
}

struct GradcheckResult {
  bool ok = true;
  double max_err = 0;
  std::string report;
};

// Compares the autograd gradients of f with central finite differences. Every input gets a
// gradient; f's output is reduced to a scalar with fixed random weights so that every output
// element matters. At most `max_checks` elements per input are probed (spread evenly).
inline GradcheckResult gradcheck(const std::function<sb::Var(const std::vector<sb::Var>&)>& f,
                                 const std::vector<sb::Tensor>& inputs, double eps = 1e-2,
                                 double atol = 2e-3, double rtol = 2e-2, int64_t max_checks = 150) {
  GradcheckResult r;
  std::ostringstream os;
  std::vector<sb::Var> vars;
  for (const auto& t : inputs) vars.emplace_back(t.clone(), true);
  sb::Var out = f(vars);
  sb::Generator g(1234);
  sb::Tensor w = sb::Tensor::randn(out.shape(), g);
  // Scalar objective in double, so the finite difference is not drowned by float rounding.
  auto objective = [&](const sb::Tensor& y) {
    double s = 0;
    for (int64_t i = 0; i < y.numel(); ++i) s += (double)y[i] * (double)w[i];
    return s;
  };
  sb::Var loss = sb::sum(sb::mul(out, sb::Var(w)));
  loss.backward();
  for (size_t k = 0; k < vars.size(); ++k) {
    sb::Tensor x = vars[k].value();
    sb::Tensor grad = vars[k].grad().defined() ? vars[k].grad() : sb::Tensor::zeros(x.shape());
    int64_t n = x.numel();
    int64_t stride = std::max<int64_t>(1, n / max_checks);
    for (int64_t i = 0; i < n; i += stride) {
      float orig = x[i];
      double fp, fm;
      {
        sb::NoGrad ng;
        x[i] = orig + (float)eps;
        std::vector<sb::Var> in2;
        for (size_t j = 0; j < vars.size(); ++j) in2.emplace_back(vars[j].value());
        fp = objective(f(in2).value());
        x[i] = orig - (float)eps;
        fm = objective(f(in2).value());
        x[i] = orig;
      }
      double numeric = (fp - fm) / (2 * eps);
      double analytic = grad[i];
      double err = std::fabs(numeric - analytic);
      r.max_err = std::max(r.max_err, err);
      if (!(err <= atol + rtol * std::fabs(numeric))) {
        if (r.ok) os << "input " << k << " element " << i << ": analytic " << analytic << " numeric " << numeric;
        r.ok = false;
      }
    }
  }
  if (r.ok) os << "max abs err " << r.max_err;
  r.report = os.str();
  return r;
}

}  // namespace sbtest

#define CHECK_CLOSE(got, want, ...)                                     \
  do {                                                                  \
    auto _c = ::sbtest::allclose((got), (want), ##__VA_ARGS__);         \
    INFO(#got " vs " #want ": " << _c.report);                          \
    CHECK(_c.ok);                                                       \
  } while (0)

#define CHECK_GRADCHECK(...)                                            \
  do {                                                                  \
    auto _g = ::sbtest::gradcheck(__VA_ARGS__);                         \
    INFO("gradcheck: " << _g.report);                                   \
    CHECK(_g.ok);                                                       \
  } while (0)
