// SPDX-License-Identifier: Apache-2.0
// The todd-agent program as a child process, output captured.
#pragma once

#include "agent_harness.hpp"
#include "process.hpp"

namespace todd::test {

/** A running todd-agent (these arguments) with stdout+stderr captured. */
class Child : public Process {
  public:
    explicit Child(std::vector<std::string> args)
        : Process(with_exe(std::move(args)))
    {
    }
    /** Read output until it contains needle (or EOF/limit). */
    bool wait_output(const std::string &needle,
                     std::chrono::milliseconds limit = 30s)
    {
        return Process::wait_output(needle, limit);
    }
    /** Wait for exit (bounded): the exit code, 128+signal, -1 if running. */
    int wait_exit(std::chrono::milliseconds limit = 30s)
    {
        return wait(limit).code();
    }

  private:
    static std::vector<std::string> with_exe(std::vector<std::string> args)
    {
        args.insert(args.begin(), TODD_AGENT_EXE);
        return args;
    }
};

} // namespace todd::test
