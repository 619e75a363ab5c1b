// SPDX-License-Identifier: Apache-2.0
// Asset directories (<OptDir>/assets/{factcollectors,testlets}): their
// SHA-256 maps as the Go agent computes them, fact collection, and a watcher
// that reports changes (inotify).
#pragma once

#include <todd/agent/process.hpp>
#include <todd/core/messages.hpp>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace todd::agent {

/** Prefix of download temporaries; such files are never hashed or run. */
inline constexpr const char *download_temp_prefix = ".todd-download-";

/** Lower-case hex SHA-256 of a file (OpenSSL EVP); nullopt if unreadable. */
std::optional<std::string> sha256_file(const std::string &path);

/**
 * File name -> SHA-256 of every regular file under dir (recursive, key =
 * base name, as Go's filepath.Walk). A missing directory gives {}.
 */
msg::Hashes hash_directory(const std::string &dir);

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

/**
 * Watches directories for created, written, moved or deleted files and
 * calls on_change (from its own thread) for each batch of events.
 */
class DirectoryWatcher {
  public:
    DirectoryWatcher() = default;
    ~DirectoryWatcher();
    DirectoryWatcher(const DirectoryWatcher &) = delete;
    DirectoryWatcher &operator=(const DirectoryWatcher &) = delete;

    /** Start watching; throws std::system_error when inotify fails. */
    void start(const std::vector<std::string> &dirs,
               std::function<void()> on_change);
    /** Stop; on_change is not called after this returns. */
    void stop();

  private:
    void run();
    int inotify_fd_ = -1;
    int wake_fd_ = -1;
    std::function<void()> on_change_;
    std::thread thread_;
};

} // namespace todd::agent
