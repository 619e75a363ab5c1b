// SPDX-License-Identifier: Apache-2.0
#include <todd/agent/assets.hpp>
#include <todd/core/json_limits.hpp>
#include <todd/core/log.hpp>

#include <openssl/evp.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <memory>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <system_error>
#include <unistd.h>

namespace fs = std::filesystem;

namespace todd::agent {

namespace {
constexpr const char *log_component = "agent.assets";

bool is_download_temp(const fs::path &p)
{
    return p.filename().string().rfind(download_temp_prefix, 0) == 0;
}
} // namespace

std::optional<std::string> sha256_file(const std::string &path)
{
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return std::nullopt;
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(
        EVP_MD_CTX_new(), &EVP_MD_CTX_free);
    bool ok = ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1;
    char buf[65536];
    while (ok) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            ok = false;
            break;
        }
        ok = EVP_DigestUpdate(ctx.get(), buf, static_cast<size_t>(n)) == 1;
    }
    ::close(fd);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!ok || EVP_DigestFinal_ex(ctx.get(), md, &len) != 1)
        return std::nullopt;
    static const char hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(len * 2);
    for (unsigned int i = 0; i < len; ++i) {
        out.push_back(hex[md[i] >> 4]);
        out.push_back(hex[md[i] & 15]);
    }
    return out;
}

msg::Hashes hash_directory(const std::string &dir)
{
    msg::Hashes out;
    std::error_code ec;
    fs::recursive_directory_iterator it(dir, ec), end;
    for (; !ec && it != end; it.increment(ec)) {
        std::error_code ec2;
        if (!it->is_regular_file(ec2) || is_download_temp(it->path()))
            continue;
        if (auto h = sha256_file(it->path().string()))
            out[it->path().filename().string()] = *h;
        else
            log::warn(log_component, "cannot hash " + it->path().string() +
                                         ": " + std::strerror(errno));
    }
    return out;
}

std::map<std::string, std::string>
fact_collector_paths(const std::string &builtin_dir,
                     const std::string &downloaded_dir)
{
    std::map<std::string, std::string> out;
    for (const auto &dir : {builtin_dir, downloaded_dir}) {
        if (dir.empty())
            continue;
        std::error_code ec;
        for (fs::directory_iterator it(dir, ec), end; !ec && it != end;
             it.increment(ec)) {
            std::error_code ec2;
            if (it->is_regular_file(ec2) && !is_download_temp(it->path()))
                out[it->path().filename().string()] = it->path().string();
        }
    }
    return out;
}

msg::Facts collect_facts(const std::map<std::string, std::string> &collectors,
                         std::chrono::milliseconds timeout,
                         ProcessGroups *groups)
{
    msg::Facts facts;
    for (const auto &[name, path] : collectors) {
        ProcessSpec spec;
        spec.argv = {path};
        spec.timeout = timeout;
        spec.log_component = "factcollector:" + name;
        spec.groups = groups;
        ProcessResult r = run_process(spec);
        if (!r.exited_ok()) {
            log::warn(log_component, "fact collector " + path + " failed (" +
                                         r.describe() +
                                         "); its facts are skipped");
            continue;
        }
        rapidjson::Document d;
        json::ParseOptions o;
        o.validate_utf8 = true;
        std::string why;
        if (auto err = json::parse(d, r.out, o))
            why = (err->too_deep ? "refused: " : "not JSON: ") + err->reason;
        else if (!d.IsObject() || d.MemberCount() != 1)
            why = "not an object with exactly one key";
        else if (!d.MemberBegin()->value.IsArray())
            why = "the value is not an array";
        std::vector<std::string> values;
        if (why.empty()) {
            for (const auto &v : d.MemberBegin()->value.GetArray()) {
                if (!v.IsString()) {
                    why = "the array holds a non-string";
                    break;
                }
                values.emplace_back(v.GetString(), v.GetStringLength());
            }
        }
        if (!why.empty()) {
            log::warn(log_component, "fact collector " + path +
                                         " printed bad output (" + why +
                                         "); its facts are skipped");
            continue;
        }
        facts[std::string(d.MemberBegin()->name.GetString(),
                          d.MemberBegin()->name.GetStringLength())] =
            std::move(values);
    }
    return facts;
}

DirectoryWatcher::~DirectoryWatcher()
{
    stop();
}

void DirectoryWatcher::start(const std::vector<std::string> &dirs,
                             std::function<void()> on_change)
{
    inotify_fd_ = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (inotify_fd_ < 0)
        throw std::system_error(errno, std::generic_category(),
                                "inotify_init1");
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd_ < 0) {
        int e = errno;
        ::close(inotify_fd_);
        inotify_fd_ = -1;
        throw std::system_error(e, std::generic_category(), "eventfd");
    }
    for (const auto &d : dirs) {
        if (::inotify_add_watch(inotify_fd_, d.c_str(),
                                IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM |
                                    IN_DELETE | IN_CREATE | IN_ATTRIB) < 0)
            log::warn(log_component, "cannot watch " + d + ": " +
                                         std::strerror(errno) +
                                         " (changes seen only after "
                                         "downloads)");
    }
    on_change_ = std::move(on_change);
    thread_ = std::thread([this] { run(); });
}

void DirectoryWatcher::run()
{
    alignas(inotify_event) char buf[8192];
    for (;;) {
        pollfd pfd[2] = {{inotify_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
        if (::poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            log::error(log_component,
                       std::string("poll: ") + std::strerror(errno));
            return;
        }
        if (pfd[1].revents & POLLIN)
            return;
        bool any = false;
        for (;;) {
            ssize_t n = ::read(inotify_fd_, buf, sizeof buf);
            if (n <= 0)
                break;
            for (char *p = buf; p < buf + n;) {
                auto *ev = reinterpret_cast<inotify_event *>(p);
                std::string name = ev->len ? ev->name : "";
                if (name.rfind(download_temp_prefix, 0) != 0)
                    any = true;
                p += sizeof(inotify_event) + ev->len;
            }
        }
        if (any && on_change_)
            on_change_();
    }
}

void DirectoryWatcher::stop()
{
    if (thread_.joinable()) {
        uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
        thread_.join();
    }
    if (inotify_fd_ >= 0)
        ::close(inotify_fd_);
    if (wake_fd_ >= 0)
        ::close(wake_fd_);
    inotify_fd_ = wake_fd_ = -1;
}

} // namespace todd::agent
