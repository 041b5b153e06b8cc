// Opens a dataset from a --data SPEC: tensors:FILE (and, as they arrive, shapes, folder:DIR,
// voc:DIR, pets:DIR).
#pragma once

#include <string>

#include "datasets/dataset.h"

namespace sb {

enum class Split { Train, Val };

// `classes` bounds the labels of sources that don't define their own class count.
DatasetPtr open_dataset(const std::string& spec, Split split, int64_t classes);

}  // namespace sb
