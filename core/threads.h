// The thread count for OpenMP loops and OpenBLAS (the OpenMP build of OpenBLAS shares
// OpenMP's pool, so one setting governs both and two cores are never oversubscribed).
#pragma once

namespace sb {

// Sets the threads used from now on; n <= 0 means all cores.
void set_num_threads(int n);
int num_threads();
// SMALLBATCH_NUM_THREADS when set (and valid), else all cores. Throws on a malformed value.
int default_num_threads();

}  // namespace sb
