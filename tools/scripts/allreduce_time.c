// The time of one in-place MPI_Iallreduce of unet-s's gradient (117,429 floats) between ranks that
// have just met at a barrier: the communication alone, without the waiting that train's figure includes.
// mpicc -O2 tools/scripts/allreduce_time.c -o /tmp/ar && mpirun -np 2 --bind-to none /tmp/ar
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int n = 117429, rank; MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  float* a = calloc(n, 4);
  double best = 1e9, total = 0; int reps = 200;
  for (int i = 0; i < reps; ++i) {
    MPI_Barrier(MPI_COMM_WORLD);
    double t = MPI_Wtime();
    MPI_Request r; MPI_Iallreduce(MPI_IN_PLACE, a, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &r); MPI_Wait(&r, MPI_STATUS_IGNORE);
    t = MPI_Wtime() - t; total += t; if (t < best) best = t;
  }
  if (rank == 0) printf("470 KB in-place Iallreduce after a barrier: best %.3f ms, mean %.3f ms\n", best * 1e3, total / reps * 1e3);
  MPI_Finalize();
}
