// The instruction-set level of smallbatch's own kernels: SMALLBATCH_SIMD (and the library's other
// SMALLBATCH_* overrides) are validated, through the command line, with errors naming the variable
// and the value. The kernels themselves are tested at every level where they are tested at all
// (tests/simd_levels.h).
#include <doctest/doctest.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "core/kernels/simd.h"
#include "core/kernels/stream.h"
#include "core/ops.h"
#include "layers/conv/ops.h"
#include "layers/norm/ops.h"
#include "simd_levels.h"

using namespace sb;
using kernels::Simd;

namespace {

// Sets an environment variable for a scope and puts back what was there.
struct EnvScope {
  std::string name;
  std::optional<std::string> prev;
  EnvScope(const char* n, const char* value) : name(n) {
    if (const char* p = std::getenv(n)) prev = p;
    setenv(n, value, 1);
  }
  ~EnvScope() {
    if (prev) setenv(name.c_str(), prev->c_str(), 1);
    else unsetenv(name.c_str());
  }
};

}  // namespace

TEST_CASE("simd: SMALLBATCH_SIMD values: the three names, nothing else, never above the CPU") {
  CHECK(kernels::simd_level_from("baseline", Simd::avx512) == Simd::baseline);
  CHECK(kernels::simd_level_from("avx2", Simd::avx512) == Simd::avx2);
  CHECK(kernels::simd_level_from("avx512", Simd::avx512) == Simd::avx512);
  CHECK(kernels::simd_level_from("avx2", Simd::avx2) == Simd::avx2);
  for (const char* bad : {"avx9", "AVX2", "avx2 ", " avx2", "  ", "", "sse2", "avx512f"}) {
    CAPTURE(bad);
    const std::string want = std::string("SMALLBATCH_SIMD: expected avx512, avx2 or baseline but got '") + bad + "'";
    CHECK_THROWS_WITH_AS(kernels::simd_level_from(bad, Simd::avx512), doctest::Contains(want.c_str()), Error);
  }
  // Above the CPU's level: refused, naming the variable and the CPU's best.
  CHECK_THROWS_WITH_AS(kernels::simd_level_from("avx512", Simd::avx2),
                       doctest::Contains("SMALLBATCH_SIMD=avx512: this CPU supports at most avx2"), Error);
  CHECK_THROWS_WITH_AS(kernels::simd_level_from("avx2", Simd::baseline),
                       doctest::Contains("SMALLBATCH_SIMD=avx2: this CPU supports at most baseline"), Error);
  // set_simd_level refuses the same; restores what was in force.
  const Simd prev = kernels::simd_level();
  if (kernels::simd_cpu_level() < Simd::avx512)
    CHECK_THROWS_WITH_AS(kernels::set_simd_level(Simd::avx512), doctest::Contains("this CPU supports at most"), Error);
  CHECK(kernels::simd_level() == prev);
}

// Run by the CTest entry simd.env_baseline with SMALLBATCH_SIMD=baseline: the variable is in force.
TEST_CASE("simd: the level in force is SMALLBATCH_SIMD's when it is set") {
  const char* env = std::getenv("SMALLBATCH_SIMD");
  if (env && *env) CHECK(std::string(kernels::simd_name(kernels::simd_level())) == env);
  else CHECK(kernels::simd_level() == kernels::simd_cpu_level());
  CHECK(kernels::simd_level() <= kernels::simd_cpu_level());
}

#ifdef SB_CLI_PATH
#include "cli_util.h"

namespace {

// `smallbatch <args>` with the environment variable `name` set to `value`.
sbtest::CliResult run_with(const char* name, const char* value, const std::string& args) {
  EnvScope env(name, value);
  return sbtest::run_cli(args);
}

const char* kBench = "bench --steps 1 --warmup 0 --batch 1 --size 16 --threads 1";

}  // namespace

TEST_CASE("simd: a bad SMALLBATCH_SIMD fails the command with exit status 1, naming the variable and value") {
  for (const char* bad : {"avx9", "   ", "AVX2"}) {
    CAPTURE(bad);
    sbtest::CliResult r = run_with("SMALLBATCH_SIMD", bad, kBench);
    INFO("stdout: " << r.out << "\nstderr: " << r.err);
    CHECK(r.code == 1);  // an error, not a crash (128 + signal)
    CHECK(r.err.find(std::string("SMALLBATCH_SIMD: expected avx512, avx2 or baseline but got '") + bad + "'") !=
          std::string::npos);
    CHECK(r.out.find("step") == std::string::npos);  // failed before reporting any timing
  }
  // Convolutions only, their units spread over threads: im2col's level is read inside the
  // parallel region, where it must not throw (an exception there ends the process). conv2d does
  // not read the level before its loops, so there the bad value is not reported yet: only no crash.
  sbtest::CliResult conv = run_with("SMALLBATCH_SIMD", "avx9",
                                    "bench --op conv2d --shape 4,16,32,32 --steps 1 --warmup 0 --threads 2");
  INFO("stdout: " << conv.out << "\nstderr: " << conv.err);
  CHECK(conv.code < 128);
  // A level above the CPU's: refused (only a CPU below AVX-512 can show it end to end; the
  // check itself is tested for every CPU level above).
  if (kernels::simd_cpu_level() < Simd::avx512) {
    sbtest::CliResult r = run_with("SMALLBATCH_SIMD", "avx512", kBench);
    INFO("stderr: " << r.err);
    CHECK(r.code == 1);
    CHECK(r.err.find("SMALLBATCH_SIMD=avx512: this CPU supports at most") != std::string::npos);
  }
  // Every level the CPU has runs.
  for (Simd l : sbtest::simd_levels()) {
    sbtest::CliResult r = run_with("SMALLBATCH_SIMD", kernels::simd_name(l), kBench);
    INFO("level " << kernels::simd_name(l) << ": " << r.err);
    CHECK(r.code == 0);
  }
}

TEST_CASE("simd: SMALLBATCH_WINOGRAD is on or off, and a bad value fails the command naming it") {
  CHECK(kernels::winograd_from("on"));
  CHECK(!kernels::winograd_from("off"));
  for (const char* bad : {"1", "ON", "", " off", "direct"}) {
    CAPTURE(bad);
    const std::string want = std::string("SMALLBATCH_WINOGRAD: expected on or off but got '") + bad + "'";
    CHECK_THROWS_WITH_AS(kernels::winograd_from(bad), doctest::Contains(want.c_str()), Error);
  }
  for (const char* bad : {"yes", "OFF"}) {
    CAPTURE(bad);
    sbtest::CliResult r = run_with("SMALLBATCH_WINOGRAD", bad, kBench);
    INFO("stdout: " << r.out << "\nstderr: " << r.err);
    CHECK(r.code == 1);
    CHECK(r.err.find(std::string("SMALLBATCH_WINOGRAD: expected on or off but got '") + bad + "'") != std::string::npos);
    CHECK(r.out.find("step") == std::string::npos);
  }
  // A value is quoted fit for a terminal: control bytes escaped, a long one cut with its length.
  CHECK_THROWS_WITH_AS(kernels::winograd_from("o\x1b[31mn"),
                       doctest::Contains("SMALLBATCH_WINOGRAD: expected on or off but got 'o\\x1b[31mn'"), Error);
  const std::string huge(10000, 'x');
  try {
    kernels::winograd_from(huge.c_str());
    FAIL("a 10000-byte value was accepted");
  } catch (const Error& e) {
    const std::string m = e.what();
    CHECK(m.size() < 200);
    CHECK(m.find("xxxx... (10000 bytes)'") != std::string::npos);
  }
  // doctor says which 3x3 kernel runs.
  sbtest::CliResult on = run_with("SMALLBATCH_WINOGRAD", "on", "doctor");
  CHECK(on.code == 0);
  CHECK(on.out.find("3x3 convolutions by Winograd F(4, 3) where >= 8 channels") != std::string::npos);
  sbtest::CliResult off = run_with("SMALLBATCH_WINOGRAD", "off", "doctor --json");
  CHECK(off.code == 0);
  CHECK(off.out.find("\"conv3x3\":\"direct\"") != std::string::npos);
}

TEST_CASE("env: a bad SMALLBATCH_CACHE_MB fails the command with exit status 1, naming the variable and value") {
  for (const char* bad : {"lots", "-1", "12MB", " 5", "99999999999999999999"}) {
    CAPTURE(bad);
    sbtest::CliResult r = run_with("SMALLBATCH_CACHE_MB", bad, kBench);
    INFO("stdout: " << r.out << "\nstderr: " << r.err);
    CHECK(r.code == 1);
    CHECK(r.err.find(std::string("SMALLBATCH_CACHE_MB: expected a whole number of MiB, 0 or more (0 turns the "
                                 "cache off), but got '") + bad + "'") != std::string::npos);
  }
  for (const char* good : {"0", "64"}) {
    CAPTURE(good);
    CHECK(run_with("SMALLBATCH_CACHE_MB", good, kBench).code == 0);
  }
}

TEST_CASE("env: a bad SMALLBATCH_STREAMING_MIN_BYTES fails the command, also when it overflows") {
  for (const char* bad : {"-5", "1e6", "99999999999999999999"}) {
    CAPTURE(bad);
    sbtest::CliResult r = run_with("SMALLBATCH_STREAMING_MIN_BYTES", bad, kBench);
    INFO("stderr: " << r.err);
    CHECK(r.code == 1);
    CHECK(r.err.find(std::string("SMALLBATCH_STREAMING_MIN_BYTES: expected a whole number of bytes, 0 or more, "
                                 "but got '") + bad + "'") != std::string::npos);
  }
}
#endif
