// Data-parallel training over MPI, proven against one process: each test launches
// `mpirun --allow-run-as-root --oversubscribe -np R` (2 and 3 ranks on the 2-core CI machine) and
// compares with a single process at R x B; and compare's runs spread over the ranks, against one
// process. Skipped, saying so, where mpirun is not installed.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "core/distributed.h"
#include "core/io/safetensors.h"
#include "core/ops.h"
#include "fixtures.h"
#include "layers/conv/ops.h"
#include "layers/loss/ops.h"
#include "layers/norm/sync_batch_norm.h"
#include "temp_dir.h"
#include "tools/app/data_parallel.h"
#include "tools/app/mpi_launch.h"

using namespace sb;
namespace fs = std::filesystem;

namespace {

// mpirun on PATH, or "" (the test then says it is skipped).
std::string find_mpirun() {
  const char* path = std::getenv("PATH");
  std::string rest = path ? path : "";
  while (!rest.empty()) {
    const size_t colon = rest.find(':');
    const std::string dir = rest.substr(0, colon);
    rest = colon == std::string::npos ? "" : rest.substr(colon + 1);
    const fs::path p = fs::path(dir) / "mpirun";
    if (!dir.empty() && ::access(p.c_str(), X_OK) == 0) return p.string();
  }
  return "";
}

bool mpi_ready(const char* test) {
  if (!built_with_mpi()) {
    MESSAGE(test, ": skipped: this build has no MPI (install openmpi-bin and libopenmpi-dev, then reconfigure)");
    return false;
  }
  if (find_mpirun().empty()) {
    MESSAGE(test, ": skipped: mpirun is not on PATH (apt-get install openmpi-bin)");
    return false;
  }
  return true;
}

struct Launch {
  int code = -1;
  std::string out;
  double seconds = 0;
};

// The mpirun command line for `ranks` ranks of `command`. No single-copy shared memory (CMA):
// containers often forbid the ptrace access it needs.
std::string mpirun_command(int ranks, const std::string& command) {
  std::string cmd = find_mpirun() +
                    " --allow-run-as-root --oversubscribe --bind-to none --mca btl_vader_single_copy_mechanism none";
  // The sanitizer build: AddressSanitizer checks the ranks, but not for leaks. LeakSanitizer's
  // exit-time check stops every thread with a ptrace tracer, and in a rank (Open MPI's threads
  // still ending after MPI_Finalize) that tracer sometimes crashes ("Tracer caught signal 11 ...
  // LeakSanitizer has encountered a fatal error"), aborting a rank that did nothing wrong: it failed
  // a CI run and a rehearsal. Leaks are still checked in every single-process test, which runs
  // the same code apart from the MPI communicator. Open MPI's components are kept loaded so
  // ASan's reports name them.
  if (const char* asan = std::getenv("ASAN_OPTIONS"))
    cmd += std::string(" --mca mca_base_component_disable_dlclose 1 -x ASAN_OPTIONS=") + asan +
           ":fast_unwind_on_malloc=0:detect_leaks=0";
  return cmd + " -np " + std::to_string(ranks) + " " + command;
}

// `timeout` bounds a hang: a test that waits for ever is a failure, not a stuck CI job.
Launch run_mpi(int ranks, const std::string& command, int timeout_s = 240) {
  static int counter = 0;
  const std::string log = (fs::temp_directory_path() / ("sb_mpi_" + std::to_string(::getpid()) + "_" +
                                                        std::to_string(counter++) + ".log")).string();
  const std::string cmd = "timeout " + std::to_string(timeout_s) + " " + mpirun_command(ranks, command) + " >" + log + " 2>&1";
  const auto t0 = std::chrono::steady_clock::now();
  const int rc = std::system(cmd.c_str());
  Launch r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.code = WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
  std::ifstream f(log);
  std::stringstream ss;
  ss << f.rdbuf();
  r.out = ss.str();
  fs::remove(log);
  // A job that died: CI shows only the start of a long failure message, so the lines that say why
  // (a signal, an abort, an error) go first.
  if (r.code != 0) {
    std::string why, line;
    std::istringstream lines(r.out);
    for (int n = 0; std::getline(lines, line) && n < 12;)
      for (const char* word : {"signal", "bort", "terminate", "what()", "rror", "FATAL", "exited", "killed", "timed out"})
        if (line.find(word) != std::string::npos) {
          why += "  " + line + "\n", ++n;
          break;
        }
    r.out = "[mpirun exited " + std::to_string(r.code) + "; its lines that say why:]\n" + why + "[the whole output:]\n" + r.out;
  }
  return r;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string cli() { return std::string("\"") + SB_CLI_PATH + "\""; }

// The largest |a - b| / (1 + |b|) over the float tensors both files hold (every one of them).
double max_rel_diff(const std::string& a_path, const std::string& b_path, std::string& worst) {
  const TensorFile a = load_safetensors(a_path), b = load_safetensors(b_path);
  REQUIRE(a.floats.size() == b.floats.size());
  double m = 0;
  for (const auto& [k, t] : b.floats) {
    const Tensor& u = a.get_float(k);
    REQUIRE(u.shape() == t.shape());
    for (int64_t i = 0; i < t.numel(); ++i) {
      const double d = std::fabs(double(u.data()[i]) - t.data()[i]) / (1.0 + std::fabs(double(t.data()[i])));
      if (d > m) m = d, worst = k;
    }
  }
  return m;
}

// Rows [lo, hi) of a tensor's first dimension, as a tensor of its own.
Tensor rows(const Tensor& t, int64_t lo, int64_t hi) {
  Shape s = t.shape();
  const int64_t per = t.numel() / s[0];
  s[0] = hi - lo;
  Tensor r = Tensor::empty(s);
  std::memcpy(r.data(), t.data() + lo * per, static_cast<size_t>((hi - lo) * per) * sizeof(float));
  return r;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::fabs(double(a.data()[i]) - b.data()[i]));
  return m;
}

const std::string kData = "--data shapes:train=24,size=16 --val-data none --base-width 8 --workers 1 --threads 1 "
                          "--seed 5 --lr 0.05";

}  // namespace

// ---- in-process checks, run on every rank by the test below ----

// Run only under mpirun by "mpi: the ops ...", which passes --no-skip; CHECK, never REQUIRE, so
// that a failing rank still takes part in every collective that follows.
TEST_CASE("mpi rank: sync_batch_norm against PyTorch and bn, bn with gradient buckets" * doctest::skip()) {
  join_mpi_launch("smallbatch_tests");
  Communicator& comm = world();
  const int R = comm.size(), r = comm.rank();

  // syncbn on R ranks = PyTorch's BatchNorm2d on the whole batch of 6, two steps: forward,
  // dx, the weight and bias gradients summed over ranks, the running statistics.
  {
    const TensorFile f = sbtest::load_fixture("sync_batch_norm");
    const int64_t lo = r * 6 / R, hi = (r + 1) * 6 / R;
    RunningStats rs{f.get_float("running_mean_init").clone(), f.get_float("running_var_init").clone(), IndexTensor::zeros({}),
                    0.2f, false};
    Var w(f.get_float("weight").clone(), true), b(f.get_float("bias").clone(), true);
    for (int step = 0; step < 2; ++step) {
      const std::string k = std::to_string(step);
      Var x(rows(f.get_float("x" + k), lo, hi), true);
      w.zero_grad(), b.zero_grad();
      Var y = sync_batch_norm(x, comm, 0, &rs, w, b, 1e-5f);
      y.backward(rows(f.get_float("dy" + k), lo, hi));
      CHECK(max_abs_diff(y.value(), rows(f.get_float("y" + k), lo, hi)) < 2e-6);
      CHECK(max_abs_diff(x.grad(), rows(f.get_float("dx" + k), lo, hi)) < 2e-6);
      std::vector<double> g(6);
      for (int c = 0; c < 3; ++c) g[c] = w.grad().data()[c], g[3 + c] = b.grad().data()[c];
      comm.sum(g.data(), 6);
      for (int c = 0; c < 3; ++c) {
        CHECK(g[c] == doctest::Approx(f.get_float("dweight" + k).data()[c]).epsilon(1e-5));
        CHECK(g[3 + c] == doctest::Approx(f.get_float("dbias" + k).data()[c]).epsilon(1e-5));
      }
      CHECK(max_abs_diff(rs.mean, f.get_float("running_mean" + k)) < 1e-6);
      CHECK(max_abs_diff(rs.var, f.get_float("running_var" + k)) < 1e-6);
    }
  }

  // Groups: syncbn in groups of K consecutive ranks = bn over the K ranks' images (K = 1: this
  // rank's own, as unsynchronized bn).
  for (int K : {1, 2}) {
    if (R % K != 0 || K == R) continue;
    Generator gen(11);
    const Tensor all = Tensor::randn({2 * R, 4, 3, 3}, gen);
    const Tensor dy = Tensor::randn({2 * R, 4, 3, 3}, gen);
    const int first = r / K * K;
    Var x(rows(all, 2 * r, 2 * r + 2), true);
    Var y = sync_batch_norm(x, comm, K, nullptr, Var(), Var());
    y.backward(rows(dy, 2 * r, 2 * r + 2));
    Var xg(rows(all, 2 * first, 2 * (first + K)), true);
    Var yg = batch_norm(xg, nullptr, Var(), Var(), true);
    yg.backward(rows(dy, 2 * first, 2 * (first + K)));
    const int64_t at = 2 * (r - first);
    CHECK_MESSAGE(max_abs_diff(y.value(), rows(yg.value(), at, at + 2)) < 1e-5, "K = ", K);
    CHECK_MESSAGE(max_abs_diff(x.grad(), rows(xg.grad(), at, at + 2)) < 1e-5, "K = ", K);
  }

  // bn, not synchronized, with gradient buckets: each rank normalizes its own 2 images; the
  // summed gradients equal the sum, over the ranks' shards, of each shard's gradient with its
  // loss weighted 1 / R, computed here in one process. Buckets of 64 bytes: several, started
  // during backward.
  {
    Generator gen(7);
    const Tensor images = Tensor::randn({2 * R, 3, 6, 6}, gen);
    IndexTensor labels = IndexTensor::zeros({2 * R, 6, 6});
    for (int64_t i = 0; i < labels.numel(); ++i) labels.data()[i] = static_cast<int64_t>(gen.below(3));
    auto make_params = [] {
      Generator g(3);
      return std::vector<Var>{Var(Tensor::randn({4, 3, 3, 3}, g, 0.f, 0.3f), true), Var(Tensor::ones({4}), true),
                              Var(Tensor::zeros({4}), true), Var(Tensor::randn({3, 4, 1, 1}, g, 0.f, 0.3f), true)};
    };
    auto loss_of = [](const std::vector<Var>& p, const Tensor& x, const IndexTensor& t) {
      Conv2dOptions pad;
      pad.padding = {1, 1};
      Var h = batch_norm(conv2d(Var(x), p[0], Var(), pad), nullptr, p[1], p[2], true, 1e-5f, Activation::ReLU);
      return cross_entropy(conv2d(h, p[3]), t);
    };
    auto label_rows = [&](int64_t lo, int64_t hi) {
      IndexTensor t = IndexTensor::empty({hi - lo, 6, 6});
      std::memcpy(t.data(), labels.data() + lo * 36, static_cast<size_t>((hi - lo) * 36) * sizeof(int64_t));
      return t;
    };
    std::vector<Var> mine = make_params(), reference = make_params();
    GradientBuckets buckets(comm, mine, 64);
    CHECK(buckets.stats().buckets > 1);
    buckets.begin();
    loss_of(mine, rows(images, 2 * r, 2 * r + 2), label_rows(2 * r, 2 * r + 2))
        .backward(Tensor::full({}, 1.f / static_cast<float>(R)));
    buckets.finish();
    for (int q = 0; q < R; ++q)
      loss_of(reference, rows(images, 2 * q, 2 * q + 2), label_rows(2 * q, 2 * q + 2))
          .backward(Tensor::full({}, 1.f / static_cast<float>(R)));
    for (size_t i = 0; i < mine.size(); ++i) {
      double scale = 0;
      for (float v : reference[i].grad()) scale = std::max(scale, double(std::fabs(v)));
      CHECK_MESSAGE(max_abs_diff(mine[i].grad(), reference[i].grad()) <= 1e-5 * scale, "parameter ", i);
    }
  }
}

TEST_CASE("mpi: the ops and the gradient buckets on 2, 3 and 4 ranks agree with one process and PyTorch") {
  if (!mpi_ready("mpi ops")) return;
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  REQUIRE(n > 0);
  self[n] = '\0';
  for (int ranks : {2, 3, 4}) {
    const Launch l = run_mpi(ranks, std::string(self) + " --no-skip --test-case=\"mpi rank:*\"", 120);
    INFO("mpirun -np ", ranks, ":\n", l.out);
    CHECK(l.code == 0);
    CHECK(l.out.find("1 passed") != std::string::npos);
  }
}

// ---- the command line ----

TEST_CASE("mpi: gn on 2 and 3 ranks at batch B trains the weights one process trains at R x B") {
  if (!mpi_ready("mpi gn")) return;
  sbtest::TempDir dir("sb_mpi_gn");
  const std::string common = kData + " --norm gn --groups 4 --steps 3";
  const auto one = sbtest::run_cli("train " + common + " --batch 6 --save " + (dir / "one.safetensors"));
  REQUIRE_MESSAGE(one.code == 0, one.all());
  for (int ranks : {2, 3}) {
    const std::string out = (dir / "r" + std::to_string(ranks) + ".safetensors");
    const Launch l = run_mpi(ranks, cli() + " train " + common + " --batch " + std::to_string(6 / ranks) + " --save " + out);
    INFO(l.out);
    REQUIRE(l.code == 0);
    CHECK(l.out.find("global batch 6") != std::string::npos);
    std::string worst;
    // Float tolerance of reordered sums: the ranks sum their own pixels' gradients, then the
    // ranks' sums are added (one process adds them in one pass), so values agree to a few ulps
    // per step, which SGD with momentum carries through 3 steps: measured 3e-8 relative, limit 1e-6.
    const double d = max_rel_diff(out, (dir / "one.safetensors"), worst);
    MESSAGE("gn, ", ranks, " ranks: largest relative difference from one process ", d, " (", worst, ")");
    CHECK_MESSAGE(d < 1e-6, ranks, " ranks: ", worst, " differs by ", d);
  }
}

TEST_CASE("mpi: syncbn on 2 and 3 ranks equals bn in one process at R x B, running statistics included") {
  if (!mpi_ready("mpi syncbn")) return;
  sbtest::TempDir dir("sb_mpi_syncbn");
  const std::string common = kData + " --steps 3";
  const auto one = sbtest::run_cli("train " + common + " --norm bn --batch 6 --save " + (dir / "bn.safetensors"));
  REQUIRE_MESSAGE(one.code == 0, one.all());
  // One process: syncbn is bn, bit for bit.
  const auto single = sbtest::run_cli("train " + common + " --norm syncbn --batch 6 --save " + (dir / "s1.safetensors"));
  REQUIRE_MESSAGE(single.code == 0, single.all());
  std::string worst;
  CHECK(max_rel_diff((dir / "s1.safetensors"), (dir / "bn.safetensors"), worst) == 0);
  for (int ranks : {2, 3}) {
    const std::string out = (dir / "r" + std::to_string(ranks) + ".safetensors");
    const Launch l = run_mpi(ranks, cli() + " train " + common + " --norm syncbn --batch " + std::to_string(6 / ranks) +
                                        " --save " + out);
    INFO(l.out);
    REQUIRE(l.code == 0);
    // The same keys as bn's (weights, running_mean, running_var; max_rel_diff requires every one).
    const double d = max_rel_diff(out, (dir / "bn.safetensors"), worst);
    MESSAGE("syncbn, ", ranks, " ranks: largest relative difference from bn in one process ", d, " (", worst, ")");
    CHECK_MESSAGE(d < 1e-6, ranks, " ranks: ", worst, " differs by ", d);
  }
  // Unsynchronized bn on 2 ranks normalizes 3 images at a time: a different model, visibly.
  const Launch l = run_mpi(2, cli() + " train " + common + " --norm bn --batch 3 --save " + (dir / "bn2.safetensors"));
  REQUIRE_MESSAGE(l.code == 0, l.out);
  CHECK(max_rel_diff((dir / "bn2.safetensors"), (dir / "bn.safetensors"), worst) > 1e-3);
}

TEST_CASE("mpi: two identical mpirun runs write identical bytes, and rank 0 alone writes") {
  if (!mpi_ready("mpi determinism")) return;
  sbtest::TempDir dir("sb_mpi_det");
  const std::string run = cli() + " train " + kData + " --norm syncbn --batch 2 --epochs 2";
  for (const char* name : {"a", "b"}) {
    const Launch l = run_mpi(2, run + " --out " + (dir / name));
    REQUIRE_MESSAGE(l.code == 0, l.out);
  }
  for (const char* f : {"metrics.csv", "config.json", "model.safetensors", "state.safetensors"}) {
    INFO(f);
    CHECK(read_text((dir / std::string("a/") + f)) == read_text((dir / std::string("b/") + f)));
  }
  // Rank 0 alone wrote: nothing but the run's own files.
  for (auto& e : fs::directory_iterator((dir / "a"))) {
    const std::string name = e.path().filename().string();
    CHECK_MESSAGE((name == "metrics.csv" || name == "timing.csv" || name == "config.json" || name == "model.safetensors" ||
                   name == "best.safetensors" || name == "state.safetensors" || name == ".lock"),
                  name);
  }
}

// train without --out takes a fresh folder under $SMALLBATCH_RUNS_DIR: rank 0 takes it for the
// job (each rank taking its own left runs/train-2 empty beside the run), and the output, which
// Open MPI passes through a pseudo-terminal, carries no \r-rewritten progress bar.
TEST_CASE("mpi: train without --out saves the job into one fresh folder, without a progress bar") {
  if (!mpi_ready("mpi fresh folder")) return;
  sbtest::TempDir dir("sb_mpi_fresh");
  const std::string runs = (dir / "runs");
  for (int ranks : {2, 3}) {
    CAPTURE(ranks);
    const Launch l = run_mpi(ranks, "env SMALLBATCH_RUNS_DIR=" + runs + " " + cli() + " train " + kData + " --norm gn --steps 2");
    REQUIRE_MESSAGE(l.code == 0, l.out);
    CHECK(l.out.find('\r') == std::string::npos);
  }
  std::vector<std::string> made;
  for (auto& e : fs::directory_iterator(runs)) made.push_back(e.path().filename().string());
  std::sort(made.begin(), made.end());
  CHECK(made == std::vector<std::string>{"train", "train-2"});
  CHECK(fs::exists(runs + "/train/model.safetensors"));
  CHECK(fs::exists(runs + "/train-2/model.safetensors"));
}

// The rank count sets the global batch: a resume under another count is another run. "ranks" is
// written only under mpirun, so a one-process resume of a 2-rank run once went on at half the
// global batch without a word.
TEST_CASE("mpi: a 2-rank run resumed by one process or by 3 ranks is refused naming the ranks") {
  if (!mpi_ready("mpi resume ranks")) return;
  sbtest::TempDir dir("sb_mpi_resume_ranks");
  const std::string out = (dir / "r");
  const Launch first = run_mpi(2, cli() + " train " + kData + " --norm gn --epochs 1 --out " + out);
  REQUIRE_MESSAGE(first.code == 0, first.out);
  sbtest::CliResult alone = sbtest::run_cli("train --out " + out + " --resume --epochs 2");
  CHECK(alone.code == 1);
  CHECK(alone.err.find("ranks (mpirun -np): saved 2, now 1") != std::string::npos);
  const Launch three = run_mpi(3, cli() + " train --out " + out + " --resume --epochs 2");
  CHECK(three.code != 0);
  CHECK(three.out.find("saved 2, now 3") != std::string::npos);
  const Launch two = run_mpi(2, cli() + " train --out " + out + " --resume --epochs 2");
  CHECK_MESSAGE(two.code == 0, two.out);
}

// Without --threads each rank once took every core, so R ranks oversubscribed a machine R times.
TEST_CASE("mpi: without --threads a rank takes the machine's cores divided by its ranks") {
  if (!mpi_ready("mpi default threads")) return;
  sbtest::TempDir dir("sb_mpi_threads");
  const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  // kData gives --threads 1: this run leaves it out.
  const Launch l = run_mpi(2, "env -u SMALLBATCH_NUM_THREADS " + cli() +
                                  " train --data shapes:train=8,size=16 --val-data none --base-width 4 --workers 1 "
                                  "--norm gn --steps 1 --out " + (dir / "r"));
  REQUIRE_MESSAGE(l.code == 0, l.out);
  const int want = std::max(1, cores / 2);
  CHECK_MESSAGE(l.out.find(str("--threads ", want, " per rank")) != std::string::npos, l.out);
}

TEST_CASE("mpi: commands other than train and compare are refused under mpirun, not run once per rank") {
  if (!mpi_ready("mpi other commands")) return;
  for (const std::string cmd : {"models", "data stats --data shapes:train=4,val=4,size=16", "doctor"}) {
    CAPTURE(cmd);
    const Launch l = run_mpi(2, cli() + " " + cmd);
    CHECK(l.code != 0);
    CHECK(l.out.find("runs in one process: start it without mpirun") != std::string::npos);
  }
}

TEST_CASE("mpi: ranks started with different flags are refused naming the flag, and a failing rank ends the job") {
  if (!mpi_ready("mpi faults")) return;
  const std::string base = cli() + " train " + kData + " --norm gn --steps 2";
  // MPMD: rank 0 at batch 2, rank 1 at batch 3.
  const Launch mixed = run_mpi(1, base + " --batch 2 : -np 1 " + base + " --batch 3", 60);
  CHECK(mixed.code != 0);
  CHECK_MESSAGE(mixed.out.find("batch: 2 on rank 0, 3 on rank 1") != std::string::npos, mixed.out);
  // Rank 1 fails after the start-up checks (a bad setting in its environment alone); rank 0,
  // waiting for it in the first step's sums, must be ended too, within seconds.
  const Launch failing = run_mpi(1, base + " --batch 2 : -np 1 -x SMALLBATCH_BUCKET_KB=lots " + base + " --batch 2", 60);
  CHECK(failing.code != 0);
  CHECK_MESSAGE(failing.out.find("rank 1 of 2: SMALLBATCH_BUCKET_KB") != std::string::npos, failing.out);
  CHECK(failing.seconds < 30);
  // A bad checkpoint on --resume: rank 0 fails reading it while rank 1 waits in the start-up
  // checks; both end, with rank 0's message naming the file.
  sbtest::TempDir dir("sb_mpi_bad_state");
  const Launch first = run_mpi(2, base + " --batch 2 --out " + (dir / "run"), 60);
  REQUIRE_MESSAGE(first.code == 0, first.out);
  {
    std::ofstream damaged(dir / "run/state.safetensors", std::ios::binary | std::ios::trunc);
    damaged << "not a safetensors file";
  }
  const Launch resumed = run_mpi(2, base + " --batch 2 --resume --out " + (dir / "run"), 60);
  CHECK(resumed.code != 0);
  CHECK_MESSAGE(resumed.out.find("rank 0 of 2: ") != std::string::npos, resumed.out);
  CHECK_MESSAGE(resumed.out.find("state.safetensors") != std::string::npos, resumed.out);
  CHECK(resumed.seconds < 30);
}

// ---- compare with its runs spread over the ranks ----

namespace {

const std::string kSweep = "compare --data shapes:train=8,val=4,size=16 --base-width 4 --epochs 1 --norms bn,gn "
                           "--groups 2 --batch-sizes 4,2 --seeds 1 --threads 1";

// A CSV without its column `name` (the timings).
std::string without_column(const std::string& csv, const std::string& name) {
  std::stringstream in(csv);
  std::string line, out;
  long drop = -1;
  while (std::getline(in, line)) {
    std::vector<std::string> cells;
    std::stringstream ls(line);
    std::string cell;
    while (std::getline(ls, cell, ',')) cells.push_back(cell);
    if (drop < 0) drop = std::find(cells.begin(), cells.end(), name) - cells.begin();
    for (size_t i = 0; i < cells.size(); ++i)
      if (static_cast<long>(i) != drop) out += cells[i] + ",";
    out += "\n";
  }
  return out;
}

// A run's result.json without what the clock measured.
nlohmann::json result_without_timings(const std::string& path) {
  nlohmann::json j = nlohmann::json::parse(read_text(path));
  j.erase("seconds"), j.erase("host"), j.erase("rank"), j.erase("step_ms"), j.erase("syncbn_comm_ms"), j.erase("allreduce_wait_ms");
  for (auto& e : j.at("epochs")) e.erase("seconds"), e.erase("images_per_s");
  return j;
}

// Two sweep folders hold the same results: the same bytes wherever no clock is involved.
void check_same_sweep(const fs::path& got, const fs::path& want) {
  for (const char* f : {"compare.json", "summary.csv", "fig1_miou_vs_batch.png", "fig2_val_curves.png",
                        "fig3_bn_gap.png", "fig4_predictions.png"}) {
    INFO((got / f).string());
    REQUIRE(fs::exists(got / f));
    CHECK(read_text(got / f) == read_text(want / f));
  }
  // Without what the clock measured and where each run was trained (its rank differs).
  auto comparable = [](const std::string& csv) {
    return without_column(without_column(without_column(csv, "seconds"), "rank"), "host");
  };
  CHECK(comparable(read_text(got / "runs.csv")) == comparable(read_text(want / "runs.csv")));
  // The tables, up to the closing line with the session's duration.
  auto tables = [](const std::string& md) { return md.substr(0, md.rfind("runs in")); };
  CHECK(tables(read_text(got / "summary.md")) == tables(read_text(want / "summary.md")));
  size_t runs = 0;
  for (auto& e : fs::directory_iterator(want / "runs")) {
    const fs::path mine = got / "runs" / e.path().filename();
    INFO(mine.string());
    ++runs;
    CHECK(result_without_timings(mine / "result.json") == result_without_timings(e.path() / "result.json"));
    CHECK(read_text(mine / "metrics.csv") == read_text(e.path() / "metrics.csv"));
    CHECK(read_text(mine / "model.safetensors") == read_text(e.path() / "model.safetensors"));
  }
  CHECK(runs == 4);
  CHECK(std::distance(fs::directory_iterator(got / "runs"), fs::directory_iterator()) == 4);
}

}  // namespace

TEST_CASE("mpi: compare spread over 2 and 3 ranks writes the single-process sweep's tables, figures and runs") {
  if (!mpi_ready("mpi compare")) return;
  sbtest::TempDir dir("sb_mpi_compare");
  const auto one = sbtest::run_cli(kSweep + " --out " + (dir / "one"));
  REQUIRE_MESSAGE(one.code == 0, one.all());
  // 2 runs at batch 2 (cost 0.84 each) and 2 at batch 4 (0.81): longest first, each to the least
  // loaded rank, so on 3 ranks both batch-4 runs go to rank 2.
  for (const auto& [ranks, dealt] : {std::pair{2, "runs per rank: 2, 2"}, std::pair{3, "runs per rank: 1, 1, 2"}}) {
    std::string name = "r";  // appended, not a chain of +: GCC 12 warns falsely (-Wrestrict) on that
    name += std::to_string(ranks);
    const std::string out = dir / name;
    const Launch l = run_mpi(ranks, cli() + " " + kSweep + " --out " + out, 120);
    INFO("mpirun -np ", ranks, ":\n", l.out);
    REQUIRE(l.code == 0);
    CHECK(l.out.find(dealt) != std::string::npos);
    CHECK(l.out.find("report: ") != std::string::npos);  // rank 0 reports, once
    check_same_sweep(out, dir / "one");
    // runs.csv says where each run was trained: every rank of the job appears in its rank column.
    const std::string csv = read_text(out + "/runs.csv");
    REQUIRE(csv.find(",diverged,host,rank\n") != std::string::npos);
    for (int r = 0; r < ranks; ++r) {
      CAPTURE(r);
      std::string row_end = ",";  // appended, not a chain of +: GCC 12 warns falsely (-Wrestrict) on that
      row_end += std::to_string(r);
      row_end += "\n";
      CHECK(csv.find(row_end) != std::string::npos);
    }
  }
  // One process: every run on rank 0.
  const std::string one_csv = read_text((dir.path / "one" / "runs.csv").string());
  CHECK(one_csv.find(",1\n") == std::string::npos);
  // Rank 0's refusal (the folder holds a sweep with other shared settings) ends every rank, at once.
  std::string longer = kSweep;
  longer.replace(longer.find("--epochs 1"), 10, "--epochs 2");
  const Launch refused = run_mpi(2, cli() + " " + longer + " --out " + (dir / "one"), 60);
  CHECK(refused.code == 1);
  CHECK_MESSAGE(refused.out.find("--epochs: saved 1, now 2") != std::string::npos, refused.out);
  CHECK(refused.seconds < 30);
}

TEST_CASE("mpi: a 2-rank sweep with one rank killed ends, and one process resumes it to the same table") {
  if (!mpi_ready("mpi compare kill")) return;
  sbtest::TempDir dir("sb_mpi_compare_kill");
  const auto one = sbtest::run_cli(kSweep + " --out " + (dir / "one"));
  REQUIRE_MESSAGE(one.code == 0, one.all());
  const std::string out = dir / "killed", log = dir / "killed.log";
  const std::string job_cmd = "exec timeout 120 " + mpirun_command(2, cli() + " " + kSweep + " --out " + out) + " >" + log + " 2>&1";
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t job = ::fork();
  if (job == 0) {
    ::execl("/bin/sh", "sh", "-c", job_cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  REQUIRE(job > 0);
  // The first run to start: its folder's .lock holds the pid of the rank training it.
  pid_t victim = 0;
  for (int i = 0; i < 6000 && victim == 0; ++i) {
    std::error_code ec;
    for (auto it = fs::directory_iterator(out + "/runs", ec); !ec && it != fs::directory_iterator(); it.increment(ec))
      if (const int pid = std::atoi(read_text(it->path() / ".lock").c_str()); pid > 0) {
        victim = pid;
        break;
      }
    if (victim == 0) ::usleep(10000);
  }
  REQUIRE(victim > 0);
  CHECK(::kill(victim, SIGKILL) == 0);
  int status = 0;
  ::waitpid(job, &status, 0);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  INFO(read_text(log));
  CHECK_FALSE((WIFEXITED(status) && WEXITSTATUS(status) == 0));  // the job ended with its rank, without a hang
  CHECK(seconds < 60);
  CHECK_FALSE(fs::exists(fs::path(out) / "summary.csv"));
  // The rank died in its first run, so at least that one is left for the resume.
  int finished = 0;
  for (auto& e : fs::directory_iterator(out + "/runs")) finished += fs::exists(e.path() / "result.json");
  MESSAGE("runs finished when a rank was killed: ", finished, " of 4");
  CHECK(finished < 4);
  const auto resumed = sbtest::run_cli(kSweep + " --out " + out);
  REQUIRE_MESSAGE(resumed.code == 0, resumed.all());
  CHECK(resumed.out.find("continuing the sweep") != std::string::npos);
  check_same_sweep(out, dir / "one");
}

TEST_CASE("mpi: SIGTERM to mpirun stops a 2-rank sweep with its runs saved, and one process resumes it to the same table") {
  if (!mpi_ready("mpi compare sigterm")) return;
  sbtest::TempDir dir("sb_mpi_compare_term");
  // Longer runs than kSweep's (about 1.5 s each here), so the signal lands while the sweep trains:
  // mpirun passes it on to the ranks about a second after it gets it (Open MPI 4.1, measured).
  std::string sweep = kSweep;
  sweep.replace(sweep.find("train=8,val=4,size=16"), 21, "train=64,val=4,size=32");
  // The sanitizer build runs about 15x slower: there 4 epochs last as long.
  sweep.replace(sweep.find("--epochs 1"), 10, std::getenv("ASAN_OPTIONS") ? "--epochs 4" : "--epochs 40");
  const auto one = sbtest::run_cli(sweep + " --out " + (dir / "one"));
  REQUIRE_MESSAGE(one.code == 0, one.all());
  const std::string out = dir / "term", log = dir / "term.log";
  // timeout passes the SIGTERM it receives on to mpirun, which passes it to the ranks.
  const std::string job_cmd = "exec timeout 120 " + mpirun_command(2, cli() + " " + sweep + " --out " + out) + " >" + log + " 2>&1";
  const pid_t job = ::fork();
  if (job == 0) {
    ::execl("/bin/sh", "sh", "-c", job_cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  REQUIRE(job > 0);
  bool training = false;  // a run folder's .lock: a rank trains it
  for (int i = 0; i < 6000 && !training; ++i) {
    std::error_code ec;
    for (auto it = fs::directory_iterator(out + "/runs", ec); !ec && it != fs::directory_iterator(); it.increment(ec))
      training = training || fs::exists(it->path() / ".lock");
    if (!training) ::usleep(5000);
  }
  REQUIRE(training);
  CHECK(::kill(job, SIGTERM) == 0);
  int status = 0;
  ::waitpid(job, &status, 0);
  const std::string said = read_text(log);
  INFO(said);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) != 0);
  CHECK(WEXITSTATUS(status) < 128 + 16);
  // mpirun may end before its ranks have saved (then their "interrupted" line is lost with it): the
  // ranks get the signal too, save and exit within seconds, holding their run folders' locks until
  // then (a command run at once is refused, "in use by another smallbatch process").
  MESSAGE("the job said it was interrupted: ", said.find("interrupted; finished runs are kept") != std::string::npos);
  bool ranks_gone = false;
  for (int i = 0; i < 400 && !ranks_gone; ++i) {
    ranks_gone = true;
    for (auto& e : fs::directory_iterator(out + "/runs"))
      if (const int pid = std::atoi(read_text(e.path() / ".lock").c_str()); pid > 0 && ::kill(pid, 0) == 0)
        ranks_gone = false;
    if (!ranks_gone) ::usleep(50000);
  }
  CHECK_MESSAGE(ranks_gone, "a rank still runs 20 s after mpirun ended");
  CHECK_FALSE(fs::exists(fs::path(out) / "summary.csv"));  // no report until a session finishes the sweep
  int finished = 0, saved = 0;
  for (auto& e : fs::directory_iterator(out + "/runs"))
    finished += fs::exists(e.path() / "result.json"), saved += fs::exists(e.path() / "state.safetensors");
  MESSAGE("at SIGTERM: ", finished, " of 4 runs finished, ", saved, " with a saved state");
  CHECK(finished < 4);
  const auto resumed = sbtest::run_cli(sweep + " --out " + out);
  REQUIRE_MESSAGE(resumed.code == 0, resumed.all());
  check_same_sweep(out, dir / "one");
}

TEST_CASE("mpi: compare --ranks-per-run 2 trains each run over 2 ranks, syncbn as bn on the whole batch") {
  if (!mpi_ready("mpi compare ranks-per-run")) return;
  sbtest::TempDir dir("sb_mpi_compare_k");
  const std::string sweep = "compare --data shapes:train=8,val=4,size=16 --base-width 4 --epochs 1 --groups 2 "
                            "--seeds 1 --threads 1";
  // bn in one process at batch 4: the reference for syncbn over 2 ranks at 2 images each.
  const auto one = sbtest::run_cli(sweep + " --norms bn --batch-sizes 4 --out " + (dir / "one"));
  REQUIRE_MESSAGE(one.code == 0, one.all());
  const std::string out = dir / "k2";
  const Launch l = run_mpi(2, cli() + " " + sweep + " --norms bn,syncbn,gn --batch-sizes 2 --ranks-per-run 2 --out " + out, 120);
  INFO(l.out);
  REQUIRE(l.code == 0);
  CHECK(l.out.find("runs per group of 2 ranks: 3") != std::string::npos);
  const std::string summary = read_text(out + "/summary.csv");
  for (const char* norm : {"\nbn,2,", "\nsyncbn,2,", "\ngn,2,"}) CHECK_MESSAGE(summary.find(norm) != std::string::npos, summary);
  // The table by normalization batch: bn over a rank's 2 images, syncbn over 4, gn over one.
  const std::string md = read_text(out + "/summary.md");
  CHECK_MESSAGE(md.find("| bn | 2 | 2 | 4 | 2 |") != std::string::npos, md);
  CHECK_MESSAGE(md.find("| syncbn | 2 | 2 | 4 | 4 |") != std::string::npos, md);
  CHECK_MESSAGE(md.find("| gn | 2 | 2 | 4 | 1 image |") != std::string::npos, md);
  CHECK(fs::exists(out + "/fig5_miou_vs_norm_batch.png"));
  // The cost beside it: syncbn's step and its collectives, measured (not zero) and within the step.
  const nlohmann::json sync_result = nlohmann::json::parse(read_text(out + "/runs/syncbn_b2_s0/result.json"));
  CHECK(sync_result.at("syncbn_comm_ms").get<double>() > 0);
  CHECK(sync_result.at("syncbn_comm_ms").get<double>() < sync_result.at("step_ms").get<double>());
  CHECK(nlohmann::json::parse(read_text(out + "/runs/bn_b2_s0/result.json")).at("syncbn_comm_ms").get<double>() == 0);
  // Each run trained on 2 ranks (its config says so), at the learning rate of the batch of 4.
  const nlohmann::json config = nlohmann::json::parse(read_text(out + "/runs/syncbn_b2_s0/config.json"));
  CHECK(config.at("ranks") == 2);
  CHECK(read_text(out + "/compare.json").find("\"ranks_per_run\": 2") != std::string::npos);
  // syncbn over 2 x 2 images is bn over 4: the same weights to float rounding (issue 17's bound).
  std::string worst;
  const double d = max_rel_diff(out + "/runs/syncbn_b2_s0/model.safetensors", dir / "one/runs/bn_b4_s0/model.safetensors", worst);
  MESSAGE("syncbn on 2 ranks at 2 against bn in one process at 4: largest relative difference ", d, " (", worst, ")");
  CHECK(d < 1e-6);
  // Evaluated with batch statistics and with PreciseBN, syncbn too normalizes over 4 images: as bn at 4.
  const nlohmann::json bn4 = nlohmann::json::parse(read_text(dir / "one/runs/bn_b4_s0/result.json"));
  MESSAGE("batch-statistics mIoU: syncbn over 2 x 2 ", sync_result.at("batchstat_miou"), ", bn at 4 ",
          bn4.at("batchstat_miou"), "; PreciseBN: ", sync_result.at("precise_miou"), ", ", bn4.at("precise_miou"));
  CHECK(sync_result.at("batchstat_miou").get<double>() == doctest::Approx(bn4.at("batchstat_miou").get<double>()).epsilon(1e-6));
  CHECK(sync_result.at("precise_miou").get<double>() == doctest::Approx(bn4.at("precise_miou").get<double>()).epsilon(1e-6));
  // unsynchronized bn normalizes 2 images at a time: another model
  CHECK(max_rel_diff(out + "/runs/bn_b2_s0/model.safetensors", dir / "one/runs/bn_b4_s0/model.safetensors", worst) > 1e-4);
  // A rank count K does not divide, and K without mpirun, are refused naming the flag.
  const Launch three = run_mpi(3, cli() + " " + sweep + " --norms gn --batch-sizes 2 --ranks-per-run 2 --out " + (dir / "k3"), 60);
  CHECK(three.code == 1);
  CHECK_MESSAGE(three.out.find("--ranks-per-run 2 does not divide the 3 ranks") != std::string::npos, three.out);
  const auto alone = sbtest::run_cli(sweep + " --norms gn --batch-sizes 2 --ranks-per-run 2 --out " + (dir / "k1"));
  CHECK(alone.code == 1);
  CHECK_MESSAGE(alone.err.find("--ranks-per-run 2 does not divide the 1 rank") != std::string::npos, alone.err);
}

TEST_CASE("mpi: compare --preset sync sweeps K = 4 and 2 ranks per run in one job, and resumes on 4 ranks") {
  if (!mpi_ready("mpi compare sync preset")) return;
  sbtest::TempDir dir("sb_mpi_compare_sync");
  const std::string sweep = "compare --preset sync --data shapes:train=16,val=4,size=16 --base-width 4 --epochs 1 "
                            "--seeds 1 --threads 1 --out " + (dir / "sync");
  // Without mpirun, and on 2 ranks, K = 4 cannot be placed: refused before anything is written.
  const auto alone = sbtest::run_cli(sweep);
  CHECK(alone.code == 1);
  CHECK_MESSAGE(alone.err.find("--ranks-per-run 4 does not divide the 1 rank of this job (start it with mpirun -np R, "
                               "R a multiple of 4)") != std::string::npos, alone.err);
  const Launch two = run_mpi(2, cli() + " " + sweep, 60);
  CHECK(two.code == 1);
  CHECK_MESSAGE(two.out.find("--ranks-per-run 4 does not divide the 2 ranks") != std::string::npos, two.out);
  CHECK_FALSE(fs::exists(dir / "sync/compare.json"));
  const Launch l = run_mpi(4, cli() + " " + sweep, 180);
  INFO(l.out);
  REQUIRE(l.code == 0);
  // One K after another, largest first: 6 runs on one group of 4, then 6 on two groups of 2.
  const size_t k4 = l.out.find("6 of 12 runs to train over 4 ranks each"), k2 = l.out.find("6 of 12 runs to train over 2 ranks each");
  CHECK(k4 != std::string::npos);
  CHECK(k2 != std::string::npos);
  CHECK(k4 < k2);
  CHECK(l.out.find("runs per group of 2 ranks: 3, 3") != std::string::npos);
  // No progress line: mpirun gives each rank a terminal even when the job's output goes to a pipe.
  CHECK(l.out.find("\033[K") == std::string::npos);
  const nlohmann::json saved = nlohmann::json::parse(read_text(dir / "sync/compare.json"));
  CHECK(saved.at("ranks_per_run") == nlohmann::json::array({4, 2}));
  for (const char* run : {"bn_k4_b2_s0", "syncbn_k4_b1_s0", "gn_g8_k2_b2_s0", "syncbn_k2_b1_s0"}) {
    CAPTURE(run);
    CHECK(fs::exists(fs::path(dir / "sync/runs") / run / "result.json"));
  }
  // Each run at its own K: syncbn over 4 ranks x 1 image trains at the learning rate of 4 images.
  const nlohmann::json c41 = nlohmann::json::parse(read_text(dir / "sync/runs/syncbn_k4_b1_s0/config.json"));
  CHECK(c41.at("ranks") == 4);
  CHECK(c41.at("lr").get<double>() == doctest::Approx(0.1 * 4 / 16));
  const std::string md = read_text(dir / "sync/summary.md");
  CHECK_MESSAGE(md.find("| syncbn(K=4) |") != std::string::npos, md);
  CHECK_MESSAGE(md.find("| syncbn | 4 | 1 | 4 | 4 |") != std::string::npos, md);
  CHECK_MESSAGE(md.find("| bn | 2 | 2 | 4 | 2 |") != std::string::npos, md);
  CHECK(fs::exists(dir / "sync/fig5_miou_vs_norm_batch.png"));
  const std::string html = read_text(dir / "sync/report.html");
  CHECK(html.find("Figure 5.") != std::string::npos);
  // A second session finds every run finished: nothing is trained again, the same table.
  const std::string before = read_text(dir / "sync/summary.csv");
  const Launch again = run_mpi(4, cli() + " " + sweep, 120);
  REQUIRE_MESSAGE(again.code == 0, again.out);
  CHECK(again.out.find("0 of 12 runs to train over 4 ranks each") != std::string::npos);
  CHECK(read_text(dir / "sync/summary.csv") == before);
  // Another K list is another sweep: refused by name.
  const Launch other = run_mpi(4, cli() + " " + sweep + " --ranks-per-run 2", 60);
  CHECK(other.code == 1);
  CHECK_MESSAGE(other.out.find("--ranks-per-run: saved [4,2], now 2") != std::string::npos, other.out);
}
