// SPDX-License-Identifier: Apache-2.0
// The exit statuses every ToDD program uses (todd, todd-server, todd-agent,
// todd-comms), as docs/agent.md, docs/server.md and docs/cli.md list them.
#pragma once

namespace todd::core {

/** Exit status of a ToDD program. Unscoped, so main() can return it. */
enum ExitCode : int {
    /** Did what was asked; a daemon stopped by SIGINT/SIGTERM; --help. */
    exit_ok = 0,
    /** Runtime failure: server unreachable, store or port unusable, the
     *  transport cannot start, a conformance rule failed. */
    exit_failure = 1,
    /** Usage or configuration error: bad option, config file or plugin
     *  key; nothing has connected yet (systemd: RestartPreventExitStatus). */
    exit_usage = 2,
};

/** The status of a program that stops itself on signal sig: 128 + sig,
 *  as a shell reports a process killed by it (todd-comms check). */
constexpr int exit_on_signal(int sig)
{
    return 128 + sig;
}

} // namespace todd::core
