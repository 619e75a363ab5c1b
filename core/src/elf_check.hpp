// SPDX-License-Identifier: Apache-2.0
// Is a file a complete ELF shared object for this host? Checked by reading
// it (pread), before the dynamic loader maps it: ld.so trusts the headers and
// touches pages past the end of a truncated file (SIGBUS) or segments the
// headers place outside the image (SIGSEGV). Part of LOAD-3.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace todd::core::detail {

/** Why the file open on fd, size bytes long, is not a complete ELF shared
 *  object for this host; nullopt when it is. Reads only, maps nothing. */
std::optional<std::string> elf_shared_object_problem(int fd, uint64_t size);

} // namespace todd::core::detail
