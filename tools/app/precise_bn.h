// PreciseBN (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021; fvcore's update_bn_stats):
// after training, the running statistics of every layer that keeps them are replaced by the
// statistics of its inputs over N training images, computed with the trained weights, instead
// of the exponential average that training left (which mixes statistics of older weights).
//
// What it computes, per layer and channel: the exact mean and the unbiased (n - 1) variance over
// all N x H x W input values the layer sees (fvcore's population estimator). Batches are combined
// weighted by their size (Chan's parallel formula, in double), so the result is exact for an
// unequal last batch too. With equal batches the mean equals what PyTorch's cumulative average
// (momentum=None) gives; its running_var, the mean of per-batch unbiased variances, would miss
// the spread of the batch means, which at 1 or 2 images per batch is not small.
//
// How the images pass: the first N of a fixed permutation (seed 0) of the training set, with the
// evaluation transform (no augmentation), in batches of the training batch size, every layer in
// eval mode except that the running-stats layers normalize with their batch statistics, as in
// training, without updating their buffers. Why the training batch size: a layer's input
// depends on how the layers before it normalized, and they normalize with the statistics of
// the batch; PreciseBN estimates the statistics of the inputs as training produced them.
// No parameter changes; num_batches_tracked and momentum stay as they were (num_batches_tracked
// counts training steps, which brn's ramp and frozenbn's freeze read).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "datasets/loader.h"
#include "layers/module.h"
#include "layers/norm/ops.h"

namespace sb {

// A layer whose running statistics PreciseBN recomputes, seen through the three things it needs.
// running_stats_layers() builds these for BatchNorm2d and its subclasses and for EvoNorm2dB0;
// another kind of layer that keeps running statistics is one more branch there.
struct RunningStatsLayer {
  std::string path;
  // Handles on the mean and var buffers; an undefined mean is left alone (EvoNorm-B0 keeps a var only).
  std::shared_ptr<RunningStats> stats;
  // In eval mode, normalize with the batch's statistics (true) or the running ones (false),
  // never updating the buffers.
  std::function<void(bool)> batch_stats_in_eval;
  // Calls watch(x) with each input x (N, C, ...) before it is normalized; an empty function stops.
  std::function<void(std::function<void(const Tensor&)>)> watch_inputs;
};

// Every layer of `model` that keeps running statistics (the BN family, EvoNorm-B0), in module order.
std::vector<RunningStatsLayer> running_stats_layers(Module& model);

struct PreciseBNResult {
  int64_t layers = 0;   // layers recomputed; 0: the model has none (nothing changed)
  int64_t images = 0;   // images used (the request, clamped to the dataset)
  int64_t batches = 0;
};

// Recomputes the running statistics of every running-stats layer of `model` over `images`
// training images (clamped to data.size(), with a one-line message through `log`), `batch` at a
// time, after `transform`. A model without such layers is left as it is, with a one-line notice.
// Leaves the model in eval mode. Throws for images <= 0 or batch <= 0.
PreciseBNResult precise_bn(Module& model, const Dataset& data, int64_t images, int64_t batch,
                           const SampleTransform& transform = {},
                           const std::function<void(const std::string&)>& log = {});

// The images PreciseBN uses from a dataset of n: the first `images` of a fixed permutation.
std::vector<int64_t> precise_bn_indices(int64_t n, int64_t images);

}  // namespace sb
