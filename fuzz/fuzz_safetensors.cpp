// libFuzzer target: the safetensors reader (parse_safetensors, the entry load_safetensors uses
// after reading the file) and, when a file parses, a strict load_state_dict into a tiny module,
// so the key, kind and shape checks are fuzzed as well. sb::Error / std::exception are the
// expected way to refuse a file; only crashes, sanitizer reports, leaks, hangs and OOMs are bugs.
// A file that parses and holds "images" or "masks" is also opened as a tensors: dataset (its
// shape and label checks).
#include <cstddef>
#include <cstdint>
#include <exception>

#include "core/io/safetensors.h"
#include "datasets/dataset.h"
#include "fuzz_common.h"
#include "layers/module.h"

namespace {

// A module with every kind of entry a real model has: parameters, a float buffer, an int64
// buffer of shape () like num_batches_tracked, and a child (dotted keys). Keys: "w", "b",
// "n.running_mean", "n.running_var", "n.num_batches_tracked", "n.weight".
struct TinyNorm : sb::Module {
  TinyNorm() {
    register_parameter("weight", sb::Tensor::ones({2}));
    register_buffer("running_mean", sb::Tensor::zeros({2}));
    register_buffer("running_var", sb::Tensor::ones({2}));
    register_buffer("num_batches_tracked", sb::IndexTensor::zeros({}));
  }
  std::string name() const override { return "TinyNorm"; }
};

struct TinyNet : sb::Module {
  TinyNet() {
    register_parameter("w", sb::Tensor::zeros({2, 1, 3, 3}));
    register_parameter("b", sb::Tensor::zeros({2}));
    register_module("n", std::make_shared<TinyNorm>());
  }
  std::string name() const override { return "TinyNet"; }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  sb::TensorFile f;
  try {
    f = sb::parse_safetensors(data, size, "fuzz.safetensors");
  } catch (const std::exception&) {
    return 0;
  }
  // What the data readers and the trainer do with a parsed file.
  try {
    for (const auto& [name, t] : f.floats) (void)f.get_float(name), (void)t.numel();
    (void)f.get_int("masks");
  } catch (const std::exception&) {
  }
  try {
    static TinyNet model;
    model.load_state_dict(f, true);
  } catch (const std::exception&) {
  }
  try {
    static TinyNet loose;
    loose.load_state_dict(f, false);
  } catch (const std::exception&) {
  }
  if (f.has_float("images") || f.has_int("masks")) {
    static const std::string path = sbfuzz::scratch_dir() + "/data.safetensors";
    sbfuzz::write_bytes(path, data, size);
    try {
      sb::TensorsDataset d(path, data[size - 1] % 4);  // classes 0 (infer), 1, 2 or 3
      if (d.size() > 0) (void)d.get(d.size() - 1);
    } catch (const std::exception&) {
    }
  }
  return 0;
}
