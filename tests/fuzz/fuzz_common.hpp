// SPDX-License-Identifier: Apache-2.0
// Shared by the fuzz targets: the libFuzzer entry point and the checks
// that turn a wrong result (not only a crash) into a reported failure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

namespace todd::fuzz {

inline std::string_view as_text(const uint8_t *data, size_t size)
{
    return {reinterpret_cast<const char *>(data), size};
}

/** A decoder broke one of its own promises: abort so that the fuzzer (or
 *  the replay test) reports the input. */
[[noreturn]] inline void fail(const char *what)
{
    std::fprintf(stderr, "fuzz check failed: %s\n", what);
    std::abort();
}

inline void check(bool ok, const char *what)
{
    if (!ok)
        fail(what);
}

} // namespace todd::fuzz
