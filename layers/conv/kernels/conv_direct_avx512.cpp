// The direct-convolution microkernels built for AVX-512F (16 floats a vector); compiled with
// -mavx512f -mavx2 -mfma (CMakeLists.txt), run only when simd_level() is avx512.
#include <cstdint>

#include "layers/conv/kernels/conv_direct.h"

namespace {
#define SB_CONV_DIRECT_IMPL_INCLUDED_IN_ANON_NAMESPACE
#include "layers/conv/kernels/conv_direct_impl.h"
// Forward: 8 output channels x 3 vectors = 24 of the 32 zmm registers; 3x3 weight gradient 2 x 4 x 3
// or 1 x 8 x 3 (vectors of output channels x input channels x taps) = 24.
constexpr sb::kernels::DirectKernels kV16 = make_table<16, 8, 3, 8, 4, 8, 3>();
}  // namespace

const sb::kernels::DirectKernels& sb::kernels::direct_kernels_avx512_v16() { return kV16; }
