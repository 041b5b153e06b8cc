// The platform description shared by doctor, bench, train, compare and the report.
#include "tools/app/provenance.h"

#include <cstdlib>
#include <ctime>

#include "core/errors.h"
#include "core/platform.h"

namespace sb {

static std::string g_command_line;

void set_command_line(int argc, char** argv) {
  g_command_line.clear();
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool plain = !arg.empty() && arg.find_first_of(" \t\n'\"\\$`*?[]{}()<>|&;#~") == std::string::npos;
    std::string quoted = "'";
    for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    g_command_line += (i ? " " : "") + (plain ? arg : quoted + "'");
  }
}

double load_average_1min() {
  double load[1];
  return getloadavg(load, 1) == 1 ? load[0] : -1.0;
}

nlohmann::json platform_json() {
  const PlatformInfo p = platform_info();
  nlohmann::json j;
  if (!g_command_line.empty()) j["command"] = g_command_line;
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S UTC", &utc);
  j["date_utc"] = date;
  j["version"] = SMALLBATCH_VERSION;
  j["cpu"] = p.cpu;
  j["cpu_simd"] = p.cpu_simd;
  j["blas"] = p.blas.library;
  j["blas_core"] = p.blas.core;
  j["blas_core_origin"] = p.blas.origin;
  if (!p.blas.warning.empty()) j["blas_warning"] = p.blas.warning;
  j["kernels"] = p.kernels;
  j["conv3x3"] = p.conv3x3;
  j["threads"] = p.threads;
  const char* wait = std::getenv("OMP_WAIT_POLICY");
  j["omp_wait_policy"] = wait && *wait ? wait : "default";
  double load[3];
  if (getloadavg(load, 3) == 3) j["load_average"] = {load[0], load[1], load[2]};
  return j;
}

std::string platform_lines(const nlohmann::json& j, const std::string& indent) {
  std::string s;
  s += str(indent, "CPU        ", j["cpu"].get<std::string>(), "; ", j["cpu_simd"].get<std::string>(), "\n");
  s += str(indent, "BLAS       ", j["blas"].get<std::string>(), "\n");
  s += str(indent, "BLAS core  ", j["blas_core"].get<std::string>(), " (", j["blas_core_origin"].get<std::string>(),
           ")\n");
  s += str(indent, "kernels    ", j["kernels"].get<std::string>(), " (smallbatch's own); 3x3 convolutions ",
           j.value("conv3x3", std::string("direct")) == "winograd" ? "by Winograd F(4, 3) where >= 8 channels" : "direct",
           "\n");
  s += str(indent, "threads    ", j["threads"].get<int>(), " (OMP_WAIT_POLICY ", j["omp_wait_policy"].get<std::string>(),
           ")\n");
  if (j.contains("load_average")) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.2f %.2f %.2f", j["load_average"][0].get<double>(),
                  j["load_average"][1].get<double>(), j["load_average"][2].get<double>());
    s += str(indent, "load       ", buf, " (1, 5, 15 min)\n");
  }
  return s;
}

}  // namespace sb
