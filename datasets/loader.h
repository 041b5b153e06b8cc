// DataLoader: batches a Dataset in background threads that prefetch, so the training step does
// not wait on decoding and augmentation. Which samples form which batch, and every random
// augmentation, depend only on the seed, never on the number of threads.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "datasets/dataset.h"

namespace sb {

struct Batch {
  Tensor images;                // (B, C, H, W)
  IndexTensor masks;            // (B, H, W)
  std::vector<int64_t> indices; // dataset indices, in batch order
};

// Applied to each sample in a worker thread; `gen` is seeded from (seed, epoch, index).
using SampleTransform = std::function<Sample(Sample, Generator& gen)>;

struct LoaderOptions {
  int64_t batch_size = 8;
  bool shuffle = true;
  bool drop_last = false;
  uint64_t seed = 0;
  int workers = 2;      // background threads; 0 loads on the calling thread
  int prefetch = 4;     // batches decoded ahead
  SampleTransform transform;  // optional
  // One rank's part of every batch in data-parallel training: of a batch of n samples, the
  // positions [shard * n / shards, (shard + 1) * n / shards), so the shards of the ranks together
  // are the batch one process would load. 0 of 1: the whole batch.
  int shard = 0, shards = 1;
};

// The order of sample indices for `epoch`: a seeded permutation, or 0..n-1 without shuffle.
std::vector<int64_t> epoch_order(int64_t n, bool shuffle, uint64_t seed, int64_t epoch);

// Stacks samples of equal shape into a batch; a size mismatch names both samples.
Batch collate(std::vector<Sample> samples, std::vector<int64_t> indices);

class DataLoader {
 public:
  DataLoader(DatasetPtr data, LoaderOptions opt);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  int64_t batches_per_epoch() const;
  // The batches of one epoch, in order, from batch `first_batch` on (a resumed run).
  void start_epoch(int64_t epoch, int64_t first_batch = 0);
  // A stream of `count` batches starting at global step `first_step`: step s takes the
  // samples at stream positions [s B, (s + 1) B), where the stream is epoch 0's order, then
  // epoch 1's, ... (without shuffle: file order, wrapping at the end). Used for --steps.
  void start_steps(int64_t first_step, int64_t count);
  // False when the epoch (or step range) is exhausted.
  bool next(Batch& out);
  const Dataset& dataset() const { return *data_; }

 private:
  struct Job {
    std::vector<int64_t> indices;
    std::vector<int64_t> epochs;  // per sample: a --steps batch can straddle two epochs
  };
  void start(std::vector<Job> jobs);
  void stop_workers();
  Batch load(const Job& job) const;
  void worker_loop();

  DatasetPtr data_;
  LoaderOptions opt_;
  std::vector<Job> jobs_;
  std::vector<Batch> ready_;        // by job index, filled by workers
  std::vector<char> done_;
  std::vector<std::exception_ptr> errors_;
  size_t next_job_ = 0, next_out_ = 0;
  bool stopping_ = false;
  std::mutex mu_;
  std::condition_variable cv_work_, cv_ready_;
  std::vector<std::thread> threads_;
};

}  // namespace sb
