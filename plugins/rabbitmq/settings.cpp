// SPDX-License-Identifier: Apache-2.0
// Parsing and checking the RabbitMQ plugin's configuration keys.
#include "settings.hpp"
#include "keys.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

namespace todd_rabbitmq {

using todd::comms::sdk::Config;
using todd::comms::sdk::Error;

namespace {

// The value of key, or its default in the key table (the host fills the
// defaults in; the table is the only place they are written).
std::string default_text(const char *key)
{
    const char *d = key_default(key);
    return d != nullptr ? d : "";
}

std::string text(const Config &c, const char *key)
{
    return c.str(key, default_text(key));
}

bool flag(const Config &c, const char *key)
{
    return c.boolean(key, default_text(key) == "true");
}

long long ranged(const Config &c, const char *key, long long lo, long long hi)
{
    long long v = c.integer(key, std::atoll(default_text(key).c_str()));
    if (v < lo || v > hi)
        throw Error(TODD_COMMS_E_CONFIG,
                    std::string("configuration key '") + key +
                        "' = " + std::to_string(v) + " is out of range [" +
                        std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return v;
}

// OpenSSL's reason for the last failure, or fallback.
std::string ssl_reason(const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    ERR_clear_error();
    if (e == 0)
        return fallback;
    const char *r = ERR_reason_error_string(e);
    return r != nullptr ? r : fallback;
}

struct FileCloser {
    void operator()(FILE *f) const { std::fclose(f); }
};
using File = std::unique_ptr<FILE, FileCloser>;

File open_tls_file(const char *key, const std::string &path)
{
    File f(std::fopen(path.c_str(), "r"));
    if (!f)
        throw Error(TODD_COMMS_E_CONFIG, std::string(key) + ": cannot read '" +
                                             path +
                                             "': " + std::strerror(errno));
    return f;
}

[[noreturn]] void bad_tls_file(const char *key, const std::string &path,
                               const std::string &why)
{
    throw Error(TODD_COMMS_E_CONFIG,
                std::string(key) + ": '" + path + "' is not usable: " + why);
}

// The first certificate of a PEM file; the caller frees it.
X509 *read_cert(const char *key, const std::string &path)
{
    File f = open_tls_file(key, path);
    ERR_clear_error();
    X509 *x = PEM_read_X509(f.get(), nullptr, nullptr, nullptr);
    if (x == nullptr)
        bad_tls_file(key, path,
                     "no PEM certificate in it (" + ssl_reason("not PEM") +
                         ")");
    return x;
}

// Refuses a passphrase instead of prompting on the terminal: the plugin has
// no key for one.
int no_passphrase(char *, int, int, void *)
{
    return -1;
}

} // namespace

void check_tls_files(const Settings &s)
{
    if (!s.tls_ca.empty())
        X509_free(read_cert("tls_ca", s.tls_ca));
    if (s.tls_cert.empty())
        return;
    X509 *cert = read_cert("tls_cert", s.tls_cert);
    File f = open_tls_file("tls_key", s.tls_key);
    ERR_clear_error();
    EVP_PKEY *pk =
        PEM_read_PrivateKey(f.get(), nullptr, &no_passphrase, nullptr);
    std::string why;
    if (pk == nullptr)
        why = "no unencrypted PEM private key in it (" + ssl_reason("not PEM") +
              ")";
    else if (X509_check_private_key(cert, pk) != 1)
        why = "it does not match the certificate '" + s.tls_cert + "'";
    EVP_PKEY_free(pk);
    X509_free(cert);
    ERR_clear_error();
    if (!why.empty())
        bad_tls_file("tls_key", s.tls_key, why);
}

Settings parse_settings(const Config &c)
{
    Settings s;
    int port = static_cast<int>(ranged(c, "port", 1, 65535));
    for (const auto &item : c.list("brokers")) {
        Broker b{item, port};
        std::string hostpart = item;
        std::string portpart;
        if (!item.empty() && item[0] == '[') { // [v6]:port
            auto close = item.find(']');
            if (close == std::string::npos)
                throw Error(TODD_COMMS_E_CONFIG,
                            "brokers: bad address '" + item + "'");
            hostpart = item.substr(1, close - 1);
            if (close + 1 < item.size() && item[close + 1] == ':')
                portpart = item.substr(close + 2);
        } else if (auto colon = item.rfind(':');
                   colon != std::string::npos && item.find(':') == colon) {
            hostpart = item.substr(0, colon);
            portpart = item.substr(colon + 1);
        }
        b.host = hostpart;
        if (!portpart.empty()) {
            char *end = nullptr;
            long p = std::strtol(portpart.c_str(), &end, 10);
            if (*end != '\0' || p < 1 || p > 65535)
                throw Error(TODD_COMMS_E_CONFIG,
                            "brokers: bad port in '" + item + "'");
            b.port = static_cast<int>(p);
        }
        if (b.host.empty())
            throw Error(TODD_COMMS_E_CONFIG,
                        "brokers: empty host in '" + item + "'");
        s.brokers.push_back(b);
    }
    if (s.brokers.empty())
        s.brokers.push_back({text(c, "host"), port});
    s.user = text(c, "user");
    s.password = text(c, "password");
    if (c.has("password_env")) {
        std::string name = c.str("password_env");
        const char *v = std::getenv(name.c_str());
        if (v == nullptr)
            throw Error(TODD_COMMS_E_CONFIG,
                        "password_env: environment variable '" + name +
                            "' is not set");
        s.password = v;
    }
    if (c.has("password_file")) {
        std::string path = c.str("password_file");
        std::ifstream f(path);
        if (!f)
            throw Error(TODD_COMMS_E_CONFIG, "password_file: cannot read '" +
                                                 path +
                                                 "': " + std::strerror(errno));
        std::getline(f, s.password);
        while (!s.password.empty() &&
               (s.password.back() == '\r' || s.password.back() == ' '))
            s.password.pop_back();
    }
    s.vhost = text(c, "vhost");
    s.exchange = text(c, "exchange");
    if (s.exchange.empty() || s.exchange.size() > 255)
        throw Error(TODD_COMMS_E_CONFIG, "exchange: must be 1-255 bytes");
    s.heartbeat = static_cast<int>(ranged(c, "heartbeat", 0, 3600));
    s.connect_timeout = milliseconds(ranged(c, "connect_timeout", 1, 600000));
    s.publish_timeout = milliseconds(ranged(c, "publish_timeout", 0, 3600000));
    s.reconnect_max = milliseconds(ranged(c, "reconnect_max", 10, 3600000));
    s.tls = flag(c, "tls");
    s.verify_peer = flag(c, "tls_verify_peer");
    s.verify_hostname = flag(c, "tls_verify_hostname");
    s.tls_ca = c.str("tls_ca");
    s.tls_cert = c.str("tls_cert");
    s.tls_key = c.str("tls_key");
    if (s.tls_cert.empty() != s.tls_key.empty())
        throw Error(TODD_COMMS_E_CONFIG,
                    "tls_cert and tls_key must be given together");
    s.prefetch = static_cast<uint32_t>(ranged(c, "prefetch", 0, 65535));
    s.confirms = flag(c, "confirms");
    s.durable = flag(c, "durable");
    s.dead_letter_exchange = text(c, "dead_letter_exchange");
    if (s.dead_letter_exchange.size() > 255)
        throw Error(TODD_COMMS_E_CONFIG,
                    "dead_letter_exchange: must be at most 255 bytes");
    if (s.tls)
        check_tls_files(s);
    return s;
}

} // namespace todd_rabbitmq
