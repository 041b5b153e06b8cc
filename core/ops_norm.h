// Fused normalization ops, GroupNorm and BatchNorm: the two ops this project compares, with
// closed-form backward passes and statistics accumulated in double (see ops_norm.cpp); each also
// fused with the ReLU that follows it.
#pragma once

#include <cstdint>

#include "core/autograd.h"

namespace sb {

// PyTorch's F.group_norm. x (N, C) or (N, C, *); the C channels split into num_groups groups of
// C / num_groups consecutive channels, and each (sample, group) is normalized over its
// (C / num_groups) x spatial values with their mean and biased variance:
//   y = (x - mean) / sqrt(var + eps) * weight[c] + bias[c]
// weight and bias are (C,), or undefined Vars for affine=false (either may be left out alone).
// Throws sb::Error when C is not divisible by num_groups, num_groups <= 0, weight or bias is not
// (C,), x has fewer than 2 dimensions, or a group holds a single value (its output would be 0).
Var group_norm(const Var& x, int64_t num_groups, const Var& weight, const Var& bias,
               float eps = 1e-5f);
// relu(group_norm(...)) as one op: the same output bit for bit, one pass less over the
// activations each way and one tensor less per call (the pre-ReLU values are never stored).
Var group_norm_relu(const Var& x, int64_t num_groups, const Var& weight, const Var& bias,
                    float eps = 1e-5f);

// PyTorch's F.batch_norm as BatchNorm1d/2d use it. x (N, C) or (N, C, *), statistics per
// channel over N and the spatial dimensions. weight and bias: (C,) or undefined (affine=false).
//
// running_mean and running_var: (C,) tensors, updated in place, or both undefined for
// track_running_stats=false (then batch statistics are used in training and eval alike).
//   training (or no running stats): normalize with the batch mean and biased variance. With
//       running stats, then running = (1 - m) * running + m * batch, where the variance fed to
//       running_var is the unbiased one (count / (count - 1) times the biased).
//   eval with running stats: normalize with running_mean and running_var; they are constants,
//       so backward is the per-channel affine map.
// m is `momentum`, or, when `cumulative` is true (PyTorch's momentum=None), 1 / num_batches_tracked
// after its increment, which makes the running stats the plain average of all batches so far.
// num_batches_tracked, when given, is incremented by each training call that updates running
// stats; cumulative needs it. Training on a single value per channel (N x spatial == 1) throws,
// as in PyTorch.
Var batch_norm(const Var& x, const Tensor& running_mean, const Tensor& running_var,
               const Var& weight, const Var& bias, bool training, float momentum,
               float eps = 1e-5f, bool cumulative = false, int64_t* num_batches_tracked = nullptr);
// relu(batch_norm(...)) as one op, as group_norm_relu.
Var batch_norm_relu(const Var& x, const Tensor& running_mean, const Tensor& running_var,
                    const Var& weight, const Var& bias, bool training, float momentum,
                    float eps = 1e-5f, bool cumulative = false, int64_t* num_batches_tracked = nullptr);

}  // namespace sb
