// SPDX-License-Identifier: Apache-2.0
// server.cfg -> ServerConfig. ToDD's file is read unchanged; our own keys
// are additions in the same sections (docs/server.md).
#include <todd/server/server.hpp>

#include <todd/core/netif.hpp>

#include <climits>
#include <cmath>
#include <cstdint>
#include <set>

namespace todd::server {

using core::ConfigError;

namespace {

std::string where(const core::IniFile &ini, const std::string &sec,
                  const std::string &key)
{
    return ini.where(sec, key) + ": [" + sec + "] " + key;
}

uint16_t port_value(const core::IniFile &ini, const std::string &sec,
                    const std::string &key, uint16_t fallback)
{
    if (!ini.has(sec, key))
        return fallback;
    std::string v = ini.get(sec, key);
    try {
        size_t used = 0;
        long n = std::stol(v, &used);
        if (used == v.size() && n >= 0 && n <= 65535)
            return static_cast<uint16_t>(n);
    } catch (const std::exception &) {
    }
    throw ConfigError(where(ini, sec, key) + ": \"" + v +
                      "\" is not a port number (0-65535)");
}

/** Seconds, fractions allowed ("0.5"). */
double seconds_value(const core::IniFile &ini, const std::string &sec,
                     const std::string &key, double fallback)
{
    if (!ini.has(sec, key))
        return fallback;
    std::string v = ini.get(sec, key);
    try {
        size_t used = 0;
        double d = std::stod(v, &used);
        if (used == v.size() && d >= 0 && std::isfinite(d))
            return d;
    } catch (const std::exception &) {
    }
    throw ConfigError(where(ini, sec, key) + ": \"" + v +
                      "\" is not a number of seconds");
}

/** A count or size from 1 to max. */
size_t count_value(const core::IniFile &ini, const std::string &sec,
                   const std::string &key, size_t fallback, size_t max)
{
    if (!ini.has(sec, key))
        return fallback;
    std::string v = ini.get(sec, key);
    try {
        size_t used = 0;
        unsigned long long n = std::stoull(v, &used);
        if (used == v.size() && v[0] != '-' && n >= 1 && n <= max)
            return static_cast<size_t>(n);
    } catch (const std::exception &) {
    }
    throw ConfigError(where(ini, sec, key) + ": \"" + v +
                      "\" is not a whole number from 1 to " +
                      std::to_string(max));
}

milliseconds ms(double s)
{
    return milliseconds(static_cast<int64_t>(std::llround(s * 1000)));
}

} // namespace

ServerConfig load_server_config(const core::IniFile &ini,
                                std::vector<std::string> *notes)
{
    static const std::map<std::string, std::set<std::string>> known = {
        {"api",
         {"host", "port", "streamport", "streamacktimeout", "streamlinger",
          "maxbodybytes", "maxheaderbytes", "maxconnections", "idletimeout"}},
        {"assets", {"ip", "port", "downloadretry"}},
        {"grouping", {"interval", "agentexpiry"}},
        {"testing",
         {"timeout", "sourcetimelimit", "installtimeout", "resultgrace"}},
        {"localresources", {"defaultinterface", "ipaddroverride", "optdir"}},
        {"metrics", {"maxresultseries", "resultttl"}},
    };
    for (const auto &[sec, keys] : ini.sections) {
        if (sec == "comms")
            continue; // resolve_comms validates these against the plugin
        if (sec == "db" || sec == "tsdb") {
            if (notes)
                notes->push_back("[" + sec + "] in " + ini.path +
                                 " is not used: objects and results are "
                                 "kept in the server's SQLite file");
            continue;
        }
        auto k = known.find(sec);
        if (k == known.end())
            throw ConfigError(ini.where(sec) + ": unknown section [" + sec +
                              "]");
        for (const auto &kv : keys)
            if (!k->second.count(kv.first))
                throw ConfigError(where(ini, sec, kv.first) +
                                  ": unknown key in section [" + sec + "]");
    }

    ServerConfig c;
    if (ini.has("api", "host") && !ini.get("api", "host").empty())
        c.api_host = ini.get("api", "host");
    c.api_port = port_value(ini, "api", "port", c.api_port);
    c.stream_port = port_value(ini, "api", "streamport", c.stream_port);
    c.stream_ack_timeout =
        ms(seconds_value(ini, "api", "streamacktimeout", 30));
    c.stream_linger = ms(seconds_value(ini, "api", "streamlinger", 10));
    c.max_body_bytes = count_value(ini, "api", "maxbodybytes", c.max_body_bytes,
                                   size_t(1) << 40);
    c.max_header_bytes = count_value(ini, "api", "maxheaderbytes",
                                     c.max_header_bytes, UINT32_MAX);
    c.max_connections =
        count_value(ini, "api", "maxconnections", c.max_connections, 1000000);
    if (ini.has("api", "idletimeout")) {
        c.idle_timeout = ms(seconds_value(ini, "api", "idletimeout", 120));
        if (c.idle_timeout.count() <= 0)
            throw ConfigError(where(ini, "api", "idletimeout") +
                              ": must be above 0 seconds");
    }
    if (ini.has("assets", "ip") && !ini.get("assets", "ip").empty())
        c.assets_host = ini.get("assets", "ip");
    c.assets_port = port_value(ini, "assets", "port", c.assets_port);
    c.download_retry = ms(seconds_value(ini, "assets", "downloadretry", 30));
    if (ini.has("grouping", "interval") && notes)
        notes->push_back("[Grouping] Interval is not needed: groups are "
                         "re-evaluated whenever agents or groups change");
    c.agent_expiry = ms(seconds_value(ini, "grouping", "agentexpiry", 30));
    c.target_time_limit = static_cast<int64_t>(
        std::llround(seconds_value(ini, "testing", "timeout", 30)));
    c.source_time_limit = static_cast<int64_t>(
        std::llround(seconds_value(ini, "testing", "sourcetimelimit", 30)));
    c.install_timeout = ms(seconds_value(ini, "testing", "installtimeout", 30));
    c.result_grace = ms(seconds_value(ini, "testing", "resultgrace", 15));
    c.max_result_series = count_value(ini, "metrics", "maxresultseries",
                                      c.max_result_series, 10000000);
    if (ini.has("metrics", "resultttl")) {
        c.result_ttl = ms(seconds_value(ini, "metrics", "resultttl", 3600));
        if (c.result_ttl.count() <= 0)
            throw ConfigError(where(ini, "metrics", "resultttl") +
                              ": must be above 0 seconds");
    }
    if (ini.has("localresources", "optdir") &&
        !ini.get("localresources", "optdir").empty())
        c.opt_dir = ini.get("localresources", "optdir");

    std::string override_addr = ini.get("localresources", "ipaddroverride");
    std::string ifname = ini.get("localresources", "defaultinterface");
    if (!override_addr.empty()) {
        c.advertised_addr = override_addr;
    } else if (!ifname.empty()) {
        std::string why = " has no IPv4 address";
        try {
            c.advertised_addr = core::interface_ipv4(ifname).value_or("");
        } catch (const std::exception &e) {
            why = ": " + std::string(e.what());
        }
        if (c.advertised_addr.empty() && notes)
            notes->push_back("[LocalResources] DefaultInterface " + ifname +
                             why +
                             "; asset URLs fall back to the assets listen "
                             "address");
    }
    return c;
}

} // namespace todd::server
