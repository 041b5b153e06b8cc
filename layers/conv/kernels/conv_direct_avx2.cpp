// The direct-convolution microkernels built for AVX2 + FMA (8 floats a vector, and 4 for narrow
// planes); compiled with -mavx2 -mfma (CMakeLists.txt), run when simd_level() is avx2 or above.
#include <cstdint>

#include "layers/conv/kernels/conv_direct.h"

namespace {
#define SB_CONV_DIRECT_IMPL_INCLUDED_IN_ANON_NAMESPACE
#include "layers/conv/kernels/conv_direct_impl.h"
// 4 output channels x 3 vectors = 12 of the 16 ymm registers; 3x3 weight gradient 2 x 2 x 3 or 1 x 4 x 3.
constexpr sb::kernels::DirectKernels kV8 = make_table<8, 4, 3, 4, 2, 4, 3>();
constexpr sb::kernels::DirectKernels kV4 = make_table<4, 4, 3, 4, 2, 4, 3>();
}  // namespace

const sb::kernels::DirectKernels& sb::kernels::direct_kernels_avx2_v8() { return kV8; }
const sb::kernels::DirectKernels& sb::kernels::direct_kernels_avx2_v4() { return kV4; }
