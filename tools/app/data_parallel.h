// Data-parallel training over a Communicator (train() uses it when world() has several ranks):
// gradient sums in buckets started during backward, the checks that the ranks run the same
// configuration and hold the same replica, and rank 0's state handed to the others on --resume.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/distributed.h"
#include "core/state_dict.h"
#include "layers/module.h"

namespace sb {

// Sums the parameters' gradients over all ranks, in buckets of about `bucket_bytes` (parameters
// taken in reverse registration order, which is about the order backward finishes them). A
// bucket's sum starts, non-blocking, as soon as the last of its gradients is final (the leaves'
// on_grad_ready hook), so communication overlaps the rest of backward, as PyTorch's DDP does.
// finish() starts what is left (parameters backward never reached count as zero), waits, and
// replaces every gradient with the sum. The trainer weights each rank's loss by its share of the
// global batch's labelled pixels, so the sum is the gradient of the global batch's mean loss.
class GradientBuckets {
 public:
  GradientBuckets(Communicator& comm, std::vector<Var> params, int64_t bucket_bytes);
  ~GradientBuckets();
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;

  void begin();   // before backward
  void finish();  // after backward

  // Measured over the steps so far.
  struct Stats {
    int64_t steps = 0, buckets = 0, bytes = 0;  // bytes: one rank's gradient, per step
    double wait_seconds = 0;      // in finish(): communication left after backward ended
    double comm_seconds = 0;      // from the first bucket's start to the last one's end
  };
  const Stats& stats() const { return stats_; }

 private:
  struct Bucket {
    std::vector<size_t> params;   // indices into params_
    std::vector<int64_t> offsets; // each parameter's first element in `data`
    std::vector<float> data;      // (sum of the parameters' sizes,)
    size_t waiting = 0;           // parameters whose gradient is not final yet
    std::unique_ptr<PendingSum> sum;
  };
  void ready(size_t param);
  void launch(Bucket& b);

  Communicator& comm_;
  std::vector<Var> params_;
  std::vector<size_t> bucket_of_;  // by parameter
  std::vector<char> is_ready_;     // by parameter, this step
  std::vector<Bucket> buckets_;
  Stats stats_;
  std::chrono::steady_clock::time_point first_launch_;
  bool launched_any_ = false;
};

// The gradient bucket size: SMALLBATCH_BUCKET_KB when set (0: one bucket, started after
// backward, so nothing overlaps), else 256 KiB.
int64_t gradient_bucket_bytes();

// Throws on every rank, naming each differing setting and the ranks that differ, unless every
// rank passed the same `settings` (ranks compare a hash, then the text when one differs). `what`
// opens the message ("configuration", "data").
void check_same_on_all_ranks(Communicator& comm, const nlohmann::json& settings, const std::string& what);

// A 64-bit FNV-1a hash of a tensor's bytes.
template <class T>
uint64_t tensor_hash(const BasicTensor<T>& t);
// A 64-bit FNV-1a hash of the parameters' bytes, in order.
uint64_t parameter_hash(const Module& model);
// Throws on every rank when the ranks' parameters differ (a replica drifted), naming `when`.
void check_same_replicas(Communicator& comm, const Module& model, const std::string& when);

// Rank `root`'s named tensors, names and shapes included, onto every rank.
StateDict broadcast_state_dict(Communicator& comm, const StateDict& mine, int root = 0);
// Rank 0's float buffers (BatchNorm's running statistics) onto every rank, as DDP's
// broadcast_buffers does before each forward: batch statistics stay per rank, the running ones
// are rank 0's everywhere, so norms that read them in training (brn, frozenbn) see the same.
void broadcast_buffers(Communicator& comm, Module& model);
// Rank 0's bytes of a trivially copyable vector onto every rank (its length too).
void broadcast_floats(Communicator& comm, std::vector<float>& v);

}  // namespace sb
