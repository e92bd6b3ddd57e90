// Host helper of the trace builds (SPAVA_ATTN_TRACE): a trace is raw uint64 words written to the
// file named by an environment variable, read back by benchmarks/attn_trace.py and
// select_trace.py (torch-free).
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "spava/check.h"

namespace spava {

// Writes `words` to `path`; an unwritable path is an error naming the op and the variable.
inline void write_trace_file(const char* op, const char* var, const char* path,
                             const std::vector<unsigned long long>& words) {
  FILE* f = std::fopen(path, "wb");
  SPAVA_HOST_CHECK(f != nullptr, std::string(op) + ": cannot write " + var + " " + path);
  std::fwrite(words.data(), 8, words.size(), f);
  std::fclose(f);
}

}  // namespace spava
