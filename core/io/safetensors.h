// Reading and writing .safetensors files: an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets}, "__metadata__": {string: string}}, then raw
// little-endian data. The reader validates everything before it allocates or reads; the
// writer writes a temporary file, fsyncs it, then renames it into place.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "core/state_dict.h"

namespace sb {

// What a file holds: a state_dict (its tensors, and the path it was loaded from as its source)
// plus the header's metadata. Floating dtypes (F32, F64, F16, BF16) load as float tensors;
// integer and BOOL dtypes load as int64 tensors. Floats are written as F32, ints as I64.
// A StateDict converts to a TensorFile with no metadata, and a TensorFile is a StateDict, so
// save_safetensors(path, model.state_dict()) and model.load_state_dict(load_safetensors(path))
// both work.
struct TensorFile : StateDict {
  TensorFile() = default;
  TensorFile(StateDict sd) : StateDict(std::move(sd)) {}  // NOLINT: implicit on purpose
  std::map<std::string, std::string> metadata;
};

struct SafetensorsLimits {
  uint64_t max_header_bytes = 100ull << 20;  // 100 MiB, as the reference implementation
};

TensorFile load_safetensors(const std::string& path, const SafetensorsLimits& limits = {});
// Parses an in-memory file image; `name` is used in error messages (fuzzing enters here).
TensorFile parse_safetensors(const uint8_t* data, size_t size, const std::string& name,
                             const SafetensorsLimits& limits = {});
// Atomic: writes path + ".tmp-XXXXXX", fsyncs, renames over path, fsyncs the directory.
void save_safetensors(const std::string& path, const TensorFile& file);

}  // namespace sb
