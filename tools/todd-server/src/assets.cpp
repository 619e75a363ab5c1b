// SPDX-License-Identifier: Apache-2.0
#include "assets.hpp"

#include <todd/core/log.hpp>

#include <openssl/evp.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>

namespace todd::server {

namespace fs = std::filesystem;

std::string sha256_file(const std::string &path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw std::runtime_error("cannot read " + path);
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(
        EVP_MD_CTX_new(), EVP_MD_CTX_free);
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
        throw std::runtime_error("SHA-256 unavailable");
    char buf[65536];
    while (in) {
        in.read(buf, sizeof buf);
        if (in.gcount() > 0)
            EVP_DigestUpdate(ctx.get(), buf, static_cast<size_t>(in.gcount()));
    }
    if (in.bad())
        throw std::runtime_error("error reading " + path);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx.get(), md, &len);
    static const char hex[] = "0123456789abcdef";
    std::string out;
    for (unsigned i = 0; i < len; ++i) {
        out += hex[md[i] >> 4];
        out += hex[md[i] & 0xf];
    }
    return out;
}

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

struct Fd {
    int fd = -1;
    explicit Fd(int f) : fd(f) {}
    ~Fd()
    {
        if (fd >= 0)
            ::close(fd);
    }
    Fd(const Fd &) = delete;
    Fd &operator=(const Fd &) = delete;
};

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
    Fd dir(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir.fd < 0)
        return {404, "no asset directory"};
    Fd sub(::openat(dir.fd, type.c_str(),
                    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (sub.fd < 0)
        return {404, type + " is missing or a symlink"};
    Fd f(::openat(sub.fd, name.c_str(),
                  O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
    if (f.fd < 0)
        return {404,
                errno == ELOOP ? "symlinks are not served" : "no such asset"};
    struct stat st {};
    if (::fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode))
        return {404, "not a regular file"};
    AssetReply r{200, {}};
    r.body.reserve(static_cast<size_t>(st.st_size));
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(f.fd, buf, sizeof buf);
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

msg::Hashes hash_directory(const std::string &dir)
{
    msg::Hashes out;
    std::error_code ec;
    if (fs::is_symlink(dir, ec)) {
        log::warn("assets", dir + " is a symlink: not served, not advertised");
        return out;
    }
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end;
         it.increment(ec)) {
        std::error_code ec2;
        // Symlinks are not served (read_asset), so not advertised either.
        if (!it->is_regular_file(ec2) || it->is_symlink(ec2))
            continue;
        std::string name = it->path().filename().string();
        if (name.empty() || name[0] == '.')
            continue; // editor temporaries, partial copies
        try {
            out[name] = sha256_file(it->path().string());
        } catch (const std::exception &e) {
            log::warn("assets", e.what());
        }
    }
    return out;
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
    m.factcollectors = hash_directory(root_ + "/factcollectors");
    m.testlets = hash_directory(root_ + "/testlets");
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

void AssetWatcher::add_watches()
{
    const uint32_t mask = IN_CLOSE_WRITE | IN_CREATE | IN_DELETE |
                          IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB |
                          IN_DELETE_SELF | IN_MOVE_SELF;
    // Watching the parents too notices the type directories appearing.
    for (const auto &d : {fs::path(root_).parent_path().string(), root_,
                          root_ + "/factcollectors", root_ + "/testlets"})
        inotify_add_watch(ifd_, d.c_str(), mask);
}

void AssetWatcher::start()
{
    rescan();
    ifd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (ifd_ < 0 || pipe2(stop_pipe_, O_CLOEXEC) != 0) {
        log::warn("assets", "inotify unavailable; assets are rescanned only "
                            "on demand");
        return;
    }
    add_watches();
    thread_ = std::thread([this] { run(); });
}

void AssetWatcher::stop()
{
    if (thread_.joinable()) {
        char c = 0;
        (void)!write(stop_pipe_[1], &c, 1);
        thread_.join();
    }
    for (int *fd : {&ifd_, &stop_pipe_[0], &stop_pipe_[1]})
        if (*fd >= 0) {
            close(*fd);
            *fd = -1;
        }
}

void AssetWatcher::run()
{
    for (;;) {
        pollfd fds[2] = {{ifd_, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
        if (poll(fds, 2, -1) < 0)
            continue;
        if (fds[1].revents)
            return;
        char buf[8192];
        while (read(ifd_, buf, sizeof buf) > 0) {
        }
        // Let a burst of events (a copy in progress) settle first.
        pollfd more{ifd_, POLLIN, 0};
        while (poll(&more, 1, 50) > 0)
            while (read(ifd_, buf, sizeof buf) > 0) {
            }
        add_watches(); // directories may have been (re)created
        if (rescan()) {
            log::info("assets", "asset files changed under " + root_);
            if (on_change_)
                on_change_();
        }
    }
}

} // namespace todd::server
