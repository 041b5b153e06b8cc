// `smallbatch bench` through the command line: its FLOP count against a hand count, and the JSON
// line it prints. No timing assertions: timings are benchmarks, not tests.
#include <doctest/doctest.h>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#ifdef SB_CLI_PATH
#include "cli_util.h"

namespace {

// Runs `smallbatch <args>` and returns its output (stdout then stderr) and exit status.
std::pair<std::string, int> run_cli(const std::string& args) {
  sbtest::CliResult r = sbtest::run_cli(args);
  return {r.all(), r.code};
}

nlohmann::json run_json(const std::string& args) {
  auto [out, rc] = run_cli(args);
  INFO("smallbatch ", args, "\n", out);
  REQUIRE(rc == 0);
  // Exactly one line, and it is a JSON object.
  REQUIRE(!out.empty());
  CHECK(out.find('\n') == out.size() - 1);
  nlohmann::json j;
  REQUIRE_NOTHROW(j = nlohmann::json::parse(out));
  REQUIRE(j.is_object());
  return j;
}

// Multiply-adds of a 3x3 convolution, padding 1, and of a 2x2 stride-2 transposed one.
int64_t conv3(int64_t hw, int64_t cin, int64_t cout) { return hw * hw * cout * cin * 9; }
int64_t up2(int64_t hw_in, int64_t cin, int64_t cout) { return hw_in * hw_in * cin * cout * 4; }

}  // namespace

TEST_CASE("bench: the FLOP count of a tiny unet-s matches a hand count") {
  // unet-s, base width 2, 3 input channels, 2 classes, one 8x8 image.
  auto j = run_json("bench --model unet-s --norm gn --groups 2 --base-width 2 --classes 2 --batch 1 --size 8 "
                    "--steps 2 --warmup 1 --threads 1 --json");
  const int64_t macs = conv3(8, 3, 2) + conv3(8, 2, 2)    // e1
                       + conv3(4, 2, 4) + conv3(4, 4, 4)  // e2 after the first pool
                       + conv3(2, 4, 8) + conv3(2, 8, 8)  // e3 after the second pool
                       + up2(2, 8, 4)                     // u2: 2x2 -> 4x4
                       + conv3(4, 8, 4) + conv3(4, 4, 4)  // d2 on concat(u2, e2)
                       + up2(4, 4, 2)                     // u1: 4x4 -> 8x8
                       + conv3(8, 4, 2) + conv3(8, 2, 2)  // d1 on concat(u1, e1)
                       + 8 * 8 * 2 * 2;                   // head, 1x1
  CHECK(macs == 27776);
  // Forward 2 x MACs, backward twice the forward.
  CHECK(j.at("flops_per_step").get<int64_t>() == 6 * macs);
}

TEST_CASE("bench: --json prints one JSON line with every field") {
  auto j = run_json("bench --model unet-s --norm bn --base-width 4 --classes 3 --batch 2 --size 16 "
                    "--steps 3 --warmup 1 --threads 1 --json");
  for (const char* k : {"median_ms", "p10_ms", "p90_ms", "cpu_median_ms", "images_per_s", "gflops", "peak_rss_mb"}) {
    CAPTURE(k);
    REQUIRE(j.contains(k));
    CHECK(j.at(k).is_number());
    CHECK(j.at(k).get<double>() > 0);
  }
  CHECK(j.at("p10_ms").get<double>() <= j.at("median_ms").get<double>());
  CHECK(j.at("median_ms").get<double>() <= j.at("p90_ms").get<double>());
  CHECK(j.at("batch") == 2);
  CHECK(j.at("norm") == "bn");
  CHECK(j.at("threads") == 1);
}

TEST_CASE("bench: --op times one layer and counts a convolution's FLOPs") {
  auto conv = run_json("bench --op conv2d --shape 1,2,4,4 --out-channels 3 --steps 2 --warmup 0 --threads 1 --json");
  CHECK(conv.at("flops_per_step").get<int64_t>() == 6 * conv3(4, 2, 3));
  auto up = run_json("bench --op conv_transpose2d --shape 1,4,3,3 --out-channels 2 --steps 2 --warmup 0 --threads 1 --json");
  CHECK(up.at("flops_per_step").get<int64_t>() == 6 * up2(3, 4, 2));
  auto gn = run_json("bench --op groupnorm --groups 2 --shape 2,4,5,5 --steps 2 --warmup 0 --threads 1 --json");
  CHECK(gn.at("gflops").is_null());  // not a convolution: no FLOPs are claimed
  CHECK(gn.at("median_ms").get<double>() > 0);
  auto bn = run_json("bench --op batchnorm --shape 2,4,5,5 --steps 2 --warmup 0 --threads 1 --json");
  CHECK(bn.at("op") == "batchnorm");
}

TEST_CASE("bench: bad --op shapes are clear errors") {
  auto [out, rc] = run_cli("bench --op conv2d --shape 1,2,x,4 --steps 1 --json");
  CHECK(rc != 0);
  CHECK(out.find("--shape") != std::string::npos);
}

TEST_CASE("bench: the table output names the quantities") {
  auto [out, rc] = run_cli("bench --base-width 2 --groups 2 --batch 1 --size 8 --steps 2 --warmup 0 --threads 1");
  INFO(out);
  CHECK(rc == 0);
  for (const char* k : {"median", "p10", "p90", "images/s", "GFLOP/s", "peak RSS"}) CHECK(out.find(k) != std::string::npos);
}

#endif

TEST_CASE("bench: --op sgemm times the BLAS, and --shape past its limits is an error, not a crash") {
  sbtest::CliResult ok = sbtest::run_cli("bench --op sgemm --shape 64,48,32 --steps 1 --warmup 0 --threads 1 --json");
  REQUIRE(ok.code == 0);
  const auto j = nlohmann::json::parse(ok.out);
  CHECK(j["flops_per_step"] == 2 * 64 * 48 * 32);
  CHECK(j["platform"]["blas_core"].is_string());
  struct Case {
    std::string args, expect;
  };
  for (const Case& c : std::vector<Case>{
           {"--op sgemm --shape 0,2,2", "expects positive integers M,N,K"},
           {"--op sgemm --shape 2,2", "expects 3 sizes M,N,K"},
           {"--op sgemm --shape 1099511627776,2,1", "exceeds 2^40 elements"},
           {"--op conv2d --shape 4611686018427387904,1,1,1", "exceeds 2^40 elements"},
           {"--op sgemm --vs-torch", "--vs-torch does not time --op sgemm"},
       }) {
    sbtest::CliResult r = sbtest::run_cli("bench " + c.args);
    INFO(c.args << "\n" << r.err);
    CHECK(r.code == 1);
    CHECK(r.err.find(c.expect) != std::string::npos);
  }
}
