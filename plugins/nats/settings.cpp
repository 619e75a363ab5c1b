// SPDX-License-Identifier: Apache-2.0
// Parsing and checking the NATS plugin's configuration keys, and turning
// them into nats.c connection options.
#include "settings.hpp"
#include "keys.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>

namespace todd_nats {

using todd::comms::sdk::Config;
using todd::comms::sdk::Error;
using todd::comms::sdk::KeyReader;

namespace {

[[noreturn]] void refuse(const char *key, const std::string &why)
{
    KeyReader::refuse(key, why);
}

// [nats://|tls://][user[:pass]@]host[:port]; returns true for tls://.
bool check_server(const std::string &url)
{
    std::string rest = url;
    bool tls = false;
    auto scheme = rest.find("://");
    if (scheme != std::string::npos) {
        std::string s = rest.substr(0, scheme);
        if (s != "nats" && s != "tls")
            refuse("servers", "item '" + url + "' has scheme '" + s +
                                  "'; only nats:// and tls:// are known");
        tls = s == "tls";
        rest = rest.substr(scheme + 3);
    }
    if (auto at = rest.rfind('@'); at != std::string::npos)
        rest = rest.substr(at + 1);
    std::string host = rest, port;
    if (!rest.empty() && rest.front() == '[') { // [v6]:port
        auto close = rest.find(']');
        if (close == std::string::npos)
            refuse("servers", "item '" + url + "' has an unclosed '['");
        host = rest.substr(0, close + 1);
        if (close + 1 < rest.size()) {
            if (rest[close + 1] != ':')
                refuse("servers", "item '" + url + "' is not host:port");
            port = rest.substr(close + 2);
        }
    } else if (auto colon = rest.rfind(':'); colon != std::string::npos) {
        host = rest.substr(0, colon);
        port = rest.substr(colon + 1);
        if (port.empty())
            refuse("servers", "item '" + url + "' has an empty port");
    }
    if (host.empty() || host == "[]")
        refuse("servers", "item '" + url + "' names no host");
    for (char c : host + port)
        if (c == ' ' || c == '\t' || c == '/' || c == '?' || c == '#')
            refuse("servers", "item '" + url + "' is not a NATS URL");
    if (!port.empty()) {
        char *end = nullptr;
        errno = 0;
        long p = std::strtol(port.c_str(), &end, 10);
        if (errno != 0 || *end != '\0' || p < 1 || p > 65535)
            refuse("servers", "item '" + url + "' has no valid port (1-65535)");
    }
    return tls;
}

// A stream name: no blanks, '.', '*', '>', path separators (it is a
// directory in the server's store).
void check_stream(const std::string &name)
{
    if (name.empty() || name.size() > 64)
        refuse("stream", "= '" + name + "' must have 1 to 64 characters");
    for (unsigned char c : name)
        if (c <= ' ' || c == '.' || c == '*' || c == '>' || c == '/' ||
            c == '\\' || c >= 0x7f)
            refuse("stream", "= '" + name +
                                 "' may hold only printable ASCII without "
                                 "blanks, '.', '*', '>', '/' or '\\'");
}

// A subject prefix: one or more non-empty tokens without wildcards.
void check_prefix(const std::string &p)
{
    const std::string why = "= '" + p + "' ";
    if (p.empty() || p.size() > 128)
        refuse("subject_prefix", why + "must have 1 to 128 characters");
    if (p.front() == '.' || p.back() == '.' ||
        p.find("..") != std::string::npos)
        refuse("subject_prefix", why + "has an empty token");
    for (unsigned char c : p)
        if (c <= ' ' || c == '*' || c == '>' || c >= 0x7f)
            refuse("subject_prefix",
                   why + "may not hold blanks, '*', '>' or non-ASCII");
    if (p.front() == '$' || p.rfind("_TODD", 0) == 0 ||
        p.rfind("_INBOX", 0) == 0)
        refuse("subject_prefix",
               why + "is reserved ($..., _INBOX and _TODD are the server's "
                     "and the plugin's own)");
}

uint64_t fnv1a64(const std::string &s)
{
    uint64_t h = 14695981039346656037ull;
    for (unsigned char c : s) {
        h ^= c;
        h *= 1099511628211ull;
    }
    return h;
}

} // namespace

std::string Settings::encode(const std::string &destination)
{
    static const char hex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(destination.size());
    for (unsigned char c : destination) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9') || c == '-') {
            out += char(c);
        } else {
            out += '_';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    if (out.empty())
        out = "_"; // the empty destination: no other encoding is "_"
    return out;
}

std::string Settings::consumer_of(const std::string &destination) const
{
    // A consumer is a directory in the server's store: long names keep
    // their head and get a hash of the whole name.
    std::string e = encode(destination);
    if (e.size() <= 160)
        return e;
    char tail[24];
    std::snprintf(tail, sizeof tail, "_H%016llx",
                  (unsigned long long)fnv1a64(destination));
    return e.substr(0, 140) + tail;
}

Settings parse_settings(const Config &c)
{
    KeyReader r(c, kKeys);
    Settings s;
    s.servers = r.list("servers");
    if (s.servers.empty())
        refuse("servers", "is empty: name at least one server");
    if (s.servers.size() > 64)
        refuse("servers", "names more than 64 servers");
    bool tls_url = false;
    for (const auto &u : s.servers)
        tls_url = check_server(u) || tls_url;
    s.name = r.text("name");
    for (unsigned char ch : s.name)
        if (ch < ' ')
            refuse("name", "holds a control character");
    s.user = r.text("user");
    s.password = r.text("password");
    s.token = r.text("token");
    s.creds_file = r.readable_file("creds_file");
    if (!s.password.empty() && s.user.empty())
        refuse("password", "is set without user");
    const int methods = int(!s.user.empty()) + int(!s.token.empty()) +
                        int(!s.creds_file.empty());
    if (methods > 1)
        refuse(!s.token.empty() ? "token" : "creds_file",
               "is set together with another way to authenticate (user, "
               "token, creds_file): choose one");
    s.tls_ca = r.readable_file("tls_ca");
    s.tls_cert = r.readable_file("tls_cert");
    s.tls_key = r.readable_file("tls_key");
    if (s.tls_cert.empty() != s.tls_key.empty())
        refuse(s.tls_cert.empty() ? "tls_key" : "tls_cert",
               "is set without " +
                   std::string(s.tls_cert.empty() ? "tls_cert" : "tls_key"));
    s.tls_hostname = r.text("tls_hostname");
    s.tls_verify = r.flag("tls_verify");
    s.tls =
        r.flag("tls") || tls_url || !s.tls_ca.empty() || !s.tls_cert.empty();
    s.stream = r.text("stream");
    check_stream(s.stream);
    s.subject_prefix = r.text("subject_prefix");
    check_prefix(s.subject_prefix);
    s.create_stream = r.flag("create_stream");
    s.replicas = int(r.ranged("replicas", 1, 5));
    s.storage = r.one_of("storage", {"file", "memory"});
    auto ms = [&](const char *key, long long lo, long long hi) {
        return milliseconds(r.ranged(key, lo, hi));
    };
    constexpr long long day = 86400000, year = 365 * day;
    s.retention = ms("retention_ms", 1000, 10 * year);
    s.duplicate_window = ms("duplicate_window_ms", 100, day);
    if (s.duplicate_window > s.retention)
        refuse("duplicate_window_ms", "is longer than retention_ms");
    s.ack_wait = ms("ack_wait_ms", 100, day);
    s.max_ack_pending = int(r.ranged("max_ack_pending", 1, 100000));
    s.connect_timeout = ms("connect_timeout_ms", 10, 600000);
    s.publish_timeout = ms("publish_timeout_ms", 10, 600000);
    s.reconnect_wait = ms("reconnect_wait_ms", 1, 600000);
    s.ping_interval = ms("ping_interval_ms", 100, 3600000);
    return s;
}

std::string nats_error(natsStatus st)
{
    std::string text = natsStatus_GetText(st);
    natsStatus last = NATS_OK;
    const char *detail = nats_GetLastError(&last);
    if (detail != nullptr && *detail != '\0' && text != detail)
        text += std::string(": ") + detail;
    return text;
}

OptionsPtr make_options(const Settings &s)
{
    natsOptions *raw = nullptr;
    if (natsStatus st = natsOptions_Create(&raw); st != NATS_OK)
        throw Error(TODD_COMMS_E_NOMEM, "nats.c options: " + nats_error(st));
    OptionsPtr o(raw);
    auto must = [](const char *key, natsStatus st) {
        if (st != NATS_OK)
            refuse(key, "was refused by the NATS client: " + nats_error(st));
    };
    std::vector<const char *> urls;
    for (const auto &u : s.servers)
        urls.push_back(u.c_str());
    must("servers",
         natsOptions_SetServers(o.get(), urls.data(), int(urls.size())));
    must("name", natsOptions_SetName(o.get(), s.name.c_str()));
    if (!s.user.empty())
        must("user", natsOptions_SetUserInfo(o.get(), s.user.c_str(),
                                             s.password.c_str()));
    if (!s.token.empty())
        must("token", natsOptions_SetToken(o.get(), s.token.c_str()));
    if (!s.creds_file.empty())
        must("creds_file", natsOptions_SetUserCredentialsFromFiles(
                               o.get(), s.creds_file.c_str(), nullptr));
    if (s.tls) {
        must("tls", natsOptions_SetSecure(o.get(), true));
        if (!s.tls_ca.empty())
            must("tls_ca", natsOptions_LoadCATrustedCertificates(
                               o.get(), s.tls_ca.c_str()));
        if (!s.tls_cert.empty())
            must("tls_cert",
                 natsOptions_LoadCertificatesChain(o.get(), s.tls_cert.c_str(),
                                                   s.tls_key.c_str()));
        if (!s.tls_hostname.empty())
            must("tls_hostname", natsOptions_SetExpectedHostname(
                                     o.get(), s.tls_hostname.c_str()));
        if (!s.tls_verify)
            must("tls_verify",
                 natsOptions_SkipServerVerification(o.get(), true));
    }
    must("connect_timeout_ms",
         natsOptions_SetTimeout(o.get(), s.connect_timeout.count()));
    must("reconnect_wait_ms",
         natsOptions_SetReconnectWait(o.get(), s.reconnect_wait.count()));
    // Reconnect for ever: the programs decide when to give up.
    must("servers", natsOptions_SetMaxReconnect(o.get(), -1));
    // A request (a JetStream publish or API call) fails at once while the
    // connection is down, rather than waiting out its timeout for a server
    // that is gone: publish sends it again once reconnected, and nothing
    // that unsubscribe or stop waits for blocks on it.
    must("servers", natsOptions_SetFailRequestsOnDisconnect(o.get(), true));
    must("ping_interval_ms",
         natsOptions_SetPingInterval(o.get(), s.ping_interval.count()));
    must("ping_interval_ms", natsOptions_SetMaxPingsOut(o.get(), 2));
    return o;
}

} // namespace todd_nats
