// `smallbatch predict`: runs a checkpoint on images and writes, per image, a colour-coded mask
// PNG and an overlay of the mask on the image.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include "core/io/fileio.h"
#include "core/io/safetensors.h"
#include "core/threads.h"
#include "datasets/image_io.h"
#include "tools/app/data_spec.h"
#include "tools/cli.h"

namespace sb::cli {

namespace fs = std::filesystem;

static bool is_image(const fs::path& p) {
  std::string e = p.extension().string();
  for (char& c : e) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return e == ".png" || e == ".jpg" || e == ".jpeg" || e == ".bmp";
}

void add_predict_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("predict", "segment images with a checkpoint: a colour mask and an overlay per image");
  struct Opts {
    std::string weights, input, out, data;
    int64_t image_size = 0;
    int threads = 0;
    float alpha = 0.5f;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--weights", o->weights, "checkpoint (.safetensors) written by train")->required()->check(CLI::ExistingFile);
  cmd->add_option("--input", o->input, "an image (PNG, JPEG, BMP) or a directory of them")->required()->check(CLI::ExistingPath);
  cmd->add_option("--out", o->out, "output directory")->required();
  cmd->add_option("--data", o->data, "the data source whose normalization to apply (default: the one in the checkpoint)");
  cmd->add_option("--image-size", o->image_size, "resize or crop to S x S first (as in training)")->check(Positive);
  cmd->add_option("--alpha", o->alpha, "overlay opacity of the mask colours")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--threads", o->threads, "threads")->check(Positive);
  cmd->callback([o, &action] {
    action = [o]() -> int {
      stdout_is_progress();  // the results go to --out
      check_threads("predict", o->threads);
      set_num_threads(o->threads > 0 ? o->threads : default_num_threads());
      TensorFile weights = model_checkpoint(load_safetensors(o->weights));  // a state.safetensors works too
      check_weight_values(weights, "--weights " + o->weights);
      ModelSpec spec = read_model_spec(weights);
      ModulePtr model = spec.build();
      model->load_state_dict(weights, true);
      model->eval();
      std::string data = o->data.empty() ? spec.data : o->data;
      SB_CHECK(!data.empty(), o->weights, ": the checkpoint does not say which data it was trained on; "
               "give --data (e.g. shapes, voc:DIR) so the images are normalized alike");
      DataOptions dopt;
      dopt.image_size = o->image_size;
      SampleTransform tf = make_transform(data, Split::Val, dopt);

      std::vector<fs::path> inputs;
      if (fs::is_directory(o->input)) {
        for (auto& e : fs::directory_iterator(o->input))
          if (e.is_regular_file() && is_image(e.path())) inputs.push_back(e.path());
        std::sort(inputs.begin(), inputs.end());
        SB_CHECK(!inputs.empty(), "--input: no PNG, JPEG or BMP images in '", o->input, "'");
      } else {
        inputs.push_back(o->input);
      }
      // Before any work: every output is new, unique, and not one of the inputs.
      std::map<std::string, std::string> written;  // output -> the input it is made from
      for (const auto& path : inputs) {
        std::string stem = (fs::path(o->out) / path.stem()).string();
        for (const std::string& out : {stem + "_mask.png", stem + "_overlay.png"}) {
          check_output_name(out, "--out");
          SB_CHECK(!same_file(out, o->weights), "--out: '", out, "' would overwrite --weights '", o->weights, "'");
          for (const auto& in : inputs)
            SB_CHECK(!same_file(out, in.string()), "--out: '", out, "' (the output for ", path.string(),
                     ") would overwrite the input image '", in.string(), "'; give another --out");
          auto [it, fresh] = written.emplace(out, path.string());
          SB_CHECK(fresh, "--out: '", out, "' would be written for both '", it->second, "' and '", path.string(),
                   "' (same name, another extension); give them different names");
        }
      }
      std::error_code ec;
      fs::create_directories(o->out, ec);
      SB_CHECK(!ec && fs::is_directory(o->out), "--out: cannot create directory '", o->out, "'",
               ec ? " (" + ec.message() + ")" : std::string(" (a file of that name exists)"));
      NoGrad ng;
      for (const auto& path : inputs) {
        Tensor raw = load_image(path.string(), dopt.max_pixels);  // (3, H, W) in [0, 1]
        Sample s{raw, IndexTensor::zeros({raw.size(1), raw.size(2)})};
        Generator g(0);
        if (tf) s = tf(std::move(s), g);
        int64_t H = s.image.size(1), W = s.image.size(2);
        // The picture under the overlay: the raw image, or, when --image-size changed its size,
        // the network's input stretched back to [0, 1].
        Tensor shown = raw;
        if (raw.size(1) != H || raw.size(2) != W) {
          shown = s.image.clone();
          float lo = INFINITY, hi = -INFINITY;
          for (float v : shown) lo = std::min(lo, v), hi = std::max(hi, v);
          for (float& v : shown) v = hi > lo ? (v - lo) / (hi - lo) : 0.5f;
        }
        Var logits;
        try {
          logits = (*model)(Var(s.image.reshape({1, s.image.size(0), H, W})));
        } catch (const Error& e) {  // e.g. a size the model can't take: say which image
          fail(path.string(), ": ", e.what(), o->image_size ? "" : " (--image-size S resizes the images first)");
        }
        int64_t K = logits.size(1);
        std::vector<uint8_t> mask(H * W * 3), overlay(H * W * 3);
        std::vector<uint8_t> rgb = to_hwc_bytes(shown);
        const float* lp = logits.value().data();
        for (int64_t i = 0; i < H * W; ++i) {
          int64_t best = 0;
          for (int64_t k = 1; k < K; ++k)
            if (lp[k * H * W + i] > lp[best * H * W + i]) best = k;
          auto c = voc_color(static_cast<int>(best));
          for (int ch = 0; ch < 3; ++ch) {
            mask[i * 3 + ch] = c[ch];
            float a = best == 0 ? 0.f : o->alpha;  // background keeps the photo
            overlay[i * 3 + ch] = static_cast<uint8_t>((1 - a) * rgb[i * 3 + ch] + a * c[ch] + 0.5f);
          }
        }
        std::string stem = (fs::path(o->out) / path.stem()).string();
        write_png(stem + "_mask.png", mask.data(), W, H, 3);
        write_png(stem + "_overlay.png", overlay.data(), W, H, 3);
        progress("%s -> %s_mask.png, %s_overlay.png\n", path.string().c_str(), stem.c_str(), stem.c_str());
      }
      return 0;
    };
  });
}

}  // namespace sb::cli
