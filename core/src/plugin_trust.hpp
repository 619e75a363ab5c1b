// SPDX-License-Identifier: Apache-2.0
// Who may own plugin code (LOAD-2): only root or the effective user may be
// able to replace the file, or any directory on the way to it.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <sys/stat.h>
#include <sys/types.h>

namespace todd::core::detail {

/**
 * Why someone other than root or euid could swap the code at file (whose
 * directory path is canonical; st is fstat of the opened file); nullopt when
 * nobody else can. The file and the directory holding it: owned by root or
 * euid, not group/world-writable. Every directory above, up to /: owned by
 * root or euid, and group/world-writable only with the sticky bit.
 */
std::optional<std::string> untrusted_reason(const std::filesystem::path &file,
                                            const struct stat &st, uid_t euid);

} // namespace todd::core::detail
