// SPDX-License-Identifier: Apache-2.0
// Asset directories (<OptDir>/assets/{factcollectors,testlets}): their
// SHA-256 maps as the Go agent computes them, and fact collection. The
// directories are watched with core::DirWatcher (agent.cpp).
#pragma once

#include <todd/agent/process.hpp>
#include <todd/core/messages.hpp>

#include <chrono>
#include <map>
#include <string>

namespace todd::agent {

/** Prefix of download temporaries; such files are never hashed or run. */
inline constexpr const char *download_temp_prefix = ".todd-download-";

/** True for the name of a download temporary (download_temp_prefix). */
bool is_download_temp(const std::string &name);

/**
 * File name -> SHA-256 (core::sha256_file) of every regular file under dir
 * but download temporaries: recursive, key = base name, as Go's
 * filepath.Walk. A missing directory gives {}; a file that cannot be
 * hashed is logged and left out.
 */
msg::Hashes asset_hashes(const std::string &dir);

/**
 * The executables to run as fact collectors: every regular file of the
 * built-in directory, overridden by name by those of the downloaded one.
 * Returns name -> path.
 */
std::map<std::string, std::string>
fact_collector_paths(const std::string &builtin_dir,
                     const std::string &downloaded_dir);

/**
 * Run each collector (no arguments, bounded time); each must print one JSON
 * object {"Name": ["v", ...]}. A failing collector is logged and skipped.
 */
msg::Facts collect_facts(const std::map<std::string, std::string> &collectors,
                         std::chrono::milliseconds timeout,
                         ProcessGroups *groups);

} // namespace todd::agent
