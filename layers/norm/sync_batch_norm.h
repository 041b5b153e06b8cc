// SyncBatchNorm (`--norm syncbn`): BatchNorm2d whose training statistics span the ranks of a
// data-parallel run, with PyTorch's SyncBatchNorm semantics, on the CPU. The same parameters,
// buffers and state_dict keys as BatchNorm2d, so checkpoints move between bn and syncbn.
#pragma once

#include "core/distributed.h"
#include "layers/norm/batch_norm.h"

namespace sb {

// batch_norm in training, with the statistics of the whole batch spread over the ranks of
// `comm`'s group (`group` consecutive ranks; 0: all):
//   forward: each rank's per-channel count, mean and sum of squared deviations are gathered and
//       combined in rank order (Chan et al.'s pairwise update, in double), so every rank
//       normalizes with the group's mean and biased variance, and updates the running statistics
//       with the group's mean and unbiased variance;
//   backward: the per-channel sums of dy and dy * (x - mean) are summed over the group, and dx
//       uses them with the group's count:
//       dx = rstd * w * (dy - sum(dy) / n - (x - mean) * rstd^2 * sum(dy * (x - mean)) / n).
//       The weight and bias gradients are this rank's own (sum dy * xhat, sum dy): the gradient
//       sum over ranks that follows backward adds them up, as DDP does after PyTorch's SyncBatchNorm.
// Every rank of the group must call it, in the same order; x (N, C) or (N, C, *) with the same C.
Var sync_batch_norm(const Var& x, Communicator& comm, int group, const RunningStats* running, const Var& weight,
                    const Var& bias, float eps = 1e-5f, Activation act = Activation::None);

// Seconds this process has spent in sync_batch_norm's collectives, forward and backward, waiting
// for the other ranks included: what synchronizing costs a step, for the trainer to report.
double sync_batch_norm_comm_seconds();

class SyncBatchNorm : public BatchNorm2d {
 public:
  // group: synchronize within groups of this many consecutive ranks of world() (0: all ranks).
  explicit SyncBatchNorm(int64_t num_features, int group = 0, BatchNormConfig cfg = {});
  int group() const { return group_; }

 protected:
  // Training with more than one rank in its group: sync_batch_norm over world(). Otherwise, as
  // in PyTorch (which synchronizes only in training), BatchNorm2d: in a single process syncbn is bn.
  Var normalize(const Var& x) override;
  const char* kind_name() const override { return "SyncBatchNorm"; }

 private:
  int group_;
};

}  // namespace sb
