// `smallbatch data`: write the synthetic set to disk, export a source as tensors, print stats,
// and draw a preview of samples beside their masks.
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include <nlohmann/json.hpp>

#include "core/io/safetensors.h"
#include "datasets/image_io.h"
#include "datasets/shapes.h"
#include "datasets/stats.h"
#include "tools/app/data_spec.h"
#include "tools/cli.h"

namespace sb::cli {

namespace {

namespace fs = std::filesystem;

// The data-source flags shared by export, stats and preview.
struct SourceFlags {
  std::string data = "shapes";
  std::string split = "train";
  int64_t classes = 0;
  int workers = 2;
  DataOptions opt;

  void add(CLI::App& cmd) {
    cmd.add_option("--data", data, "source: shapes[:train=N,val=M,size=S,difficulty=D,seed=X], tensors:FILE, "
                                   "folder:DIR, voc:DIR, pets:DIR")->capture_default_str();
    cmd.add_option("--split", split, "which split")->capture_default_str()->check(CLI::IsMember({"train", "val"}));
    cmd.add_option("--image-size", opt.image_size, "resize the shorter side to S, then centre-crop S x S")
        ->check(Positive);
    cmd.add_option("--limit", opt.limit, "use at most this many samples")->check(Positive);
    cmd.add_option("--classes", classes, "number of classes (default: from the source)")->check(Positive);
    cmd.add_flag("--skip-bad", opt.skip_bad, "skip unreadable or invalid samples (counted and reported)");
    cmd.add_option("--max-pixels", opt.max_pixels, "refuse images whose header claims more pixels")
        ->capture_default_str()->check(Positive);
    cmd.add_option("--pets-border", opt.pets_border, "pets: the trimap border as ignore (255) or a class of its own")
        ->capture_default_str()->check(CLI::IsMember({"ignore", "class"}));
    cmd.add_option("--seed", opt.seed, "shapes: the data seed")->capture_default_str()->check(Seed);
    cmd.add_option("--workers", workers, "loader threads")->capture_default_str()->check(Workers);
  }
  Split which() const { return split == "train" ? Split::Train : Split::Val; }
  DatasetPtr open() const { return open_dataset(data, which(), classes, opt); }
};

void report_skips(const Dataset& d) {
  std::string r = skip_report(d);
  if (!r.empty()) std::fprintf(stderr, "%s\n", r.c_str());
}

std::string join(const RGB& v) { return str(v[0], ", ", v[1], ", ", v[2]); }

// ---- data shapes ----

void add_shapes(CLI::App& parent, Action& action) {
  struct Opts {
    std::string out;
    int64_t count = ShapesOptions{}.train, val_count = ShapesOptions{}.val, size = ShapesOptions{}.size;
    uint64_t seed = 0;
    float difficulty = ShapesOptions{}.difficulty;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = parent.add_subcommand("shapes", "write the synthetic shapes set to disk in the folder: layout "
                                              "(PNG images, single-channel index PNG masks, dataset.json)");
  cmd->add_option("--out", o->out, "output directory (new, or without train/ and val/)")->required();
  cmd->add_option("--count", o->count, "train samples")->capture_default_str()->check(Positive);
  cmd->add_option("--val-count", o->val_count, "val samples")->capture_default_str()->check(Positive);
  cmd->add_option("--image-size", o->size, "images are S x S")->capture_default_str()->check(CLI::Range(16, 2048));
  cmd->add_option("--seed", o->seed, "data seed")->capture_default_str()->check(Seed);
  cmd->add_option("--difficulty", o->difficulty, "0 (easy) .. 3 (hard)")->capture_default_str()->check(CLI::Range(0.0, 3.0));
  cmd->callback([o, &action] {
    action = [o]() -> int {
      ShapesOptions so;
      so.train = o->count, so.val = o->val_count, so.size = o->size, so.seed = o->seed, so.difficulty = o->difficulty;
      fs::path root = o->out;
      std::error_code ec;
      for (const char* split : {"train", "val"})
        SB_CHECK(!fs::exists(root / split, ec), "--out: ", (root / split).string(),
                 " already exists; give a new directory (nothing was written)");
      for (const char* split : {"train", "val"})
        for (const char* sub : {"images", "masks"}) {
          fs::create_directories(root / split / sub, ec);
          SB_CHECK(!ec, "--out: cannot create ", (root / split / sub).string(), " (", ec.message(), ")");
        }
      for (bool train : {true, false}) {
        int64_t n = train ? so.train : so.val;
        fs::path dir = root / (train ? "train" : "val");
        for (int64_t i = 0; i < n; ++i) {
          Sample s = generate_shapes(so, train, i);
          char name[32];
          std::snprintf(name, sizeof name, "%06" PRId64 ".png", i);
          auto img = to_hwc_bytes(s.image);
          write_png((dir / "images" / name).string(), img.data(), so.size, so.size, 3);
          auto mask = to_mask_bytes(s.mask);
          write_png((dir / "masks" / name).string(), mask.data(), so.size, so.size, 1);
        }
      }
      FolderInfo info;
      info.classes = static_cast<int64_t>(kShapesClasses.size());
      info.class_names.assign(kShapesClasses.begin(), kShapesClasses.end());
      info.has_normalization = true;
      info.mean = kShapesMean, info.std = kShapesStd;
      write_folder_info(root.string(), info);
      std::printf("wrote %lld train and %lld val samples (%lldx%lld, difficulty %g, seed %llu) to %s\n"
                  "read them back with --data folder:%s\n",
                  (long long)so.train, (long long)so.val, (long long)so.size, (long long)so.size, so.difficulty,
                  (unsigned long long)so.seed, root.string().c_str(), root.string().c_str());
      return 0;
    };
  });
}

// ---- data export ----

void add_export(CLI::App& parent, Action& action) {
  auto f = std::make_shared<SourceFlags>();
  auto out = std::make_shared<std::string>();
  auto* cmd = parent.add_subcommand("export", "write what the loader produces (no augmentation) as a "
                                              ".safetensors file: images F32 (N, C, H, W), masks I64 (N, H, W)");
  f->add(*cmd);
  cmd->add_option("--out", *out, "output file (.safetensors)")->required();
  cmd->callback([f, out, &action] {
    action = [f, out]() -> int {
      DataOptions opt = f->opt;
      opt.augment = false;
      DatasetPtr data = f->open();
      LoaderOptions lo;
      lo.batch_size = 1;
      lo.shuffle = false;
      lo.workers = f->workers;
      lo.transform = make_transform(f->data, f->which(), opt);
      DataLoader loader(data, lo);
      loader.start_epoch(0);
      const int64_t N = data->size();
      Tensor images;       // (N, C, H, W)
      IndexTensor masks;   // (N, H, W)
      Shape first;
      Batch b;
      int64_t n = 0;
      while (loader.next(b)) {
        Shape s(b.images.shape().begin() + 1, b.images.shape().end());  // (C, H, W)
        if (n == 0) {
          first = s;
          images = Tensor::empty({N, s[0], s[1], s[2]});
          masks = IndexTensor::empty({N, s[1], s[2]});
        }
        SB_CHECK(s == first, sample_name(*data, b.indices[0]), " is ", s, " but ", sample_name(*data, 0), " is ",
                 first, "; images differ in size, so give --image-size S to resize them all to S x S");
        std::copy(b.images.begin(), b.images.end(), images.data() + n * b.images.numel());
        std::copy(b.masks.begin(), b.masks.end(), masks.data() + n * b.masks.numel());
        ++n;
      }
      TensorFile tf;
      tf.floats["images"] = images;
      tf.ints["masks"] = masks;
      TransformOptions t = transform_options(f->data, f->which(), opt);
      tf.metadata["source"] = data->describe();
      tf.metadata["split"] = f->split;
      tf.metadata["classes"] = std::to_string(data->num_classes());
      tf.metadata["normalization"] = t.normalize ? "mean " + join(t.mean) + "; std " + join(t.std) : "none";
      save_safetensors(*out, tf);
      std::printf("wrote %lld samples to %s: images %s, masks %s, %lld classes\n", (long long)n, out->c_str(),
                  shape_str(images.shape()).c_str(), shape_str(masks.shape()).c_str(), (long long)data->num_classes());
      report_skips(*data);
      return 0;
    };
  });
}

// ---- data stats ----

void add_stats(CLI::App& parent, Action& action) {
  auto f = std::make_shared<SourceFlags>();
  auto json = std::make_shared<bool>(false);
  auto* cmd = parent.add_subcommand("stats", "print the number of samples, image sizes, class pixel frequencies "
                                             "and per-channel mean/std (of the images before normalization)");
  f->add(*cmd);
  cmd->add_flag("--json", *json, "print one JSON object");
  cmd->callback([f, json, &action] {
    action = [f, json]() -> int {
      DatasetPtr data = f->open();
      TransformOptions t = transform_options(f->data, f->which(), f->opt);
      t.augment = false;
      t.normalize = false;  // the raw statistics are what a normalization would use
      DatasetStats st = compute_stats(data, build_transform(t), f->workers);
      int64_t labelled = st.ignore_pixels;
      for (int64_t c : st.class_pixels) labelled += c;
      nlohmann::json j;
      j["source"] = data->describe();
      j["samples"] = st.samples;
      j["classes"] = data->num_classes();
      j["sizes"] = nlohmann::json::array();
      for (auto& [hw, count] : st.sizes) j["sizes"].push_back({{"height", hw.first}, {"width", hw.second}, {"count", count}});
      j["class_pixels"] = st.class_pixels;
      j["ignore_pixels"] = st.ignore_pixels;
      j["mean"] = st.mean;
      j["std"] = st.std;
      j["skipped"] = skipped_samples(*data).size();
      if (*json) {
        std::cout << j.dump() << "\n";
      } else {
        std::printf("%s\nsamples   %lld\n", data->describe().c_str(), (long long)st.samples);
        std::printf("sizes     %zu distinct (H x W: images)", st.sizes.size());
        size_t shown = 0;
        for (auto& [hw, count] : st.sizes) {
          if (shown++ == 8) {
            std::printf(" ...");
            break;
          }
          std::printf("  %lldx%lld: %lld", (long long)hw.first, (long long)hw.second, (long long)count);
        }
        std::printf("\nclass pixel frequencies:\n");
        for (size_t k = 0; k < st.class_pixels.size(); ++k)
          std::printf("  %3zu  %7.4f  (%lld px)\n", k, labelled ? (double)st.class_pixels[k] / labelled : 0.0,
                      (long long)st.class_pixels[k]);
        std::printf("  255  %7.4f  (%lld px, ignored)\n", labelled ? (double)st.ignore_pixels / labelled : 0.0,
                    (long long)st.ignore_pixels);
        std::printf("mean      ");
        for (double m : st.mean) std::printf(" %.4f", m);
        std::printf("\nstd       ");
        for (double s : st.std) std::printf(" %.4f", s);
        std::printf("\n");
      }
      report_skips(*data);
      return 0;
    };
  });
}

// ---- data preview ----

void add_preview(CLI::App& parent, Action& action) {
  auto f = std::make_shared<SourceFlags>();
  struct Opts {
    std::string out;
    int64_t count = 8, cols = 4;
    bool augment = false;
    uint64_t aug_seed = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = parent.add_subcommand("preview", "draw the first samples beside their masks (VOC colours, ignore = "
                                               "cream) into one PNG");
  f->add(*cmd);
  cmd->add_option("--out", o->out, "output PNG")->required();
  cmd->add_option("--count", o->count, "samples to draw")->capture_default_str()->check(CLI::Range(1, 256));
  cmd->add_option("--cols", o->cols, "image+mask pairs per row")->capture_default_str()->check(CLI::Range(1, 64));
  cmd->add_flag("--augment", o->augment, "draw them augmented (train split), to check the augmentation");
  cmd->add_option("--augment-seed", o->aug_seed, "seed of the augmentation draws")->capture_default_str();
  cmd->callback([f, o, &action] {
    action = [f, o]() -> int {
      DataOptions opt = f->opt;
      opt.augment = o->augment;
      DatasetPtr data = f->open();
      TransformOptions t = transform_options(f->data, f->which(), opt);
      t.normalize = false;
      SampleTransform tf = build_transform(t);
      int64_t n = std::min(o->count, data->size()), cols = std::min(o->cols, n), rows = (n + cols - 1) / cols;
      std::vector<Sample> samples;
      for (int64_t i = 0; i < n; ++i) {
        Generator g(o->aug_seed * 1000003 + static_cast<uint64_t>(i));
        Sample s = data->get(i);
        samples.push_back(tf ? tf(std::move(s), g) : s);
      }
      // Cells are square: the first sample's shorter side, or --image-size.
      int64_t cell = f->opt.image_size > 0 ? f->opt.image_size
                                           : std::min(samples[0].image.size(1), samples[0].image.size(2));
      const int64_t gap = 2, W = cols * (2 * cell + gap) + gap, H = rows * (cell + gap) + gap;
      std::vector<uint8_t> canvas(W * H * 3, 255);
      for (int64_t i = 0; i < n; ++i) {
        Sample s = resize_center_crop(samples[i], cell);
        SB_CHECK(s.image.size(0) == 3, "preview: expected RGB images but sample ", i, " is ", s.image.shape());
        auto img = to_hwc_bytes(s.image);
        int64_t x0 = gap + (i % cols) * (2 * cell + gap), y0 = gap + (i / cols) * (cell + gap);
        for (int64_t y = 0; y < cell; ++y)
          for (int64_t x = 0; x < cell; ++x) {
            uint8_t* a = &canvas[((y0 + y) * W + x0 + x) * 3];
            uint8_t* m = &canvas[((y0 + y) * W + x0 + cell + x) * 3];
            int64_t label = s.mask[y * cell + x];
            auto c = voc_color(static_cast<int>(label >= 0 && label < 256 ? label : 255));
            for (int k = 0; k < 3; ++k) a[k] = img[(y * cell + x) * 3 + k], m[k] = c[k];
          }
      }
      write_png(o->out, canvas.data(), W, H, 3);
      std::printf("wrote %s: %lld samples of %s (%lldx%lld)\n", o->out.c_str(), (long long)n, data->describe().c_str(),
                  (long long)W, (long long)H);
      return 0;
    };
  });
}

}  // namespace

void add_data_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("data", "dataset tools: shapes, export, stats, preview");
  cmd->require_subcommand(1);
  add_shapes(*cmd, action);
  add_export(*cmd, action);
  add_stats(*cmd, action);
  add_preview(*cmd, action);
}

}  // namespace sb::cli
