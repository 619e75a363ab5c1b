// SPDX-License-Identifier: Apache-2.0
// Shared by the loader tests: private temporary directories and running a
// real program (todd-comms, todd-agent, todd-server) to see how it ends.
#pragma once

#include "files.hpp"
#include "process.hpp"
#include "temp_dir.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

namespace loader_test {

namespace fs = std::filesystem;

#define EXPECT_HAS(text, needle)                                               \
    EXPECT_NE(std::string(text).find(needle), std::string::npos)               \
        << "missing \"" << (needle) << "\" in: " << (text)

/** A fresh directory (mode 0700 unless told), removed with all it holds;
 *  path() as a std::filesystem::path. */
class TempDir : public todd::test::TempDir {
  public:
    explicit TempDir(fs::perms mode = fs::perms::owner_all)
        : todd::test::TempDir("todd-loader", mode),
          path_(todd::test::TempDir::path())
    {
    }
    const fs::path &path() const { return path_; }

  private:
    fs::path path_;
};

using todd::test::read_file;
using todd::test::write_file;

/** How a program ended and what it printed (stdout and stderr). */
struct Ran {
    bool exited = false; // false: killed by a signal, or timed out
    int code = -1;       // exit status when exited
    int signal = 0;      // the signal that killed it, if one did
    bool timed_out = false;
    std::string output;
    std::string how() const
    {
        if (timed_out)
            return "timed out";
        if (!exited)
            return std::string("killed by signal ") + std::to_string(signal) +
                   " (" + strsignal(signal) + ")";
        return "exited " + std::to_string(code);
    }
};

/** Run argv (argv[0] a path), killed after the timeout. */
inline Ran run(const std::vector<std::string> &argv,
               std::chrono::seconds timeout = std::chrono::seconds(30))
{
    todd::test::Process p(argv);
    auto st = p.wait(timeout);
    Ran r;
    if (st.running()) {
        r.timed_out = true;
        p.kill_now();
    } else if (st.how == todd::test::ExitStatus::How::exited) {
        r.exited = true;
        r.code = st.value;
    } else {
        r.signal = st.value;
    }
    r.output = p.output();
    return r;
}

} // namespace loader_test
