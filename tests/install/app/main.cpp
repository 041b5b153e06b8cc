// Builds against the installed package: per-header includes in both spellings, a registry
// model and one training step (conv on OpenBLAS, OpenMP loops), so every dependency links; its
// state_dict through a safetensors file and back (core/io, in the same library); and the
// OpenBLAS core guard protects a library user as it does the command line.
#include <strings.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include <smallbatch/core/io/safetensors.h>
#include <smallbatch/core/ops.h>
#include <smallbatch/layers/loss/ops.h>
#include <smallbatch/layers/norm/group_norm.h>
#include <smallbatch/models/registry.h>
#include <smallbatch/optim/optimizer.h>
#include <smallbatch/core/platform.h>
#include <smallbatch/tools/app/checkpoint.h>
#include <smallbatch/tools/app/data_spec.h>
#include <smallbatch/tools/app/metrics.h>

#include "core/threads.h"  // the headers' own spelling resolves too

int main() {
  sb::set_num_threads(1);
  sb::ModelOptions opt;
  opt.base_width = 4;
  opt.norm.groups = 2;
  opt.classes = 2;
  opt.depth = 1;
  sb::ModulePtr model = sb::make_model("unet", opt);
  sb::GroupNorm extra(2, 4);
  sb::SGD sgd(model->parameters(), sb::SGDOptions{});
  sb::Generator gen(0);
  sb::Tensor x = sb::Tensor::randn({2, 3, 8, 8}, gen);  // (N, C, H, W)
  sb::IndexTensor y = sb::IndexTensor::zeros({2, 8, 8});
  sb::Var loss = sb::cross_entropy(model->forward(sb::Var(x)), y);
  loss.backward();
  sgd.step();
  // A StateDict becomes a file with save_safetensors, and a loaded file is a StateDict again.
  const std::string path = (std::filesystem::temp_directory_path() / "smallbatch_install_app.safetensors").string();
  sb::save_safetensors(path, model->state_dict());
  sb::TensorFile file = sb::load_safetensors(path);
  std::filesystem::remove(path);
  model->load_state_dict(file);
  sb::StateDict sd = model->state_dict();
  if (sd.floats.size() != file.floats.size() || sd.ints.size() != file.ints.size()) {
    std::printf("the state_dict did not come back from %s\n", path.c_str());
    return 3;
  }
  // smallbatch::tools: the built-in data through a spec with the command line's transform, the
  // metrics, and a checkpoint with its configuration that rebuilds the same model.
  sb::DatasetPtr shapes = sb::open_dataset("shapes:train=2,val=2,size=16", sb::Split::Val, 0);
  sb::SampleTransform tf = sb::make_transform("shapes:train=2,val=2,size=16", sb::Split::Val, {});
  sb::Generator g0(0);
  sb::Sample s0 = tf(shapes->get(0), g0);
  sb::ConfusionMatrix cm(2);
  cm.add(model->forward(sb::Var(x)).value(), y);
  sb::ModelSpec spec{"unet", opt, "shapes"};
  sb::save_model(path, *model, spec);
  sb::ModelSpec back = sb::read_model_spec(sb::load_safetensors(path));
  sb::load_weights(*back.build(), path);
  std::filesystem::remove(path);
  if (!(back.options == opt) || cm.total() != 2 * 8 * 8 || s0.image.size(1) != 16) {
    std::printf("smallbatch::tools did not round-trip\n");
    return 4;
  }
  std::printf("%s: %lld parameters, loss %.4f, %s\n", model->name().c_str(),
              static_cast<long long>(model->num_parameters()), loss.item(), extra.name().c_str());
  // On a CPU with AVX2 or AVX-512, OpenBLAS runs AVX2-or-better kernels, or a warning said why not.
  const sb::PlatformInfo p = sb::platform_info();
  std::printf("%s\n", sb::platform_summary().c_str());
  bool wide = false;
  for (const char* core : {"SkylakeX", "Cooperlake", "SapphireRapids", "Haswell", "Zen", "Excavator"})
    wide = wide || strcasecmp(p.blas.core.c_str(), core) == 0;
  const bool user_choice = p.blas.origin.rfind("OPENBLAS_CORETYPE", 0) == 0;
  if ((p.cpu_simd == "avx2" || p.cpu_simd == "avx512") && p.blas.library.rfind("OpenBLAS", 0) == 0 && !wide &&
      p.blas.warning.empty() && !user_choice) {
    std::printf("the OpenBLAS core guard did not act: %s kernels on a CPU with %s\n", p.blas.core.c_str(),
                p.cpu_simd.c_str());
    return 2;
  }
  return loss.item() > 0 ? 0 : 1;
}
