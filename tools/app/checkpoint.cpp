// Saving and loading model checkpoints with their configuration.
#include "tools/app/checkpoint.h"

#include <cmath>

#include "core/errors.h"
#include "core/io/safetensors.h"

namespace sb {

// Both directions walk models/options.h's table, so a new model option needs no change here.
nlohmann::json ModelSpec::to_json() const {
  nlohmann::json j = {{"model", model}};
  ModelOptions o = options;
  for (const auto& f : model_option_fields()) {
    if (f.text) j[f.key] = *f.text(o);
    else if (f.written_when_zero || *f.number(o) != 0) j[f.key] = *f.number(o);
  }
  if (!data.empty()) j["data"] = data;
  if (image_size > 0) j["image_size"] = image_size;  // absent when not given: older files match
  return j;
}

ModelSpec ModelSpec::from_json(const nlohmann::json& j, const std::string& where) {
  ModelSpec s;
  // nlohmann turns a float into int64 with a plain cast, undefined behaviour for 1e300 (found by
  // fuzzing), so the integer fields must be JSON integers.
  if (j.is_object())
    for (const auto& f : model_option_fields())
      if (f.number && j.contains(f.key) && j.at(f.key).is_number_float())
        fail(where, ": the model configuration's \"", f.key, "\" must be an integer, got ", j.at(f.key).dump());
  try {
    s.model = j.at("model").get<std::string>();
    for (const auto& f : model_option_fields()) {
      if (!f.required_in_json && !j.contains(f.key)) continue;  // the default stays
      if (f.text) *f.text(s.options) = j.at(f.key).get<std::string>();
      else *f.number(s.options) = j.at(f.key).get<int64_t>();
    }
    s.data = j.value("data", std::string());
    if (j.contains("image_size") && j.at("image_size").is_number_integer()) s.image_size = j.at("image_size").get<int64_t>();
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

void check_weight_values(const TensorFile& file, const std::string& source) {
  for (const auto& [key, t] : file.floats) {
    const bool variance = key.size() >= 11 && key.compare(key.size() - 11, 11, "running_var") == 0;
    const float* p = t.data();
    for (int64_t i = 0; i < t.numel(); ++i) {
      SB_CHECK(std::isfinite(p[i]), source, ": tensor '", key, "' holds ", p[i], " at flat index ", i,
               "; a usable checkpoint has finite values only (was it saved from a diverged run?)");
      SB_CHECK(!variance || p[i] >= 0, source, ": tensor '", key, "' holds the negative variance ", p[i],
               " at flat index ", i, "; a running variance cannot be negative (the file is damaged or was edited)");
    }
  }
}

void load_weights(Module& model, const std::string& path) {
  TensorFile f = load_safetensors(path);
  model.load_state_dict(f, true);
}

}  // namespace sb
