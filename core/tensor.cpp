// Storage allocation (aligned, counted, cached for reuse) and the random generator behind the tensor factories.
#include "core/tensor.h"

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

namespace sb {

static std::atomic<int64_t> g_live_bytes{0};

int64_t live_tensor_bytes() { return g_live_bytes.load(); }

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(n, d, &n)) throw Error(str("tensor: shape ", shape, " has more elements than fit in 64 bits"));
  return n;
}

namespace {

// A training step allocates the same tensor sizes every time, so freed blocks are kept in
// per-size free lists and handed out again: a steady-state step then takes no memory from the
// OS, and no page is faulted in and zeroed twice. Sizes are rounded to classes (64 bytes below
// 4 KiB, then eighths of a power of two: at most 12.5% slack) so near sizes share blocks.
class BlockCache {
 public:
  static BlockCache& get() {
    static BlockCache* c = new BlockCache;  // never destroyed: tensors may die after main()
    return *c;
  }

  static size_t size_class(size_t bytes) {
    if (bytes <= 64) return 64;
    if (bytes <= 4096) return (bytes + 63) / 64 * 64;
    const size_t p = size_t(1) << (63 - __builtin_clzll(bytes - 1));  // p < bytes <= 2p, p >= 4096
    const size_t step = p / 8;
    return (bytes + step - 1) / step * step;
  }

  void* take(size_t cls) {
    if (limit_ > 0) {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(cls);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_ -= cls;
        return p;
      }
    }
    void* p = std::aligned_alloc(64, cls);
    if (!p) {  // give the cache back to the OS and try once more
      trim();
      p = std::aligned_alloc(64, cls);
    }
    return p;
  }

  void give(void* p, size_t cls) {
    if (limit_ > 0) {
      std::lock_guard<std::mutex> lock(mu_);
      if (cached_ + cls <= limit_) {
        free_[cls].push_back(p);
        cached_ += cls;
        return;
      }
    }
    std::free(p);
  }

  void trim() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [cls, blocks] : free_)
      for (void* p : blocks) std::free(p);
    free_.clear();
    cached_ = 0;
  }

 private:
  BlockCache() {
    // SMALLBATCH_CACHE_MB caps the bytes kept for reuse (0 turns the cache off). Validated in every
    // build, so a bad value is the same error with and without sanitizers.
    if (const char* env = std::getenv("SMALLBATCH_CACHE_MB"); env && *env) limit_ = cache_mb(env) << 20;
#if defined(__SANITIZE_ADDRESS__)
    limit_ = 0;  // reuse would hide use-after-free from AddressSanitizer
#endif
  }

  // The MiB that a SMALLBATCH_CACHE_MB value asks for: digits only, no more than size_t holds in bytes.
  static size_t cache_mb(const char* env) {
    bool digits = true;
    for (const char* p = env; *p; ++p) digits = digits && *p >= '0' && *p <= '9';
    errno = 0;
    const unsigned long long mb = digits ? std::strtoull(env, nullptr, 10) : 0;
    SB_CHECK(digits && errno == 0 && mb <= (SIZE_MAX >> 20), "SMALLBATCH_CACHE_MB: expected a whole number of "
             "MiB, 0 or more (0 turns the cache off), but got '", shown(env), "'");
    return static_cast<size_t>(mb);
  }

  std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0;
  size_t limit_ = size_t(2) << 30;
};

}  // namespace

namespace detail {
std::shared_ptr<void> allocate_bytes(size_t bytes) {
  // Never zero bytes, so an empty tensor is still "defined".
  const size_t cls = BlockCache::size_class(bytes);
  void* p = BlockCache::get().take(cls);
  if (!p) throw Error(str("tensor: out of memory allocating ", bytes, " bytes"));
  g_live_bytes += static_cast<int64_t>(cls);
  return std::shared_ptr<void>(p, [cls](void* q) {
    g_live_bytes -= static_cast<int64_t>(cls);
    BlockCache::get().give(q, cls);
  });
}
}  // namespace detail

Shape infer_reshape(const Shape& from, Shape to, const char* op) {
  int64_t known = 1, infer_at = -1;
  for (size_t i = 0; i < to.size(); ++i) {
    if (to[i] == -1) {
      SB_CHECK(infer_at < 0, op, ": only one dimension can be -1, got ", to);
      infer_at = static_cast<int64_t>(i);
    } else {
      SB_CHECK(to[i] >= 0, op, ": invalid dimension ", to[i], " in shape ", to);
      known *= to[i];
    }
  }
  int64_t n = shape_numel(from);
  if (infer_at >= 0) {
    SB_CHECK(known != 0 && n % known == 0, op, ": cannot reshape ", from, " into ", to);
    to[infer_at] = n / known;
  }
  SB_CHECK(shape_numel(to) == n, op, ": cannot reshape ", from, " (", n, " values) into ", to);
  return to;
}

// splitmix64: expands one 64-bit seed into well-mixed state words.
static uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

Generator::Generator(uint64_t seed) {
  for (auto& w : s_) w = splitmix64(seed);
}

void Generator::set_state(const State& st) {
  for (int i = 0; i < 4; ++i) s_[i] = st.s[i];
  spare_ = st.spare;
  has_spare_ = st.has_spare;
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t Generator::next_u64() {  // xoshiro256**
  uint64_t result = rotl(s_[1] * 5, 7) * 9;
  uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

float Generator::uniform() {
  // 24 random bits -> exactly representable floats in [0, 1).
  return static_cast<float>(next_u64() >> 40) * (1.0f / 16777216.0f);
}

float Generator::uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }

float Generator::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  // Box-Muller in double; u1 in (0, 1] keeps log finite.
  double u1 = (static_cast<double>(next_u64() >> 11) + 1.0) * (1.0 / 9007199254740992.0);
  double u2 = static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0);
  double r = std::sqrt(-2.0 * std::log(u1));
  spare_ = static_cast<float>(r * std::sin(2.0 * M_PI * u2));
  has_spare_ = true;
  return static_cast<float>(r * std::cos(2.0 * M_PI * u2));
}

Generator& default_generator() {
  static Generator g(0);
  return g;
}

void manual_seed(uint64_t seed) { default_generator() = Generator(seed); }

uint64_t Generator::below(uint64_t n) {
  SB_CHECK(n > 0, "Generator::below: n must be positive");
  // Rejection sampling removes modulo bias.
  uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t x;
  do x = next_u64();
  while (x >= limit);
  return x % n;
}

}  // namespace sb
