// The CPU (CPUID), the BLAS in use (OpenBLAS's own getters, looked up weakly so another BLAS still
// links and runs), and the in-process correction of OpenBLAS's core choice: see platform.h.
#include "core/platform.h"

#include <dlfcn.h>
#include <strings.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <vector>

#include "core/errors.h"
#include "core/kernels/simd.h"
#include "core/kernels/stream.h"
#include "core/threads.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

// OpenBLAS's getters and its dynamic-architecture entry points (exported by every DYNAMIC_ARCH
// build since 0.2). Weak: with another BLAS, or a static OpenBLAS, they are null and smallbatch
// reports what it cannot see instead of failing to link.
extern "C" {
__attribute__((weak)) char* openblas_get_corename(void);
__attribute__((weak)) char* openblas_get_config(void);
__attribute__((weak)) void gotoblas_dynamic_init(void);
__attribute__((weak)) void gotoblas_dynamic_quit(void);
}

namespace sb {
namespace {

struct Cpu {
  std::string vendor, brand;
  int family = 0, model = 0;
  std::string simd = "sse2";
  bool bf16 = false;
};

Cpu read_cpu() {
  Cpu c;
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, cx = 0, d = 0;
  if (__get_cpuid(0, &a, &b, &cx, &d)) {
    char v[13] = {};
    std::memcpy(v, &b, 4), std::memcpy(v + 4, &d, 4), std::memcpy(v + 8, &cx, 4);
    c.vendor = v;
  }
  if (__get_cpuid(1, &a, &b, &cx, &d)) {
    const int base_family = (a >> 8) & 0xf, base_model = (a >> 4) & 0xf;
    c.family = base_family == 15 ? base_family + int((a >> 20) & 0xff) : base_family;
    c.model = base_family == 6 || base_family == 15 ? base_model + int(((a >> 16) & 0xf) << 4) : base_model;
  }
  if (__get_cpuid(0x80000000, &a, &b, &cx, &d) && a >= 0x80000004) {
    char brand[49] = {};
    for (unsigned leaf = 0; leaf < 3; ++leaf) {
      unsigned r[4];
      __get_cpuid(0x80000002 + leaf, &r[0], &r[1], &r[2], &r[3]);
      std::memcpy(brand + 16 * leaf, r, 16);
    }
    c.brand = brand;
    const size_t first = c.brand.find_first_not_of(' '), last = c.brand.find_last_not_of(' ');
    c.brand = first == std::string::npos ? "" : c.brand.substr(first, last - first + 1);
  }
  // libgcc's checks include the OS's XCR0 bits (the OS must save the wider registers).
  __builtin_cpu_init();
  // The AVX-512 subsets OpenBLAS's SkylakeX kernels are built for.
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512cd");
  if (avx512) c.simd = "avx512";
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) c.simd = "avx2";
  else if (__builtin_cpu_supports("avx")) c.simd = "avx";
  c.bf16 = avx512 && __builtin_cpu_supports("avx512bf16");
#else
  c.simd = "none";
#endif
  return c;
}

const Cpu& cpu() {
  static const Cpu c = read_cpu();
  return c;
}

// The vector instructions an OpenBLAS x86 core's kernels use: 3 AVX-512, 2 AVX2, 1 AVX, 0 older.
int core_rank(const std::string& core) {
  for (const char* name : {"SkylakeX", "Cooperlake", "SapphireRapids"})
    if (strcasecmp(core.c_str(), name) == 0) return 3;
  for (const char* name : {"Haswell", "Zen", "Excavator"})
    if (strcasecmp(core.c_str(), name) == 0) return 2;
  for (const char* name : {"Sandybridge", "Bulldozer", "Piledriver", "Steamroller"})
    if (strcasecmp(core.c_str(), name) == 0) return 1;
  return 0;
}

// OpenBLAS has a core when its table `gotoblas_<NAME>` is exported.
bool core_available(const char* name) {
  std::string symbol = "gotoblas_";
  for (const char* p = name; *p; ++p) symbol += static_cast<char>(std::toupper(static_cast<unsigned char>(*p)));
  return dlsym(RTLD_DEFAULT, symbol.c_str()) != nullptr;
}

std::string current_core() { return openblas_get_corename ? openblas_get_corename() : "unknown"; }

BlasInfo check_blas() {
  BlasInfo info;
  if (!openblas_get_corename || !openblas_get_config) {
    info.library = "unknown BLAS (not OpenBLAS: its kernels cannot be named)";
    info.core = "unknown";
    info.origin = "chosen by the BLAS library";
    return info;
  }
  const std::string found = current_core();
  const char* user = std::getenv("OPENBLAS_CORETYPE");
  if (user && *user) {
    info.origin = str("OPENBLAS_CORETYPE=", user);
    // OpenBLAS falls back to its own detection for a name it does not know.
    if (strcasecmp(user, found.c_str()) != 0)
      info.warning = str("OPENBLAS_CORETYPE='", user, "' names no core this OpenBLAS has; it ignored it and runs its '",
                         found, "' kernels");
  } else {
    info.origin = "detected by OpenBLAS";
    const std::string target = detail::blas_core_to_switch_to(found, cpu().simd, cpu().bf16,
                                                              cpu().vendor == "AuthenticAMD", core_available);
    if (!target.empty()) {
      if (detail::blas_switch_core(target.c_str())) {
        info.origin = str("switched by smallbatch from ", found, ", which OpenBLAS picked for this unrecognized CPU");
      } else {
        info.warning = str("OpenBLAS runs its generic '", found, "' kernels on this CPU (", cpu().vendor, " family ",
                           cpu().family, " model ", cpu().model, ", ", cpu().simd,
                           "), several times slower than its '", target,
                           "' kernels, and smallbatch could not switch them in-process. Start the program with "
                           "OPENBLAS_CORETYPE=", target, " in the environment (export OPENBLAS_CORETYPE=", target, ")");
      }
    }
  }
  info.library = openblas_get_config();
  info.core = current_core();
  return info;
}

std::once_flag g_blas_once;
std::optional<BlasInfo> g_blas;

// At load time, before main() and before any thread of the program's could call OpenBLAS.
[[maybe_unused]] const bool g_checked_at_load = (ensure_blas_kernels(), true);

}  // namespace

namespace detail {

std::string blas_core_to_switch_to(const std::string& core, const std::string& cpu_simd, bool bf16, bool amd,
                                   bool (*available)(const char* name)) {
  // Only a core without AVX2 on a CPU with it is a fallback; OpenBLAS may pick Haswell kernels on
  // some AVX-512 CPUs on purpose, and that choice is its to make.
  if (core_rank(core) >= 2) return "";
  std::vector<const char*> candidates;
  if (cpu_simd == "avx512") {
    if (bf16) candidates.push_back("Cooperlake");
    candidates.push_back("SkylakeX");
  }
  if (cpu_simd == "avx512" || cpu_simd == "avx2") {
    if (amd) candidates.push_back("Zen");
    candidates.push_back("Haswell");
  }
  for (const char* name : candidates)
    if (available(name)) return name;
  return "";
}

bool blas_switch_core(const char* name) {
  if (!gotoblas_dynamic_init || !gotoblas_dynamic_quit || !openblas_get_corename) return false;
  const char* old = std::getenv("OPENBLAS_CORETYPE");
  const std::optional<std::string> saved = old ? std::optional<std::string>(old) : std::nullopt;
  setenv("OPENBLAS_CORETYPE", name, 1);
  // OpenBLAS's own selection, as at its load: forget the table, choose again (reading the
  // variable), and run the chosen core's init, which sets its blocking parameters.
  gotoblas_dynamic_quit();
  gotoblas_dynamic_init();
  if (saved) setenv("OPENBLAS_CORETYPE", saved->c_str(), 1);
  else unsetenv("OPENBLAS_CORETYPE");
  return strcasecmp(current_core().c_str(), name) == 0;
}

}  // namespace detail

const BlasInfo& ensure_blas_kernels() {
  std::call_once(g_blas_once, [] {
    g_blas = check_blas();
    if (!g_blas->warning.empty()) std::fprintf(stderr, "smallbatch: warning: %s\n", g_blas->warning.c_str());
  });
  return *g_blas;
}

PlatformInfo platform_info() {
  PlatformInfo p;
  const Cpu& c = cpu();
  p.cpu = c.brand.empty() ? "unknown CPU" : c.brand;
  if (!c.vendor.empty()) p.cpu += str(" (", c.vendor, " family ", c.family, " model ", c.model, ")");
  p.cpu_simd = c.simd;
  p.blas = ensure_blas_kernels();
  p.kernels = kernels::simd_name(kernels::simd_level());
  p.conv3x3 = kernels::winograd_enabled() ? "winograd" : "direct";
  p.threads = num_threads();
  return p;
}

void check_environment() {
  kernels::simd_level();
  kernels::winograd_enabled();
  default_num_threads();
  kernels::streaming_min_bytes();
}

std::string platform_summary() {
  const PlatformInfo p = platform_info();
  return str("CPU ", p.cpu, ", ", p.cpu_simd, "; BLAS ", p.blas.core, " kernels (", p.blas.origin,
             "); smallbatch kernels ", p.kernels, ", 3x3 ", p.conv3x3, "; ", p.threads, p.threads == 1 ? " thread" : " threads");
}

}  // namespace sb
