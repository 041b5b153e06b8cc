// Helpers shared by the fuzz targets: a private scratch directory (in /dev/shm when there is
// one, so files written per input cost no disk I/O) and byte-exact file writing.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace sbfuzz {

// Created on first use, removed at exit; one per process (libFuzzer's -fork/-jobs children
// each get their own).
inline const std::string& scratch_dir() {
  // Never destroyed: the exit handler below still needs it after static destructors ran.
  static const std::string* dir = [] {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::path base = fs::is_directory("/dev/shm", ec) ? fs::path("/dev/shm") : fs::temp_directory_path();
    fs::path d = base / ("smallbatch-fuzz-" + std::to_string(::getpid()));
    fs::remove_all(d, ec);
    fs::create_directories(d);
    return new std::string(d.string());
  }();
  static const bool cleanup = [] {
    return std::atexit([] {
      std::error_code e;
      std::filesystem::remove_all(*dir, e);
    }) == 0;
  }();
  (void)cleanup;
  return *dir;
}

inline void write_bytes(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();  // the harness itself is broken: say so loudly
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
}

inline void write_text(const std::string& path, const std::string& s) {
  write_bytes(path, reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

}  // namespace sbfuzz
