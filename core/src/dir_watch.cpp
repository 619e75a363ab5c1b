// SPDX-License-Identifier: Apache-2.0
#include <todd/core/dir_watch.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <poll.h>
#include <stdexcept>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <system_error>
#include <unistd.h>

namespace todd::core {

namespace {
constexpr uint32_t watch_mask = IN_CLOSE_WRITE | IN_CREATE | IN_DELETE |
                                IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB |
                                IN_DELETE_SELF | IN_MOVE_SELF;
}

DirWatcher::~DirWatcher()
{
    stop();
}

std::vector<std::string> DirWatcher::start(std::vector<std::string> dirs,
                                           OnChange on_change, Options o)
{
    if (thread_.joinable())
        throw std::logic_error("DirWatcher started twice");
    UniqueFd ino(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    if (!ino)
        throw std::system_error(errno, std::generic_category(),
                                "inotify_init1");
    UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake)
        throw std::system_error(errno, std::generic_category(), "eventfd");
    inotify_ = std::move(ino);
    wake_ = std::move(wake);
    dirs_ = std::move(dirs);
    on_change_ = std::move(on_change);
    options_ = std::move(o);
    std::vector<std::string> unwatched = add_watches();
    thread_ = std::thread([this] { run(); });
    return unwatched;
}

std::vector<std::string> DirWatcher::add_watches()
{
    std::vector<std::string> unwatched;
    for (const auto &d : dirs_) {
        // Watching a watched directory again returns its descriptor.
        int wd = ::inotify_add_watch(inotify_.get(), d.c_str(), watch_mask);
        if (wd < 0)
            unwatched.push_back(d + ": " + std::strerror(errno));
        else
            watched_[wd] = d;
    }
    return unwatched;
}

bool DirWatcher::drain(std::vector<std::string> &changed)
{
    alignas(inotify_event) char buf[8192];
    bool any = false;
    for (;;) {
        ssize_t n = ::read(inotify_.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return any;
        any = true;
        for (char *p = buf; p < buf + n;) {
            auto *ev = reinterpret_cast<inotify_event *>(p);
            p += sizeof(inotify_event) + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) {
                changed.insert(changed.end(), dirs_.begin(), dirs_.end());
                continue;
            }
            auto w = watched_.find(ev->wd);
            if (w == watched_.end())
                continue;
            if (ev->mask & IN_IGNORED) { // the watch is gone
                watched_.erase(w);
                continue;
            }
            std::string name = ev->len ? ev->name : "";
            if (name.empty())
                changed.push_back(w->second);
            else if (!options_.ignore || !options_.ignore(name))
                changed.push_back(w->second + "/" + name);
        }
    }
}

bool DirWatcher::wait(int timeout_ms, bool &event)
{
    for (;;) {
        pollfd pfd[2] = {{inotify_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
        int n = ::poll(pfd, 2, timeout_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            // Cannot happen with two valid descriptors: stop watching
            // rather than spin.
            return false;
        }
        if (pfd[1].revents & POLLIN)
            return false;
        event = n > 0;
        return true;
    }
}

void DirWatcher::run()
{
    const int settle = static_cast<int>(options_.settle.count());
    for (;;) {
        bool event = false;
        if (!wait(-1, event))
            return;
        std::vector<std::string> changed;
        drain(changed);
        while (settle > 0) {
            if (!wait(settle, event))
                return;
            if (!event || !drain(changed))
                break;
        }
        add_watches(); // directories may have been (re)created
        std::sort(changed.begin(), changed.end());
        changed.erase(std::unique(changed.begin(), changed.end()),
                      changed.end());
        if (!changed.empty() && on_change_)
            on_change_(changed);
    }
}

void DirWatcher::stop()
{
    if (thread_.joinable()) {
        uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(wake_.get(), &one, sizeof one);
        thread_.join();
    }
    inotify_.reset();
    wake_.reset();
    watched_.clear();
}

} // namespace todd::core
