// The OpenBLAS core guard (core/platform.h): the decision for any CPU, the guard on this machine,
// and proof that the in-process switch is the same as starting with OPENBLAS_CORETYPE set: same
// core, same GEMM bits. Also `smallbatch doctor` and `--version`.
#include <doctest/doctest.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "cli_util.h"
#include "core/kernels/gemm.h"
#include "core/kernels/simd.h"
#include "core/platform.h"
#include "temp_dir.h"

using namespace sb;

namespace {

bool all_cores(const char*) { return true; }
bool no_cooperlake(const char* name) { return std::strcmp(name, "Cooperlake") != 0; }
bool no_cores(const char*) { return false; }

// A (64, 48) x (48, 80) product of fixed pseudo-random values: big enough for OpenBLAS's
// optimized kernels, whose summation order differs from core to core.
std::vector<float> gemm_fingerprint() {
  const int64_t M = 64, N = 80, K = 48;
  std::vector<float> a(M * K), b(K * N), c(M * N);
  uint32_t s = 12345;
  auto next = [&s] {
    s = s * 1664525u + 1013904223u;
    return float(int(s >> 9) % 2001 - 1000) / 997.f;
  };
  for (float& v : a) v = next();
  for (float& v : b) v = next();
  kernels::gemm(false, false, M, N, K, 1.f, a.data(), b.data(), 0.f, c.data());
  // Against the definition, so the fingerprint is a correct product whatever the kernels.
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double ref = 0;
      for (int64_t k = 0; k < K; ++k) ref += double(a[i * K + k]) * b[k * N + j];
      REQUIRE(std::abs(c[i * N + j] - ref) <= 1e-4 * (1 + std::abs(ref)));
    }
  return c;
}

std::string self_exe() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

}  // namespace

TEST_CASE("platform: a core without AVX2 on a CPU with AVX2 or AVX-512 is switched to the CPU's core") {
  using detail::blas_core_to_switch_to;
  // OpenBLAS 0.3.21 on Emerald Rapids, Raptor Lake, Arrow Lake...: Prescott.
  CHECK(blas_core_to_switch_to("Prescott", "avx512", true, false, all_cores) == "Cooperlake");
  CHECK(blas_core_to_switch_to("Prescott", "avx512", false, false, all_cores) == "SkylakeX");
  CHECK(blas_core_to_switch_to("Prescott", "avx512", true, false, no_cooperlake) == "SkylakeX");
  CHECK(blas_core_to_switch_to("Prescott", "avx2", false, false, all_cores) == "Haswell");
  CHECK(blas_core_to_switch_to("Core2", "avx2", false, true, all_cores) == "Zen");
  CHECK(blas_core_to_switch_to("Sandybridge", "avx2", false, false, all_cores) == "Haswell");
  CHECK(blas_core_to_switch_to("prescott", "avx2", false, false, all_cores) == "Haswell");
  // Nothing to gain, or nothing to switch to.
  CHECK(blas_core_to_switch_to("Prescott", "avx", false, false, all_cores) == "");
  CHECK(blas_core_to_switch_to("Prescott", "sse2", false, false, all_cores) == "");
  CHECK(blas_core_to_switch_to("Prescott", "avx512", true, false, no_cores) == "");
  // OpenBLAS's own AVX2-or-better choices are left alone, even Haswell on an AVX-512 CPU.
  CHECK(blas_core_to_switch_to("Haswell", "avx512", false, false, all_cores) == "");
  CHECK(blas_core_to_switch_to("Zen", "avx512", true, true, all_cores) == "");
  CHECK(blas_core_to_switch_to("SkylakeX", "avx512", true, false, all_cores) == "");
  CHECK(blas_core_to_switch_to("Cooperlake", "avx512", true, false, all_cores) == "");
}

TEST_CASE("platform: on this machine OpenBLAS runs kernels as wide as the CPU allows, or says why not") {
  const PlatformInfo p = platform_info();
  INFO("CPU " << p.cpu << ", " << p.cpu_simd << "; BLAS " << p.blas.core << " (" << p.blas.origin << ")");
  CHECK(!p.blas.library.empty());
  CHECK(p.kernels == kernels::simd_name(kernels::simd_level()));
  if (std::getenv("OPENBLAS_CORETYPE")) return;  // the user's choice is respected, not checked
  if (p.blas.library.rfind("OpenBLAS", 0) != 0) return;
  // With AVX2 or better, the core in use is one with AVX2 or better, unless a warning says why.
  if ((p.cpu_simd == "avx2" || p.cpu_simd == "avx512") && p.blas.warning.empty()) {
    bool wide = false;
    for (const char* core : {"SkylakeX", "Cooperlake", "SapphireRapids", "Haswell", "Zen", "Excavator"})
      wide = wide || strcasecmp(p.blas.core.c_str(), core) == 0;
    CHECK(wide);
  }
}

// The child half of the next test: writes the fingerprint's bytes where SB_GEMM_FINGERPRINT says.
// Run alone, it checks the product against its definition like any other test.
TEST_CASE("platform: the GEMM fingerprint is a correct product") {
  const std::vector<float> c = gemm_fingerprint();
  if (const char* out = std::getenv("SB_GEMM_FINGERPRINT")) {
    std::ofstream f(out, std::ios::binary);
    f.write(reinterpret_cast<const char*>(c.data()), std::streamsize(c.size() * sizeof(float)));
    f << ensure_blas_kernels().core;
  }
}

TEST_CASE("platform: the in-process switch gives the core and the bits of a process started with OPENBLAS_CORETYPE") {
  const BlasInfo& info = ensure_blas_kernels();
  if (info.library.rfind("OpenBLAS", 0) != 0 || info.library.find("DYNAMIC_ARCH") == std::string::npos) {
    MESSAGE("not a DYNAMIC_ARCH OpenBLAS: nothing to switch");
    return;
  }
  const std::string before = info.core;
  sbtest::TempDir dir;
  // Haswell runs on every CPU this guard acts on; Prescott on all x86-64.
  std::vector<const char*> cores = {"Prescott"};
  if (kernels::simd_cpu_level() >= kernels::Simd::avx2) cores.push_back("Haswell");
  for (const char* core : cores) {
    CAPTURE(core);
    REQUIRE(detail::blas_switch_core(core));
    CHECK(std::getenv("OPENBLAS_CORETYPE") == nullptr);  // the environment is left as it was
    const std::vector<float> here = gemm_fingerprint();
    const std::string out = (dir.path / core).string();
    const std::string cmd = "env -u SMALLBATCH_SIMD OPENBLAS_CORETYPE=" + std::string(core) + " SB_GEMM_FINGERPRINT=" +
                            out + " '" + self_exe() + "' -tc='platform: the GEMM fingerprint is a correct product' >/dev/null";
    REQUIRE(std::system(cmd.c_str()) == 0);
    std::ifstream f(out, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    REQUIRE(bytes.size() > here.size() * sizeof(float));
    CHECK(std::memcmp(bytes.data(), here.data(), here.size() * sizeof(float)) == 0);
    CHECK(strcasecmp(bytes.substr(here.size() * sizeof(float)).c_str(), core) == 0);
  }
  REQUIRE(detail::blas_switch_core(before.c_str()));
}

TEST_CASE("platform: doctor and --version name the CPU, the BLAS core, the kernels and the threads") {
  sbtest::CliResult r = sbtest::run_cli("doctor --threads 2");
  REQUIRE(r.code == 0);
  CHECK(r.out.find("CPU ") != std::string::npos);
  CHECK(r.out.find("BLAS core") != std::string::npos);
  CHECK(r.out.find("kernels ") != std::string::npos);
  CHECK(r.out.find("threads    2") != std::string::npos);
  r = sbtest::run_cli("doctor --json --threads 3");
  REQUIRE(r.code == 0);
  CHECK(r.out.find("\"blas_core\":") != std::string::npos);
  CHECK(r.out.find("\"threads\":3") != std::string::npos);
  r = sbtest::run_cli("--version");
  REQUIRE(r.code == 0);
  CHECK(r.out.rfind("smallbatch ", 0) == 0);
  CHECK(r.out.find("BLAS ") != std::string::npos);
  // A user's OPENBLAS_CORETYPE is used as given, and one OpenBLAS does not know is named.
  r = sbtest::run_cli("doctor --json", "OPENBLAS_CORETYPE=Haswell");
  REQUIRE(r.code == 0);
  CHECK(r.out.find("\"blas_core\":\"Haswell\"") != std::string::npos);
  CHECK(r.out.find("OPENBLAS_CORETYPE=Haswell") != std::string::npos);
  r = sbtest::run_cli("doctor", "OPENBLAS_CORETYPE=NoSuchCore");
  REQUIRE(r.code == 0);
  CHECK(r.err.find("OPENBLAS_CORETYPE='NoSuchCore'") != std::string::npos);
  // Output that cannot be written is an error, not a lost result.
  const std::string full = std::string("\"") + SB_CLI_PATH + "\" doctor >/dev/full 2>/dev/null";
  const int rc = std::system(full.c_str());
  CHECK((WIFEXITED(rc) && WEXITSTATUS(rc) == 1));
}

TEST_CASE("platform: with a BLAS that is not OpenBLAS, smallbatch runs, computes correct products and says so") {
  // Debian's reference BLAS (libblas3, which the OpenBLAS package depends on) has cblas_sgemm but
  // none of OpenBLAS's own calls; put in OpenBLAS's place, it must be reported, not crash.
  const std::filesystem::path reference = "/usr/lib/x86_64-linux-gnu/blas/libblas.so.3";
  if (!std::filesystem::exists(reference)) {
    MESSAGE("no reference BLAS at " << reference.string() << ": skipped");
    return;
  }
  sbtest::TempDir dir;
  std::filesystem::create_symlink(reference, dir.path / "libopenblas.so.0");
  const std::string env = "LD_LIBRARY_PATH=" + dir.path.string();
  sbtest::CliResult r = sbtest::run_cli("doctor", env);
  REQUIRE(r.code == 0);
  CHECK(r.out.find("unknown BLAS") != std::string::npos);
  r = sbtest::run_cli("bench --steps 1 --warmup 0 --batch 1 --size 16 --base-width 4 --groups 2 --threads 2", env);
  CHECK(r.code == 0);
  CHECK(r.out.find("unknown BLAS") != std::string::npos);
  const std::string cmd = "env " + env + " '" + self_exe() + "' -tc='platform: the GEMM fingerprint is a correct product' >/dev/null";
  CHECK(std::system(cmd.c_str()) == 0);
}

TEST_CASE("platform: a malformed SMALLBATCH_* setting is an error naming it, before any work") {
  sbtest::TempDir dir;
  const std::string out = (dir.path / "run").string();
  for (const char* env : {"SMALLBATCH_SIMD=avx9", "SMALLBATCH_SIMD=AVX2", "SMALLBATCH_NUM_THREADS=two",
                          "SMALLBATCH_STREAMING_MIN_BYTES=-5"}) {
    const std::string setting = env, name = setting.substr(0, setting.find('='));
    CAPTURE(setting);
    sbtest::CliResult r = sbtest::run_cli("train --steps 1 --out " + out, env);
    CHECK(r.code == 1);
    CHECK(r.err.find(name) != std::string::npos);
    CHECK(!std::filesystem::exists(out));  // refused before the run folder was made
    r = sbtest::run_cli("--version", env);
    CHECK(r.code == 1);
    CHECK(r.err.find(name) != std::string::npos);
  }
  // A level above the CPU's is refused by name; every level up to it runs.
  const kernels::Simd cpu = kernels::simd_cpu_level();
  for (kernels::Simd level : {kernels::Simd::baseline, kernels::Simd::avx2, kernels::Simd::avx512}) {
    const std::string env = std::string("SMALLBATCH_SIMD=") + kernels::simd_name(level);
    sbtest::CliResult r = sbtest::run_cli("doctor --json", env);
    CAPTURE(env);
    if (level <= cpu) {
      CHECK(r.code == 0);
      CHECK(r.out.find(std::string("\"kernels\":\"") + kernels::simd_name(level) + "\"") != std::string::npos);
    } else {
      CHECK(r.code == 1);
      CHECK(r.err.find("this CPU supports at most") != std::string::npos);
    }
  }
}
