// The training loop (data -> forward -> loss -> backward -> optimizer step), per-epoch
// validation and checkpointing, resume, non-finite detection, and evaluation.
#include "tools/app/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "core/io/fileio.h"
#include "core/ops.h"
#include "core/io/safetensors.h"
#include "datasets/loader.h"
#include "layers/batch_norm.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"

namespace sb {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

nlohmann::json TrainConfig::to_json() const {
  return {{"model", spec.to_json()},
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
          {"lr", lr},
          {"momentum", momentum},
          {"weight_decay", weight_decay},
          {"decay_norm_and_bias", decay_norm_and_bias},
          {"schedule", schedule},
          {"warmup_steps", warmup_steps},
          {"clip_grad", clip_grad},
          {"seed", seed},
          {"threads", threads},
          {"init", init},
          {"init_strict", init_strict},
          {"version", SMALLBATCH_VERSION}};
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

// Lists the settings that differ between a saved config.json and this run's.
static std::string config_differences(const nlohmann::json& saved, const nlohmann::json& now) {
  std::string diff;
  for (auto& [k, v] : now.items()) {
    if (k == "version") continue;
    if (!saved.contains(k)) diff += str("\n  ", k, ": not in the saved configuration");
    else if (saved[k] != v) diff += str("\n  ", k, ": saved ", saved[k].dump(), ", now ", v.dump());
  }
  return diff;
}

// The file a "tensors:FILE" data spec reads, or "" for any other source.
static std::string tensors_file(const std::string& spec) {
  return spec.rfind("tensors:", 0) == 0 ? spec.substr(8) : std::string();
}

// Before any work: no output may be an input (--save over --init or the data), and no input or
// --save may be a file the run in --out writes (its state, best, metrics, ...), compared as
// files, not as strings; and every output name must leave room for its temporary's suffix.
static void check_outputs(const TrainConfig& cfg) {
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

TrainResult train(const TrainConfig& cfg, ModulePtr* model_out, const TrainHooks& hooks) {
  SB_CHECK(cfg.batch > 0, "--batch: must be positive, got ", cfg.batch);
  SB_CHECK(cfg.steps >= 0 && cfg.epochs >= 0 && (cfg.steps > 0) != (cfg.epochs > 0),
           "give exactly one of --steps and --epochs (positive)");
  SB_CHECK(!cfg.resume || !cfg.out.empty(), "--resume needs --out DIR (the run to continue)");
  auto log = [&](const std::string& m) {
    if (hooks.log) hooks.log(m);
  };
  SB_CHECK(!cfg.overwrite || !cfg.out.empty(), "--overwrite needs --out DIR (the run to replace)");
  SB_CHECK(!(cfg.resume && cfg.overwrite),
           "--resume continues the run in --out and --overwrite replaces it: give one of them, not both");
  check_outputs(cfg);

  // The output folder, before any other work: one writer at a time (a lock held until train()
  // returns), and a finished or different run is never replaced or continued by mistake.
  DirLock out_lock;
  TensorFile saved_state;  // the state a resume continues
  bool resuming = false;
  std::string state_path, config_path;
  if (!cfg.out.empty()) {
    std::error_code ec;
    SB_CHECK(!fs::exists(cfg.out) || fs::is_directory(cfg.out), "--out: '", cfg.out, "' exists and is not a directory");
    fs::create_directories(cfg.out, ec);
    SB_CHECK(!ec && fs::is_directory(cfg.out), "--out: cannot create directory '", cfg.out, "'",
             ec ? " (" + ec.message() + ")" : "");
    out_lock = DirLock(cfg.out, "--out");
    state_path = cfg.out + "/state.safetensors";
    config_path = cfg.out + "/config.json";
    // A process killed while writing leaves its temporary files behind; the next session of the
    // run removes those of the files it owns.
    remove_stale_temporaries(cfg.out, train_output_files());
    nlohmann::json now = cfg.to_json();
    auto read_json = [](const std::string& text, const std::string& where) {
      try {
        return nlohmann::json::parse(text);
      } catch (const nlohmann::json::exception& e) {
        fail(where, ": not valid JSON (", e.what(), ")");
      }
    };
    if (cfg.resume && fs::exists(state_path)) {
      // The state carries the configuration it was made with: it, not config.json (which may be
      // lost or rewritten), decides whether this command continues the same run.
      saved_state = load_safetensors(state_path);
      auto c = saved_state.metadata.find("config");
      SB_CHECK(c != saved_state.metadata.end(), state_path, ": the training state has no configuration in its metadata");
      nlohmann::json saved = read_json(c->second, state_path + " (its configuration)");
      std::string diff = config_differences(saved, now);
      SB_CHECK(diff.empty(), "--resume: ", cfg.out, " was made with a different configuration:", diff,
               "\n(as its state.safetensors records; use another --out, or --overwrite to replace the run)");
      bool config_ok = false;
      if (fs::exists(config_path)) {
        try {
          config_ok = nlohmann::json::parse(read_file(config_path)) == saved;
        } catch (const std::exception&) {
        }
      }
      if (!config_ok) {  // lost or rewritten: restore the run's own
        log(str(config_path, " is missing or differs from the state's configuration; restoring it"));
        write_file_atomic(config_path, saved.dump(2) + "\n");
      }
      resuming = true;
    } else {
      if (cfg.resume && fs::exists(config_path)) {
        std::string diff = config_differences(read_json(read_file(config_path), config_path), now);
        SB_CHECK(diff.empty(), "--resume: ", cfg.out, " was made with a different configuration:", diff);
      }
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
      // Writing the configuration first also proves the directory is writable.
      write_file_atomic(config_path, now.dump(2) + "\n");
    }
  }
  int64_t classes = cfg.spec.options.classes;
  DatasetPtr train_data = open_dataset(cfg.data, Split::Train, classes, cfg.data_opt);
  SB_CHECK(train_data->num_classes() == classes, "--data ", cfg.data, ": the data has ", train_data->num_classes(),
           " classes but the model is configured for ", classes, " (--classes)");
  DatasetPtr val_data;
  DataOptions val_opt = cfg.data_opt;
  val_opt.augment = false;
  val_opt.limit = cfg.val_limit;
  std::string val_spec = cfg.val_data.empty() ? cfg.data : cfg.val_data;
  if (cfg.val_data != "none") {
    try {
      val_data = open_dataset(val_spec, Split::Val, classes, val_opt);
    } catch (const Error& e) {
      // A source without a validation split (tensors:) validates on nothing unless told.
      if (!cfg.val_data.empty()) throw;
      log(str("no validation data (", e.what(), "); pass --val-data to validate"));
    }
  }
  SampleTransform val_transform = val_data ? make_transform(val_spec, Split::Val, val_opt) : SampleTransform{};

  // brn and frozenbn count their warm-up in steps; 0 asks for one epoch of them.
  ModelSpec spec = cfg.spec;
  if ((spec.options.norm == "brn" || spec.options.norm == "frozenbn") && spec.options.norm_warmup == 0)
    spec.options.norm_warmup = std::max<int64_t>(1, train_data->size() / cfg.batch);
  manual_seed(cfg.seed);
  ModulePtr model = spec.build();
  model->assign_paths();
  if (!cfg.init.empty()) {
    if (cfg.init_strict) {
      load_weights(*model, cfg.init);
    } else {
      TensorFile f = load_safetensors(cfg.init), fit;
      StateDict mine = model->state_dict();
      for (auto& [k, v] : f.floats)
        if (mine.floats.count(k) && mine.floats.at(k).shape() == v.shape()) fit.floats[k] = v;
      model->load_state_dict(fit, false);
    }
  }
  auto opt = make_optimizer(cfg, *model);

  LoaderOptions lo;
  lo.batch_size = cfg.batch;
  lo.shuffle = cfg.shuffle;
  lo.seed = cfg.seed;
  lo.workers = cfg.loader_workers;
  lo.transform = make_transform(cfg.data, Split::Train, cfg.data_opt);
  DataLoader loader(train_data, lo);
  int64_t n = train_data->size();
  int64_t steps_per_epoch = cfg.epochs > 0 ? loader.batches_per_epoch() : (n + cfg.batch - 1) / cfg.batch;
  int64_t total = cfg.steps > 0 ? cfg.steps : cfg.epochs * steps_per_epoch;
  int64_t n_epochs = (total + steps_per_epoch - 1) / steps_per_epoch;
  ScheduleConfig sc;
  sc.kind = cfg.schedule;
  sc.total_steps = total;
  sc.step_size = std::max<int64_t>(1, total / 3);
  sc.warmup_steps = std::min(cfg.warmup_steps, std::max<int64_t>(0, total - 1));
  LRSchedule schedule(sc);

  RunState st;
  TrainResult res;
  if (resuming) {
    st = load_state(saved_state, *model, *opt);
    st.seconds = restore_timing(cfg.out + "/timing.csv", st.records);
    res.resumed = true;
    log(str("resuming ", cfg.out, " at step ", st.step, " of ", total));
  } else if (cfg.resume && !cfg.out.empty()) {
    log(str(cfg.out, " has no saved state; starting fresh"));
  }
  res.losses = st.losses;
  res.grad_norms = st.grad_norms;
  res.epochs = st.records;
  res.best_miou = st.best_miou;

  ModelSpec saved_spec = spec;  // checkpoints also record the data, for predict
  saved_spec.data = cfg.data;
  // The state is written last: it is the commit point. A run killed between these writes
  // resumes from the previous state and redoes the epoch, rewriting the other files with the
  // same bytes, so what --resume ends with never depends on where the kill landed.
  auto save_all = [&](bool epoch_end, bool improved) {
    if (cfg.out.empty()) return;
    if (epoch_end) {
      std::string csv = metrics_csv_header(), timing = timing_csv_header();
      for (auto& r : st.records) csv += metrics_csv_row(r), timing += timing_csv_row(r);
      write_file_atomic(cfg.out + "/metrics.csv", csv);
      write_file_atomic(cfg.out + "/timing.csv", timing);
      save_model(cfg.out + "/model.safetensors", *model, saved_spec);
      if (improved) save_model(cfg.out + "/best.safetensors", *model, saved_spec);
    }
    save_state(state_path, cfg, *model, *opt, st);
  };

  auto params = model->parameters();
  auto named = model->named_parameters();
  model->train();
  auto session_start = Clock::now();
  int64_t session_first_step = st.step;
  auto epoch_start = Clock::now();
  int64_t epoch_images = 0;
  const int64_t kIgnoreIndex = CrossEntropyOptions{}.ignore_index;
  float first_loss = NAN;  // the first step's loss that was not an all-ignored batch's
  for (float l : st.losses)
    if (std::isnan(first_loss)) first_loss = l;

  if (cfg.steps > 0) loader.start_steps(st.step, total - st.step);
  Batch b;
  int64_t loaded_epoch = -1;
  while (st.step < total) {
    int64_t epoch = st.step / steps_per_epoch;
    if (cfg.epochs > 0 && epoch != loaded_epoch) {  // a resumed run starts mid-epoch
      loader.start_epoch(epoch, st.step % steps_per_epoch);
      loaded_epoch = epoch;
    }
    SB_CHECK(loader.next(b), "internal: the data loader ran out at step ", st.step);

    float lr_factor = schedule.factor(st.step);
    opt->set_lr_factor(lr_factor);
    // A batch whose every pixel is ignored (255) has no loss to learn from: the mean over zero
    // pixels is 0/0. It takes no forward pass, no gradient and no optimizer step (momentum and
    // BatchNorm statistics stay as they were); the step still counts, so the data order, the
    // schedule and a resume stay aligned. Its loss and gradient norm are recorded as NaN, and the
    // epoch's count of such batches is reported.
    int64_t labelled = 0;
    for (int64_t v : b.masks) labelled += v != kIgnoreIndex;
    float lv = NAN, gn = NAN;
    if (labelled > 0) {
      opt->zero_grad();
      Var logits;
      try {
        logits = (*model)(Var(b.images));
      } catch (const Error& e) {
        // Name the step and batch; say what to change when BatchNorm meets a single value per channel.
        std::string m = e.what();
        bool one_value = m.find("more than 1 value per channel") != std::string::npos;
        fail("step ", st.step + 1, ", a batch of shape ", b.images.shape(), ": ", m,
             one_value ? str(". BatchNorm needs more than one value per channel in training: use --batch 2 or more, "
                             "larger images (--image-size) or a shallower model (--depth), or another --norm")
                       : std::string());
      }
      Var loss = cross_entropy(logits, b.masks);
      lv = loss.item();
      if (!std::isfinite(lv))
        fail("training diverged at step ", st.step + 1, " (epoch ", epoch + 1, "): the loss is ", lv, "; ",
             locate_non_finite_forward(*model, b.images), ". The last good checkpoint is kept.");
      // A loss can also explode and stay finite (normalized layers absorb huge weights): far above
      // both the run's first loss and chance level, log(K), the run has diverged.
      float base = std::max(std::isnan(first_loss) ? lv : first_loss,
                            std::log(static_cast<float>(std::max<int64_t>(2, classes))));
      if (lv > kDivergenceFactor * base)
        fail("training diverged at step ", st.step + 1, " (epoch ", epoch + 1, "): the loss is ", lv, ", more than ",
             kDivergenceFactor, " times ", base, " (the larger of the first step's loss and chance level, log ", classes,
             "); lower --lr or clip gradients (--clip-grad). The last good checkpoint is kept.");
      loss.backward();
      for (auto it = named.rbegin(); it != named.rend(); ++it) {  // backward order: output side first
        const Tensor& g = it->second.grad();
        if (!g.defined()) continue;
        for (float v : g)
          if (!std::isfinite(v))
            fail("training diverged at step ", st.step + 1, " (epoch ", epoch + 1, "): the gradient of '",
                 it->first, "' is not finite (loss ", lv, "). The last good checkpoint is kept.");
      }
      gn = grad_norm(params);
      if (cfg.clip_grad > 0) clip_grad_norm(params, cfg.clip_grad);
      opt->step();
    }
    ++st.step;
    if (std::isnan(first_loss)) first_loss = lv;
    st.losses.push_back(lv);
    st.grad_norms.push_back(gn);
    epoch_images += b.images.size(0);

    double elapsed = std::chrono::duration<double>(Clock::now() - session_start).count();
    double per_step = elapsed / static_cast<double>(st.step - session_first_step);
    if (hooks.on_step)
      hooks.on_step({st.step, total, epoch, n_epochs, lv, opt->groups()[0].lr, gn,
                     elapsed > 0 ? (st.step - session_first_step) * cfg.batch / elapsed : 0,
                     per_step * static_cast<double>(total - st.step)});

    bool epoch_end = st.step % steps_per_epoch == 0 || st.step == total;
    if (epoch_end) {
      double secs = std::chrono::duration<double>(Clock::now() - epoch_start).count();
      st.seconds += secs;
      EpochRecord r;
      r.epoch = epoch + 1;
      r.step = st.step;
      r.lr = opt->groups()[0].lr;
      int64_t first = epoch * steps_per_epoch;
      double sum = 0;
      int64_t counted = 0;
      for (int64_t i = first; i < st.step; ++i)
        if (!std::isnan(st.losses[i])) sum += st.losses[i], ++counted;
      r.train_loss = counted ? sum / static_cast<double>(counted) : NAN;
      r.empty_batches = static_cast<int64_t>(st.step - first) - counted;
      r.seconds = st.seconds;
      r.images_per_s = secs > 0 ? epoch_images / secs : 0;
      bool improved = false;
      if (val_data) {
        EvalResult ev = evaluate(*model, *val_data, cfg.val_batch, BNEval::Running, nullptr, val_transform);
        r.val_loss = ev.loss, r.val_pixel_acc = ev.pixel_acc, r.val_miou = ev.miou;
        improved = !std::isnan(ev.miou) && (std::isnan(st.best_miou) || ev.miou > st.best_miou);
        if (improved) st.best_miou = ev.miou;
      } else {
        improved = true;  // without validation, the latest model is the best we know
      }
      st.records.push_back(r);
      if (hooks.on_epoch) hooks.on_epoch(r, *model);
      model->train();
      save_all(true, improved);
      epoch_start = Clock::now();
      epoch_images = 0;
    }
    if (st.step < total && hooks.should_stop && hooks.should_stop()) {
      st.seconds += std::chrono::duration<double>(Clock::now() - epoch_start).count();
      save_all(false, false);
      res.interrupted = true;
      break;
    }
  }
  res.losses = st.losses;
  res.grad_norms = st.grad_norms;
  res.epochs = st.records;
  res.best_miou = st.best_miou;
  res.seconds = st.seconds;
  for (float l : st.losses) res.empty_batches += std::isnan(l);
  if (!res.interrupted && !cfg.save.empty()) save_model(cfg.save, *model, saved_spec);
  res.skipped = skip_report(*train_data);
  if (val_data) res.skipped += skip_report(*val_data);
  if (model_out) *model_out = model;
  return res;
}

// Sets how every BatchNorm2d in `model` normalizes in eval mode.
static void set_bn_eval_stats(Module& model, bool batch_stats) {
  model.apply([&](Module& m) {
    if (auto* bn = dynamic_cast<BatchNorm2d*>(&m)) bn->batch_stats_in_eval = batch_stats;
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
