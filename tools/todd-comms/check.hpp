// SPDX-License-Identifier: Apache-2.0
// `todd-comms check`: the plugin conformance checker.
#pragma once

/**
 * Run `todd-comms check PATH|NAME [--plugin-dir DIR]... [--comms-opt K=V]...
 * [--timeout-ms N] [--verbose]`. argv[0] is the subcommand name ("check");
 * options start at argv[1].
 *
 * Loads the plugin the way the host does (todd::core::PluginRegistry) and
 * runs the behaviour contract of docs/plugin-abi.md against it through the C
 * ABI, from an instrumented test host. Prints one line per rule
 * (`PASS|FAIL|SKIP <ID> <detail>`) in rule order, then a summary line.
 * The plugin runs in a child process, so a crash or a hang in the plugin
 * becomes a FAIL line of the rule being checked, never a dead checker.
 *
 * Returns 0 when no rule failed, 1 when one did, 2 on a usage error.
 */
int todd_comms_check_main(int argc, char **argv);
