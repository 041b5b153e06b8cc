// Storage allocation (aligned, counted) and the random generator behind the tensor factories.
#include "core/tensor.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>

namespace sb {

static std::atomic<int64_t> g_live_bytes{0};

int64_t live_tensor_bytes() { return g_live_bytes.load(); }

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace detail {
std::shared_ptr<void> allocate_bytes(size_t bytes) {
  // Round up so aligned_alloc's size is a multiple of the alignment; never zero bytes, so an
  // empty tensor is still "defined".
  size_t padded = ((bytes + 63) / 64) * 64;
  if (padded == 0) padded = 64;
  void* p = std::aligned_alloc(64, padded);
  if (!p) throw Error(str("tensor: out of memory allocating ", bytes, " bytes"));
  g_live_bytes += static_cast<int64_t>(padded);
  return std::shared_ptr<void>(p, [padded](void* q) {
    g_live_bytes -= static_cast<int64_t>(padded);
    std::free(q);
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
