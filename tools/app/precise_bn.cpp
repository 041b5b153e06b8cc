// PreciseBN: see precise_bn.h.
#include "tools/app/precise_bn.h"

#include <algorithm>
#include <memory>

#include "core/autograd.h"
#include "layers/norm/batch_norm.h"
#include "layers/norm/evo_norm.h"

namespace sb {

namespace {

// Forwards BatchNorm2d's observer hook to a function.
struct FunctionObserver : BatchNormObserver {
  std::function<void(const Tensor&)> fn;
  void observe(const BatchNorm2d&, const Tensor& x) override { fn(x); }
};

struct FunctionObserverB0 : EvoNormB0Observer {
  std::function<void(const Tensor&)> fn;
  void observe(const EvoNorm2dB0&, const Tensor& x) override { fn(x); }
};

// The first `n` samples of `indices` of a dataset.
struct Subset : Dataset {
  const Dataset& d;
  std::vector<int64_t> idx;
  Subset(const Dataset& d_, std::vector<int64_t> i) : d(d_), idx(std::move(i)) {}
  int64_t size() const override { return static_cast<int64_t>(idx.size()); }
  Sample get(int64_t i) const override { return d.get(idx[static_cast<size_t>(i)]); }
  int64_t num_classes() const override { return d.num_classes(); }
  std::string describe() const override { return str("PreciseBN subset of ", d.describe()); }
};

// Per channel: count, mean and sum of squared deviations, merged batch by batch (Chan et al.).
struct Moments {
  double n = 0;
  std::vector<double> mean, m2;
  void add(const Tensor& x) {
    const ChannelMoments b = channel_moments(x);
    const int64_t C = x.size(1);
    const double nb = static_cast<double>(x.numel() / C);
    if (mean.empty()) mean.assign(static_cast<size_t>(C), 0.0), m2.assign(static_cast<size_t>(C), 0.0);
    const double total = n + nb;
    for (size_t c = 0; c < mean.size(); ++c) {
      const double delta = b.mean[c] - mean[c];
      mean[c] += delta * nb / total;
      m2[c] += b.var[c] * nb + delta * delta * n * nb / total;
    }
    n = total;
  }
};

}  // namespace

std::vector<RunningStatsLayer> running_stats_layers(Module& model) {
  std::vector<RunningStatsLayer> out;
  model.apply([&](Module& m) {
    // The BN family: BatchNorm2d, BatchRenorm2d, FreezingBatchNorm2d. Another kind of layer with
    // running statistics adds a branch like this one.
    if (auto* bn = dynamic_cast<BatchNorm2d*>(&m)) {
      if (!bn->running_stats()) return;  // track_running_stats = false: nothing to recompute
      auto obs = std::make_shared<FunctionObserver>();
      out.push_back({bn->path(), std::shared_ptr<RunningStats>(std::shared_ptr<RunningStats>(), &bn->running),
                     [bn](bool on) { bn->batch_stats_in_eval = on; },
                     [bn, obs](std::function<void(const Tensor&)> fn) {
                       obs->fn = std::move(fn);
                       bn->observer = obs->fn ? obs.get() : nullptr;
                     }});
    }
    // EvoNorm-B0: a running variance only, over the same (N, H, W) values as BN's.
    if (auto* b0 = dynamic_cast<EvoNorm2dB0*>(&m)) {
      auto stats = std::make_shared<RunningStats>();
      stats->var = b0->running_var;  // a handle: writing it writes the buffer
      auto obs = std::make_shared<FunctionObserverB0>();
      out.push_back({b0->path(), stats, [b0](bool on) { b0->batch_stats_in_eval = on; },
                     [b0, obs](std::function<void(const Tensor&)> fn) {
                       obs->fn = std::move(fn);
                       b0->observer = obs->fn ? obs.get() : nullptr;
                     }});
    }
  });
  return out;
}

std::vector<int64_t> precise_bn_indices(int64_t n, int64_t images) {
  std::vector<int64_t> order = epoch_order(n, true, 0, 0);
  order.resize(static_cast<size_t>(std::clamp<int64_t>(images, 0, n)));
  return order;
}

PreciseBNResult precise_bn(Module& model, const Dataset& data, int64_t images, int64_t batch,
                           const SampleTransform& transform, const std::function<void(const std::string&)>& log) {
  SB_CHECK(images > 0, "--precise-bn: the number of images must be positive, got ", images);
  SB_CHECK(batch > 0, "PreciseBN: the batch size must be positive, got ", batch);
  PreciseBNResult r;
  std::vector<RunningStatsLayer> layers = running_stats_layers(model);
  if (layers.empty()) {
    if (log) log("PreciseBN: the model has no BatchNorm-family layer; nothing to recompute");
    return r;
  }
  SB_CHECK(data.size() > 0, "PreciseBN: the training data is empty");
  if (images > data.size()) {
    if (log) log(str("PreciseBN: ", images, " images asked but the training set has ", data.size(), "; using all ",
                     data.size()));
    images = data.size();
  }
  auto subset = std::make_shared<Subset>(data, precise_bn_indices(data.size(), images));
  std::vector<Moments> moments(layers.size());
  struct Restore {  // the layers back to running statistics and unwatched, also when a forward throws
    std::vector<RunningStatsLayer>& l;
    ~Restore() {
      for (auto& x : l) x.batch_stats_in_eval(false), x.watch_inputs({});
    }
  } restore{layers};
  for (size_t i = 0; i < layers.size(); ++i) {
    layers[i].batch_stats_in_eval(true);
    layers[i].watch_inputs([&m = moments[i]](const Tensor& x) { m.add(x); });
  }
  model.eval();
  NoGrad ng;
  LoaderOptions lo;
  lo.batch_size = batch;
  lo.shuffle = false;
  lo.workers = 1;
  lo.transform = transform;
  DataLoader loader(subset, lo);
  loader.start_epoch(0);
  Batch b;
  while (loader.next(b)) {
    model(Var(b.images));
    r.images += b.images.size(0);
    ++r.batches;
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    const Moments& m = moments[i];
    RunningStats& s = *layers[i].stats;
    SB_CHECK(m.n > 1, "PreciseBN: layer ", layers[i].path, " saw ", m.n, " value(s) per channel; need more than one");
    for (size_t c = 0; c < m.mean.size(); ++c) {
      if (s.mean.defined()) s.mean[static_cast<int64_t>(c)] = static_cast<float>(m.mean[c]);
      if (s.var.defined()) s.var[static_cast<int64_t>(c)] = static_cast<float>(m.m2[c] / (m.n - 1));
    }
  }
  r.layers = static_cast<int64_t>(layers.size());
  return r;
}

}  // namespace sb
