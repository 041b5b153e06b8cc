// .safetensors reading (validate the whole header before touching the data, since the file may
// be hostile or truncated) and atomic writing (temp file, fsync, rename, fsync the directory).
#include "core/io/safetensors.h"

#include "core/io/fileio.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>

namespace sb {

// Tensor data is copied to and from the file with memcpy, which is only right on a
// little-endian host; every platform this project targets is one.
static_assert(std::endian::native == std::endian::little,
              "safetensors.cpp assumes a little-endian host");

namespace {

using json = nlohmann::json;

enum class DType { BOOL, U8, I8, U16, I16, U32, I32, U64, I64, F16, BF16, F32, F64 };

struct DTypeInfo {
  const char* name;
  DType dtype;
  uint64_t size;
  bool floating;
};

constexpr DTypeInfo kDTypes[] = {
    {"BOOL", DType::BOOL, 1, false}, {"U8", DType::U8, 1, false},   {"I8", DType::I8, 1, false},
    {"U16", DType::U16, 2, false},   {"I16", DType::I16, 2, false}, {"U32", DType::U32, 4, false},
    {"I32", DType::I32, 4, false},   {"U64", DType::U64, 8, false}, {"I64", DType::I64, 8, false},
    {"F16", DType::F16, 2, true},    {"BF16", DType::BF16, 2, true}, {"F32", DType::F32, 4, true},
    {"F64", DType::F64, 8, true},
};

const DTypeInfo* find_dtype(const std::string& s) {
  for (const auto& d : kDTypes)
    if (s == d.name) return &d;
  return nullptr;
}

// The JSON header is attacker-controlled: print what was found without dumping megabytes.
std::string excerpt(const json& j) {
  std::string s;
  try {
    s = j.dump(-1, ' ', false, json::error_handler_t::replace);
  } catch (const std::exception&) {
    s = "<unprintable>";
  }
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

std::string shape_json(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// A header entry after validation: everything needed to convert it, all sizes checked.
struct Entry {
  std::string name;
  const DTypeInfo* dtype;
  Shape shape;
  uint64_t numel;
  uint64_t begin, end;
};

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

float half_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in float.
    float mag = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -mag : mag;
  }
  uint32_t bits;
  if (exp == 31) bits = sign | 0x7f800000u | (mant << 13);  // inf, or NaN keeping its payload
  else bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  return std::bit_cast<float>(bits);
}

float bf16_to_float(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

template <class T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

Tensor convert_float(const Entry& e, const uint8_t* p) {
  Tensor t(e.shape);
  float* out = t.data();
  int64_t n = static_cast<int64_t>(e.numel);
  switch (e.dtype->dtype) {
    case DType::F32:
      if (n) std::memcpy(out, p, static_cast<size_t>(n) * 4);
      break;
    case DType::F64:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(load<double>(p + 8 * i));
      break;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) out[i] = half_to_float(load<uint16_t>(p + 2 * i));
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_float(load<uint16_t>(p + 2 * i));
      break;
    default:
      fail("safetensors: internal error: ", e.dtype->name, " is not a floating dtype");
  }
  return t;
}

IndexTensor convert_int(const Entry& e, const uint8_t* p, const std::string& file) {
  IndexTensor t(e.shape);
  int64_t* out = t.data();
  int64_t n = static_cast<int64_t>(e.numel);
  auto each = [&](auto type_tag) {
    using T = decltype(type_tag);
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<int64_t>(load<T>(p + sizeof(T) * i));
  };
  switch (e.dtype->dtype) {
    case DType::BOOL:
      // Any non-zero byte counts as true, so the result is always 0 or 1.
      for (int64_t i = 0; i < n; ++i) out[i] = p[i] != 0;
      break;
    case DType::U8: each(uint8_t{}); break;
    case DType::I8: each(int8_t{}); break;
    case DType::U16: each(uint16_t{}); break;
    case DType::I16: each(int16_t{}); break;
    case DType::U32: each(uint32_t{}); break;
    case DType::I32: each(int32_t{}); break;
    case DType::I64: each(int64_t{}); break;
    case DType::U64:
      for (int64_t i = 0; i < n; ++i) {
        uint64_t v = load<uint64_t>(p + 8 * i);
        SB_CHECK(v <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), file,
                 ": tensor '", e.name, "': U64 value ", v, " at flat index ", i,
                 " does not fit in int64");
        out[i] = static_cast<int64_t>(v);
      }
      break;
    default:
      fail("safetensors: internal error: ", e.dtype->name, " is not an integer dtype");
  }
  return t;
}

// nlohmann keeps the last of two equal keys without a word, so a file with a tensor named
// twice would load whichever came last. This callback sees every key of every object as it is
// parsed and remembers the first duplicate.
// It also stops nesting early: a valid header is 3 levels deep, and each level of
// "[[[[..." costs a heap node, so a 100 MiB header could otherwise cost gigabytes.
struct DuplicateKeyFinder {
  static constexpr int kMaxDepth = 16;
  struct TooDeep {};
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  bool found = false;

  bool operator()(int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::array_start:
        if (depth >= kMaxDepth) throw TooDeep{};
        break;
      case json::parse_event_t::object_start:
        if (depth >= kMaxDepth) throw TooDeep{};
        open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case json::parse_event_t::key:
        if (!found && !open_objects.empty() && parsed.is_string()) {
          const auto& key = parsed.get_ref<const std::string&>();
          if (!open_objects.back().insert(key).second) {
            found = true;
            duplicate = key;
          }
        }
        break;
      default: break;
    }
    return true;
  }
};

// Checks one header entry's keys and types; sizes against the buffer come later.
Entry check_entry(const std::string& file, const std::string& name, const json& v,
                  uint64_t buffer_size) {
  auto where = [&] { return str(file, ": tensor '", name, "'"); };
  SB_CHECK(v.is_object(), where(), ": expected an object {dtype, shape, data_offsets} but found ",
           excerpt(v));
  for (auto it = v.begin(); it != v.end(); ++it)
    SB_CHECK(it.key() == "dtype" || it.key() == "shape" || it.key() == "data_offsets", where(),
             ": unexpected key '", it.key(), "' (expected only dtype, shape, data_offsets)");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    SB_CHECK(v.contains(key), where(), ": missing '", key, "'");

  Entry e;
  e.name = name;
  const json& dt = v["dtype"];
  SB_CHECK(dt.is_string(), where(), ": dtype should be a string but is ", excerpt(dt));
  const std::string& dts = dt.get_ref<const std::string&>();
  e.dtype = find_dtype(dts);
  if (!e.dtype) {
    if (dts.rfind("F8", 0) == 0)
      fail(where(), ": dtype ", dts.substr(0, 40), " (8-bit float) is not supported");
    fail(where(), ": unknown dtype '", dts.substr(0, 40),
         "' (expected one of BOOL, U8, I8, U16, I16, U32, I32, U64, I64, F16, BF16, F32, F64)");
  }

  const json& sh = v["shape"];
  SB_CHECK(sh.is_array(), where(), ": shape should be an array of integers but is ", excerpt(sh));
  std::vector<uint64_t> dims;
  uint64_t nonzero_product = 1;
  bool has_zero = false, overflow = false;
  const uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  for (const json& d : sh) {
    SB_CHECK(d.is_number_integer(), where(), ": shape ", excerpt(sh),
             " should hold non-negative integers but has ", excerpt(d));
    // nlohmann stores "-0" as a signed integer, so test the value rather than the storage.
    if (!d.is_number_unsigned() && d.get<int64_t>() < 0)
      fail(where(), ": shape ", excerpt(sh), " has a negative dimension ", d.get<int64_t>());
    uint64_t x = d.is_number_unsigned() ? d.get<uint64_t>() : 0;
    SB_CHECK(x <= kMax, where(), ": shape ", excerpt(sh), " has dimension ", x,
             " beyond the int64 range");
    dims.push_back(x);
    // The product of the non-zero dimensions must fit even when a zero makes the tensor empty:
    // shape_numel multiplies left to right, so [2^32, 2^32, 0] would overflow there.
    if (x == 0) has_zero = true;
    else if (nonzero_product > kMax / x) overflow = true;
    else nonzero_product *= x;
  }
  SB_CHECK(!overflow, where(), ": shape ", shape_json(dims),
           " has more elements than int64 can count");
  uint64_t numel = has_zero ? 0 : nonzero_product;
  e.numel = numel;
  e.shape.assign(dims.begin(), dims.end());

  const json& off = v["data_offsets"];
  SB_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() &&
               off[1].is_number_unsigned(),
           where(), ": data_offsets should be two non-negative integers [begin, end] but is ",
           excerpt(off));
  e.begin = off[0].get<uint64_t>();
  e.end = off[1].get<uint64_t>();
  SB_CHECK(e.begin <= e.end, where(), ": data_offsets [", e.begin, ",", e.end,
           "] have begin after end");

  // numel <= INT64_MAX and size <= 8, so compare by division instead of a product that could
  // overflow.
  uint64_t span = e.end - e.begin;
  bool fits = numel <= std::numeric_limits<uint64_t>::max() / e.dtype->size;
  if (!fits || numel * e.dtype->size != span) {
    std::string need = fits ? std::to_string(numel * e.dtype->size) : std::string("more than 2^64");
    fail(where(), ": shape ", shape_json(dims), " of ", e.dtype->name, " needs ", need,
         " bytes but data_offsets span ", span);
  }
  SB_CHECK(e.end <= buffer_size, where(), ": data_offsets [", e.begin, ",", e.end,
           "] run past the end of the data buffer (", buffer_size, " bytes)");
  return e;
}

}  // namespace

TensorFile parse_safetensors(const uint8_t* data, size_t size, const std::string& name,
                             const SafetensorsLimits& limits) {
  SB_CHECK(data != nullptr || size == 0, name, ": no data");
  SB_CHECK(size >= 8, name, ": file is ", size,
           " bytes, shorter than the 8-byte header length");
  uint64_t header_len = read_u64_le(data);
  uint64_t rest = size - 8;
  SB_CHECK(header_len <= rest, name, ": header length ", header_len, " runs past the end of the ",
           size, "-byte file");
  SB_CHECK(header_len <= limits.max_header_bytes, name, ": header length ", header_len,
           " exceeds the limit of ", limits.max_header_bytes, " bytes");
  const uint8_t* hbegin = data + 8;
  const uint8_t* buffer = hbegin + header_len;
  uint64_t buffer_size = rest - header_len;

  json header;
  DuplicateKeyFinder dups;
  try {
    header = json::parse(hbegin, buffer, std::ref(dups));
  } catch (const json::exception& ex) {
    fail(name, ": header is not valid JSON: ", ex.what());
  } catch (const DuplicateKeyFinder::TooDeep&) {
    fail(name, ": header nests deeper than ", DuplicateKeyFinder::kMaxDepth,
         " levels (a valid header needs 3)");
  }
  SB_CHECK(header.is_object(), name, ": header should be a JSON object but is ", excerpt(header));
  SB_CHECK(!dups.found, name, ": header names '", dups.duplicate.substr(0, 200),
           "' more than once");

  TensorFile out;
  out.source = name;
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      const json& m = it.value();
      SB_CHECK(m.is_object(), name, ": __metadata__ should be an object of strings but is ",
               excerpt(m));
      for (auto mt = m.begin(); mt != m.end(); ++mt) {
        SB_CHECK(mt.value().is_string(), name, ": __metadata__ '", mt.key(),
                 "' should be a string but is ", excerpt(mt.value()));
        out.metadata[mt.key()] = mt.value().get<std::string>();
      }
      continue;
    }
    entries.push_back(check_entry(name, it.key(), it.value(), buffer_size));
  }

  // Empty tensors own no bytes, so they cannot overlap anything.
  std::vector<const Entry*> by_offset;
  for (const auto& e : entries)
    if (e.end > e.begin) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const Entry& a = *by_offset[i - 1];
    const Entry& b = *by_offset[i];
    SB_CHECK(b.begin >= a.end, name, ": tensors '", a.name, "' [", a.begin, ",", a.end, ") and '",
             b.name, "' [", b.begin, ",", b.end, ") overlap");
  }

  // Only now, with every size known to lie inside the buffer, allocate and convert.
  for (const auto& e : entries) {
    const uint8_t* p = buffer + e.begin;
    if (e.dtype->floating) out.floats.emplace(e.name, convert_float(e, p));
    else out.ints.emplace(e.name, convert_int(e, p, name));
  }
  return out;
}

TensorFile load_safetensors(const std::string& path, const SafetensorsLimits& limits) {
  int fd = open_regular_file(path);  // a FIFO must not block the open
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail(path, ": cannot stat: ", std::strerror(errno));
  // A directory or a pipe has no meaningful size to allocate from.
  SB_CHECK(S_ISREG(st.st_mode), path, ": not a regular file");
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < bytes.size()) {
    size_t want = std::min<size_t>(bytes.size() - got, size_t(1) << 30);
    ssize_t r = ::read(fd, bytes.data() + got, want);
    if (r < 0) {
      if (errno == EINTR) continue;
      fail(path, ": read failed after ", got, " of ", bytes.size(),
           " bytes: ", std::strerror(errno));
    }
    SB_CHECK(r > 0, path, ": file ended after ", got, " of ", bytes.size(),
             " bytes (was it truncated while being read?)");
    got += static_cast<size_t>(r);
  }
  return parse_safetensors(bytes.data(), bytes.size(), path, limits);
}

// ---- writing ----

namespace {

[[noreturn]] void fail_errno(const std::string& path, const std::string& what, int err) {
  fail(path, ": ", what, ": ", std::strerror(err));
}

// Unpredictable enough that two processes saving the same path do not collide; O_EXCL catches
// the rest.
uint64_t random_suffix() {
  try {
    return std::random_device{}() % 1000000000u;
  } catch (const std::exception&) {  // no entropy source: the clock will do
    return static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) %
           1000000000u;
  }
}

// Owns the temporary file until it has been renamed into place; removes it on any failure.
class TempFile {
 public:
  TempFile(const std::string& target) : target_(target) {
    static std::atomic<uint64_t> counter{0};
    for (int attempt = 0; attempt < 16; ++attempt) {
      path_ = str(target, ".tmp-", ::getpid(), "-", random_suffix(), "-", counter++);
      fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd_ >= 0) return;
      if (errno != EEXIST) break;
    }
    int err = errno;
    fail_errno(target, "cannot create temporary file " + path_, err);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }

  void write(const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      // Linux writes at most about 2 GiB per call; stay well under it.
      size_t chunk = std::min<size_t>(n, size_t(1) << 30);
      ssize_t w = ::write(fd_, c, chunk);
      if (w < 0) {
        if (errno == EINTR) continue;
        fail_errno(target_, "write to " + path_ + " failed", errno);
      }
      if (w == 0) fail(target_, ": write to ", path_, " made no progress");
      c += w;
      n -= static_cast<size_t>(w);
    }
  }

  void commit() {
    if (::fsync(fd_) != 0) fail_errno(target_, "fsync of " + path_ + " failed", errno);
    int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail_errno(target_, "close of " + path_ + " failed", errno);
    if (::rename(path_.c_str(), target_.c_str()) != 0)
      fail_errno(target_, "cannot rename " + path_ + " over it", errno);
    committed_ = true;
  }

 private:
  std::string target_, path_;
  int fd_ = -1;
  bool committed_ = false;
};

void fsync_directory_of(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail_errno(path, "written, but cannot open its directory to fsync it", errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  // Some filesystems cannot fsync a directory at all; that is not this write's failure.
  if (rc != 0 && err != EINVAL && err != ENOTSUP)
    fail_errno(path, "written, but fsync of its directory failed", err);
}

}  // namespace

void save_safetensors(const std::string& path, const TensorFile& file) {
  struct Item {
    const std::string* name;
    const void* data;
    uint64_t bytes;
  };
  // std::map keeps each list sorted; merge so the data lies in the same order as the header.
  std::map<std::string, Item> items;
  json header = json::object();
  for (const auto& [name, t] : file.floats) {
    SB_CHECK(t.defined(), path, ": float tensor '", name, "' is undefined");
    items[name] = {&name, t.data(), static_cast<uint64_t>(t.numel()) * sizeof(float)};
    header[name] = {{"dtype", "F32"}, {"shape", t.shape()}};
  }
  for (const auto& [name, t] : file.ints) {
    SB_CHECK(t.defined(), path, ": int tensor '", name, "' is undefined");
    SB_CHECK(!items.count(name), path, ": '", name, "' is both a float and an int tensor");
    items[name] = {&name, t.data(), static_cast<uint64_t>(t.numel()) * sizeof(int64_t)};
    header[name] = {{"dtype", "I64"}, {"shape", t.shape()}};
  }
  SB_CHECK(!items.count("__metadata__"), path, ": '__metadata__' cannot name a tensor");
  uint64_t offset = 0;
  for (auto& [name, item] : items) {
    header[name]["data_offsets"] = {offset, offset + item.bytes};
    offset += item.bytes;
  }
  if (!file.metadata.empty()) header["__metadata__"] = file.metadata;

  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& ex) {  // names or metadata that are not valid UTF-8
    fail(path, ": cannot write the header: ", ex.what());
  }
  // Padding to 8 keeps the data buffer 8-byte aligned in a file that is mapped into memory.
  text.append((8 - text.size() % 8) % 8, ' ');
  uint64_t header_len = text.size();
  uint8_t len_bytes[8];
  std::memcpy(len_bytes, &header_len, 8);

  TempFile tmp(path);
  tmp.write(len_bytes, 8);
  tmp.write(text.data(), text.size());
  for (const auto& [name, item] : items)
    if (item.bytes) tmp.write(item.data, static_cast<size_t>(item.bytes));
  tmp.commit();
  fsync_directory_of(path);
}

}  // namespace sb
