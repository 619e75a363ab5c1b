// SPDX-License-Identifier: Apache-2.0
// The server's assets: <OptDir>/assets/{factcollectors,testlets}, their
// SHA-256 hashes (what agents must advertise), kept current with inotify.
#pragma once

#include <todd/core/messages.hpp>

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace todd::server {

struct AssetMap {
    msg::Hashes factcollectors, testlets;
    bool operator==(const AssetMap &) const = default;
};

/** Lower-case hex SHA-256 of a file; throws std::runtime_error. */
std::string sha256_file(const std::string &path);

/** Hash every regular file directly under dir (missing dir = empty). */
msg::Hashes hash_directory(const std::string &dir);

/** What GET <target> on the asset server answers. */
struct AssetReply {
    int status = 404; // 200, 400 or 404
    std::string body; // the file (200) or why not (log line)
};

/**
 * GET /<factcollectors|testlets>/<name> under root. The name is
 * percent-decoded strictly; NUL, '/', '\\', "..", control characters or a
 * bad escape give 400; a dotfile, a symlink (even one pointing inside the
 * root), anything but a regular file, or a missing one give 404. Opened
 * with O_NOFOLLOW on every component below root, so nothing outside root
 * is reached.
 */
AssetReply read_asset(const std::string &root, std::string_view target);

class AssetWatcher {
  public:
    /** root = <OptDir>/assets; on_change runs on the watcher thread
     *  after the map changed. */
    AssetWatcher(std::string root, std::function<void()> on_change);
    ~AssetWatcher();

    /** Start the inotify thread (the map is scanned once first). */
    void start();
    void stop();
    /** Rescan now (on demand); returns true when the map changed. */
    bool rescan();
    AssetMap current() const;
    const std::string &root() const { return root_; }

  private:
    void run();
    void add_watches();
    std::string root_;
    std::function<void()> on_change_;
    mutable std::mutex mu_;
    AssetMap map_;
    int ifd_ = -1;
    int stop_pipe_[2] = {-1, -1};
    std::thread thread_;
};

} // namespace todd::server
