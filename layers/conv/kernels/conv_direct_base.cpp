// The direct-convolution microkernels for the baseline ISA (SSE2 on x86-64: 4 floats a vector;
// GCC lowers the vectors to whatever the target has elsewhere). No extra compiler flags.
#include <cstdint>

#include "layers/conv/kernels/conv_direct.h"

namespace {
#define SB_CONV_DIRECT_IMPL_INCLUDED_IN_ANON_NAMESPACE
#include "layers/conv/kernels/conv_direct_impl.h"
// 4 output channels x 3 vectors = 12 of the 16 xmm registers; 3x3 weight gradient 2 x 2 x 3 or 1 x 4 x 3.
constexpr sb::kernels::DirectKernels kV4 = make_table<4, 4, 3, 4, 2, 4, 3>();
}  // namespace

const sb::kernels::DirectKernels& sb::kernels::direct_kernels_base_v4() { return kV4; }
