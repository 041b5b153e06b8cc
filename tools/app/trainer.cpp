// The training loop (data -> forward -> loss -> backward -> optimizer step), per-epoch
// validation and checkpointing, resume, non-finite detection, and evaluation.
#include "tools/app/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "core/distributed.h"
#include "core/io/fileio.h"
#include "tools/app/json_number.h"
#include "core/ops.h"
#include "core/io/safetensors.h"
#include "datasets/loader.h"
#include "layers/loss/ops.h"
#include "core/kernels/simd.h"
#include "layers/norm/batch_norm.h"
#include "layers/norm/evo_norm.h"
#include "layers/norm/sync_batch_norm.h"
#include "optim/optimizer.h"
#include "tools/app/data_parallel.h"
#include "tools/app/precise_bn.h"
#include "optim/schedule.h"

namespace sb {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

nlohmann::json TrainConfig::to_json() const {
  nlohmann::json j = {{"model", spec.to_json()},
          {"data", data},
          {"val_data", val_data},
          {"image_size", data_opt.image_size},
          {"augment", data_opt.augment},
          {"limit", data_opt.limit},
          {"val_limit", val_limit},
          {"batch", batch},
          {"steps", steps},
          {"epochs", epochs},
          {"shuffle", shuffle},
          {"optim", optim},
          {"lr", json_float(lr)},
          {"momentum", json_float(momentum)},
          {"weight_decay", json_float(weight_decay)},
          {"decay_norm_and_bias", decay_norm_and_bias},
          {"schedule", schedule},
          {"warmup_steps", warmup_steps},
          {"clip_grad", json_float(clip_grad)},
          {"seed", seed},
          {"threads", threads},
          {"init", init},
          {"init_strict", init_strict},
          {"version", SMALLBATCH_VERSION},
          // How the 3x3 convolutions run (SMALLBATCH_WINOGRAD): like the thread count, free to
          // change on --resume, but said, as it changes the last bits.
          {"conv3x3", kernels::winograd_enabled() ? "winograd" : "direct"}};
  if (precise_bn > 0) j["precise_bn"] = precise_bn;  // absent without it: the files of older runs match
  if (world().size() > 1) j["ranks"] = world().size();  // data-parallel: --batch is per rank
  return j;
}

TrainConfig TrainConfig::from_json(const nlohmann::json& j, const std::string& where) {
  TrainConfig c;
  try {
    c.spec = ModelSpec::from_json(j.at("model"), where);
    c.data = j.at("data").get<std::string>();
    c.val_data = j.at("val_data").get<std::string>();
    c.data_opt.image_size = j.at("image_size").get<int64_t>();
    c.data_opt.augment = j.at("augment").get<bool>();
    c.data_opt.limit = j.at("limit").get<int64_t>();
    c.val_limit = j.at("val_limit").get<int64_t>();
    c.batch = j.at("batch").get<int64_t>();
    c.steps = j.at("steps").get<int64_t>();
    c.epochs = j.at("epochs").get<int64_t>();
    c.shuffle = j.at("shuffle").get<bool>();
    c.optim = j.at("optim").get<std::string>();
    c.lr = j.at("lr").get<float>();
    c.momentum = j.at("momentum").get<float>();
    c.weight_decay = j.at("weight_decay").get<float>();
    c.decay_norm_and_bias = j.at("decay_norm_and_bias").get<bool>();
    c.schedule = j.at("schedule").get<std::string>();
    c.warmup_steps = j.at("warmup_steps").get<int64_t>();
    c.clip_grad = j.at("clip_grad").get<float>();
    c.seed = j.at("seed").get<uint64_t>();
    c.threads = j.at("threads").get<int>();
    c.init = j.at("init").get<std::string>();
    c.init_strict = j.at("init_strict").get<bool>();
    c.precise_bn = j.value("precise_bn", int64_t{0});
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": the run's configuration is incomplete or malformed (", e.what(), ")");
  }
  return c;
}

static void differences(const nlohmann::json& saved, const nlohmann::json& now, const std::string& prefix,
                        ResumeDifferences& d) {
  for (auto& [k, v] : now.items()) {
    const std::string key = prefix + k;
    if (key == "version") continue;
    if (saved.contains(k) && saved[k].is_object() && v.is_object()) {
      differences(saved[k], v, key + ".", d);
      continue;
    }
    if (saved.contains(k) && same_setting(saved[k], v)) continue;
    const bool more = (key == "epochs" || key == "steps") && saved.contains(k) && saved[k].is_number_integer() &&
                      saved[k].get<int64_t>() > 0 && v.get<int64_t>() > saved[k].get<int64_t>();
    if (more || (key == "threads" && saved.contains(k))) {
      d.allowed_text.push_back(str(key == "threads" ? "--threads " : "--" + key + " ", v.dump(), " (was ",
                                   saved[k].dump(), ")"));
      continue;
    }
    if (key == "conv3x3" && saved.contains(k)) {
      d.allowed_text.push_back(str("3x3 convolutions by ", setting_text(v), " (was ", setting_text(saved[k]),
                                   "; SMALLBATCH_WINOGRAD): the results differ in the last bits from a run without "
                                   "the change"));
      continue;
    }
    d.refused.push_back(key);
    d.refused_text.push_back(saved.contains(k) ? str(key, ": saved ", setting_text(saved[k]), ", now ", setting_text(v))
                                               : str(key, ": not in the saved configuration"));
  }
}

ResumeDifferences resume_differences(const nlohmann::json& saved, const nlohmann::json& now) {
  // Keys written only when they differ from their default ("ranks" under mpirun, "precise_bn"
  // when asked for) compare with the default where absent: a 2-rank run resumed by one process
  // would otherwise go on at half the global batch without a word.
  nlohmann::json a = saved, b = now;
  for (auto [key, fallback] : {std::pair<const char*, int64_t>{"ranks", 1}, {"precise_bn", 0}})
    if (a.is_object() && b.is_object() && (a.contains(key) || b.contains(key))) {
      if (!a.contains(key)) a[key] = fallback;
      if (!b.contains(key)) b[key] = fallback;
    }
  // Runs saved before Winograd (6 December 2026) ran the direct 3x3 kernel.
  if (a.is_object() && b.is_object() && b.contains("conv3x3") && !a.contains("conv3x3")) a["conv3x3"] = "direct";
  ResumeDifferences d;
  differences(a, b, "", d);
  return d;
}

std::string metrics_csv_header() { return "epoch,step,lr,train_loss,val_loss,val_pixel_acc,val_miou\n"; }

static std::string csv_num(double v) {
  if (std::isnan(v)) return std::string("");
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return std::string(buf);
}

std::string metrics_csv_row(const EpochRecord& r) {
  return str(r.epoch, ",", r.step, ",", csv_num(r.lr), ",", csv_num(r.train_loss), ",", csv_num(r.val_loss), ",",
             csv_num(r.val_pixel_acc), ",", csv_num(r.val_miou), "\n");
}

std::string timing_csv_header() { return "epoch,step,seconds,images_per_s\n"; }

std::string timing_csv_row(const EpochRecord& r) {
  return str(r.epoch, ",", r.step, ",", csv_num(r.seconds), ",", csv_num(r.images_per_s), "\n");
}

// Fills the records' timing from a timing.csv written by an earlier session of the run, and
// returns the cumulative seconds of the last record it found. Timing is informational: a
// missing or damaged file leaves zeros, never an error.
static double restore_timing(const std::string& path, std::vector<EpochRecord>& records) {
  if (records.empty() || !fs::exists(path)) return 0;
  double seconds = 0;
  try {
    std::istringstream in(read_file(path));
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream row(line);
      std::string epoch, step, secs, ips;
      if (!std::getline(row, epoch, ',') || !std::getline(row, step, ',') || !std::getline(row, secs, ',') ||
          !std::getline(row, ips, ','))
        continue;
      for (EpochRecord& r : records)
        if (r.epoch == std::stoll(epoch) && r.step == std::stoll(step)) {
          r.seconds = secs.empty() ? 0 : std::stod(secs);
          r.images_per_s = ips.empty() ? 0 : std::stod(ips);
          if (&r == &records.back()) seconds = r.seconds;
        }
    }
  } catch (const std::exception&) {
  }
  return seconds;
}

static std::unique_ptr<Optimizer> make_optimizer(const TrainConfig& cfg, const Module& model) {
  auto groups = decay_groups(model.named_parameters(), cfg.lr, cfg.weight_decay, cfg.decay_norm_and_bias);
  if (cfg.optim == "sgd") {
    SGDOptions o;
    o.lr = cfg.lr, o.momentum = cfg.momentum, o.weight_decay = cfg.weight_decay;
    return std::make_unique<SGD>(groups, o);
  }
  if (cfg.optim == "adam" || cfg.optim == "adamw") {
    AdamOptions o;
    o.lr = cfg.lr, o.weight_decay = cfg.weight_decay, o.decoupled = cfg.optim == "adamw";
    return std::make_unique<Adam>(groups, o);
  }
  fail("--optim: unknown optimizer '", cfg.optim, "' (known: sgd, adam, adamw)");
}

// Everything a resumed run needs, in one file so that it is always consistent with itself.
struct RunState {
  int64_t step = 0;
  std::vector<float> losses, grad_norms;
  std::vector<EpochRecord> records;
  double best_miou = NAN, seconds = 0;
};

static nlohmann::json record_json(const EpochRecord& r) {
  auto num = [](double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); };
  return {{"epoch", r.epoch}, {"step", r.step}, {"lr", r.lr}, {"train_loss", num(r.train_loss)},
          {"val_loss", num(r.val_loss)}, {"val_pixel_acc", num(r.val_pixel_acc)}, {"val_miou", num(r.val_miou)},
          {"empty_batches", r.empty_batches}};
}

static EpochRecord record_from_json(const nlohmann::json& j) {
  auto num = [&](const char* k) { return j.at(k).is_null() ? NAN : j.at(k).get<double>(); };
  EpochRecord r;
  r.epoch = j.at("epoch");
  r.step = j.at("step");
  r.lr = num("lr"), r.train_loss = num("train_loss"), r.val_loss = num("val_loss");
  r.val_pixel_acc = num("val_pixel_acc"), r.val_miou = num("val_miou");
  r.empty_batches = j.value("empty_batches", int64_t{0});
  return r;  // timing lives in timing.csv (see restore_timing), not in the state
}

static Tensor vector_tensor(const std::vector<float>& v) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())});
  if (!v.empty()) std::memcpy(t.data(), v.data(), v.size() * sizeof(float));
  return t;
}

// A double as text that reads back to the same bits ("nan" for NaN).
static std::string exact_text(double v) {
  if (std::isnan(v)) return "nan";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

static void save_state(const std::string& path, const TrainConfig& cfg, const Module& model, const Optimizer& opt,
                       const RunState& st) {
  TensorFile f;
  StateDict sd = model.state_dict();
  for (auto& [k, v] : sd.floats) f.floats["model." + k] = v;
  for (auto& [k, v] : sd.ints) f.ints["model." + k] = v;
  TensorFile os = opt.state();
  for (auto& [k, v] : os.floats) f.floats["optim." + k] = v;
  for (auto& [k, v] : os.ints) f.ints["optim." + k] = v;
  f.floats["losses"] = vector_tensor(st.losses);
  f.floats["grad_norms"] = vector_tensor(st.grad_norms);
  f.ints["step"] = IndexTensor::full({}, st.step);
  Generator::State g = default_generator().state();
  IndexTensor rng = IndexTensor::empty({5});
  for (int i = 0; i < 4; ++i) std::memcpy(&rng[i], &g.s[i], sizeof(uint64_t));
  rng[4] = g.has_spare;
  f.ints["rng"] = rng;
  f.floats["rng_spare"] = Tensor::full({}, g.spare);
  nlohmann::json recs = nlohmann::json::array();
  for (auto& r : st.records) recs.push_back(record_json(r));
  f.metadata["config"] = cfg.to_json().dump();
  f.metadata["records"] = recs.dump();
  // Exactly (17 significant digits): a best mIoU read back rounded made an equal later epoch
  // count as better after a resume, and replaced best.safetensors.
  f.metadata["best_miou"] = exact_text(st.best_miou);
  // No wall-clock time in here: two runs with the same seed and threads write identical states.
  save_safetensors(path, f);
}

static std::vector<float> tensor_vector(const Tensor& t) { return std::vector<float>(t.begin(), t.end()); }

static RunState load_state(const TensorFile& f, Module& model, Optimizer& opt) {
  const std::string& path = f.source;
  StateDict sd, os;
  sd.source = os.source = path;
  for (auto& [k, v] : f.floats) {
    if (k.rfind("model.", 0) == 0) sd.floats[k.substr(6)] = v;
    if (k.rfind("optim.", 0) == 0) os.floats[k.substr(6)] = v;
  }
  for (auto& [k, v] : f.ints) {
    if (k.rfind("model.", 0) == 0) sd.ints[k.substr(6)] = v;
    if (k.rfind("optim.", 0) == 0) os.ints[k.substr(6)] = v;
  }
  model.load_state_dict(sd, true);
  opt.load_state(os);
  RunState st;
  st.step = f.get_int("step")[0];
  st.losses = tensor_vector(f.get_float("losses"));
  st.grad_norms = tensor_vector(f.get_float("grad_norms"));
  const IndexTensor& rng = f.get_int("rng");
  SB_CHECK(rng.numel() == 5, path, ": 'rng' should hold 5 values but has ", rng.numel());
  Generator::State g;
  for (int i = 0; i < 4; ++i) std::memcpy(&g.s[i], &rng[i], sizeof(uint64_t));
  g.has_spare = rng[4] != 0;
  g.spare = f.get_float("rng_spare").item();
  default_generator().set_state(g);
  try {
    for (auto& r : nlohmann::json::parse(f.metadata.at("records"))) st.records.push_back(record_from_json(r));
    std::string b = f.metadata.at("best_miou");
    (void)(b == "nan" ? NAN : std::stod(b));  // present and a number, as a state must have
  } catch (const std::exception& e) {
    fail(path, ": the training state's metadata is damaged (", e.what(), ")");
  }
  SB_CHECK(static_cast<int64_t>(st.losses.size()) == st.step, path, ": the state records ", st.losses.size(),
           " losses for ", st.step, " steps");
  // The best mIoU is by definition the largest validation mIoU of the epoch records, which the
  // state holds exactly (JSON numbers round-trip); a state written before the metadata's value
  // was exact kept it to 6 digits, so it is taken from the records.
  for (const EpochRecord& r : st.records)
    if (!std::isnan(r.val_miou) && (std::isnan(st.best_miou) || r.val_miou > st.best_miou)) st.best_miou = r.val_miou;
  return st;
}

const std::vector<std::string>& train_output_files() {
  static const std::vector<std::string> files = {"state.safetensors", "model.safetensors", "best.safetensors",
                                                 "metrics.csv", "timing.csv", "config.json", DirLock::kFileName};
  return files;
}

static void log_message(const TrainHooks& hooks, const std::string& m);

// The saved configuration against this run's: a key that may not change is refused, naming each
// (and `where` it was saved); what may change (more epochs, the thread count) is said.
static void check_resume_config(const TrainConfig& cfg, const nlohmann::json& saved, const nlohmann::json& now,
                                const std::string& where, const TrainHooks& hooks) {
  ResumeDifferences d = resume_differences(saved, now);
  std::string diff;
  for (const std::string& t : d.refused_text) diff += "\n  " + t;
  SB_CHECK(diff.empty(), "--resume: ", cfg.out, " was made with a different configuration:", diff, "\n(as its ",
           where, " records; leave those flags out to continue it as it was, use another --out, or --overwrite to "
           "replace the run)");
  for (const std::string& t : d.allowed_text) log_message(hooks, "resuming with " + t);
  if (!saved.is_object() || !now.contains("schedule")) return;
  const bool longer = (now.value("epochs", int64_t{0}) > saved.value("epochs", int64_t{0})) ||
                      (now.value("steps", int64_t{0}) > saved.value("steps", int64_t{0}));
  if (longer && (now.value("schedule", std::string("const")) != "const"))
    log_message(hooks, str("note: the ", now.value("schedule", std::string()), " learning-rate schedule now spans the "
                           "longer run, so the steps still to come follow it; the run will differ from one started "
                           "with that length"));
}

// The file a "tensors:FILE" data spec reads, or "" for any other source.
static std::string tensors_file(const std::string& spec) {
  return spec.rfind("tensors:", 0) == 0 ? spec.substr(8) : std::string();
}

// Before any work: no output may be an input (--save over --init or the data), and no input or
// --save may be a file the run in --out writes (its state, best, metrics, ...), compared as
// files, not as strings; and every output name must leave room for its temporary's suffix.
void check_outputs(const TrainConfig& cfg) {
  std::vector<std::pair<std::string, std::string>> inputs;  // (flag, path)
  if (!cfg.init.empty()) inputs.push_back({"--init", cfg.init});
  if (std::string f = tensors_file(cfg.data); !f.empty()) inputs.push_back({"--data", f});
  if (std::string f = tensors_file(cfg.val_data); !f.empty()) inputs.push_back({"--val-data", f});
  std::vector<std::string> owned;
  if (!cfg.out.empty()) {
    for (const std::string& f : train_output_files()) owned.push_back((fs::path(cfg.out) / f).string());
    check_output_name(owned.front(), "--out");
  }
  for (auto& [flag, path] : inputs)
    for (const std::string& o : owned)
      SB_CHECK(!same_file(path, o), flag, ": '", path, "' is '", o, "', a file the run in --out writes; "
               "copy it elsewhere first");
  if (cfg.save.empty()) return;
  check_output_name(cfg.save, "--save");
  for (auto& [flag, path] : inputs)
    SB_CHECK(!same_file(cfg.save, path), "--save: '", cfg.save, "' is the same file as ", flag, " '", path,
             "'; the run would overwrite its own input. Give --save another name");
  for (const std::string& o : owned)
    if (fs::path(o).filename() != "model.safetensors")  // where --out puts the final weights anyway
      SB_CHECK(!same_file(cfg.save, o), "--save: '", cfg.save, "' is '", o, "', which the run in --out writes "
               "itself (", fs::path(o).filename().string(), "); give --save another name");
}

// Re-runs the forward pass of a batch with every module output checked, to name the layer
// where the values first went non-finite.
static std::string locate_non_finite_forward(Module& model, const Tensor& images) {
  try {
    NoGrad ng;
    FiniteCheck check;
    model(Var(images));
  } catch (const Error& e) {
    return e.what();
  }
  return "every layer's output was finite; the loss itself overflowed";
}

// A finite loss this many times above both the first step's loss and chance level is divergence.
constexpr float kDivergenceFactor = 100.f;

static void log_message(const TrainHooks& hooks, const std::string& m) {
  if (hooks.log) hooks.log(m);
}

// The flags' consistency, before any work.
static void check_config(const TrainConfig& cfg) {
  SB_CHECK(cfg.batch > 0, "--batch: must be positive, got ", cfg.batch);
  SB_CHECK(cfg.steps >= 0 && cfg.epochs >= 0 && (cfg.steps > 0) != (cfg.epochs > 0),
           "give exactly one of --steps and --epochs (positive)");
  SB_CHECK(!cfg.resume || !cfg.out.empty(), "--resume needs --out DIR (the run to continue)");
  SB_CHECK(!cfg.overwrite || !cfg.out.empty(), "--overwrite needs --out DIR (the run to replace)");
  SB_CHECK(!(cfg.resume && cfg.overwrite),
           "--resume continues the run in --out and --overwrite replaces it: give one of them, not both");
  SB_CHECK(cfg.precise_bn >= 0, "--precise-bn: the number of images must be positive, got ", cfg.precise_bn);
  check_outputs(cfg);
}

// ---- setup: the output folder, the data, the model and the loader ----

// A run's output folder (--out), as train() holds it for the whole session.
struct OutDir {
  DirLock lock;            // one writer at a time, until train() returns
  TensorFile saved_state;  // the state a resume continues
  bool resuming = false;   // saved_state holds it
  std::string state_path, config_path;
};

static nlohmann::json parse_json(const std::string& text, const std::string& where) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": not valid JSON (", e.what(), ")");
  }
}

// --resume with a saved state. The state carries the configuration it was made with: it, not
// config.json (which may be lost or rewritten), decides whether this command continues the same run.
static void open_saved_state(const TrainConfig& cfg, OutDir& out, const nlohmann::json& now,
                             const TrainHooks& hooks) {
  out.saved_state = load_safetensors(out.state_path);
  auto c = out.saved_state.metadata.find("config");
  SB_CHECK(c != out.saved_state.metadata.end(), out.state_path,
           ": the training state has no configuration in its metadata");
  nlohmann::json saved = parse_json(c->second, out.state_path + " (its configuration)");
  check_resume_config(cfg, saved, now, "state.safetensors", hooks);
  bool config_ok = false;
  if (fs::exists(out.config_path)) {
    try {
      config_ok = nlohmann::json::parse(read_file(out.config_path)) == saved;
    } catch (const std::exception&) {
    }
  }
  if (!config_ok)  // lost or rewritten: restore the run's own
    log_message(hooks, str(out.config_path, " is missing or differs from the state's configuration; restoring it"));
  // This session's configuration (with more epochs, or another thread count, when it says so).
  if (!config_ok || saved != now)
    write_file_atomic(out.config_path, now.dump(2) + "\n");
  out.resuming = true;
}

nlohmann::json saved_run_config(const std::string& out) {
  const std::string state = out + "/state.safetensors", config = out + "/config.json";
  if (fs::exists(state)) {
    TensorFile f = load_safetensors(state);
    auto c = f.metadata.find("config");
    SB_CHECK(c != f.metadata.end(), state, ": the training state has no configuration in its metadata");
    return parse_json(c->second, state + " (its configuration)");
  }
  if (fs::exists(config)) return parse_json(read_file(config), config);
  return nullptr;
}

// A fresh start: never over a different run's configuration (--resume), nor over anything
// without --overwrite. Writing the configuration first also proves the folder writable.
static void start_fresh(const TrainConfig& cfg, const OutDir& out, const nlohmann::json& now,
                        const TrainHooks& hooks) {
  if (cfg.resume && fs::exists(out.config_path))
    check_resume_config(cfg, parse_json(read_file(out.config_path), out.config_path), now, "config.json", hooks);
  if (!cfg.resume && !cfg.overwrite) {
    std::vector<std::string> held;
    for (auto& e : fs::directory_iterator(cfg.out))
      if (e.path().filename() != DirLock::kFileName) held.push_back(e.path().filename().string());
    std::sort(held.begin(), held.end());
    std::string list;
    for (size_t i = 0; i < held.size() && i < 4; ++i) list += (i ? ", " : "") + held[i];
    if (held.size() > 4) list += str(" and ", held.size() - 4, " more");
    SB_CHECK(held.empty(), "--out: '", cfg.out, "' is not empty (it holds ", list,
             "): add --resume to continue the run saved there, or --overwrite to replace its files");
  }
  write_file_atomic(out.config_path, now.dump(2) + "\n");
}

// The output folder, before any other work: one writer at a time, and a finished or different
// run is never replaced or continued by mistake. Without --out, an empty OutDir.
static OutDir open_out_dir(const TrainConfig& cfg, const TrainHooks& hooks) {
  OutDir out;
  if (cfg.out.empty()) return out;
  std::error_code ec;
  SB_CHECK(!fs::exists(cfg.out) || fs::is_directory(cfg.out), "--out: '", cfg.out, "' exists and is not a directory");
  fs::create_directories(cfg.out, ec);
  SB_CHECK(!ec && fs::is_directory(cfg.out), "--out: cannot create directory '", cfg.out, "'",
           ec ? " (" + ec.message() + ")" : "");
  out.lock = DirLock(cfg.out, "--out");
  out.state_path = cfg.out + "/state.safetensors";
  out.config_path = cfg.out + "/config.json";
  // A process killed while writing leaves its temporary files behind; the next session of the
  // run removes those of the files it owns.
  remove_stale_temporaries(cfg.out, train_output_files());
  nlohmann::json now = cfg.to_json();
  if (cfg.resume && fs::exists(out.state_path)) open_saved_state(cfg, out, now, hooks);
  else start_fresh(cfg, out, now, hooks);
  return out;
}

// One session of a run: what setup() builds, and what the steps and epochs work on.
struct Session {
  Session(const TrainConfig& c, const TrainHooks& h) : cfg(c), hooks(h) {}
  const TrainConfig& cfg;
  const TrainHooks& hooks;
  std::string state_path;  // --out's state.safetensors ("" without --out)
  int64_t classes = 0;
  DatasetPtr train_data, val_data;  // val_data: null without validation
  SampleTransform val_transform;
  ModelSpec saved_spec;  // the model's spec and the data: checkpoints record both, for predict
  ModulePtr model;
  std::vector<Var> params;
  std::vector<std::pair<std::string, Var>> named;
  std::unique_ptr<Optimizer> opt;
  std::unique_ptr<DataLoader> loader;  // declared after the data and the model: it stops first
  std::unique_ptr<LRSchedule> schedule;
  int64_t steps_per_epoch = 0, total = 0, n_epochs = 0;
  RunState st;
  float first_loss = NAN;  // the first step's loss that was not an all-ignored batch's
  Clock::time_point session_start, epoch_start;
  int64_t session_first_step = 0, epoch_images = 0;
  double step_seconds = 0, syncbn_seconds = 0;  // this session's training steps: wall time, syncbn's collectives
  std::unique_ptr<GradientBuckets> buckets;  // data-parallel (world() has several ranks); else null
};

// The training data, and the validation data with its transform.
static void open_data(Session& s) {
  const TrainConfig& cfg = s.cfg;
  s.classes = cfg.spec.options.classes;
  s.train_data = open_dataset(cfg.data, Split::Train, s.classes, cfg.data_opt);
  SB_CHECK(s.train_data->num_classes() == s.classes, "--data ", cfg.data, ": the data has ",
           s.train_data->num_classes(), " classes but the model is configured for ", s.classes, " (--classes)");
  DataOptions val_opt = cfg.data_opt;
  val_opt.augment = false;
  val_opt.limit = cfg.val_limit;
  std::string val_spec = cfg.val_data.empty() ? cfg.data : cfg.val_data;
  if (cfg.val_data != "none") {
    try {
      s.val_data = open_dataset(val_spec, Split::Val, s.classes, val_opt);
    } catch (const Error& e) {
      // A source without a validation split (tensors:) validates on nothing unless told.
      if (!cfg.val_data.empty()) throw;
      log_message(s.hooks, str("no validation data (", e.what(), "); pass --val-data to validate"));
    }
  }
  s.val_transform = s.val_data ? make_transform(val_spec, Split::Val, val_opt) : SampleTransform{};
}

// The model, seeded and loaded from --init when given, and its optimizer.
static void build_model(Session& s) {
  const TrainConfig& cfg = s.cfg;
  // brn and frozenbn count their warm-up in steps; 0 asks for one epoch of them.
  ModelSpec spec = cfg.spec;
  if (norm_info(spec.options.norm.kind).traits.uses_warmup && spec.options.norm.warmup == 0)
    spec.options.norm.warmup = std::max<int64_t>(1, s.train_data->size() / (cfg.batch * world().size()));
  manual_seed(cfg.seed);
  s.model = spec.build();
  s.model->assign_paths();
  if (!cfg.init.empty()) {
    if (cfg.init_strict) {
      load_weights(*s.model, cfg.init);
    } else {
      TensorFile f = load_safetensors(cfg.init), fit;
      StateDict mine = s.model->state_dict();
      for (auto& [k, v] : f.floats)
        if (mine.floats.count(k) && mine.floats.at(k).shape() == v.shape()) fit.floats[k] = v;
      s.model->load_state_dict(fit, false);
    }
  }
  s.opt = make_optimizer(cfg, *s.model);
  s.params = s.model->parameters();
  s.named = s.model->named_parameters();
  s.saved_spec = spec;
  s.saved_spec.data = cfg.data;
  s.saved_spec.image_size = cfg.data_opt.image_size;
}

// Sizes that parse but are unlikely to be meant, checked once the data is open (issue 19): a batch
// larger than the data (a warning: with --steps it repeats samples within itself, with --epochs it
// is smaller than asked); a run of more than kMaxSteps steps (an error: it would keep gigabytes of
// per-step losses and never end); a warm-up as long as the run (a warning: --lr is never reached).
constexpr int64_t kMaxSteps = 100'000'000;
static void check_run_sizes(const TrainConfig& cfg, int64_t n, int64_t steps_per_epoch) {
  const std::string limit = cfg.data_opt.limit > 0 ? str(", --limit ", cfg.data_opt.limit) : "";
  if (cfg.batch > n)
    std::fprintf(stderr, "smallbatch: warning: --batch %lld is larger than the training data (%lld samples%s): %s\n",
                 (long long)cfg.batch, (long long)n, limit.c_str(),
                 cfg.steps > 0 ? "each batch holds the same samples more than once"
                               : "every epoch is one smaller batch of them all, not the batch size asked for");
  SB_CHECK(cfg.steps <= kMaxSteps && (steps_per_epoch <= 0 || cfg.epochs <= kMaxSteps / steps_per_epoch),
           cfg.steps > 0 ? str("--steps ", cfg.steps) : str("--epochs ", cfg.epochs, " x ", steps_per_epoch, " steps each"),
           ": expected at most ", kMaxSteps, " steps in all (a run keeps one loss per step)");
  const int64_t total = cfg.steps > 0 ? cfg.steps : cfg.epochs * steps_per_epoch;
  if (cfg.warmup_steps >= total && cfg.warmup_steps > 0)
    std::fprintf(stderr, "smallbatch: warning: --warmup %lld is as long as the run (%lld steps): the learning rate "
                 "reaches --lr only at the last step\n", (long long)cfg.warmup_steps, (long long)total);
}

// The loader, and the step counts and learning-rate schedule that follow from it.
static void make_loader(Session& s) {
  const TrainConfig& cfg = s.cfg;
  LoaderOptions lo;
  // Data-parallel: the loader plans the global batches of R x B and this rank loads its shard.
  const int64_t global_batch = cfg.batch * world().size();
  lo.batch_size = global_batch;
  lo.shard = world().rank(), lo.shards = world().size();
  lo.shuffle = cfg.shuffle;
  lo.seed = cfg.seed;
  lo.workers = cfg.loader_workers;
  lo.transform = make_transform(cfg.data, Split::Train, cfg.data_opt);
  s.loader = std::make_unique<DataLoader>(s.train_data, lo);
  int64_t n = s.train_data->size();
  s.steps_per_epoch = cfg.epochs > 0 ? s.loader->batches_per_epoch() : (n + global_batch - 1) / global_batch;
  SB_CHECK(cfg.steps > 0 || n % global_batch == 0 || n % global_batch >= world().size(), "--batch ", cfg.batch,
           " on ", world().size(), " ranks: the last batch of each epoch holds ", n % global_batch, " of the ", n,
           " samples, fewer than the ranks, which would leave a rank without an image; change --batch or --limit, "
           "or use --steps");
  check_run_sizes(cfg, n, s.steps_per_epoch);
  s.total = cfg.steps > 0 ? cfg.steps : cfg.epochs * s.steps_per_epoch;
  s.n_epochs = (s.total + s.steps_per_epoch - 1) / s.steps_per_epoch;
  ScheduleConfig sc;
  sc.kind = cfg.schedule;
  sc.total_steps = s.total;
  sc.step_size = std::max<int64_t>(1, s.total / 3);
  sc.warmup_steps = std::min(cfg.warmup_steps, std::max<int64_t>(0, s.total - 1));
  s.schedule = std::make_unique<LRSchedule>(sc);
}

static void setup(Session& s) {
  open_data(s);
  build_model(s);
  make_loader(s);
}

// ---- resume ----

// Continues the saved state, when there is one: model, optimizer, generator, losses and epoch
// records. Returns whether it did.
static bool resume(Session& s, const OutDir& out) {
  const TrainConfig& cfg = s.cfg;
  if (out.resuming) {
    s.st = load_state(out.saved_state, *s.model, *s.opt);
    s.st.seconds = restore_timing(cfg.out + "/timing.csv", s.st.records);
    log_message(s.hooks, str("resuming ", cfg.out, " at step ", s.st.step, " of ", s.total));
    return true;
  }
  if (cfg.resume && !cfg.out.empty()) log_message(s.hooks, str(cfg.out, " has no saved state; starting fresh"));
  return false;
}

// Writes the run's files in --out. The state is written last: it is the commit point. A run
// killed between these writes resumes from the previous state and redoes the epoch, rewriting
// the other files with the same bytes, so what --resume ends with never depends on where the
// kill landed.
static void save_run(const Session& s, bool epoch_end, bool improved) {
  const TrainConfig& cfg = s.cfg;
  if (cfg.out.empty() || world().rank() != 0) return;  // rank 0 writes for the job
  if (epoch_end) {
    std::string csv = metrics_csv_header(), timing = timing_csv_header();
    for (auto& r : s.st.records) csv += metrics_csv_row(r), timing += timing_csv_row(r);
    write_file_atomic(cfg.out + "/metrics.csv", csv);
    write_file_atomic(cfg.out + "/timing.csv", timing);
    save_model(cfg.out + "/model.safetensors", *s.model, s.saved_spec);
    if (improved) save_model(cfg.out + "/best.safetensors", *s.model, s.saved_spec);
  }
  save_state(s.state_path, cfg, *s.model, *s.opt, s.st);
}

// ---- one step ----

// The forward pass; a failure names the step and the batch, and says what to change when
// BatchNorm meets a single value per channel.
static Var forward_batch(Session& s, const Batch& b) {
  try {
    return (*s.model)(Var(b.images));
  } catch (const Error& e) {
    std::string m = e.what();
    bool one_value = m.find("more than 1 value per channel") != std::string::npos;
    fail("step ", s.st.step + 1, ", a batch of shape ", b.images.shape(), ": ", m,
         one_value ? str(". BatchNorm needs more than one value per channel in training: use --batch 2 or more, "
                         "larger images (--image-size) or a shallower model (--depth), or another --norm")
                   : std::string());
  }
}

// Throws Diverged when the loss is not finite, naming the first layer whose output was not, or
// when it exploded: a loss can also stay finite (normalized layers absorb huge weights) and
// still be far above both the run's first loss and chance level, log(K).
static void check_loss(const Session& s, const Batch& b, float lv, int64_t epoch) {
  const int64_t step = s.st.step + 1;
  if (!std::isfinite(lv))
    throw Diverged(str("training diverged at step ", step, " (epoch ", epoch + 1, "): the loss is ", lv, "; ",
                       locate_non_finite_forward(*s.model, b.images), ". The last good checkpoint is kept."),
                   step, lv);
  float base = std::max(std::isnan(s.first_loss) ? lv : s.first_loss,
                        std::log(static_cast<float>(std::max<int64_t>(2, s.classes))));
  if (lv > kDivergenceFactor * base)
    throw Diverged(str("training diverged at step ", step, " (epoch ", epoch + 1, "): the loss is ", lv,
                       ", more than ", kDivergenceFactor, " times ", base,
                       " (the larger of the first step's loss and chance level, log ", s.classes,
                       "); lower --lr or clip gradients (--clip-grad). The last good checkpoint is kept."),
                   step, lv);
}

// Throws Diverged naming the first parameter, in backward order (output side first), whose
// gradient is not finite.
static void check_gradients(const Session& s, float lv, int64_t epoch) {
  const int64_t step = s.st.step + 1;
  for (auto it = s.named.rbegin(); it != s.named.rend(); ++it) {
    const Tensor& g = it->second.grad();
    if (!g.defined()) continue;
    for (float v : g)
      if (!std::isfinite(v))
        throw Diverged(str("training diverged at step ", step, " (epoch ", epoch + 1, "): the gradient of '",
                           it->first, "' is not finite (loss ", lv, "). The last good checkpoint is kept."),
                       step, lv, it->first);
  }
}

struct StepResult {
  float loss = NAN, grad_norm = NAN;  // the norm before clipping
};

// One optimizer step of a data-parallel run, on this rank's shard b of the global batch. Each
// rank's loss is weighted by its share of the global batch's labelled pixels before backward, so
// the gradients summed over ranks (in buckets, during backward) are those of the global batch's
// mean loss, as one process at R x B would compute them; the loss reported is the global one. A
// rank without a labelled pixel still runs forward and backward (with a zero gradient), since
// SyncBatchNorm's statistics and the sums need every rank.
static StepResult train_step_ranks(Session& s, const Batch& b, int64_t epoch) {
  Communicator& comm = world();
  s.opt->set_lr_factor(s.schedule->factor(s.st.step));
  static const int64_t kIgnoreIndex = CrossEntropyOptions{}.ignore_index;
  double labelled = 0;
  for (int64_t v : b.masks) labelled += v != kIgnoreIndex;
  double total = labelled;
  comm.sum(&total, 1);
  StepResult r;
  if (total == 0) return r;  // the whole global batch is ignored: skipped on every rank alike
  broadcast_buffers(comm, *s.model);
  s.opt->zero_grad();
  s.buckets->begin();
  Var logits = forward_batch(s, b);
  const double share = labelled / total;
  double weighted = 0;
  if (labelled > 0) {
    Var loss = cross_entropy(logits, b.masks);
    weighted = share * static_cast<double>(loss.item());
    loss.backward(Tensor::full({}, static_cast<float>(share)));
  } else {
    logits.backward(Tensor::zeros(logits.shape()));
  }
  s.buckets->finish();
  comm.sum(&weighted, 1);
  r.loss = static_cast<float>(weighted);
  check_loss(s, b, r.loss, epoch);
  check_gradients(s, r.loss, epoch);
  r.grad_norm = grad_norm(s.params);
  if (s.cfg.clip_grad > 0) clip_grad_norm(s.params, s.cfg.clip_grad);
  s.opt->step();
  return r;
}

// One optimizer step on batch b (step s.st.step + 1 of the run).
static StepResult train_step(Session& s, const Batch& b, int64_t epoch) {
  if (s.buckets) return train_step_ranks(s, b, epoch);
  s.opt->set_lr_factor(s.schedule->factor(s.st.step));
  // A batch whose every pixel is ignored (255) has no loss to learn from: the mean over zero
  // pixels is 0/0. It takes no forward pass, no gradient and no optimizer step (momentum and
  // BatchNorm statistics stay as they were); the step still counts, so the data order, the
  // schedule and a resume stay aligned. Its loss and gradient norm are recorded as NaN, and the
  // epoch's count of such batches is reported.
  static const int64_t kIgnoreIndex = CrossEntropyOptions{}.ignore_index;
  int64_t labelled = 0;
  for (int64_t v : b.masks) labelled += v != kIgnoreIndex;
  StepResult r;
  if (labelled == 0) return r;
  s.opt->zero_grad();
  Var loss = cross_entropy(forward_batch(s, b), b.masks);
  r.loss = loss.item();
  check_loss(s, b, r.loss, epoch);
  loss.backward();
  check_gradients(s, r.loss, epoch);
  r.grad_norm = grad_norm(s.params);
  if (s.cfg.clip_grad > 0) clip_grad_norm(s.params, s.cfg.clip_grad);
  s.opt->step();
  return r;
}

// Tells the on_step hook about the step just taken, with this session's speed and ETA.
static void report_step(const Session& s, int64_t epoch, const StepResult& r) {
  if (!s.hooks.on_step) return;
  double elapsed = std::chrono::duration<double>(Clock::now() - s.session_start).count();
  double per_step = elapsed / static_cast<double>(s.st.step - s.session_first_step);
  s.hooks.on_step({s.st.step, s.total, epoch, s.n_epochs, r.loss, s.opt->groups()[0].lr, r.grad_norm,
                   elapsed > 0 ? (s.st.step - s.session_first_step) * s.cfg.batch / elapsed : 0,
                   per_step * static_cast<double>(s.total - s.st.step)});
}

// ---- one epoch ----

// After an epoch's last step: its record (the mean loss of its steps that had one), validation,
// the on_epoch hook, and the files in --out.
static void end_epoch(Session& s, int64_t epoch) {
  RunState& st = s.st;
  double secs = std::chrono::duration<double>(Clock::now() - s.epoch_start).count();
  st.seconds += secs;
  EpochRecord r;
  r.epoch = epoch + 1;
  r.step = st.step;
  r.lr = s.opt->groups()[0].lr;
  int64_t first = epoch * s.steps_per_epoch;
  double sum = 0;
  int64_t counted = 0;
  for (int64_t i = first; i < st.step; ++i)
    if (!std::isnan(st.losses[i])) sum += st.losses[i], ++counted;
  r.train_loss = counted ? sum / static_cast<double>(counted) : NAN;
  r.empty_batches = static_cast<int64_t>(st.step - first) - counted;
  r.seconds = st.seconds;
  r.images_per_s = secs > 0 ? s.epoch_images / secs : 0;
  bool improved = false;
  if (s.cfg.precise_bn > 0 && st.step == s.total) {
    // PreciseBN before the last validation: the final mIoU, model.safetensors, the state and (when
    // this epoch is the best) best.safetensors carry the recomputed statistics.
    PreciseBNResult p = precise_bn(*s.model, *s.train_data, s.cfg.precise_bn, s.cfg.batch,
                                   make_transform(s.cfg.data, Split::Val, s.cfg.data_opt), s.hooks.log);
    if (p.layers > 0 && s.hooks.log)
      s.hooks.log(str("PreciseBN: recomputed the running statistics of ", p.layers, " layers over ", p.images,
                      " training images (", p.batches, " batches of up to ", s.cfg.batch, ")"));
  }
  if (s.val_data) {
    EvalResult ev = evaluate(*s.model, *s.val_data, s.cfg.val_batch, BNEval::Running, nullptr, s.val_transform);
    r.val_loss = ev.loss, r.val_pixel_acc = ev.pixel_acc, r.val_miou = ev.miou;
    improved = !std::isnan(ev.miou) && (std::isnan(st.best_miou) || ev.miou > st.best_miou);
    if (improved) st.best_miou = ev.miou;
  } else {
    improved = true;  // without validation, the latest model is the best we know
  }
  st.records.push_back(r);
  if (s.buckets) check_same_replicas(world(), *s.model, str("after step ", st.step));
  if (s.hooks.on_epoch) s.hooks.on_epoch(r, *s.model);
  s.model->train();
  save_run(s, true, improved);
  s.epoch_start = Clock::now();
  s.epoch_images = 0;
}

// Whether should_stop asks to stop; with several ranks, whether it does on any rank, so that they
// all stop after the same step (a signal reaches them at different moments).
static bool stop_requested(const Session& s) {
  double stop = s.hooks.should_stop && s.hooks.should_stop() ? 1 : 0;
  if (s.buckets) world().sum(&stop, 1);
  return stop > 0;
}

// Steps from where the state is to the last step, ending each epoch as it completes. Returns
// true when should_stop ended the session early (its state saved).
static bool run_steps(Session& s) {
  const TrainConfig& cfg = s.cfg;
  RunState& st = s.st;
  s.model->train();
  s.session_start = Clock::now();
  s.session_first_step = st.step;
  s.epoch_start = Clock::now();
  s.epoch_images = 0;
  for (float l : st.losses)
    if (std::isnan(s.first_loss)) s.first_loss = l;

  if (cfg.steps > 0) s.loader->start_steps(st.step, s.total - st.step);
  Batch b;
  int64_t loaded_epoch = -1;
  while (st.step < s.total) {
    int64_t epoch = st.step / s.steps_per_epoch;
    if (cfg.epochs > 0 && epoch != loaded_epoch) {  // a resumed run starts mid-epoch
      s.loader->start_epoch(epoch, st.step % s.steps_per_epoch);
      loaded_epoch = epoch;
    }
    SB_CHECK(s.loader->next(b), "internal: the data loader ran out at step ", st.step);
    const auto step_start = Clock::now();
    const double syncbn_before = sync_batch_norm_comm_seconds();
    StepResult r = train_step(s, b, epoch);
    s.step_seconds += std::chrono::duration<double>(Clock::now() - step_start).count();
    s.syncbn_seconds += sync_batch_norm_comm_seconds() - syncbn_before;
    ++st.step;
    if (std::isnan(s.first_loss)) s.first_loss = r.loss;
    st.losses.push_back(r.loss);
    st.grad_norms.push_back(r.grad_norm);
    s.epoch_images += b.images.size(0);
    report_step(s, epoch, r);
    if (st.step % s.steps_per_epoch == 0 || st.step == s.total) end_epoch(s, epoch);
    if (st.step < s.total && stop_requested(s)) {
      st.seconds += std::chrono::duration<double>(Clock::now() - s.epoch_start).count();
      save_run(s, false, false);
      return true;
    }
  }
  return false;
}

// ---- several ranks ----

// Before --out is touched: the ranks run the same configuration, and syncbn's groups fit them.
static void check_ranks(const TrainConfig& cfg) {
  Communicator& comm = world();
  nlohmann::json j = cfg.to_json();
  j.erase("threads");  // per rank, and free to differ between hosts
  j.erase("conv3x3");  // per host too (SMALLBATCH_WINOGRAD)
  check_same_on_all_ranks(comm, j, "configuration");
  const NormSpec& norm = cfg.spec.options.norm;
  if (norm_info(norm.kind).traits.uses_sync_group && norm.sync_group > 0)
    SB_CHECK(norm.sync_group <= comm.size() && comm.size() % norm.sync_group == 0, "--syncbn-group ", norm.sync_group,
             ": groups of consecutive ranks must divide the ", comm.size(), " ranks");
}

// After setup and resume: the same data on every rank, rank 0's state everywhere when it resumed
// (the others may not see --out), the same replica, and the gradient buckets.
static void start_ranks(Session& s, bool resumed) {
  Communicator& comm = world();
  nlohmann::json data = {{"train_samples", s.train_data->size()}};
  if (s.train_data->size() > 0) {  // the first and last samples' bytes, as a cheap fingerprint
    const Sample a = s.train_data->get(0), z = s.train_data->get(s.train_data->size() - 1);
    data["first_last_samples"] = str(tensor_hash(a.image), "-", tensor_hash(a.mask), "-", tensor_hash(z.image), "-",
                                      tensor_hash(z.mask));
  }
  check_same_on_all_ranks(comm, data, "data");
  double from_state = resumed ? 1 : 0;
  comm.broadcast(&from_state, sizeof from_state, 0);
  if (from_state > 0) {
    s.model->load_state_dict(broadcast_state_dict(comm, s.model->state_dict()), true);
    StateDict opt = broadcast_state_dict(comm, s.opt->state());
    if (comm.rank() != 0) s.opt->load_state(opt);
    int64_t step = s.st.step;
    comm.broadcast(&step, sizeof step, 0);
    s.st.step = step;
    broadcast_floats(comm, s.st.losses);
    broadcast_floats(comm, s.st.grad_norms);
    Generator::State g = default_generator().state();
    comm.broadcast(&g, sizeof g, 0);
    default_generator().set_state(g);
  }
  check_same_replicas(comm, *s.model, from_state > 0 ? "after resuming" : "at initialization");
  if (comm.rank() != 0) s.val_data.reset();  // rank 0 validates and reports for the job
  s.buckets = std::make_unique<GradientBuckets>(comm, s.params, gradient_bucket_bytes());
  const int R = comm.size();
  log_message(s.hooks, str("data-parallel: ", R, " ranks x --batch ", s.cfg.batch, " = global batch ", R * s.cfg.batch,
                           "; gradients are averaged over the global batch and --lr ", s.cfg.lr,
                           " applies to it as given (no scaling with the ranks); --threads ", s.cfg.threads,
                           " per rank; gradients ", s.buckets->stats().bytes, " bytes in ", s.buckets->stats().buckets,
                           " buckets"));
}

// The all-reduce's cost, measured; then the replicas must still agree.
static void finish_ranks(Session& s) {
  auto str_fixed = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f", v);
    return std::string(buf);
  };
  const GradientBuckets::Stats& c = s.buckets->stats();
  if (c.steps > 0)
    log_message(s.hooks, str("all-reduce: ", c.bytes, " bytes per step in ", c.buckets, " buckets; ",
                             str_fixed(1e3 * c.comm_seconds / c.steps), " ms per step from the first bucket's start "
                             "to the last one's end, ", str_fixed(1e3 * c.wait_seconds / c.steps),
                             " ms of it after backward (", str_fixed(100.0 * (1.0 - c.wait_seconds / std::max(1e-12, c.comm_seconds))),
                             "% overlapped)"));
  check_same_replicas(world(), *s.model, "at the end");
}

TrainResult train(const TrainConfig& cfg, ModulePtr* model_out, const TrainHooks& hooks) {
  check_config(cfg);
  const bool parallel = world().size() > 1;
  if (parallel) check_ranks(cfg);
  OutDir out = world().rank() == 0 ? open_out_dir(cfg, hooks) : OutDir{};  // rank 0 alone touches --out
  Session s(cfg, hooks);
  s.state_path = out.state_path;
  setup(s);
  TrainResult res;
  res.resumed = resume(s, out);
  if (parallel) start_ranks(s, res.resumed);
  res.interrupted = run_steps(s);
  if (parallel) finish_ranks(s);
  const RunState& st = s.st;
  res.losses = st.losses;
  res.grad_norms = st.grad_norms;
  res.epochs = st.records;
  res.best_miou = st.best_miou;
  res.seconds = st.seconds;
  res.session_steps = st.step - s.session_first_step;
  res.step_seconds = s.step_seconds;
  res.syncbn_comm_seconds = s.syncbn_seconds;
  if (s.buckets) res.allreduce_wait_seconds = s.buckets->stats().wait_seconds;
  for (float l : st.losses) res.empty_batches += std::isnan(l);
  if (!res.interrupted && !cfg.save.empty() && world().rank() == 0) save_model(cfg.save, *s.model, s.saved_spec);
  res.skipped = skip_report(*s.train_data);
  if (s.val_data) res.skipped += skip_report(*s.val_data);
  if (model_out) *model_out = s.model;
  return res;
}

// Sets how every BatchNorm2d in `model` normalizes in eval mode.
static void set_bn_eval_stats(Module& model, bool batch_stats) {
  model.apply([&](Module& m) {
    if (auto* bn = dynamic_cast<BatchNorm2d*>(&m)) bn->batch_stats_in_eval = batch_stats;
    if (auto* b0 = dynamic_cast<EvoNorm2dB0*>(&m)) b0->batch_stats_in_eval = batch_stats;
  });
}

EvalResult evaluate(Module& model, const Dataset& data, int64_t batch, BNEval bn, Tensor* logits_out,
                    const SampleTransform& transform) {
  SB_CHECK(batch > 0, "--batch: must be positive, got ", batch);
  model.eval();
  set_bn_eval_stats(model, bn == BNEval::Batch);
  struct Restore {
    Module& m;
    ~Restore() { set_bn_eval_stats(m, false); }
  } restore{model};
  NoGrad ng;
  int64_t K = data.num_classes();
  ConfusionMatrix cm(K);
  LoaderOptions lo;
  lo.batch_size = batch;
  lo.shuffle = false;
  lo.workers = 1;
  lo.transform = transform;
  DataLoader loader(std::shared_ptr<const Dataset>(&data, [](const Dataset*) {}), lo);
  loader.start_epoch(0);
  double loss_sum = 0;
  int64_t counted = 0;
  EvalResult r;
  std::vector<Tensor> all_logits;
  Batch b;
  while (loader.next(b)) {
    Var logits = model(Var(b.images));
    SB_CHECK(logits.size(1) == K, "eval: the model predicts ", logits.size(1), " classes but the data has ", K);
    int64_t valid = 0;
    for (int64_t v : b.masks) valid += v != 255;
    if (valid > 0) {
      loss_sum += static_cast<double>(cross_entropy(logits, b.masks).item()) * valid;
      counted += valid;
    }
    cm.add(logits.value(), b.masks);
    r.images += b.images.size(0);
    if (logits_out) all_logits.push_back(logits.value());
  }
  r.loss = counted ? loss_sum / counted : NAN;
  r.pixel_acc = cm.pixel_accuracy();
  r.miou = cm.mean_iou();
  r.class_iou = cm.iou();
  r.confusion = cm.counts();
  if (logits_out) {
    Shape s = all_logits[0].shape();
    s[0] = r.images;
    Tensor all = Tensor::empty(s);
    int64_t off = 0;
    for (auto& t : all_logits) {
      std::memcpy(all.data() + off, t.data(), t.numel() * sizeof(float));
      off += t.numel();
    }
    *logits_out = all;
  }
  return r;
}

}  // namespace sb
