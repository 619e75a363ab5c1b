// SPDX-License-Identifier: Apache-2.0
#include <todd/core/hash.hpp>
#include <todd/core/unique_fd.hpp>

#include <openssl/evp.h>

#include <cerrno>
#include <fcntl.h>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <system_error>
#include <unistd.h>

namespace fs = std::filesystem;

namespace todd::core {

namespace {

using DigestCtx = std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)>;

DigestCtx new_sha256()
{
    DigestCtx ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
        throw std::runtime_error("SHA-256 unavailable (OpenSSL)");
    return ctx;
}

void update(EVP_MD_CTX *ctx, const void *data, size_t size)
{
    if (EVP_DigestUpdate(ctx, data, size) != 1)
        throw std::runtime_error("SHA-256 failed (OpenSSL)");
}

std::string hex_digest(EVP_MD_CTX *ctx)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx, md, &len) != 1)
        throw std::runtime_error("SHA-256 failed (OpenSSL)");
    static const char hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(len * 2);
    for (unsigned int i = 0; i < len; ++i) {
        out.push_back(hex[md[i] >> 4]);
        out.push_back(hex[md[i] & 15]);
    }
    return out;
}

} // namespace

std::string sha256_file(const std::string &path)
{
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd)
        throw std::system_error(errno, std::generic_category(),
                                "cannot open " + path);
    DigestCtx ctx = new_sha256();
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            throw std::system_error(errno, std::generic_category(),
                                    "cannot read " + path);
        }
        update(ctx.get(), buf, static_cast<size_t>(n));
    }
    return hex_digest(ctx.get());
}

namespace {

/** Hash one directory entry into out if o admits it. */
void hash_entry(const fs::directory_entry &e, const HashDirOptions &o,
                DirHashes &out)
{
    std::error_code ec;
    if (o.no_symlinks && e.is_symlink(ec))
        return; // links are not served, so not advertised either
    if (!e.is_regular_file(ec))
        return;
    std::string name = e.path().filename().string();
    if (o.skip && o.skip(name))
        return;
    try {
        out.hashes[name] = sha256_file(e.path().string());
    } catch (const std::exception &x) {
        out.problems.push_back(std::string("cannot hash: ") + x.what());
    }
}

} // namespace

DirHashes hash_directory(const std::string &dir, const HashDirOptions &o)
{
    DirHashes out;
    std::error_code ec;
    if (o.no_symlinks && fs::is_symlink(dir, ec)) {
        out.problems.push_back(dir + " is a symlink: not hashed");
        return out;
    }
    if (o.recursive) {
        fs::recursive_directory_iterator it(dir, ec), end;
        for (; !ec && it != end; it.increment(ec))
            hash_entry(*it, o, out);
    } else {
        fs::directory_iterator it(dir, ec), end;
        for (; !ec && it != end; it.increment(ec))
            hash_entry(*it, o, out);
    }
    if (ec && ec != std::errc::no_such_file_or_directory)
        out.problems.push_back("cannot list " + dir + ": " + ec.message());
    return out;
}

} // namespace todd::core
