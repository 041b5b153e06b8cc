// A state_dict: named float and int64 tensors (a module's parameters and buffers, an
// optimizer's state), apart from any file format. core/io/safetensors.h reads and writes them.
#pragma once

#include <map>
#include <string>

#include "core/errors.h"
#include "core/tensor.h"

namespace sb {

// Float parameters and buffers in `floats`, int64 buffers (num_batches_tracked, Adam's step) in
// `ints`; ordered by name, so a file written from it lists its tensors in a stable order. Names
// are unique across both maps.
struct StateDict {
  std::map<std::string, Tensor> floats;
  std::map<std::string, IndexTensor> ints;
  std::string source;  // where it came from (a file's path), for error messages; may be empty

  bool has_float(const std::string& name) const { return floats.count(name) > 0; }
  bool has_int(const std::string& name) const { return ints.count(name) > 0; }
  // Throw an sb::Error naming the source (when known) and the tensor if it is missing.
  const Tensor& get_float(const std::string& name) const {
    auto it = floats.find(name);
    if (it != floats.end()) return it->second;
    fail(where(), has_int(name) ? ": tensor '" + name + "' is an integer tensor, but a float tensor was asked for"
                                : ": no tensor named '" + name + "'");
  }
  const IndexTensor& get_int(const std::string& name) const {
    auto it = ints.find(name);
    if (it != ints.end()) return it->second;
    fail(where(), has_float(name) ? ": tensor '" + name + "' is a float tensor, but an integer tensor was asked for"
                                  : ": no tensor named '" + name + "'");
  }

 private:
  // State dicts are most often read from safetensors files, hence the word when none is named.
  std::string where() const { return source.empty() ? "safetensors" : source; }
};

}  // namespace sb
