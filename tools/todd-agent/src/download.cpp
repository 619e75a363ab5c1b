// SPDX-License-Identifier: Apache-2.0
// libcurl (Debian libcurl4-openssl-dev): the packaged HTTP(S) client with
// timeouts, redirects and TLS verification, usable from worker threads.
#include <todd/agent/assets.hpp>
#include <todd/agent/download.hpp>
#include <todd/core/log.hpp>

#include <curl/curl.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <mutex>
#include <sys/stat.h>
#include <unistd.h>

namespace fs = std::filesystem;

namespace todd::agent {

namespace {
constexpr const char *log_component = "agent.download";

void global_init()
{
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct Sink {
    int fd;
    bool write_failed = false;
};

size_t on_data(char *ptr, size_t size, size_t nmemb, void *user)
{
    auto *s = static_cast<Sink *>(user);
    size_t total = size * nmemb, done = 0;
    while (done < total) {
        ssize_t n = ::write(s->fd, ptr + done, total - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            s->write_failed = true;
            return 0; // makes curl fail with CURLE_WRITE_ERROR
        }
        done += static_cast<size_t>(n);
    }
    return total;
}

int on_progress(void *user, curl_off_t, curl_off_t, curl_off_t, curl_off_t)
{
    return static_cast<const std::atomic<bool> *>(user)->load() ? 1 : 0;
}

// The last path element of a URL, without query or fragment.
std::string url_file_name(const std::string &url)
{
    std::string path = url;
    if (auto q = path.find_first_of("?#"); q != std::string::npos)
        path.erase(q);
    auto scheme = path.find("://");
    std::string rest =
        scheme == std::string::npos ? path : path.substr(scheme + 3);
    auto slash = rest.find('/');
    if (slash == std::string::npos)
        return {};
    rest = rest.substr(slash);
    return rest.substr(rest.rfind('/') + 1);
}

/** Why a name from the server cannot be an asset file's, or nullptr. The
 *  server advertises and serves no such names (docs/server.md). */
const char *bad_file_name(const std::string &name)
{
    if (name.empty())
        return "empty";
    for (unsigned char c : name)
        if (c == 0 || c < 0x20 || c == 0x7f || c == '/' || c == '\\')
            return "NUL, control character or path separator";
    if (name[0] == '.')
        return "starts with '.'";
    if (name.rfind(download_temp_prefix, 0) == 0)
        return "our temporary prefix";
    if (name.find('%') != std::string::npos)
        return "percent-encoded";
    return nullptr;
}

DownloadResult download_one(const std::string &url, const std::string &opt_dir,
                            const std::atomic<bool> &cancel)
{
    DownloadResult r;
    r.url = url;
    std::string kind;
    if (url.find("factcollectors") != std::string::npos)
        kind = "factcollectors";
    else if (url.find("testlets") != std::string::npos)
        kind = "testlets";
    else {
        r.error = "not an asset URL (names neither factcollectors nor "
                  "testlets)";
        return r;
    }
    std::string name = url_file_name(url);
    if (const char *why = bad_file_name(name)) {
        r.error = std::string("no usable file name in the URL: ") + why;
        return r;
    }
    fs::path dir = fs::path(opt_dir) / "assets" / kind;
    std::error_code ec;
    fs::create_directories(dir, ec);
    std::string tmpl =
        (dir / (std::string(download_temp_prefix) + name + ".XXXXXX")).string();
    int fd = ::mkostemp(tmpl.data(), O_CLOEXEC);
    if (fd < 0) {
        r.error = "cannot create a file in " + dir.string() + ": " +
                  std::strerror(errno);
        return r;
    }
    Sink sink{fd};
    CURL *curl = curl_easy_init();
    char errbuf[CURL_ERROR_SIZE] = {0};
    CURLcode rc = CURLE_FAILED_INIT;
    long code = 0;
    if (curl != nullptr) {
        curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
        curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 5L);
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 15L);
        // Give up on a transfer stalled below 1 byte/s for 30 s.
        curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 30L);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &on_data);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);
        curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, &on_progress);
        curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &cancel);
        curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
        rc = curl_easy_perform(curl);
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_cleanup(curl);
    }
    bool ok = false;
    if (rc != CURLE_OK)
        r.error = std::string(errbuf[0] ? errbuf : curl_easy_strerror(rc));
    else if (code != 200)
        r.error = "HTTP status " + std::to_string(code);
    else if (sink.write_failed)
        r.error = std::string("write failed: ") + std::strerror(errno);
    else if (::fsync(fd) != 0)
        r.error = std::string("fsync: ") + std::strerror(errno);
    else if (::fchmod(fd, 0755) != 0)
        r.error = std::string("chmod: ") + std::strerror(errno);
    else
        ok = true;
    ::close(fd);
    fs::path dest = dir / name;
    if (ok && ::rename(tmpl.c_str(), dest.c_str()) != 0) {
        r.error = "rename to " + dest.string() + ": " + std::strerror(errno);
        ok = false;
    }
    if (!ok) {
        ::unlink(tmpl.c_str());
        return r;
    }
    // Make the rename durable too.
    if (int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
    r.ok = true;
    r.path = dest.string();
    return r;
}
} // namespace

std::vector<DownloadResult>
download_assets(const std::vector<std::string> &urls,
                const std::string &opt_dir, const std::atomic<bool> &cancel)
{
    global_init();
    std::vector<DownloadResult> out;
    for (const auto &url : urls) {
        if (cancel.load())
            break;
        out.push_back(download_one(url, opt_dir, cancel));
        const auto &r = out.back();
        if (r.ok)
            log::info(log_component, "downloaded " + url + " -> " + r.path);
        else
            log::error(log_component,
                       "download of " + url + " failed: " + r.error);
    }
    return out;
}

} // namespace todd::agent
