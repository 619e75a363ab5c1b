// SPDX-License-Identifier: Apache-2.0
#include <todd/agent/identity.hpp>
#include <todd/core/log.hpp>
#include <todd/core/netif.hpp>

#include <openssl/rand.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <unistd.h>

namespace fs = std::filesystem;

namespace todd::agent {

namespace {
constexpr const char *log_component = "agent.identity";
}

std::string generate_uuid()
{
    static const char hex[] = "0123456789abcdef";
    for (;;) {
        unsigned char bytes[32];
        if (RAND_bytes(bytes, sizeof bytes) != 1)
            throw std::runtime_error("no random bytes for the agent UUID");
        std::string s;
        for (unsigned char b : bytes) {
            s.push_back(hex[b >> 4]);
            s.push_back(hex[b & 15]);
        }
        // The Go agent regenerates an id whose first 12 characters are all
        // digits; keep that so ids look the same.
        if (s.find_first_not_of("0123456789") < 12)
            return s;
    }
}

bool valid_uuid(const std::string &s)
{
    return s.size() == 64 &&
           s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

std::string load_or_create_uuid(const std::string &state_dir)
{
    fs::path file = fs::path(state_dir) / "agent-uuid";
    std::error_code ec;
    if (fs::exists(file, ec)) {
        std::ifstream in(file);
        std::string s;
        if (!in || !(in >> s))
            throw std::runtime_error("cannot read " + file.string());
        if (valid_uuid(s))
            return s;
        log::warn(log_component, file.string() +
                                     " does not hold a 64-hex UUID; making "
                                     "a new one");
    }
    fs::create_directories(state_dir, ec);
    if (ec)
        throw std::runtime_error("cannot create state directory " + state_dir +
                                 ": " + ec.message());
    std::string uuid = generate_uuid();
    fs::path tmp = file;
    tmp += ".tmp";
    {
        std::ofstream out(tmp, std::ios::trunc);
        out << uuid << '\n';
        out.flush();
        if (!out)
            throw std::runtime_error("cannot write " + tmp.string());
    }
    fs::rename(tmp, file, ec);
    if (ec)
        throw std::runtime_error("cannot rename " + tmp.string() + " to " +
                                 file.string() + ": " + ec.message());
    log::info(log_component,
              "new agent UUID " + uuid + " kept in " + file.string());
    return uuid;
}

namespace {

/** An address lookup; one that fails (logged) falls back as one that finds
 *  nothing does. */
template <class Lookup> std::optional<std::string> look_up(Lookup lookup)
{
    try {
        return lookup();
    } catch (const std::exception &e) {
        log::warn(log_component, e.what());
        return std::nullopt;
    }
}

} // namespace

std::string derive_default_addr(const std::string &ip_override,
                                const std::string &default_interface)
{
    if (!ip_override.empty())
        return ip_override;
    if (!default_interface.empty()) {
        if (auto a = look_up(
                [&] { return core::interface_ipv4(default_interface); }))
            return *a;
        log::warn(log_component, "interface " + default_interface +
                                     " has no IPv4 address; trying the "
                                     "default-route interface");
    }
    if (auto iface = look_up(core::default_route_interface)) {
        if (auto a = look_up([&] { return core::interface_ipv4(*iface); }))
            return *a;
    }
    log::warn(log_component, "no IPv4 address found (set [LocalResources] "
                             "IPAddrOverride); advertising 127.0.0.1");
    return "127.0.0.1";
}

} // namespace todd::agent
