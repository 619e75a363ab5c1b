// The todd command line: argument parsing and the commands themselves.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace todd::cli {

/// Exit statuses of the todd CLI.
enum ExitCode : int {
    kExitOk = 0,    ///< the command did what was asked
    kExitError = 1, ///< server unreachable, error reply, bad object file...
    kExitUsage = 2, ///< bad command line (unknown command/flag, missing arg)
};

/// Where the CLI reads and writes; main() passes the process's streams.
struct Io {
    std::istream &in;  ///< object definitions for `create`, the y/n answer
    bool in_is_tty;    ///< stdin is a terminal (then `create` needs FILE)
    std::ostream &out; ///< results, tables, progress
    std::ostream &err; ///< error messages
};

/// Runs the CLI with @p args (without argv[0]) and returns the exit status.
/// Never throws.
int run_cli(const std::vector<std::string> &args, Io io);

} // namespace todd::cli
