// Fused normalization ops, GroupNorm and BatchNorm: the two ops this project compares, with
// closed-form backward passes and statistics accumulated in double (see ops.cpp); each can
// fuse the activation that follows it. Also the per-channel moments both BN and its diagnostics use.
#pragma once

#include <cstdint>
#include <vector>

#include "core/autograd.h"

namespace sb {

// The activation fused into a norm op: the same output bit for bit as the op followed by the
// activation, with one pass less over the activations each way and one tensor less per call
// (the pre-activation values are never stored).
enum class Activation { None, ReLU };

// PyTorch's F.group_norm. x (N, C) or (N, C, *); the C channels split into num_groups groups of
// C / num_groups consecutive channels, and each (sample, group) is normalized over its
// (C / num_groups) x spatial values with their mean and biased variance:
//   y = (x - mean) / sqrt(var + eps) * weight[c] + bias[c]
// weight and bias are (C,), or undefined Vars for affine=false (either may be left out alone).
// Throws sb::Error when C is not divisible by num_groups, num_groups <= 0, weight or bias is not
// (C,), x has fewer than 2 dimensions, or a group holds a single value (its output would be 0).
// act = Activation::ReLU gives relu(group_norm(...)) as one op (errors then name group_norm_relu).
Var group_norm(const Var& x, int64_t num_groups, const Var& weight, const Var& bias,
               float eps = 1e-5f, Activation act = Activation::None);

// BatchNorm's running state: handles on the layer's buffers, updated in place by training calls.
struct RunningStats {
  Tensor mean, var;                 // (C,) each
  IndexTensor num_batches_tracked;  // () int64, or undefined; incremented by each updating call
  float momentum = 0.1f;
  bool cumulative = false;          // PyTorch's momentum=None: m = 1 / num_batches_tracked
};

// PyTorch's F.batch_norm as BatchNorm1d/2d use it. x (N, C) or (N, C, *), statistics per
// channel over N and the spatial dimensions. weight and bias: (C,) or undefined (affine=false).
//
// running: the running statistics, or nullptr for track_running_stats=false (then batch
// statistics are used in training and eval alike).
//   training (or no running stats): normalize with the batch mean and biased variance. With
//       running stats, then running = (1 - m) * running + m * batch, where the variance fed to
//       running var is the unbiased one (count / (count - 1) times the biased).
//   eval with running stats: normalize with the running mean and var; they are constants, so
//       backward is the per-channel affine map.
// m is `momentum`, or, when `cumulative` is true, 1 / num_batches_tracked after its increment,
// which makes the running stats the plain average of all batches so far; cumulative needs
// num_batches_tracked. Training on a single value per channel (N x spatial == 1) throws, as in
// PyTorch. act = Activation::ReLU fuses the ReLU (errors then name batch_norm_relu).
Var batch_norm(const Var& x, const RunningStats* running, const Var& weight, const Var& bias, bool training,
               float eps = 1e-5f, Activation act = Activation::None);

// Per-channel mean and biased variance of x (N, C) or (N, C, *) over N and the spatial
// dimensions, computed exactly as batch_norm's training forward computes them (the same bits).
struct ChannelMoments {
  std::vector<double> mean, var;  // (C,) each
};
ChannelMoments channel_moments(const Tensor& x);

}  // namespace sb
