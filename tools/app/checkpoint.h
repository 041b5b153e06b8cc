// Model checkpoints: the state_dict as .safetensors (PyTorch's keys; loadable by
// model.load_state_dict(safetensors.torch.load_file(path))) with the model configuration as
// JSON in the metadata, so `eval` can rebuild the model without flags.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "core/io/safetensors.h"
#include "layers/module.h"
#include "models/registry.h"

namespace sb {

struct ModelSpec {
  std::string model = "unet-s";
  ModelOptions options;
  std::string data;  // the --data the model was trained on (optional): predict normalizes alike
  int64_t image_size = 0;  // the --image-size it was trained at (0: not given): eval's default

  nlohmann::json to_json() const;
  // Throws naming `where` when a field is missing or has the wrong type.
  static ModelSpec from_json(const nlohmann::json& j, const std::string& where);
  ModulePtr build() const { return make_model(model, options); }
};

// The metadata key that holds the ModelSpec JSON.
inline constexpr const char* kModelMetadataKey = "smallbatch.model";

// Atomic (temporary file, fsync, rename).
void save_model(const std::string& path, const Module& model, const ModelSpec& spec);
// The spec stored in a checkpoint; throws when the file has none.
ModelSpec read_model_spec(const TensorFile& file);
// A training state (`train --out DIR` writes DIR/state.safetensors: "model."-prefixed weights
// beside the optimizer's, the run's configuration in the metadata) as a model checkpoint, so
// eval and predict take it too; any other file is returned unchanged.
TensorFile model_checkpoint(TensorFile file);
// Values no trained model holds: a NaN or infinite weight or buffer, a negative running_var.
// Throws naming `source`, the tensor and the first such element. eval and predict check their
// checkpoint with it before using it. (train --init does not: a non-finite starting weight stops
// the run at step 1, naming the layer whose output it reaches.)
void check_weight_values(const TensorFile& file, const std::string& source);
// Loads weights into `model` (strict), reporting mismatches key by key with the file's name.
void load_weights(Module& model, const std::string& path);

}  // namespace sb
