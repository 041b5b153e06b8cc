// `smallbatch bench`: times whole training steps (or one layer's forward + backward) on random
// data, and with --vs-torch alternates runs with tools/scripts/bench_torch.py to report time ratios.
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <unordered_set>
#include <vector>

#include "core/ops.h"
#include "layers/conv/ops.h"
#include "layers/loss/ops.h"
#include "layers/norm/evo_norm.h"
#include "layers/norm/ops.h"
#include "core/kernels/gemm.h"
#include "core/threads.h"
#include "optim/optimizer.h"
#include "tools/app/provenance.h"
#include "tools/cli.h"

namespace sb::cli {

namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

struct BenchOptions {
  int64_t batch = 2, size = 64;
  int threads = 0;
  int64_t steps = 20, warmup = 5;
  uint64_t seed = 0;
  bool json = false;
  std::string op;                  // empty: a whole training step
  std::vector<int64_t> shape;      // --op input (N, C, H, W)
  int64_t out_channels = 0;        // --op conv*: 0 means C
  int64_t kernel = 0, stride = 0;  // --op conv*: 0 means the op's default (3/1, or 2/2)
  int64_t padding = -1;            // --op conv2d: -1 means kernel / 2
  bool vs_torch = false;
  int rounds = 5;
  std::string python = "/usr/bin/python3", torch_script;
};

double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux reports kilobytes
}

// CPU time used so far by all threads of this process, in ms. Unlike wall time it does not
// grow while the process waits for a core, so on a busy machine it still measures the work.
double process_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) * 1e-6;
}

// The value at fraction q of the sorted samples, interpolating linearly (numpy's default).
double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  if (v.empty()) return NAN;
  double pos = q * static_cast<double>(v.size() - 1);
  size_t lo = static_cast<size_t>(pos);
  size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

// Multiply-adds of one conv2d or conv_transpose2d node, read from its recorded shapes.
int64_t node_macs(const Node& n) {
  const std::string op = n.op;
  if (op == "conv2d") {
    const Shape& y = n.value.shape();                // (N, C_out, Ho, Wo)
    const Shape& w = n.inputs.at(1)->value.shape();  // (C_out, C_in/groups, kH, kW)
    return y[0] * y[1] * y[2] * y[3] * w[1] * w[2] * w[3];
  }
  if (op == "conv_transpose2d") {
    const Shape& x = n.inputs.at(0)->value.shape();  // (N, C_in, H, W)
    const Shape& w = n.inputs.at(1)->value.shape();  // (C_in, C_out/groups, kH, kW)
    return x[0] * x[1] * x[2] * x[3] * w[1] * w[2] * w[3];
  }
  return 0;
}

// FLOPs of one training step through the graph behind `root`, by the convention documented in
// docs/PERFORMANCE.md: only convolutions count; forward = 2 x multiply-adds, backward = 2 x
// forward (input and weight gradients), so a step is 6 x MACs. Must run before backward() frees
// the graph.
int64_t step_flops(const Var& root) {
  int64_t macs = 0;
  std::unordered_set<const Node*> seen;
  std::vector<const Node*> stack{root.node().get()};
  while (!stack.empty()) {
    const Node* n = stack.back();
    stack.pop_back();
    if (!n || !seen.insert(n).second) continue;
    macs += node_macs(*n);
    for (const auto& in : n->inputs) stack.push_back(in.get());
  }
  return 6 * macs;
}

struct Timing {
  std::vector<double> ms;  // one per timed repeat
  std::vector<double> cpu_ms;  // process CPU time (all threads) per timed repeat
  int64_t flops = 0;       // per repeat; 0 when not counted
  int64_t images = 0;      // per repeat
};

// Runs `warmup` untimed and `steps` timed calls of body(), which returns its FLOP count.
template <class F>
Timing time_repeats(int64_t warmup, int64_t steps, int64_t images, const F& body) {
  Timing t;
  t.images = images;
  for (int64_t i = 0; i < warmup; ++i) body();
  for (int64_t i = 0; i < steps; ++i) {
    auto t0 = Clock::now();
    const double c0 = process_cpu_ms();
    t.flops = body();
    t.ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    t.cpu_ms.push_back(process_cpu_ms() - c0);
  }
  return t;
}

Timing bench_model(const ModelFlags& flags, const BenchOptions& o) {
  ModelSpec spec = flags.spec(4);
  manual_seed(o.seed);
  ModulePtr model = spec.build();
  model->train();
  Generator gen(o.seed + 1);
  Tensor images = Tensor::randn({o.batch, spec.options.in_channels, o.size, o.size}, gen);
  IndexTensor masks = IndexTensor::empty({o.batch, o.size, o.size});
  for (int64_t& m : masks) m = static_cast<int64_t>(gen.below(static_cast<uint64_t>(spec.options.classes)));
  SGDOptions so;
  so.lr = 0.01f, so.momentum = 0.9f;
  SGD opt(model->parameters(), so);
  return time_repeats(o.warmup, o.steps, o.batch, [&] {
    opt.zero_grad();
    Var loss = cross_entropy(model->forward(Var(images)), masks);
    int64_t flops = step_flops(loss);
    loss.backward();
    opt.step();
    return flops;
  });
}

// C (M, N) = A (M, K) x B (K, N) through the same GEMM the layers use: the machine's BLAS peak,
// the yardstick for the convolutions' GFLOP/s.
Timing bench_sgemm(const BenchOptions& o) {
  const int64_t M = o.shape[0], N = o.shape[1], K = o.shape[2];
  Generator gen(o.seed + 1);
  Tensor a = Tensor::randn({M, K}, gen), b = Tensor::randn({K, N}, gen), c = Tensor::empty({M, N});
  return time_repeats(o.warmup, o.steps, 0, [&] {
    kernels::gemm(false, false, M, N, K, 1.f, a.data(), b.data(), 0.f, c.data());
    return 2 * M * N * K;
  });
}

Timing bench_op(const ModelFlags& flags, const BenchOptions& o) {
  if (o.op == "sgemm") return bench_sgemm(o);
  SB_CHECK(o.shape.size() == 4, "bench --op ", o.op, ": --shape must be N,C,H,W");
  const int64_t N = o.shape[0], C = o.shape[1], H = o.shape[2], W = o.shape[3];
  Generator gen(o.seed + 1);
  Var x(Tensor::randn({N, C, H, W}, gen), true);
  Var w, b;
  RunningStats running;
  std::function<Var()> fwd;
  const bool transposed = o.op == "conv_transpose2d";
  if (o.op == "conv2d" || transposed) {
    const int64_t Co = o.out_channels > 0 ? o.out_channels : C;
    const int64_t k = o.kernel > 0 ? o.kernel : (transposed ? 2 : 3);
    const int64_t s = o.stride > 0 ? o.stride : (transposed ? 2 : 1);
    const int64_t p = o.padding >= 0 ? o.padding : (transposed ? 0 : k / 2);
    w = Var(Tensor::randn(transposed ? Shape{C, Co, k, k} : Shape{Co, C, k, k}, gen, 0.f, 0.1f), true);
    if (transposed) {
      ConvTranspose2dOptions co;
      co.stride = s, co.padding = p;
      fwd = [=] { return conv_transpose2d(x, w, Var(), co); };
    } else {
      Conv2dOptions co;
      co.stride = s, co.padding = p;
      fwd = [=] { return conv2d(x, w, Var(), co); };
    }
  } else if (o.op == "groupnorm" || o.op == "batchnorm") {
    w = Var(Tensor::ones({C}), true);
    b = Var(Tensor::zeros({C}), true);
    if (o.op == "groupnorm") {
      const int64_t G = std::min(flags.values.norm.groups, C);
      fwd = [=] { return group_norm(x, G, w, b); };
    } else {
      running.mean = Tensor::zeros({C});
      running.var = Tensor::ones({C});
      fwd = [=] { return batch_norm(x, &running, w, b, true); };
    }
  } else if (o.op == "frn" || o.op == "evonorm-s0" || o.op == "evonorm-b0") {
    // The normalization-activation layers at their initial parameters; tau / v is the third.
    w = Var(Tensor::ones({C}), true);
    b = Var(Tensor::zeros({C}), true);
    Var t(o.op == "frn" ? Tensor::zeros({C}) : Tensor::ones({C}), true);
    if (o.op == "frn") {
      fwd = [=]() mutable { t.zero_grad(); return frn_tlu(x, w, b, t); };
    } else if (o.op == "evonorm-s0") {
      const int64_t G = std::min(flags.values.norm.groups, C);
      fwd = [=]() mutable { t.zero_grad(); return evonorm_s0(x, G, w, b, t); };
    } else {
      running.var = Tensor::ones({C});
      fwd = [=]() mutable { t.zero_grad(); return evonorm_b0(x, w, b, t, running.var, true, true); };
    }
  } else {
    fail("bench: unknown --op '", o.op, "' (known: conv2d, conv_transpose2d, groupnorm, batchnorm, frn, evonorm-s0, "
         "evonorm-b0)");
  }
  Tensor gy;
  return time_repeats(o.warmup, o.steps, N, [&] {
    x.zero_grad(), w.zero_grad();
    if (b.defined()) b.zero_grad();
    Var y = fwd();
    if (!gy.defined()) gy = Tensor::randn(y.shape(), gen);
    int64_t flops = step_flops(y);
    y.backward(gy);
    return flops;
  });
}

nlohmann::json result_json(const ModelFlags& flags, const BenchOptions& o, const Timing& t) {
  const double med = quantile(t.ms, 0.5);
  nlohmann::json j;
  j["impl"] = "smallbatch";
  if (o.op.empty()) {
    j["model"] = flags.model;
    j["norm"] = flags.values.norm.kind;
    j["batch"] = o.batch;
    j["size"] = o.size;
  } else {
    j["op"] = o.op;
    j["shape"] = o.shape;
  }
  j["threads"] = num_threads();
  j["steps"] = o.steps;
  j["warmup"] = o.warmup;
  j["median_ms"] = med;
  j["p10_ms"] = quantile(t.ms, 0.1);
  j["p90_ms"] = quantile(t.ms, 0.9);
  j["cpu_median_ms"] = quantile(t.cpu_ms, 0.5);
  if (t.images > 0) j["images_per_s"] = 1000.0 * static_cast<double>(t.images) / med;
  j["flops_per_step"] = t.flops;
  j["gflops"] = t.flops > 0 ? nlohmann::json(static_cast<double>(t.flops) / (med * 1e6)) : nlohmann::json(nullptr);
  j["peak_rss_mb"] = peak_rss_mb();
  j["platform"] = platform_json();  // a time means little without the machine, kernels and load
  return j;
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

void print_table(const nlohmann::json& j) {
  std::string what = j.contains("op") ? str(j["op"].get<std::string>(), " ", j["shape"].dump())
                                      : str(j["model"].get<std::string>(), " norm=", j["norm"].get<std::string>(),
                                            " batch=", j["batch"].get<int64_t>(), " size=", j["size"].get<int64_t>());
  std::printf("bench %s, %d threads, %lld timed after %lld warm-up\n", what.c_str(), j["threads"].get<int>(),
              (long long)j["steps"].get<int64_t>(), (long long)j["warmup"].get<int64_t>());
  std::printf("  %-14s %10s\n", "median", (fixed(j["median_ms"], 2) + " ms").c_str());
  std::printf("  %-14s %10s\n", "p10", (fixed(j["p10_ms"], 2) + " ms").c_str());
  std::printf("  %-14s %10s\n", "p90", (fixed(j["p90_ms"], 2) + " ms").c_str());
  std::printf("  %-14s %10s\n", "CPU median", (fixed(j["cpu_median_ms"], 2) + " ms").c_str());
  if (j.contains("images_per_s")) std::printf("  %-14s %10s\n", "images/s", fixed(j["images_per_s"], 1).c_str());
  if (!j["gflops"].is_null()) std::printf("  %-14s %10s\n", "GFLOP/s", fixed(j["gflops"], 1).c_str());
  std::printf("  %-14s %10s\n", "peak RSS", (fixed(j["peak_rss_mb"], 1) + " MB").c_str());
  std::printf("on\n%s", platform_lines(j["platform"], "  ").c_str());
}

// ---- --vs-torch ------------------------------------------------------------------------

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs a shell command and returns the last line of its stdout that parses as a JSON object.
nlohmann::json run_json(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  SB_CHECK(p, "bench --vs-torch: cannot run ", cmd);
  std::string out;
  char buf[4096];
  size_t got;
  while ((got = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, got);
  int rc = pclose(p);
  SB_CHECK(rc == 0, "bench --vs-torch: `", cmd, "` failed (status ", rc, ")");
  std::istringstream lines(out);
  std::string line, last;
  while (std::getline(lines, line))
    if (!line.empty() && line[0] == '{') last = line;
  SB_CHECK(!last.empty(), "bench --vs-torch: `", cmd, "` printed no JSON line; its output was:\n", out);
  try {
    return nlohmann::json::parse(last);
  } catch (const std::exception& e) {
    fail("bench --vs-torch: `", cmd, "` printed malformed JSON (", e.what(), "): ", last);
  }
}

std::string find_torch_script(const std::string& given) {
  if (!given.empty()) {
    SB_CHECK(fs::exists(given), "bench --vs-torch: --torch-script ", given, " does not exist");
    return given;
  }
  // The binary lives in a build directory of the source tree; fall back to the working directory.
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  std::vector<fs::path> candidates;
  if (!ec)
    candidates = {exe.parent_path().parent_path() / "tools/scripts/bench_torch.py",
                  exe.parent_path() / "tools/scripts/bench_torch.py"};
  candidates.push_back(fs::current_path() / "tools/scripts/bench_torch.py");
  for (const auto& c : candidates)
    if (fs::exists(c)) return c.string();
  fail("bench --vs-torch: cannot find tools/scripts/bench_torch.py next to the build directory or in the working "
       "directory; pass --torch-script PATH");
}

// The flags both implementations understand, so the two runs time exactly the same work.
std::string shared_args(const ModelFlags& flags, const BenchOptions& o) {
  std::string a = str(" --threads ", num_threads(), " --steps ", o.steps, " --warmup ", o.warmup, " --seed ", o.seed);
  if (!o.op.empty()) {
    std::string shape;
    for (size_t i = 0; i < o.shape.size(); ++i) shape += (i ? "," : "") + std::to_string(o.shape[i]);
    a += str(" --op ", o.op, " --shape ", shape, " --groups ", flags.values.norm.groups);
    if (o.out_channels > 0) a += str(" --out-channels ", o.out_channels);
    if (o.kernel > 0) a += str(" --kernel ", o.kernel);
    if (o.stride > 0) a += str(" --stride ", o.stride);
    if (o.padding >= 0) a += str(" --padding ", o.padding);
  } else {
    SB_CHECK(flags.model == "unet-s", "bench --vs-torch: the PyTorch side has only the reference unet-s, not '",
             flags.model, "'");
    a += str(" --model ", flags.model, " --norm ", flags.values.norm.kind, " --groups ", flags.values.norm.groups, " --classes ",
             flags.values.classes > 0 ? flags.values.classes : 4, " --in-channels ", flags.values.in_channels, " --base-width ",
             flags.values.base_width, " --batch ", o.batch, " --size ", o.size);
  }
  return a;
}

int vs_torch(const ModelFlags& flags, const BenchOptions& o) {
  const std::string probe = quote(o.python) + " -c 'import torch' >/dev/null 2>&1";
  SB_CHECK(std::system(probe.c_str()) == 0, "bench --vs-torch: PyTorch is not importable by ", o.python,
           " (on Debian: apt-get install python3-torch)");
  const std::string script = find_torch_script(o.torch_script);
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  SB_CHECK(!ec, "bench --vs-torch: cannot locate this executable: ", ec.message());
  const std::string args = shared_args(flags, o) + " --json";
  const std::string sb_cmd = quote(exe.string()) + " bench" + args;
  const std::string torch_cmd = quote(o.python) + " " + quote(script) + args;
  std::printf("alternating %d rounds, %d threads\n  smallbatch: %s\n  pytorch:    %s\non\n%s", o.rounds, num_threads(),
              sb_cmd.c_str(), torch_cmd.c_str(), platform_lines(platform_json(), "  ").c_str());
  std::printf("%-6s %12s %12s %8s %10s %10s\n", "round", "sb ms", "torch ms", "ratio", "sb MB", "torch MB");
  std::fflush(stdout);
  std::vector<double> sb_ms, th_ms, ratios, sb_mb, th_mb, cpu_ratios;
  nlohmann::json rows = nlohmann::json::array();
  for (int r = 0; r < o.rounds; ++r) {
    // Alternate which goes first, so a drift in machine load does not favour one side.
    nlohmann::json a, b;
    if (r % 2 == 0) a = run_json(sb_cmd), b = run_json(torch_cmd);
    else b = run_json(torch_cmd), a = run_json(sb_cmd);
    double sa = a.at("median_ms"), tb = b.at("median_ms");
    sb_ms.push_back(sa), th_ms.push_back(tb), ratios.push_back(sa / tb);
    sb_mb.push_back(a.at("peak_rss_mb")), th_mb.push_back(b.at("peak_rss_mb"));
    if (a.contains("cpu_median_ms") && b.contains("cpu_median_ms"))
      cpu_ratios.push_back(a.at("cpu_median_ms").get<double>() / b.at("cpu_median_ms").get<double>());
    std::printf("%-6d %12.2f %12.2f %8.3f %10.1f %10.1f\n", r + 1, sa, tb, sa / tb, sb_mb.back(), th_mb.back());
    std::fflush(stdout);
    rows.push_back({{"smallbatch", a}, {"torch", b}});
  }
  const double med_ratio = quantile(ratios, 0.5), rss_ratio = quantile(sb_mb, 0.5) / quantile(th_mb, 0.5);
  std::printf("%-6s %12.2f %12.2f %8.3f %10.1f %10.1f\n", "median", quantile(sb_ms, 0.5), quantile(th_ms, 0.5),
              med_ratio, quantile(sb_mb, 0.5), quantile(th_mb, 0.5));
  std::printf("time ratio smallbatch/pytorch: median %.3f (min %.3f, max %.3f); RSS ratio %.3f\n", med_ratio,
              *std::min_element(ratios.begin(), ratios.end()), *std::max_element(ratios.begin(), ratios.end()),
              rss_ratio);
  // CPU time per step (all threads) does not count time spent waiting for a core, so on a busy
  // machine it is the steadier comparison of the work each does (spinning threads count as work).
  if (!cpu_ratios.empty())
    std::printf("CPU time ratio smallbatch/pytorch: median %.3f (min %.3f, max %.3f)\n", quantile(cpu_ratios, 0.5),
                *std::min_element(cpu_ratios.begin(), cpu_ratios.end()),
                *std::max_element(cpu_ratios.begin(), cpu_ratios.end()));
  if (o.json) {
    nlohmann::json j = {{"rounds", rows}, {"median_time_ratio", med_ratio}, {"rss_ratio", rss_ratio},
                        {"platform", platform_json()}};
    if (!cpu_ratios.empty()) j["median_cpu_ratio"] = quantile(cpu_ratios, 0.5);
    std::printf("%s\n", j.dump().c_str());
  }
  return 0;
}

std::vector<int64_t> parse_shape(const std::string& s, size_t dims, const char* names) {
  std::vector<int64_t> v;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, ',')) {
    try {
      size_t used = 0;
      long long d = std::stoll(part, &used);
      SB_CHECK(used == part.size() && d > 0, "");
      v.push_back(d);
    } catch (const std::exception&) {
      fail("bench: --shape expects positive integers ", names, " but got '", s, "'");
    }
  }
  SB_CHECK(v.size() == dims, "bench: --shape expects ", dims, " sizes ", names, " but got '", s, "'");
  // Every tensor the op makes must be addressable: a product past 2^40 floats (4 TiB) is refused
  // before it can overflow.
  int64_t product = 1;
  for (int64_t d : v) {
    SB_CHECK(d <= (int64_t(1) << 40) / product, "bench: --shape '", s, "' has ", names,
             " whose product exceeds 2^40 elements");
    product *= d;
  }
  return v;
}

}  // namespace

void add_bench_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("bench", "time training steps, or one layer's forward + backward, on random data");
  auto flags = std::make_shared<ModelFlags>();
  auto o = std::make_shared<BenchOptions>();
  auto shape = std::make_shared<std::string>();
  flags->add(*cmd);
  cmd->add_option("--batch", o->batch, "images per step")->capture_default_str()->check(Positive);
  cmd->add_option("--image-size,--size", o->size, "image height and width (--size is the older spelling)")->capture_default_str()->check(Positive);
  cmd->add_option("--threads", o->threads, "threads for OpenMP and OpenBLAS (default: SMALLBATCH_NUM_THREADS or all cores)")
      ->check(Positive);
  cmd->add_option("--steps", o->steps, "timed repeats")->capture_default_str()->check(Positive);
  cmd->add_option("--warmup", o->warmup, "untimed repeats first")->capture_default_str()->check(NonNegative);
  cmd->add_option("--seed", o->seed, "seed for weights and random data")->capture_default_str()->check(Seed);
  cmd->add_flag("--json", o->json, "print one JSON line");
  cmd->add_option("--op", o->op, "time one layer instead of a training step")
      ->check(CLI::IsMember({"conv2d", "conv_transpose2d", "groupnorm", "batchnorm", "frn", "evonorm-s0",
                             "evonorm-b0", "sgemm"}));
  cmd->add_option("--shape", *shape, "--op input shape N,C,H,W (sgemm: M,N,K, default 2048,2048,2048)");
  cmd->add_option("--out-channels", o->out_channels, "--op conv*: output channels (default C)")->check(Positive);
  cmd->add_option("--kernel", o->kernel, "--op conv*: kernel size (default 3; 2 for conv_transpose2d)")->check(Positive);
  cmd->add_option("--stride", o->stride, "--op conv*: stride (default 1; 2 for conv_transpose2d)")->check(Positive);
  cmd->add_option("--padding", o->padding, "--op conv*: padding (default kernel/2; 0 for conv_transpose2d)")
      ->check(NonNegative);
  cmd->add_flag("--vs-torch", o->vs_torch, "alternate runs with tools/scripts/bench_torch.py and print time and RSS ratios");
  cmd->add_option("--rounds", o->rounds, "--vs-torch: alternations")->capture_default_str()->check(Positive);
  cmd->add_option("--python", o->python, "--vs-torch: the Python with PyTorch")->capture_default_str();
  cmd->add_option("--torch-script", o->torch_script, "--vs-torch: path of bench_torch.py (default: found from the binary)");
  cmd->callback([=, &action] {
    action = [=]() -> int {
      BenchOptions opt = *o;
      check_threads("bench", opt.threads);
      set_num_threads(opt.threads > 0 ? opt.threads : default_num_threads());
      if (opt.op == "sgemm") opt.shape = parse_shape(shape->empty() ? "2048,2048,2048" : *shape, 3, "M,N,K");
      else if (!opt.op.empty()) opt.shape = parse_shape(*shape, 4, "N,C,H,W");
      else SB_CHECK(shape->empty(), "bench: --shape goes with --op");
      SB_CHECK(!(opt.vs_torch && opt.op == "sgemm"), "bench: --vs-torch does not time --op sgemm (tools/scripts/bench_torch.py times models and layers)");
      if (opt.vs_torch) return vs_torch(*flags, opt);
      Timing t = opt.op.empty() ? bench_model(*flags, opt) : bench_op(*flags, opt);
      nlohmann::json j = result_json(*flags, opt, t);
      if (opt.json) std::printf("%s\n", j.dump().c_str());
      else print_table(j);
      return 0;
    };
  });
}

}  // namespace sb::cli
