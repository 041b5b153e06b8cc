// What a result was measured on, for every output a person compares across machines: the CPU,
// the BLAS and its kernels, smallbatch's own kernels, the threads and the load.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace sb {

// Records the command line (main() calls it) for platform_json's "command".
void set_command_line(int argc, char** argv);

// {"command", "date_utc", "version", "cpu", "cpu_simd", "blas", "blas_core", "blas_core_origin", "kernels", "conv3x3", "threads",
//  "omp_wait_policy", "load_average": [1, 5, 15 min]}
nlohmann::json platform_json();
// platform_json()'s object `j` as aligned "name  value" lines, each starting with `indent`.
std::string platform_lines(const nlohmann::json& j, const std::string& indent = "");
// The 1-minute load average, or -1 where the system does not say.
double load_average_1min();

}  // namespace sb
