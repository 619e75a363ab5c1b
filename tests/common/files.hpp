// SPDX-License-Identifier: Apache-2.0
// Whole-file reads and writes, and a bounded wait on a condition, for tests.
// Errors are std::runtime_error naming the file and why.
#pragma once

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <thread>

namespace todd::test {

/** The bytes of a file. Throws when it cannot be read. */
inline std::string read_file(const std::filesystem::path &p)
{
    std::ifstream f(p, std::ios::binary);
    if (!f)
        throw std::runtime_error("cannot read " + p.string() + ": " +
                                 std::strerror(errno));
    return std::string((std::istreambuf_iterator<char>(f)),
                       std::istreambuf_iterator<char>());
}

/** The bytes of a file, or "" if it cannot be read (yet): for files
 *  another process is still creating. */
inline std::string read_file_if_exists(const std::filesystem::path &p)
{
    std::ifstream f(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)),
                       std::istreambuf_iterator<char>());
}

/** read_file_if_exists without trailing whitespace: a one-line file
 *  another process writes (an id, a pid). */
inline std::string read_trimmed(const std::filesystem::path &p)
{
    std::string s = read_file_if_exists(p);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
        s.pop_back();
    return s;
}

/** Replace a file's bytes (mode 0644 unless told), making its directory
 *  if needed. Written aside and renamed into place, so that a program
 *  watching the directory never sees it half written. Throws when it cannot
 *  be written. */
inline void
write_file(const std::filesystem::path &p, const std::string &bytes,
           std::filesystem::perms mode = std::filesystem::perms(0644))
{
    if (p.has_parent_path())
        std::filesystem::create_directories(p.parent_path());
    std::filesystem::path tmp = p.string() + ".writing";
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    f.close();
    if (!f)
        throw std::runtime_error("cannot write " + tmp.string() + ": " +
                                 std::strerror(errno));
    std::filesystem::permissions(tmp, mode);
    std::filesystem::rename(tmp, p);
}

/** write_file with mode 0755: a script (testlet, fact collector). */
inline void write_executable(const std::filesystem::path &p,
                             const std::string &text)
{
    write_file(p, text, std::filesystem::perms(0755));
}

/** Poll pred() until it is true or `limit` has passed; returns its last
 *  value. For state that has no event to wait on (a file another process
 *  writes, a process table entry). */
template <class Pred>
bool eventually(Pred pred,
                std::chrono::milliseconds limit = std::chrono::seconds(30),
                std::chrono::milliseconds every = std::chrono::milliseconds(10))
{
    auto end = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
        if (std::chrono::steady_clock::now() >= end)
            return pred();
        std::this_thread::sleep_for(every);
    }
    return true;
}

} // namespace todd::test
