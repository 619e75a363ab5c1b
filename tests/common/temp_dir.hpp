// SPDX-License-Identifier: Apache-2.0
// A fresh private directory for one test, removed with all it holds.
#pragma once

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace todd::test {

/** A new directory under $TMPDIR (mode 0700 unless told), its path
 *  canonical; removed at destruction, even if a test made parts of it
 *  unwritable. Throws std::runtime_error when it cannot be made. */
class TempDir {
  public:
    explicit TempDir(
        const std::string &prefix = "todd-test",
        std::filesystem::perms mode = std::filesystem::perms::owner_all)
    {
        namespace fs = std::filesystem;
        std::string tmpl =
            (fs::temp_directory_path() / (prefix + "-XXXXXX")).string();
        if (::mkdtemp(tmpl.data()) == nullptr)
            throw std::runtime_error("cannot make a directory " + tmpl + ": " +
                                     std::strerror(errno));
        path_ = fs::canonical(tmpl).string();
        fs::permissions(path_, mode);
    }
    ~TempDir()
    {
        namespace fs = std::filesystem;
        std::error_code ec;
        fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ec);
        fs::remove_all(path_, ec);
    }
    TempDir(const TempDir &) = delete;
    TempDir &operator=(const TempDir &) = delete;

    /** The directory's absolute path. */
    const std::string &path() const { return path_; }
    /** path() + "/" + sub. */
    std::string operator/(const std::string &sub) const
    {
        return path_ + "/" + sub;
    }
    /** Writes path()/rel in place (parents made; no temporary name, so a
     *  directory watcher sees only this file) and returns its path. */
    std::string write(const std::string &rel, const std::string &contents)
    {
        namespace fs = std::filesystem;
        fs::path p = fs::path(path_) / rel;
        fs::create_directories(p.parent_path());
        std::ofstream f(p, std::ios::binary | std::ios::trunc);
        f << contents;
        f.close();
        if (!f)
            throw std::runtime_error("cannot write " + p.string());
        return p.string();
    }

  private:
    std::string path_;
};

} // namespace todd::test
