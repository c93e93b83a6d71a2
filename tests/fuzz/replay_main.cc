// A main for the fuzz targets without libFuzzer (any compiler): runs the target once on each file
// named, or on every file of each directory named, so the committed corpus is a regression test
// in the ordinary build (ctest's fuzz_corpus_test). The fuzzing itself: scripts/fuzz.sh.
#include <dirent.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

int RunFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    return 1;
  }
  std::ostringstream bytes;
  bytes << in.rdbuf();
  const std::string input = bytes.str();
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int files = 0, failed = 0;
  for (int i = 1; i < argc; ++i) {
    struct stat st;
    if (stat(argv[i], &st) != 0) {
      std::fprintf(stderr, "no such file or directory: %s\n", argv[i]);
      return 1;
    }
    std::vector<std::string> paths;
    if (S_ISDIR(st.st_mode)) {
      if (DIR* dir = opendir(argv[i])) {
        while (dirent* e = readdir(dir)) {
          if (e->d_name[0] != '.') paths.push_back(std::string(argv[i]) + "/" + e->d_name);
        }
        closedir(dir);
      }
    } else {
      paths.push_back(argv[i]);
    }
    for (const std::string& p : paths) {
      failed += RunFile(p);
      ++files;
    }
  }
  std::printf("%s: %d inputs replayed\n", argc > 0 ? argv[0] : "replay", files);
  return failed == 0 && files > 0 ? 0 : 1;
}
