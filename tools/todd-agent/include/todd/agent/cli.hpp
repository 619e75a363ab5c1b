// SPDX-License-Identifier: Apache-2.0
// The todd-agent command line: options, ToDD's agent.cfg, exit codes.
#pragma once

#include <todd/core/config.hpp>
#include <todd/core/exit_codes.hpp>

#include <string>

namespace todd::agent {

/** Exit codes of todd-agent (docs/agent.md): 0 stopped by SIGINT/SIGTERM
 *  or --help; 1 runtime failure (state dir, plugin start); 2 bad option,
 *  config file or plugin key. */
using core::exit_failure;
using core::exit_ok;
using core::exit_usage;

/**
 * Check a ToDD config file for todd-agent: sections and keys of ToDD's
 * Config struct are accepted (case-insensitively; the server-only ones are
 * ignored, as the Go agent reads either file), anything else is refused.
 * [Comms] keys other than Plugin must be keys of the plugin (plugin_keys,
 * lower-case). Throws core::ConfigError naming file:line and the key.
 */
void check_agent_config(const core::IniFile &ini,
                        const std::vector<std::string> &plugin_keys);

/** The whole program: parse, load, run until SIGINT/SIGTERM. */
int agent_main(int argc, char **argv);

} // namespace todd::agent
