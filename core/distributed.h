// What data-parallel training asks of a group of processes (ranks): who am I, how many are we,
// sums, gathers and broadcasts. An interface with no MPI in it, so layers (SyncBatchNorm) and the
// trainer use it without depending on MPI; tools/app/mpi_communicator.cpp implements it over MPI,
// and SingleProcess is the one-rank group every plain `smallbatch train` runs in.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sb {

// A sum started by Communicator::start_sum, finished by wait(); test() lets it advance while
// backward goes on (MPI's non-blocking collectives progress only when the library is called).
class PendingSum {
 public:
  virtual ~PendingSum() = default;
  virtual bool test() = 0;  // true once finished
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // `bytes` from every rank of the group, in rank order, into `out` (group_size(group) * bytes).
  // `group` > 0 means the `group` consecutive ranks holding this one (ranks [r / K * K, r / K * K
  // + K)); 0 means all ranks. Every rank of the group must call it with the same bytes.
  virtual void allgather(const void* in, int64_t bytes, void* out, int group = 0) = 0;
  // Starts an in-place sum of `count` floats over all ranks. The buffer must stay alive and
  // untouched until wait() returns. Every rank gets the same bits (see the implementation).
  virtual std::unique_ptr<PendingSum> start_sum(float* data, int64_t count) = 0;
  // Rank `root`'s bytes into every rank's `data`.
  virtual void broadcast(void* data, int64_t bytes, int root = 0) = 0;
  virtual void barrier() = 0;
  // Ends every rank of the job with `code`, now: after a rank fails, the others would wait for it
  // in their next collective for ever.
  [[noreturn]] virtual void abort(int code) = 0;
  // The `group` consecutive ranks holding this one (as allgather's group) as a communicator of
  // their own, with ranks 0 .. group - 1. Every rank must call it, with the same group.
  virtual std::shared_ptr<Communicator> split(int group) = 0;

  // The number of ranks `group` names (see allgather).
  int group_size(int group) const { return group <= 0 || group > size() ? size() : group; }
  // An in-place sum of `count` doubles over the group, added in rank order on every rank from an
  // allgather: the same bits everywhere and from run to run, whatever the library's algorithm.
  // For small vectors (per-channel statistics, counts, a loss).
  void sum(double* data, int64_t count, int group = 0);
  // Every rank's vector of `count` doubles, rank by rank (group_size(group) * count values).
  std::vector<double> gather_all(const double* data, int64_t count, int group = 0);
  // Rank `root`'s text (an empty one too) onto every rank; the others' `text` is ignored.
  std::string broadcast_text(std::string text, int root = 0);
};

// One process on its own: rank 0 of 1, every collective a copy.
class SingleProcess : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allgather(const void* in, int64_t bytes, void* out, int group = 0) override;
  std::unique_ptr<PendingSum> start_sum(float* data, int64_t count) override;
  void broadcast(void*, int64_t, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(int code) override;
  std::shared_ptr<Communicator> split(int) override { return std::make_shared<SingleProcess>(); }
};

// The job's communicator: SingleProcess unless the command line joined an MPI launch.
Communicator& world();
void set_world(std::shared_ptr<Communicator> comm);

// Makes `comm` the job's communicator while it lives, then puts back the one before (also when
// an exception unwinds through it, so the error path still sees the whole job and can end it).
// compare spreads its runs over the ranks and trains each one in a single process this way.
class WorldScope {
 public:
  explicit WorldScope(std::shared_ptr<Communicator> comm);
  ~WorldScope();
  WorldScope(const WorldScope&) = delete;
  WorldScope& operator=(const WorldScope&) = delete;

 private:
  std::shared_ptr<Communicator> previous_;
};

}  // namespace sb
