// One flag spelling for every program: "--max-tokens=3" is read as abseil's
// "--max_tokens=3". Only the name is rewritten; a value that itself starts with "--" must be
// attached with '='.
#pragma once

namespace moe::cli {

inline void AcceptDashedFlagNames(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    char* a = argv[i];
    if (a[0] != '-' || a[1] != '-') continue;
    for (char* p = a + 2; *p != '\0' && *p != '='; ++p) {
      if (*p == '-') *p = '_';
    }
  }
}

}  // namespace moe::cli
