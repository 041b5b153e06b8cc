// Who owns an output folder: train and compare hold DIR/.lock while they write (a second writer
// is refused, naming the holder's pid; a dead holder blocks nothing), a non-empty --out needs
// --resume or --overwrite, and a resume checks the state's own configuration even when
// config.json is lost or rewritten. Run through the real command line.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "cli_util.h"
#include "temp_dir.h"

namespace {

namespace fs = std::filesystem;

const std::string kData = "shapes:train=8,val=4,size=16";
const std::string kTrain = "train --data " + kData + " --base-width 4 --groups 2 --batch 4 --threads 1 --workers 1";

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Holds DIR/.lock as a running smallbatch would, with `pid` written into it.
struct Holder {
  int fd;
  Holder(const fs::path& dir, const std::string& pid) {
    fs::create_directories(dir);
    fd = ::open((dir / ".lock").c_str(), O_RDWR | O_CREAT, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::flock(fd, LOCK_EX | LOCK_NB) == 0);
    REQUIRE(::ftruncate(fd, 0) == 0);
    REQUIRE(::write(fd, pid.data(), pid.size()) == static_cast<ssize_t>(pid.size()));
  }
  ~Holder() { ::close(fd); }
};

}  // namespace

TEST_CASE("output folder: a finished run is not replaced without --overwrite, nor continued without --resume") {
  sbtest::TempDir t("sb_out");
  std::string out = t / "run";
  auto first = sbtest::run_cli(kTrain + " --epochs 1 --out " + out);
  REQUIRE(first.code == 0);
  std::string model = slurp(fs::path(out) / "model.safetensors");
  auto again = sbtest::run_cli(kTrain + " --epochs 1 --lr 0.5 --out " + out);
  INFO(again.all());
  CHECK(again.code == 1);
  CHECK(again.err.find("--out: '" + out + "' is not empty (it holds best.safetensors, config.json,") != std::string::npos);
  CHECK(again.err.find("add --resume to continue the run saved there, or --overwrite") != std::string::npos);
  CHECK(slurp(fs::path(out) / "model.safetensors") == model);  // untouched
  // A folder holding something else is not empty either.
  fs::create_directories(t / "mine");
  std::ofstream(t / "mine/notes.txt") << "my notes\n";
  auto mine = sbtest::run_cli(kTrain + " --epochs 1 --out " + t / "mine");
  CHECK(mine.code == 1);
  CHECK(mine.err.find("is not empty (it holds notes.txt)") != std::string::npos);
  // --overwrite replaces the run's files; other files stay.
  auto over = sbtest::run_cli(kTrain + " --epochs 1 --lr 0.5 --overwrite --out " + out);
  INFO(over.all());
  CHECK(over.code == 0);
  CHECK(slurp(fs::path(out) / "config.json").find("\"lr\": 0.5") != std::string::npos);
  auto both = sbtest::run_cli(kTrain + " --epochs 1 --resume --overwrite --out " + out);
  CHECK(both.code == 1);
  CHECK(both.err.find("give one of them, not both") != std::string::npos);
}

TEST_CASE("output folder: a second train or compare on a locked --out is refused, naming the holder's pid") {
  sbtest::TempDir t("sb_lock");
  {
    Holder h(t.path / "run", "4242\n");
    auto r = sbtest::run_cli(kTrain + " --epochs 1 --out " + t / "run");
    INFO(r.all());
    CHECK(r.code == 1);
    CHECK(r.err.find("--out: '" + t / "run" + "' is in use by another smallbatch process (pid 4242") != std::string::npos);
    CHECK_FALSE(fs::exists(t.path / "run/config.json"));  // refused before anything was written
    auto resume = sbtest::run_cli(kTrain + " --epochs 1 --resume --out " + t / "run");
    CHECK(resume.code == 1);
    CHECK(resume.err.find("(pid 4242") != std::string::npos);

    Holder hc(t.path / "sweep", "777\n");
    std::string temp = t / "sweep/summary.csv.tmp-777-1";
    std::ofstream(temp) << "a live temporary of the sweep holding the lock";
    auto c = sbtest::run_cli("compare --norms gn --batch-sizes 4 --seeds 1 --epochs 1 --data " + kData +
                             " --base-width 4 --threads 1 --out " + t / "sweep");
    INFO(c.all());
    CHECK(c.code == 1);
    CHECK(c.err.find("is in use by another smallbatch process (pid 777") != std::string::npos);
    CHECK(fs::exists(temp));  // the holder's live temporary is left alone
  }
  // The holders are gone (their locks went with them): a stale .lock with a pid blocks nothing.
  auto r = sbtest::run_cli(kTrain + " --epochs 1 --out " + t / "run");
  INFO(r.all());
  CHECK(r.code == 0);
  std::string pid = slurp(t.path / "run/.lock");  // the last holder's pid, no longer 4242
  CHECK(pid != "4242\n");
  CHECK(pid.find_first_not_of("0123456789\n") == std::string::npos);
}

TEST_CASE("output folder: a lock held by a process killed with SIGKILL does not block the next run") {
  sbtest::TempDir t("sb_lock_kill");
  fs::create_directories(t.path / "run");
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    int fd = ::open((t.path / "run/.lock").c_str(), O_RDWR | O_CREAT, 0644);
    if (fd < 0 || ::flock(fd, LOCK_EX) != 0) ::_exit(1);
    ::pause();
    ::_exit(0);
  }
  // Wait until the child holds the lock, then kill it.
  for (int i = 0; i < 500; ++i) {
    int fd = ::open((t.path / "run/.lock").c_str(), O_RDWR);
    bool held = fd >= 0 && ::flock(fd, LOCK_EX | LOCK_NB) != 0;
    if (fd >= 0) ::close(fd);
    if (held) break;
    ::usleep(10000);
  }
  auto blocked = sbtest::run_cli(kTrain + " --epochs 1 --out " + t / "run");
  CHECK(blocked.code == 1);
  CHECK(blocked.err.find("is in use by another smallbatch process") != std::string::npos);
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  auto r = sbtest::run_cli(kTrain + " --epochs 1 --out " + t / "run");
  INFO(r.all());
  CHECK(r.code == 0);
}

TEST_CASE("output folder: --resume checks the state's own configuration when config.json is lost or rewritten") {
  sbtest::TempDir t("sb_resume_cfg");
  std::string out = t / "run";
  REQUIRE(sbtest::run_cli(kTrain + " --epochs 1 --lr 0.05 --out " + out).code == 0);
  std::string config = slurp(fs::path(out) / "config.json");
  fs::remove(fs::path(out) / "config.json");
  auto lost = sbtest::run_cli(kTrain + " --epochs 2 --lr 0.5 --seed 3 --resume --out " + out);
  INFO(lost.all());
  CHECK(lost.code == 1);
  CHECK(lost.err.find("holds a run made with other settings than these flags ask for:") != std::string::npos);
  CHECK(lost.err.find("--lr: saved 0.05, now 0.5") != std::string::npos);
  CHECK(lost.err.find("--seed: saved 0, now 3") != std::string::npos);
  CHECK(lost.err.find("--epochs: ") == std::string::npos);  // more epochs may be asked for
  // config.json rewritten to the new flags: the state still decides.
  std::string rewritten = config;
  rewritten.replace(rewritten.find("\"lr\": 0.05"), 10, "\"lr\": 0.5");
  std::ofstream(fs::path(out) / "config.json") << rewritten;
  auto changed = sbtest::run_cli(kTrain + " --epochs 1 --lr 0.5 --resume --out " + out);
  CHECK(changed.code == 1);
  CHECK(changed.err.find("lr: saved 0.05") != std::string::npos);
  // The same flags continue, and config.json is restored to the run's own.
  auto same = sbtest::run_cli(kTrain + " --epochs 1 --lr 0.05 --resume --out " + out);
  INFO(same.all());
  CHECK(same.code == 0);
  CHECK(slurp(fs::path(out) / "config.json") == config);
}

TEST_CASE("outputs never replace inputs: --save-logits onto --weights, --save onto the run's state, --init from it") {
  sbtest::TempDir t("sb_out_in");
  std::string out = t / "run";
  REQUIRE(sbtest::run_cli(kTrain + " --epochs 1 --out " + out).code == 0);
  fs::copy_file(fs::path(out) / "model.safetensors", t.path / "w.safetensors");
  std::string weights = slurp(t.path / "w.safetensors");
  // The same file under another spelling (./, a symlink): compared as files, not strings.
  fs::create_symlink(t.path / "w.safetensors", t.path / "link.safetensors");
  for (const std::string& logits : {t / "w.safetensors", t / "./w.safetensors", t / "link.safetensors"}) {
    CAPTURE(logits);
    auto e = sbtest::run_cli("eval --weights " + t / "w.safetensors" + " --data " + kData + " --save-logits " + logits);
    INFO(e.all());
    CHECK(e.code == 1);
    CHECK(e.err.find("--save-logits: '" + logits + "' is the same file as --weights") != std::string::npos);
    CHECK(slurp(t.path / "w.safetensors") == weights);
  }
  std::string state = slurp(fs::path(out) / "state.safetensors");
  auto s = sbtest::run_cli(kTrain + " --epochs 2 --resume --out " + out + " --save " + out + "/state.safetensors");
  INFO(s.all());
  CHECK(s.code == 1);
  CHECK(s.err.find("--save: '" + out + "/state.safetensors' is '") != std::string::npos);
  CHECK(s.out.find("epoch 2") == std::string::npos);  // refused before training
  CHECK(slurp(fs::path(out) / "state.safetensors") == state);
  auto init = sbtest::run_cli(kTrain + " --epochs 2 --resume --out " + out + " --init " + out + "/best.safetensors");
  CHECK(init.code == 1);
  CHECK(init.err.find("--init: '" + out + "/best.safetensors' is '") != std::string::npos);
  auto save_init = sbtest::run_cli(kTrain + " --epochs 1 --init " + t / "w.safetensors" + " --save " + t / "link.safetensors");
  CHECK(save_init.code == 1);
  CHECK(save_init.err.find("is the same file as --init") != std::string::npos);
  CHECK(slurp(t.path / "w.safetensors") == weights);
}

TEST_CASE("outputs: a --save name too long for its temporary is refused before training, at and past the limit") {
  sbtest::TempDir t("sb_long");
  // 255 bytes is a valid name, but its temporary (NAME.tmp-PID-RANDOM-N) would not be.
  std::string too_long = std::string(255 - 12, 'w') + ".safetensors";
  auto r = sbtest::run_cli(kTrain + " --epochs 1 --save " + t / too_long);
  INFO(r.all());
  CHECK(r.code == 1);
  CHECK(r.err.find("--save: the file name '") != std::string::npos);
  CHECK(r.err.find("255 bytes long; at most 212 are allowed") != std::string::npos);
  CHECK(r.out.find("epoch 1") == std::string::npos);  // before training, not after
  // 212 bytes is the longest name allowed, and it works.
  std::string longest = std::string(212 - 12, 'w') + ".safetensors";
  auto ok = sbtest::run_cli(kTrain + " --epochs 1 --save " + t / longest);
  INFO(ok.all());
  CHECK(ok.code == 0);
  CHECK(fs::exists(t.path / longest));
  auto logits = sbtest::run_cli("eval --weights " + t / longest + " --data " + kData + " --save-logits " + t / too_long);
  CHECK(logits.code == 1);
  CHECK(logits.err.find("--save-logits: the file name") != std::string::npos);
}

TEST_CASE("output folder: --resume takes the saved configuration, and more --epochs or another --threads are said") {
  sbtest::TempDir t("sb_resume_saved");
  std::string out = t / "run";
  REQUIRE(sbtest::run_cli(kTrain + " --norm bn --epochs 1 --lr 0.05 --out " + out).code == 0);
  const std::string config = slurp(fs::path(out) / "config.json");
  // The README's line: no flag but --out and --resume. A finished run stays as it was.
  auto plain = sbtest::run_cli("train --out " + out + " --resume");
  INFO(plain.all());
  CHECK(plain.code == 0);
  CHECK(plain.out.find("resuming " + out + " at step 2 of 2") != std::string::npos);
  CHECK(slurp(fs::path(out) / "config.json") == config);
  // A flag that changes the run is refused by name, before any work.
  for (std::string flag : {"--lr 0.5", "--norm gn", "--seed 3", "--data shapes:train=8,val=4,size=8", "--steps 5"}) {
    CAPTURE(flag);
    auto r = sbtest::run_cli("train --out " + out + " --resume " + flag);
    CHECK(r.code == 1);
    CHECK(r.err.find("smallbatch train: error: --resume: ") != std::string::npos);
    CHECK(r.err.find("\n  " + flag.substr(0, flag.find(' ')) + ": ") != std::string::npos);
  }
  // The same value given again is no change.
  CHECK(sbtest::run_cli("train --out " + out + " --resume --lr 0.05 --norm bn --epochs 1").code == 0);
  // More epochs continue the run; another thread count goes through; both are said.
  auto more = sbtest::run_cli("train --out " + out + " --resume --epochs 2 --threads 2");
  INFO(more.all());
  CHECK(more.code == 0);
  CHECK(more.out.find("resuming with --epochs 2 (was 1)") != std::string::npos);
  CHECK(more.out.find("resuming with --threads 2 (was 1)") != std::string::npos);
  CHECK(slurp(fs::path(out) / "metrics.csv").find("\n2,4,") != std::string::npos);
  CHECK(slurp(fs::path(out) / "config.json").find("\"epochs\": 2") != std::string::npos);
  // Another 3x3 algorithm (SMALLBATCH_WINOGRAD) goes through too, and is said.
  auto direct = sbtest::run_cli("train --out " + out + " --resume --epochs 3", "SMALLBATCH_WINOGRAD=off");
  INFO(direct.all());
  CHECK(direct.code == 0);
  CHECK(direct.out.find("resuming with 3x3 convolutions by direct (was winograd; SMALLBATCH_WINOGRAD)") !=
        std::string::npos);
  CHECK(slurp(fs::path(out) / "config.json").find("\"conv3x3\": \"direct\"") != std::string::npos);
  // Fewer epochs than the run was made for: refused.
  auto fewer = sbtest::run_cli("train --out " + out + " --resume --epochs 1");
  CHECK(fewer.code == 1);
  CHECK(fewer.err.find("--epochs: saved 3, now 1") != std::string::npos);
}

TEST_CASE("output folder: train without --out saves into runs/train, runs/train-2, ..., never the same one twice") {
  sbtest::TempDir t("sb_fresh_out");
  const std::string env = "SMALLBATCH_RUNS_DIR=" + t / "runs";
  const std::string quick = "train --data " + kData + " --base-width 4 --groups 2 --batch 4 --steps 1 --threads 1 --workers 0";
  auto first = sbtest::run_cli(quick, env);
  INFO(first.all());
  REQUIRE(first.code == 0);
  CHECK(first.out.find("saving in " + t / "runs/train (no --out given)") != std::string::npos);
  CHECK(first.out.find("saved in " + t / "runs/train ") != std::string::npos);
  CHECK(fs::exists(t.path / "runs/train/model.safetensors"));
  CHECK(fs::exists(t.path / "runs/train/config.json"));
  // A command that fails leaves no empty folder behind.
  auto bad = sbtest::run_cli(quick + " --norm xn", env);
  CHECK(bad.code == 1);
  CHECK_FALSE(fs::exists(t.path / "runs/train-2"));
  // Four at once: each takes its own folder (mkdir is the claim).
  std::string cmd;
  for (int i = 0; i < 4; ++i) cmd += "env " + env + " \"" + SB_CLI_PATH + "\" " + quick + " >/dev/null 2>&1 & ";
  cmd += "wait";
  REQUIRE(std::system(cmd.c_str()) == 0);
  for (const char* d : {"train-2", "train-3", "train-4", "train-5"}) {
    CAPTURE(d);
    CHECK(fs::exists(t.path / "runs" / d / "model.safetensors"));
    CHECK(fs::exists(t.path / "runs" / d / "metrics.csv"));
  }
  CHECK_FALSE(fs::exists(t.path / "runs/train-6"));
  // --resume still needs the run named.
  auto resume = sbtest::run_cli(quick + " --resume", env);
  CHECK(resume.code == 1);
  CHECK(resume.err.find("--resume needs --out DIR") != std::string::npos);
}
