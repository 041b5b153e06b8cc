// The command line never hangs and never ends by a signal: a FIFO given as a file is refused
// instead of blocking the open, a closed stdout (`| head -1`) does not kill a training run, a
// failed write of a result to stdout (/dev/full) is an error, and sizes whose products overflow
// are refused with a message.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cli_util.h"
#include "core/errors.h"
#include "core/io/safetensors.h"
#include "core/tensor.h"
#include "datasets/image_io.h"
#include "temp_dir.h"

namespace {

namespace fs = std::filesystem;

const std::string kData = "shapes:train=8,val=4,size=16";
// The command under `timeout`: a regression would hang, and must fail (SIGKILL: a SIGTERM only asks
// train to stop after its step) instead.
const std::string kTimeout = "SB_UNUSED=1 timeout -s KILL 60";

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_CASE("process: a FIFO given as a checkpoint, data file, image or split list is refused, not waited on") {
  sbtest::TempDir t("sb_fifo");
  std::string fifo = t / "pipe.safetensors";
  REQUIRE(::mkfifo(fifo.c_str(), 0644) == 0);
  REQUIRE(sbtest::run_cli("train --data " + kData + " --base-width 4 --groups 2 --epochs 1 --threads 1 --save " +
                          t / "w.safetensors").code == 0);
  // A folder: dataset whose image is a FIFO (its mask a real PNG).
  fs::create_directories(t.path / "folder/train/images");
  fs::create_directories(t.path / "folder/train/masks");
  std::vector<uint8_t> px(16 * 16, 1);
  sb::write_png(t / "folder/train/masks/a.png", px.data(), 16, 16, 1);
  REQUIRE(::mkfifo((t / "folder/train/images/a.png").c_str(), 0644) == 0);
  const std::vector<std::string> commands = {
      "eval --weights " + fifo + " --data " + kData,
      "predict --weights " + fifo + " --input " + t / "folder/train/masks/a.png" + " --out " + t / "pred",
      "train --data " + kData + " --epochs 1 --init " + fifo,
      "train --data tensors:" + fifo + " --epochs 1 --classes 2",
      "eval --weights " + t / "w.safetensors" + " --data tensors:" + fifo,
  };
  for (const std::string& c : commands) {
    CAPTURE(c);
    auto r = sbtest::run_cli(c, kTimeout);
    INFO(r.all());
    CHECK(r.code == 1);
    CHECK(r.err.find("not a regular file (it is a FIFO, a named pipe)") != std::string::npos);
  }
  // A folder lists regular files only: its FIFO is no image, and the folder then has none.
  auto folder = sbtest::run_cli("data stats --data folder:" + t / "folder" + " --classes 2", kTimeout);
  CHECK(folder.code == 1);
  CHECK(folder.err.find("no images in") != std::string::npos);
}

TEST_CASE("process: train survives a closed stdout (| head -1): it trains and saves to the end, status 0") {
  sbtest::TempDir t("sb_pipe");
  std::string cmd = std::string("bash -c '\"$0\" train --data shapes:train=32,val=4,size=16 --base-width 4 --groups 2 "
                                "--batch 4 --epochs 4 --threads 1 --out ") +
                    t / "run" + " 2>" + t / "err" + " | head -1 >/dev/null; exit ${PIPESTATUS[0]}' \"" + SB_CLI_PATH +
                    "\"";
  int rc = std::system(cmd.c_str());
  int code = WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
  std::string err = slurp(t.path / "err");
  INFO(err);
  CHECK(code == 0);  // not 141, SIGPIPE
  std::string metrics = slurp(t.path / "run/metrics.csv");
  CHECK(std::count(metrics.begin(), metrics.end(), '\n') == 5);  // the header and all 4 epochs
  CHECK(fs::exists(t.path / "run/best.safetensors"));
  CHECK(err.find("standard output failed (Broken pipe); the work goes on and is saved as before") != std::string::npos);
}

TEST_CASE("process: a result that cannot be written to stdout (/dev/full) is an error, status 1") {
  sbtest::TempDir t("sb_full");
  REQUIRE(sbtest::run_cli("train --data " + kData + " --base-width 4 --groups 2 --epochs 1 --threads 1 --save " +
                          t / "w.safetensors").code == 0);
  for (const std::string& c : {"eval --weights " + t / "w.safetensors" + " --data " + kData + " --json",
                               "eval --weights " + t / "w.safetensors" + " --data " + kData, std::string("models"),
                               "data stats --data " + kData}) {
    CAPTURE(c);
    std::string shell = "\"" SB_CLI_PATH "\" " + c + " >/dev/full 2>" + t / "err";
    int rc = std::system(shell.c_str());
    int code = WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
    std::string err = slurp(t.path / "err");
    INFO(err);
    CHECK(code == 1);
    CHECK(err.find("error: writing to standard output failed: No space left on device") != std::string::npos);
  }
}

TEST_CASE("process: shapes whose element count or byte size overflows are refused with a message") {
  using sb::Tensor;
  CHECK_THROWS_WITH_AS(Tensor::empty({int64_t{1} << 62, 4}), doctest::Contains("more elements than fit in 64 bits"),
                       sb::Error);
  CHECK_THROWS_WITH_AS(Tensor::empty({3037000500, 3037000500}), doctest::Contains("more elements than fit in 64 bits"),
                       sb::Error);
  CHECK_THROWS_WITH_AS(Tensor::empty({int64_t{1} << 57, 4}), doctest::Contains("more memory than any machine has"),
                       sb::Error);
  CHECK_THROWS_WITH_AS(sb::IndexTensor::zeros({int64_t{1} << 31, int64_t{1} << 31}),
                       doctest::Contains("more memory than any machine has"), sb::Error);
  // Through the command line: --image-size whose S x S overflows, or passes --max-pixels.
  for (std::string s : {"4611686018427387904", "3037000500", "8193"}) {
    CAPTURE(s);
    auto r = sbtest::run_cli("train --data " + kData + " --epochs 1 --threads 1 --image-size " + s);
    INFO(r.all());
    CHECK(r.code == 1);
    CHECK(r.err.find("--image-size: " + s + " x " + s + " pixels is more than --max-pixels") != std::string::npos);
  }
}
