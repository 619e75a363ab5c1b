// SPDX-License-Identifier: Apache-2.0
#include "assets.hpp"

#include <todd/core/hash.hpp>
#include <todd/core/log.hpp>
#include <todd/core/unique_fd.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace todd::server {

namespace fs = std::filesystem;

namespace {

int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/** Percent-decode a path segment; false on a bad escape. No '+' rule:
 *  that is for query strings. */
bool decode_segment(std::string_view in, std::string &out)
{
    for (size_t i = 0; i < in.size(); ++i) {
        if (in[i] != '%') {
            out += in[i];
            continue;
        }
        if (i + 2 >= in.size())
            return false;
        int hi = hex_digit(in[i + 1]), lo = hex_digit(in[i + 2]);
        if (hi < 0 || lo < 0)
            return false;
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
    }
    return true;
}

/** Why a decoded name cannot be an asset's, or nullptr. */
const char *bad_name(const std::string &name)
{
    if (name.empty())
        return "empty name";
    for (unsigned char c : name) {
        if (c == 0)
            return "NUL in name";
        if (c == '/' || c == '\\')
            return "path separator in name";
        if (c < 0x20 || c == 0x7f)
            return "control character in name";
    }
    if (name == "." || name == ".." || name.find("..") != std::string::npos)
        return "\"..\" in name";
    return nullptr;
}

} // namespace

AssetReply read_asset(const std::string &root, std::string_view target)
{
    target = target.substr(0, target.find('?'));
    if (target.empty() || target[0] != '/')
        return {400, "target is not an absolute path"};
    auto slash = target.find('/', 1);
    if (slash == std::string_view::npos)
        return {404, "no asset type in path"};
    std::string type(target.substr(1, slash - 1));
    if (type != "factcollectors" && type != "testlets")
        return {404, "unknown asset type"};
    std::string name;
    if (!decode_segment(target.substr(slash + 1), name))
        return {400, "bad percent-encoding in name"};
    if (const char *why = bad_name(name))
        return {400, why};
    if (name[0] == '.')
        return {404, "dotfiles are not served"};
    // Walk from the root without following links below it: neither the
    // type directory nor the file may be a symlink. O_NONBLOCK: a FIFO
    // must not hold up the I/O thread (it is refused below).
    core::UniqueFd dir(
        ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir)
        return {404, "no asset directory"};
    core::UniqueFd sub(
        ::openat(dir.get(), type.c_str(),
                 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!sub)
        return {404, type + " is missing or a symlink"};
    core::UniqueFd f(
        ::openat(sub.get(), name.c_str(),
                 O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
    if (!f)
        return {404,
                errno == ELOOP ? "symlinks are not served" : "no such asset"};
    struct stat st {};
    if (::fstat(f.get(), &st) != 0 || !S_ISREG(st.st_mode))
        return {404, "not a regular file"};
    AssetReply r{200, {}};
    r.body.reserve(static_cast<size_t>(st.st_size));
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(f.get(), buf, sizeof buf);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return {500, std::string("read error: ") + std::strerror(errno)};
        }
        r.body.append(buf, static_cast<size_t>(n));
    }
    return r;
}

msg::Hashes asset_hashes(const std::string &dir)
{
    core::HashDirOptions o;
    o.no_symlinks = true; // read_asset serves none
    o.skip = [](const std::string &name) { return name[0] == '.'; };
    core::DirHashes r = core::hash_directory(dir, o);
    for (const auto &p : r.problems)
        log::warn("assets", p);
    return std::move(r.hashes);
}

AssetWatcher::AssetWatcher(std::string root, std::function<void()> on_change)
    : root_(std::move(root)), on_change_(std::move(on_change))
{
}

AssetWatcher::~AssetWatcher()
{
    stop();
}

bool AssetWatcher::rescan()
{
    AssetMap m;
    m.factcollectors = asset_hashes(root_ + "/factcollectors");
    m.testlets = asset_hashes(root_ + "/testlets");
    std::lock_guard lk(mu_);
    if (m == map_)
        return false;
    map_ = std::move(m);
    return true;
}

AssetMap AssetWatcher::current() const
{
    std::lock_guard lk(mu_);
    return map_;
}

void AssetWatcher::start()
{
    rescan();
    core::DirWatcher::Options o;
    o.settle = std::chrono::milliseconds(50); // a copy in progress
    auto changed = [this](const std::vector<std::string> &) {
        if (rescan()) {
            log::info("assets", "asset files changed under " + root_);
            if (on_change_)
                on_change_();
        }
    };
    try {
        // Missing directories are watched once they appear.
        watcher_.start({fs::path(root_).parent_path().string(), root_,
                        root_ + "/factcollectors", root_ + "/testlets"},
                       changed, o);
    } catch (const std::exception &e) {
        log::warn("assets", std::string("inotify unavailable (") + e.what() +
                                "); assets are rescanned only on demand");
    }
}

void AssetWatcher::stop()
{
    watcher_.stop();
}

} // namespace todd::server
