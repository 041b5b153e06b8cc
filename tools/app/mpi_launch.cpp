// The Communicator over MPI, and joining a launch: the one file of smallbatch that includes
// <mpi.h>. Built with MPI when CMake found it (SMALLBATCH_HAVE_MPI); without, launched_by_mpi()
// still answers, so a launch under mpirun is refused instead of training R unrelated copies.
#include "tools/app/mpi_launch.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>

#include "core/distributed.h"
#include "core/errors.h"
#include "core/threads.h"

#ifdef SMALLBATCH_HAVE_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only: the deprecated C++ bindings do not compile warning-free
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace sb {

static bool env_set(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0';
}

bool launched_by_mpi() {
  return env_set("OMPI_COMM_WORLD_SIZE") || env_set("PMI_SIZE") || env_set("PMIX_RANK");
}

int default_rank_threads() {
  if (!launched_by_mpi() || env_set("SMALLBATCH_NUM_THREADS")) return default_num_threads();
  int local = 0;
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"})
    if (const char* v = std::getenv(name); v && *v) {
      local = std::atoi(v);
      break;
    }
  return std::max(1, default_num_threads() / std::max(1, local));
}

#ifdef SMALLBATCH_HAVE_MPI

bool built_with_mpi() { return true; }

namespace {

// MPI counts are int: a larger message is refused rather than truncated.
int mpi_count(int64_t n, const char* what) {
  SB_CHECK(n >= 0 && n <= std::numeric_limits<int>::max(), what, ": ", n, " elements are more than one MPI message holds");
  return static_cast<int>(n);
}

class MpiSum : public PendingSum {
 public:
  explicit MpiSum(MPI_Request r) : request_(r) {}
  ~MpiSum() override {
    if (request_ != MPI_REQUEST_NULL) MPI_Wait(&request_, MPI_STATUS_IGNORE);  // never leave it writing freed memory
  }
  bool test() override {
    if (request_ == MPI_REQUEST_NULL) return true;
    int done = 0;
    MPI_Test(&request_, &done, MPI_STATUS_IGNORE);
    return done != 0;
  }
  void wait() override {
    if (request_ != MPI_REQUEST_NULL) MPI_Wait(&request_, MPI_STATUS_IGNORE);
  }

 private:
  MPI_Request request_;
};

class MpiCommunicator : public Communicator {
 public:
  // `comm`: MPI_COMM_WORLD, or a group of it made by split() (never freed: a few per job, and
  // freeing after MPI_Finalize would be an error).
  explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void allgather(const void* in, int64_t bytes, void* out, int group) override {
    MPI_Allgather(in, mpi_count(bytes, "allgather"), MPI_BYTE, out, mpi_count(bytes, "allgather"), MPI_BYTE,
                  comm_for(group));
  }
  // MPI_Iallreduce is Open MPI's libnbc: its algorithm (binomial reduce + broadcast for in-place
  // sums, which these are) is chosen from the communicator and message size alone and runs a fixed
  // schedule, so the order of the additions is fixed for a given R and bucket, and every rank ends
  // with the root's bits. The trainer checks that the replicas agree (a hash per epoch).
  std::unique_ptr<PendingSum> start_sum(float* data, int64_t count) override {
    MPI_Request r;
    MPI_Iallreduce(MPI_IN_PLACE, data, mpi_count(count, "sum"), MPI_FLOAT, MPI_SUM, comm_, &r);
    return std::make_unique<MpiSum>(r);
  }
  void broadcast(void* data, int64_t bytes, int root) override {
    MPI_Bcast(data, mpi_count(bytes, "broadcast"), MPI_BYTE, root, comm_);
  }
  void barrier() override { MPI_Barrier(comm_); }
  [[noreturn]] void abort(int code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);  // the whole job, also from a group: its other ranks would wait too
    std::_Exit(code);  // MPI_Abort does not return; if it did, still end this rank
  }
  std::shared_ptr<Communicator> split(int group) override {
    const int k = group_size(group);
    if (k == size_) return std::make_shared<MpiCommunicator>(comm_);
    MPI_Comm c;
    MPI_Comm_split(comm_, rank_ / k, rank_, &c);
    return std::make_shared<MpiCommunicator>(c);
  }

 private:
  // The communicator of the `group` consecutive ranks holding this one, made on first use.
  // MPI_Comm_split is collective: every rank reaches the first use of a group size at the same
  // point of the same forward pass (SyncBatchNorm's first layer), so they all call it together.
  MPI_Comm comm_for(int group) {
    const int k = group_size(group);
    if (k == size_) return comm_;
    auto it = groups_.find(k);
    if (it != groups_.end()) return it->second;
    MPI_Comm c;
    MPI_Comm_split(comm_, rank_ / k, rank_, &c);
    groups_[k] = c;
    return c;
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  std::map<int, MPI_Comm> groups_;
};

void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

}  // namespace

int join_mpi_launch(const std::string& command) {
  if (!launched_by_mpi()) return 1;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    // Funneled: only the main thread calls MPI (the loader's workers and OpenMP's never do).
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    std::atexit(finalize_at_exit);
  }
  auto comm = std::make_shared<MpiCommunicator>();
  const int ranks = comm->size();
  if (comm->rank() != 0 && !std::freopen("/dev/null", "w", stdout))
    fail(command, ": rank ", comm->rank(), ": cannot silence standard output");
  set_world(std::move(comm));
  return ranks;
}

#else

bool built_with_mpi() { return false; }

int join_mpi_launch(const std::string& command) {
  if (!launched_by_mpi()) return 1;
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  if (!size) size = std::getenv("PMI_SIZE");
  // One rank alone is a plain run; several would each train alone and write over each other.
  if (size && std::string(size) == "1") return 1;
  fail(command, ": started by mpirun or srun, but this smallbatch was built without MPI; install Open MPI "
       "(openmpi-bin, libopenmpi-dev) and rebuild, or run without mpirun");
}

#endif

}  // namespace sb
