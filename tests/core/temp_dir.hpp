// SPDX-License-Identifier: Apache-2.0
// A temporary directory for the core's file tests, removed with its
// contents at scope end. (To fold into tests/common/temp_dir.hpp.)
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace todd::test {

class CoreTempDir {
  public:
    CoreTempDir()
    {
        std::string tmpl =
            (std::filesystem::temp_directory_path() / "todd-core-XXXXXX")
                .string();
        if (::mkdtemp(tmpl.data()) == nullptr)
            throw std::runtime_error("mkdtemp failed");
        path_ = tmpl;
    }
    ~CoreTempDir()
    {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    CoreTempDir(const CoreTempDir &) = delete;
    CoreTempDir &operator=(const CoreTempDir &) = delete;

    const std::string &path() const { return path_; }
    /** path()/rel, created with contents (parents too). */
    std::string write(const std::string &rel, const std::string &contents)
    {
        std::filesystem::path p = std::filesystem::path(path_) / rel;
        std::filesystem::create_directories(p.parent_path());
        std::ofstream(p, std::ios::binary | std::ios::trunc) << contents;
        return p.string();
    }

  private:
    std::string path_;
};

} // namespace todd::test
