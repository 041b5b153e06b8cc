// Joining an MPI launch (`mpirun -np R smallbatch train ...`, `srun ...`): the only door to MPI.
// A process started without mpirun or srun never initializes MPI and pays nothing for it.
#pragma once

#include <string>

namespace sb {

// True when the environment says mpirun (Open MPI: OMPI_COMM_WORLD_SIZE), Slurm or another PMI
// launcher (PMI_SIZE, PMIX_RANK) started this process.
bool launched_by_mpi();
// The threads a command takes when --threads is not given: SMALLBATCH_NUM_THREADS when set,
// else all cores, shared out among the ranks on this machine under mpirun (Open MPI's
// OMPI_COMM_WORLD_LOCAL_SIZE, MPICH's MPI_LOCALNRANKS), at least 1: all cores for each of R
// ranks would oversubscribe the machine R times.
int default_rank_threads();
// Whether this build has MPI (CMake found it: SMALLBATCH_HAVE_MPI).
bool built_with_mpi();

// When launched_by_mpi(): initializes MPI, makes world() the MPI communicator (MPI_COMM_WORLD)
// and finalizes MPI at exit; ranks other than 0 send their standard output to /dev/null (rank 0
// reports for the job; errors still reach stderr). Returns the number of ranks (1 when not
// launched). Throws naming `command` when launched by MPI but built without it: each process
// would otherwise train alone, unaware of the others.
int join_mpi_launch(const std::string& command);

}  // namespace sb
