// Saving and loading model checkpoints with their configuration.
#include "tools/app/checkpoint.h"

#include "core/io/safetensors.h"

namespace sb {

nlohmann::json ModelSpec::to_json() const {
  nlohmann::json j = {{"model", model},
          {"norm", options.norm},
          {"groups", options.groups},
          {"classes", options.classes},
          {"in_channels", options.in_channels},
          {"base_width", options.base_width},
          {"depth", options.depth}};
  if (options.norm_warmup != 0) j["norm_warmup"] = options.norm_warmup;
  if (!data.empty()) j["data"] = data;
  return j;
}

ModelSpec ModelSpec::from_json(const nlohmann::json& j, const std::string& where) {
  ModelSpec s;
  // nlohmann turns a float into int64 with a plain cast, undefined behaviour for 1e300 (found by
  // fuzzing), so the integer fields must be JSON integers.
  if (j.is_object())
    for (const char* key : {"groups", "classes", "in_channels", "base_width", "depth", "norm_warmup"})
      if (j.contains(key) && j.at(key).is_number_float())
        fail(where, ": the model configuration's \"", key, "\" must be an integer, got ", j.at(key).dump());
  try {
    s.model = j.at("model").get<std::string>();
    s.options.norm = j.at("norm").get<std::string>();
    s.options.groups = j.at("groups").get<int64_t>();
    s.options.classes = j.at("classes").get<int64_t>();
    s.options.in_channels = j.at("in_channels").get<int64_t>();
    s.options.base_width = j.value("base_width", int64_t{16});
    s.options.depth = j.value("depth", int64_t{0});
    s.options.norm_warmup = j.value("norm_warmup", int64_t{0});
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

TensorFile model_checkpoint(TensorFile file) {
  auto cfg = file.metadata.find("config");
  if (file.metadata.count(kModelMetadataKey) || cfg == file.metadata.end()) return file;
  TensorFile out;
  out.source = file.source;
  try {
    nlohmann::json c = nlohmann::json::parse(cfg->second);
    nlohmann::json spec = c.at("model");
    if (c.contains("data")) spec["data"] = c.at("data");
    out.metadata[kModelMetadataKey] = spec.dump();
  } catch (const nlohmann::json::exception& e) {
    fail(file.source, ": the training configuration in the metadata is damaged (", e.what(), ")");
  }
  for (auto& [k, v] : file.floats)
    if (k.rfind("model.", 0) == 0) out.floats[k.substr(6)] = v;
  for (auto& [k, v] : file.ints)
    if (k.rfind("model.", 0) == 0) out.ints[k.substr(6)] = v;
  return out;
}

void load_weights(Module& model, const std::string& path) {
  TensorFile f = load_safetensors(path);
  model.load_state_dict(f, true);
}

}  // namespace sb
