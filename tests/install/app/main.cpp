// Builds against the installed package: per-header includes in both spellings, a registry
// model and one training step (conv on OpenBLAS, OpenMP loops), so every dependency links.
#include <cstdio>

#include <smallbatch/core/ops.h>
#include <smallbatch/layers/group_norm.h>
#include <smallbatch/models/registry.h>
#include <smallbatch/optim/optimizer.h>

#include "core/threads.h"  // the headers' own spelling resolves too

int main() {
  sb::set_num_threads(1);
  sb::ModelOptions opt;
  opt.base_width = 4;
  opt.groups = 2;
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
  std::printf("%s: %lld parameters, loss %.4f, %s\n", model->name().c_str(),
              static_cast<long long>(model->num_parameters()), loss.item(), extra.name().c_str());
  return loss.item() > 0 ? 0 : 1;
}
