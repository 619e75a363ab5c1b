// SPDX-License-Identifier: Apache-2.0
// SHA-256 of files and of asset directories (the maps agents advertise and
// the server compares).
//
// Error convention of the core's system helpers (hash.hpp, netif.hpp,
// cidr.hpp, dir_watch.hpp), the core's own: a call that fails throws a
// std::runtime_error whose what() names the input and the reason:
// std::system_error when the operating system refused (its code() is the
// errno), std::invalid_argument for malformed text. std::nullopt means only
// "there is none", never a failure. A call made of many independent steps
// (hash every file of a directory) does not stop at one that fails: it
// returns those failures, one line each, next to what it did.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace todd::core {

/**
 * Lower-case hex SHA-256 of the file's bytes (64 characters). Throws
 * std::system_error naming the path when it cannot be opened or read,
 * std::runtime_error when OpenSSL cannot compute the digest.
 */
std::string sha256_file(const std::string &path);

/** Which files hash_directory takes. */
struct HashDirOptions {
    /** Walk subdirectories too; each file is keyed by its base name (as
     *  Go's filepath.Walk, which the agent follows). Off: the top level. */
    bool recursive = false;
    /** Take no symbolic link: neither a linked file nor a directory that
     *  is itself a link (the server, which never serves links). Off:
     *  links are followed. */
    bool no_symlinks = false;
    /** A file whose base name this returns true for is left out (dotfiles,
     *  download temporaries). Empty: none. */
    std::function<bool(const std::string &name)> skip;
};

/** What hash_directory found. */
struct DirHashes {
    /** File base name -> sha256_file of it. */
    std::map<std::string, std::string> hashes;
    /** One line per file that could not be hashed or entry refused, naming
     *  it and why; the caller logs them. */
    std::vector<std::string> problems;
};

/**
 * Hash every regular file of dir that o admits. A missing or unreadable
 * directory gives an empty map (a missing one with no problem line: asset
 * directories may not exist yet). Never throws for a file or a directory.
 */
DirHashes hash_directory(const std::string &dir, const HashDirOptions &o = {});

} // namespace todd::core
