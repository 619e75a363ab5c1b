// SPDX-License-Identifier: Apache-2.0
#include "plugin_trust.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace todd::core::detail {
namespace {

std::string mode_owner(const struct stat &st)
{
    char buf[64];
    std::snprintf(buf, sizeof buf, "owner uid %u, mode %04o",
                  static_cast<unsigned>(st.st_uid),
                  static_cast<unsigned>(st.st_mode & 07777));
    return buf;
}

bool trusted_owner(const struct stat &st, uid_t euid)
{
    return st.st_uid == 0 || st.st_uid == euid;
}

std::string bad_owner(const std::string &what, const struct stat &st,
                      uid_t euid)
{
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o",
                  static_cast<unsigned>(st.st_mode & 07777));
    return what + " is owned by uid " + std::to_string(st.st_uid) + " (mode " +
           mode + "); only root or the effective user (uid " +
           std::to_string(euid) + ") may own plugin code and its directories";
}

} // namespace

std::optional<std::string> untrusted_reason(const std::filesystem::path &file,
                                            const struct stat &st, uid_t euid)
{
    const std::string f = "file " + file.string();
    if (!trusted_owner(st, euid))
        return bad_owner(f, st, euid);
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
        return f + " is group/world-writable (" + mode_owner(st) + ")";

    // The directory path is canonical: no component is a symlink, so lstat
    // of each names the directory itself.
    bool holding = true;
    for (std::filesystem::path d = file.parent_path();; d = d.parent_path()) {
        struct stat ds {};
        const std::string what = "directory " + d.string();
        if (::lstat(d.c_str(), &ds) != 0)
            return "cannot stat " + what + ": " + std::strerror(errno);
        if (!S_ISDIR(ds.st_mode))
            return what + " is not a directory (changed while being checked)";
        if (!trusted_owner(ds, euid))
            return bad_owner(what, ds, euid);
        // The holding directory may not be writable by others even with the
        // sticky bit: they could plant a plugin-named file (or a hard link
        // to a root-owned library) that a scan or a search by name finds.
        // Above it, a sticky directory (/tmp) is safe: others cannot rename
        // or remove the entry, owned by root or us, that leads on to it.
        if ((ds.st_mode & (S_IWGRP | S_IWOTH)) != 0 &&
            (holding || (ds.st_mode & S_ISVTX) == 0))
            return what + " is group/world-writable" +
                   (holding ? "" : " without the sticky bit") + " (" +
                   mode_owner(ds) + ")";
        holding = false;
        if (d == d.root_path() || !d.has_relative_path())
            break;
    }
    return std::nullopt;
}

} // namespace todd::core::detail
