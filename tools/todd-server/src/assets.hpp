// SPDX-License-Identifier: Apache-2.0
// The server's assets: <OptDir>/assets/{factcollectors,testlets}, their
// SHA-256 hashes (what agents must advertise), kept current with a
// core::DirWatcher.
#pragma once

#include <todd/core/dir_watch.hpp>
#include <todd/core/messages.hpp>

#include <functional>
#include <mutex>
#include <string>
#include <string_view>

namespace todd::server {

struct AssetMap {
    msg::Hashes factcollectors, testlets;
    bool operator==(const AssetMap &) const = default;
};

/**
 * File name -> core::sha256_file of every regular file directly under dir
 * that read_asset would serve: no dotfile (editor temporaries, partial
 * copies), no symlink, nothing when dir itself is a symlink. A missing dir
 * gives {}; what cannot be hashed is logged and left out.
 */
msg::Hashes asset_hashes(const std::string &dir);

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

    /** Scan the map, then watch root, its parent (to see root appear)
     *  and both type directories. Without inotify (logged) the map is
     *  rescanned only on demand. */
    void start();
    void stop();
    /** Rescan now (on demand); returns true when the map changed. */
    bool rescan();
    AssetMap current() const;
    const std::string &root() const { return root_; }

  private:
    std::string root_;
    std::function<void()> on_change_;
    mutable std::mutex mu_;
    AssetMap map_;
    core::DirWatcher watcher_;
};

} // namespace todd::server
