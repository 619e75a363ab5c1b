// The todd command line: argument parsing and the commands themselves.
#pragma once

#include <todd/core/exit_codes.hpp>

#include <iosfwd>
#include <string>
#include <vector>

namespace todd::cli {

/// Exit statuses of the todd CLI: the programs' one set (core/exit_codes.hpp)
/// under the names the CLI's code uses.
inline constexpr core::ExitCode kExitOk = core::exit_ok; ///< did what was asked
/// Server unreachable, error reply, bad object file...
inline constexpr core::ExitCode kExitError = core::exit_failure;
/// Bad command line (unknown command/flag, missing arg).
inline constexpr core::ExitCode kExitUsage = core::exit_usage;

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
