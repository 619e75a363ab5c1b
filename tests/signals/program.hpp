// SPDX-License-Identifier: Apache-2.0
// The real todd-server, todd-agent and todd-comms binaries as child
// processes (tests/common/process.hpp), and sockets that make a broker look
// unreachable (tests/common/ports.hpp).
#pragma once

#include "ports.hpp"
#include "process.hpp"
#include "temp_dir.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace sigtest {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using todd::test::DeadPort;

/** A program with stdout+stderr captured. Killed if still running at the
 *  end of the test. */
class Program : public todd::test::Process {
  public:
    explicit Program(std::vector<std::string> argv) : Process(std::move(argv))
    {
    }

    /** Read output until it contains needle (after offset `from`), EOF or
     *  the limit. */
    bool wait_output(const std::string &needle,
                     std::chrono::milliseconds limit = 60s, size_t from = 0)
    {
        return Process::wait_output(needle, limit, from);
    }

    /** SIGTERM, then wait for the exit for at most `limit`. Returns the
     *  wait status text ("exit 0", "signal 9", "still running ... ms after
     *  SIGTERM") and how long it took. */
    std::string terminate(std::chrono::milliseconds limit,
                          std::chrono::milliseconds *took)
    {
        auto t0 = Clock::now();
        auto st = Process::terminate(limit);
        *took = std::chrono::duration_cast<std::chrono::milliseconds>(
            Clock::now() - t0);
        if (st.running())
            return "still running " + std::to_string(took->count()) +
                   " ms after SIGTERM";
        return st.text();
    }
};

/** A fresh directory, removed at the end. */
class TempDir : public todd::test::TempDir {
  public:
    TempDir() : todd::test::TempDir("todd-signals") {}
};

} // namespace sigtest
