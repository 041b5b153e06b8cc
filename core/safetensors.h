// Reading and writing .safetensors files: an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets}, "__metadata__": {string: string}}, then raw
// little-endian data. The reader validates everything before it allocates or reads; the
// writer writes a temporary file, fsyncs it, then renames it into place.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "core/tensor.h"

namespace sb {

// What a file holds. Floating dtypes (F32, F64, F16, BF16) load as float tensors; integer and
// BOOL dtypes load as int64 tensors. Names are unique across both maps.
struct TensorFile {
  std::map<std::string, Tensor> floats;       // written as F32
  std::map<std::string, IndexTensor> ints;    // written as I64
  std::map<std::string, std::string> metadata;

  bool has_float(const std::string& name) const { return floats.count(name) > 0; }
  bool has_int(const std::string& name) const { return ints.count(name) > 0; }
  // Throw an sb::Error naming the file (when known) and the tensor if it is missing.
  const Tensor& get_float(const std::string& name) const;
  const IndexTensor& get_int(const std::string& name) const;
  std::string source;  // the path it was loaded from, for error messages
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
