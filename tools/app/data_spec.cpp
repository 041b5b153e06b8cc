// --data SPEC parsing: the prefix picks the source.
#include "tools/app/data_spec.h"

#include "core/errors.h"

namespace sb {

DatasetPtr open_dataset(const std::string& spec, Split, int64_t classes, const DataOptions&) {
  auto colon = spec.find(':');
  std::string kind = spec.substr(0, colon), arg = colon == std::string::npos ? "" : spec.substr(colon + 1);
  if (kind == "tensors") {
    SB_CHECK(!arg.empty(), "--data tensors: needs a file, as tensors:FILE.safetensors");
    return std::make_shared<TensorsDataset>(arg, classes);
  }
  fail("--data: unknown source '", spec, "' (known: tensors:FILE)");
}

SampleTransform make_transform(const std::string&, Split, const DataOptions&) { return {}; }

}  // namespace sb
