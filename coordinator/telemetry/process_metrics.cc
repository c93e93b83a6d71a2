#include "coordinator/telemetry/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>

namespace moe {
namespace {

// /proc/self/stat after the command name (which may hold spaces): fields 3 onwards.
bool ReadStat(double* cpu_seconds, double* start_seconds_since_boot, double* virtual_bytes) {
  std::ifstream in("/proc/self/stat");
  std::string line;
  if (!std::getline(in, line)) return false;
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream fields(line.substr(close + 2));
  std::string f;
  double utime = 0, stime = 0, start = 0, vsize = 0;
  for (int i = 3; fields >> f; ++i) {
    if (i == 14) utime = std::stod(f);
    if (i == 15) stime = std::stod(f);
    if (i == 22) start = std::stod(f);
    if (i == 23) vsize = std::stod(f);
  }
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  *cpu_seconds = (utime + stime) / ticks;
  *start_seconds_since_boot = start / ticks;
  *virtual_bytes = vsize;
  return true;
}

double BootTime() {
  std::ifstream in("/proc/stat");
  std::string key;
  double value = 0;
  while (in >> key) {
    if (key == "btime" && (in >> value)) return value;
  }
  return 0;
}

}  // namespace

void RenderProcessMetrics(const std::string& version, PrometheusText* out) {
  double cpu = 0, start = 0, virtual_bytes = 0;
  if (ReadStat(&cpu, &start, &virtual_bytes)) {
    out->Family("process_cpu_seconds_total", "counter",
                "User and system CPU time spent, in seconds.");
    out->Sample("process_cpu_seconds_total", cpu);
    out->Family("process_start_time_seconds", "gauge",
                "Start time of the process since the epoch, in seconds.");
    out->Sample("process_start_time_seconds", BootTime() + start);
    out->Family("process_virtual_memory_bytes", "gauge", "Virtual memory size, in bytes.");
    out->Sample("process_virtual_memory_bytes", virtual_bytes);
  }
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) == 2) {
      out->Family("process_resident_memory_bytes", "gauge", "Resident memory size, in bytes.");
      out->Sample("process_resident_memory_bytes",
                  static_cast<double>(resident) * sysconf(_SC_PAGESIZE));
    }
    std::fclose(f);
  }
  if (DIR* fds = opendir("/proc/self/fd")) {
    int n = 0;
    while (readdir(fds) != nullptr) ++n;
    closedir(fds);
    out->Family("process_open_fds", "gauge", "Open file descriptors.");
    out->Sample("process_open_fds", n - 3);  // ".", ".." and the directory's own
  }
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    out->Family("process_max_fds", "gauge", "The limit on open file descriptors.");
    out->Sample("process_max_fds", static_cast<double>(limit.rlim_cur));
  }
  out->Family("moe_build_info", "gauge", "The running build: 1, labelled with its version.");
  out->Sample("moe_build_info", {{"version", version}}, 1);
}

}  // namespace moe
