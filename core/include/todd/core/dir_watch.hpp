// SPDX-License-Identifier: Apache-2.0
// A directory watcher (inotify) for the asset directories: the agent
// re-advertises, the server re-hashes, when files there change. Errors
// follow the convention in hash.hpp.
#pragma once

#include <todd/core/unique_fd.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace todd::core {

/**
 * Watches directories (not their subdirectories) for files created,
 * written, moved, deleted or changed in mode, and for the directories
 * themselves going away, and reports each batch of changes from its own
 * thread.
 */
class DirWatcher {
  public:
    /** Called on the watcher's thread with the paths that changed, sorted
     *  and unique: "DIR/NAME" for an entry of DIR, "DIR" for DIR itself
     *  (deleted or moved; every watched DIR when the kernel dropped
     *  events). */
    using OnChange = std::function<void(const std::vector<std::string> &)>;

    struct Options {
        /** Events about an entry whose name this returns true for are
         *  dropped (download temporaries). Empty: none is. */
        std::function<bool(const std::string &name)> ignore;
        /** After an event, wait until no event came for this long before
         *  reporting, so a burst (a copy in progress) is one batch. 0:
         *  report what one read returns. */
        std::chrono::milliseconds settle{0};
    };

    DirWatcher() = default;
    /** stop(). */
    ~DirWatcher();
    DirWatcher(const DirWatcher &) = delete;
    DirWatcher &operator=(const DirWatcher &) = delete;

    /**
     * Watch dirs and start the thread. A directory that cannot be watched
     * yet (missing) is not an error: it is tried again after every batch,
     * so one created later (seen by watching its parent too) is watched
     * from then on. Returns one line per directory not watched now, naming
     * it and why. Throws std::system_error when inotify or the thread's
     * wake-up descriptor cannot be created; std::logic_error if started
     * twice.
     */
    std::vector<std::string> start(std::vector<std::string> dirs,
                                   OnChange on_change, Options o);
    /** start() with default Options. */
    std::vector<std::string> start(std::vector<std::string> dirs,
                                   OnChange on_change)
    {
        return start(std::move(dirs), std::move(on_change), Options{});
    }

    /** Stop and join the thread; on_change is not called after this
     *  returns. Idempotent; must not be called from on_change. */
    void stop();

  private:
    std::vector<std::string> add_watches();
    /** Read every queued event into changed; false when none was. */
    bool drain(std::vector<std::string> &changed);
    /** Wait for an event or the wake-up, at most timeout (-1: forever);
     *  false on the wake-up. */
    bool wait(int timeout_ms, bool &event);
    void run();

    std::vector<std::string> dirs_;
    std::map<int, std::string> watched_; // watch descriptor -> directory
    OnChange on_change_;
    Options options_;
    UniqueFd inotify_;
    UniqueFd wake_; // an eventfd: stop() wakes the thread
    std::thread thread_;
};

} // namespace todd::core
