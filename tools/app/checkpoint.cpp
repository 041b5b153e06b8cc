// Saving and loading model checkpoints with their configuration.
#include "tools/app/checkpoint.h"

#include "core/safetensors.h"

namespace sb {

nlohmann::json ModelSpec::to_json() const {
  nlohmann::json j = {{"model", model},
          {"norm", options.norm},
          {"groups", options.groups},
          {"classes", options.classes},
          {"in_channels", options.in_channels},
          {"base_width", options.base_width},
          {"depth", options.depth}};
  if (!data.empty()) j["data"] = data;
  return j;
}

ModelSpec ModelSpec::from_json(const nlohmann::json& j, const std::string& where) {
  ModelSpec s;
  try {
    s.model = j.at("model").get<std::string>();
    s.options.norm = j.at("norm").get<std::string>();
    s.options.groups = j.at("groups").get<int64_t>();
    s.options.classes = j.at("classes").get<int64_t>();
    s.options.in_channels = j.at("in_channels").get<int64_t>();
    s.options.base_width = j.value("base_width", int64_t{16});
    s.options.depth = j.value("depth", int64_t{0});
    s.data = j.value("data", std::string());
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": the model configuration is incomplete or malformed (", e.what(), ")");
  }
  return s;
}

void save_model(const std::string& path, const Module& model, const ModelSpec& spec) {
  TensorFile f = model.state_dict();
  f.metadata[kModelMetadataKey] = spec.to_json().dump();
  f.metadata["format"] = "pt";  // as safetensors.torch writes, so tools recognise it
  save_safetensors(path, f);
}

ModelSpec read_model_spec(const TensorFile& file) {
  auto it = file.metadata.find(kModelMetadataKey);
  SB_CHECK(it != file.metadata.end(), file.source, ": this checkpoint has no smallbatch model "
           "configuration in its metadata; give the model flags (--model, --norm, --groups, --classes)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    fail(file.source, ": the model configuration in the metadata is not valid JSON (", e.what(), ")");
  }
  return ModelSpec::from_json(j, file.source);
}

void load_weights(Module& model, const std::string& path) {
  TensorFile f = load_safetensors(path);
  model.load_state_dict(f, true);
}

}  // namespace sb
