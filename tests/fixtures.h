// Loads the PyTorch-made fixture files in tests/fixtures (written by tools/scripts/make_fixtures.py).
#pragma once

#include <string>

#include "core/io/safetensors.h"

namespace sbtest {

inline sb::TensorFile load_fixture(const std::string& name) {
  return sb::load_safetensors(std::string(SB_FIXTURES_DIR) + "/" + name + ".safetensors");
}

}  // namespace sbtest
