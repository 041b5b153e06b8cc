# Finding smallbatch's dependencies, in one place: Debian packages, found here, never vendored.
# Included by CMakeLists.txt and by fuzz/CMakeLists.txt (which then adds the root project as a
# subdirectory; the guard makes the root's include a no-op there, as the fuzz project's scope,
# with these results, is inherited). What is looked for follows the options set before the include:
#   SMALLBATCH_OPENMP       OpenMP (OFF: the fuzz build, serial)
#   SMALLBATCH_BUILD_TOOLS  CLI11, for the `smallbatch` command
#   SMALLBATCH_BUILD_TESTS  doctest, and its doctest_discover_tests()
# Always: nlohmann_json, the OpenMP build of OpenBLAS (OPENBLAS_INCLUDE_DIR, OPENBLAS_LIBRARY,
# OPENBLAS_LIBRARY_DIR) and stb (STB_INCLUDE_DIR; its implementation is compiled in core/io/image.cpp).
include_guard(GLOBAL)

if(NOT DEFINED SMALLBATCH_OPENMP OR SMALLBATCH_OPENMP)
  find_package(OpenMP REQUIRED)
endif()
find_package(nlohmann_json 3 REQUIRED)
if(NOT DEFINED SMALLBATCH_BUILD_TOOLS OR SMALLBATCH_BUILD_TOOLS)
  find_package(CLI11 REQUIRED)
endif()
if(NOT DEFINED SMALLBATCH_BUILD_TESTS OR SMALLBATCH_BUILD_TESTS)
  find_package(doctest REQUIRED)
  include(doctest)
endif()

# The OpenMP build of OpenBLAS (libopenblas-openmp-dev) so that OpenBLAS and our loops share one
# OpenMP thread pool. Debian installs it beside the pthread build, so look in its own folder.
find_path(OPENBLAS_INCLUDE_DIR cblas.h
  PATHS /usr/include/x86_64-linux-gnu/openblas-openmp /usr/include/aarch64-linux-gnu/openblas-openmp
  NO_DEFAULT_PATH)
find_library(OPENBLAS_LIBRARY openblas
  PATHS /usr/lib/x86_64-linux-gnu/openblas-openmp /usr/lib/aarch64-linux-gnu/openblas-openmp
  NO_DEFAULT_PATH)
if(NOT OPENBLAS_INCLUDE_DIR OR NOT OPENBLAS_LIBRARY)
  message(FATAL_ERROR "OpenBLAS (OpenMP build) not found: apt-get install libopenblas-openmp-dev")
endif()
get_filename_component(OPENBLAS_LIBRARY_DIR "${OPENBLAS_LIBRARY}" DIRECTORY)

find_path(STB_INCLUDE_DIR stb_image.h PATHS /usr/include/stb)
if(NOT STB_INCLUDE_DIR)
  message(FATAL_ERROR "stb not found: apt-get install libstb-dev")
endif()

# MPI (Debian: openmpi-bin, libopenmpi-dev), optional: with it, `mpirun -np R smallbatch train`
# trains one model on R processes. Only the C bindings: tools/app/mpi_launch.cpp is the one file
# that includes <mpi.h>. Without it the build is complete and a launch under mpirun is refused.
# Only for the command line and its app library (the fuzz build has neither).
if((NOT DEFINED SMALLBATCH_MPI OR SMALLBATCH_MPI) AND (NOT DEFINED SMALLBATCH_BUILD_TOOLS OR SMALLBATCH_BUILD_TOOLS))
  enable_language(C)  # FindMPI checks the C bindings with the C compiler
  find_package(MPI COMPONENTS C)
endif()
