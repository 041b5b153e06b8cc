// A model of your own configuration on the built-in shapes data, trained by your own loop,
// saved with its configuration and scored by `smallbatch eval`. Links smallbatch::tools (the
// data specs, the metrics and the checkpoint writer the command line uses). The test suite
// builds and runs it (example.shapes_model): it fails unless eval's mean IoU equals its own.
//
//   shapes_model_example [OUT.safetensors [path/to/smallbatch]]
#include <smallbatch/smallbatch.h>
// smallbatch::tools, spelled as the headers spell each other (installed: include/smallbatch/tools/app/).
#include "tools/app/checkpoint.h"
#include "tools/app/data_spec.h"
#include "tools/app/metrics.h"

#include <cmath>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

int main(int argc, char** argv) {
  const std::string out = argc > 1 ? argv[1] : "shapes_model.safetensors";
  sb::set_num_threads(2);
  sb::manual_seed(0);

  // The built-in data as the command line names it, with the transform the command line applies
  // (the shapes set's own mean and std; ImageNet's would be wrong here, so nothing is implicit).
  const std::string data = "shapes:train=256,val=64,size=32";
  sb::DatasetPtr train = sb::open_dataset(data, sb::Split::Train, 0);
  sb::DatasetPtr val = sb::open_dataset(data, sb::Split::Val, 0);

  // The network: a registered architecture ("unet", see `smallbatch models`) at a depth, width
  // and norm of our choosing. The spec is what gets saved, so eval can rebuild it.
  sb::ModelSpec spec;
  spec.model = "unet";
  spec.options.depth = 2;
  spec.options.base_width = 8;
  spec.options.norm.kind = "gn";
  spec.options.norm.groups = 4;
  spec.options.classes = train->num_classes();
  spec.data = data;  // predict normalizes new images as this data
  sb::ModulePtr model = spec.build();

  sb::LoaderOptions lo;
  lo.batch_size = 8;
  lo.transform = sb::make_transform(data, sb::Split::Train, {});
  sb::DataLoader loader(train, lo);
  sb::Adam opt(model->parameters(), sb::adamw_options(3e-3f, 1e-4f));
  for (int epoch = 0; epoch < 3; ++epoch) {
    double total = 0;
    int batches = 0;
    loader.start_epoch(epoch);
    for (sb::Batch b; loader.next(b); ++batches) {
      sb::Var loss = sb::cross_entropy((*model)(sb::Var(b.images)), b.masks);
      opt.zero_grad();
      loss.backward();
      opt.step();
      total += loss.item();
    }
    std::printf("epoch %d  loss %.4f\n", epoch, total / batches);
  }

  // Scored as eval scores it: the validation split, its transform, one confusion matrix.
  model->eval();
  sb::NoGrad no_grad;
  sb::LoaderOptions vo;
  vo.batch_size = 16;
  vo.shuffle = false;
  vo.transform = sb::make_transform(data, sb::Split::Val, {});
  sb::DataLoader val_loader(val, vo);
  sb::ConfusionMatrix cm(spec.options.classes);
  val_loader.start_epoch(0);
  for (sb::Batch b; val_loader.next(b);) cm.add((*model)(sb::Var(b.images)).value(), b.masks);
  std::printf("val pixel accuracy %.4f  mean IoU %.4f\n", cm.pixel_accuracy(), cm.mean_iou());

  // The weights with the configuration in the metadata: `smallbatch eval --weights OUT` and
  // `smallbatch predict --weights OUT` rebuild the model from it; PyTorch loads the state_dict.
  sb::save_model(out, *model, spec);
  std::printf("saved %s\n", out.c_str());
  if (argc < 3) return 0;

  // The command line's verdict on the same file.
  const std::string cmd = std::string(argv[2]) + " eval --threads 2 --json --weights '" + out + "' --data " + data;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return 2;
  std::string text;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) text.append(buf, n);
  if (pclose(p) != 0) {
    std::printf("'%s' failed\n", cmd.c_str());
    return 3;
  }
  const double eval_miou = nlohmann::json::parse(text).at("miou").get<double>();
  std::printf("smallbatch eval: mean IoU %.4f\n", eval_miou);
  return std::fabs(eval_miou - cm.mean_iou()) < 1e-9 ? 0 : 4;
}
