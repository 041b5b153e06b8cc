// A custom segmentation network on smallbatch's C++ API: a Module, a loss, an optimizer, a
// DataLoader and a training loop. The test suite builds and runs it (example.custom_net).
#include <smallbatch/smallbatch.h>

#include <cstdio>
#include <filesystem>
#include <string>

// The network: layers registered by name, so its state_dict keys are "conv1.weight",
// "norm1.weight", ..., "head.bias", exactly as in a PyTorch twin with the same attributes.
// A small encoder-decoder for 16x16 images: features at full resolution, then at half
// resolution with an image-level context vector added (ParseNet's global pooling), upsampled
// back onto the first. The layers without parameters are registered too, so that eval()
// reaches the Dropout.
class TinyNet : public sb::Module {
 public:
  TinyNet(int64_t in, int64_t width, int64_t classes) : width_(width) {
    conv1 = register_module("conv1", std::make_shared<sb::Conv2d>(in, width, 3, 1, 1, false));
    norm1 = register_module("norm1", std::make_shared<sb::GroupNorm>(4, width));
    down = register_module("down", std::make_shared<sb::MaxPool2d>(2));
    conv2 = register_module("conv2", std::make_shared<sb::Conv2d>(width, width, 3, 1, 1, false));
    norm2 = register_module("norm2", std::make_shared<sb::GroupNorm>(4, width));
    pool = register_module("pool", std::make_shared<sb::AvgPool2d>(8));  // 8x8 -> 1x1: the mean
    context = register_module("context", std::make_shared<sb::Linear>(width, width));
    up = register_module("up", std::make_shared<sb::Upsample>(2, sb::UpsampleMode::Bilinear));
    drop = register_module("drop", std::make_shared<sb::Dropout>(0.1f));
    head = register_module("head", std::make_shared<sb::Conv2d>(width, classes, 1));
  }
  sb::Var forward(const sb::Var& x) override {  // (N, in, 16, 16) -> (N, classes, 16, 16)
    int64_t n = x.size(0);
    sb::Var h = sb::relu(norm1->forward(conv1->forward(x)));                  // (N, width, 16, 16)
    sb::Var d = sb::relu(norm2->forward(conv2->forward(down->forward(h))));    // (N, width, 8, 8)
    sb::Var g = context->forward(sb::reshape(pool->forward(d), {n, width_}));  // (N, width)
    d = d + sb::reshape(g, {n, width_, 1, 1});                                 // on every pixel
    return head->forward(drop->forward(h + up->forward(d)));
  }
  std::shared_ptr<sb::Conv2d> conv1, conv2, head;
  std::shared_ptr<sb::GroupNorm> norm1, norm2;
  std::shared_ptr<sb::MaxPool2d> down;
  std::shared_ptr<sb::AvgPool2d> pool;
  std::shared_ptr<sb::Linear> context;
  std::shared_ptr<sb::Upsample> up;
  std::shared_ptr<sb::Dropout> drop;

 private:
  int64_t width_;
};

// A tiny in-memory task: find the bright square in a noisy image. Sample i depends on i
// alone, so get() is thread-safe, as the DataLoader's worker threads need.
class Squares : public sb::Dataset {
 public:
  int64_t size() const override { return 32; }
  int64_t num_classes() const override { return 2; }
  std::string describe() const override { return "squares (32 images 1x16x16)"; }
  sb::Sample get(int64_t i) const override {
    sb::Generator gen(i);
    sb::Sample s{sb::Tensor::randn({1, 16, 16}, gen, 0.f, 0.5f), sb::IndexTensor::zeros({16, 16})};
    int64_t y0 = gen.below(10), x0 = gen.below(10);
    for (int64_t y = y0; y < y0 + 6; ++y)
      for (int64_t x = x0; x < x0 + 6; ++x) {
        s.image.at({0, y, x}) += 1.f;
        s.mask.at({y, x}) = 1;
      }
    return s;
  }
};

int main() {
  sb::manual_seed(0);  // the layers' initialization
  TinyNet net(1, 16, 2);
  sb::CrossEntropyLoss loss_fn;
  sb::Adam opt(net.parameters(), sb::adamw_options(1e-2f, 1e-4f));
  sb::LoaderOptions lo;
  lo.batch_size = 8;
  sb::DataLoader loader(std::make_shared<Squares>(), lo);

  double first = 0, last = 0;
  for (int epoch = 0; epoch < 8; ++epoch) {
    double total = 0;
    int batches = 0;
    loader.start_epoch(epoch);
    for (sb::Batch b; loader.next(b); ++batches) {
      sb::Var loss = loss_fn(net(sb::Var(b.images)), b.masks);
      opt.zero_grad();
      loss.backward();
      opt.step();
      total += loss.item();
    }
    last = total / batches;
    if (epoch == 0) first = last;
    std::printf("epoch %d  loss %.4f\n", epoch, last);
  }

  net.eval();  // Dropout passes everything through from here on
  sb::NoGrad no_grad;
  double eval_loss = 0;
  int batches = 0;
  loader.start_epoch(0);
  for (sb::Batch b; loader.next(b); ++batches) eval_loss += loss_fn(net(sb::Var(b.images)), b.masks).item();
  std::printf("eval loss %.4f\n", eval_loss / batches);
  // The weights as a safetensors file (core/io) that PyTorch's safetensors.torch.load_file reads,
  // then back into a second network; load_state_dict throws unless every name and shape fits.
  const std::string path = (std::filesystem::temp_directory_path() / "tinynet.safetensors").string();
  sb::save_safetensors(path, net.state_dict());
  TinyNet copy(1, 16, 2);
  copy.load_state_dict(sb::load_safetensors(path));
  std::filesystem::remove(path);
  return last < 0.5 * first ? 0 : 1;  // the loss must fall, or the example is broken
}
