// SPDX-License-Identifier: Apache-2.0
// Parsing and checking the Kafka plugin's configuration keys, and turning
// them into librdkafka properties.
#include "settings.hpp"
#include "keys.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

namespace todd_kafka {

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

[[noreturn]] void refuse(const char *key, const std::string &why)
{
    throw Error(TODD_COMMS_E_CONFIG,
                std::string("configuration key '") + key + "' " + why);
}

long long ranged(const Config &c, const char *key, long long lo, long long hi)
{
    long long v = c.integer(key, std::atoll(default_text(key).c_str()));
    if (v < lo || v > hi)
        refuse(key, "= " + std::to_string(v) + " is out of range [" +
                        std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return v;
}

milliseconds ms(const Config &c, const char *key, long long lo, long long hi)
{
    return milliseconds(ranged(c, key, lo, hi));
}

std::string one_of(const Config &c, const char *key,
                   std::initializer_list<const char *> allowed)
{
    std::string v = text(c, key);
    std::string list;
    for (const char *a : allowed) {
        if (v == a)
            return v;
        list += std::string(list.empty() ? "" : ", ") + a;
    }
    refuse(key, "= '" + v + "' is not one of " + list);
}

// host:port with a port in 1..65535 and a non-empty host ([v6]:port too).
void check_server(const std::string &s)
{
    auto colon = s.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == s.size())
        refuse("bootstrap_servers",
               "item '" + s + "' is not host:port (e.g. 127.0.0.1:9092)");
    const std::string port = s.substr(colon + 1);
    char *end = nullptr;
    errno = 0;
    long p = std::strtol(port.c_str(), &end, 10);
    if (errno != 0 || *end != '\0' || p < 1 || p > 65535)
        refuse("bootstrap_servers",
               "item '" + s + "' has no valid port (1-65535)");
    for (char ch : s)
        if (ch == ' ' || ch == '\t' || ch == '/' || ch == ',')
            refuse("bootstrap_servers", "item '" + s + "' is not host:port");
}

void readable(const char *key, const std::string &path)
{
    if (path.empty())
        return;
    if (::access(path.c_str(), R_OK) != 0)
        refuse(key, "names '" + path +
                        "', which cannot be read: " + std::strerror(errno));
}

// One property, naming our key when librdkafka refuses it.
void set(rd_kafka_conf_t *conf, const char *prop, const std::string &value,
         const char *key)
{
    char err[512];
    if (rd_kafka_conf_set(conf, prop, value.c_str(), err, sizeof err) !=
        RD_KAFKA_CONF_OK)
        refuse(key, std::string("(librdkafka ") + prop + "): " + err);
}

std::string count(milliseconds m)
{
    return std::to_string(m.count());
}

} // namespace

Settings parse_settings(const Config &c)
{
    Settings s;
    s.bootstrap =
        c.has("bootstrap_servers")
            ? c.list("bootstrap_servers")
            : std::vector<std::string>{default_text("bootstrap_servers")};
    if (s.bootstrap.empty())
        refuse("bootstrap_servers", "is empty: name at least one host:port");
    for (const auto &b : s.bootstrap)
        check_server(b);
    s.client_id = text(c, "client_id");
    if (s.client_id.empty())
        refuse("client_id", "is empty");
    s.topic_prefix = text(c, "topic_prefix");
    // Kafka topic names: [a-zA-Z0-9._-], at most 249 characters.
    if (s.topic_prefix.size() > 200)
        refuse("topic_prefix", "is longer than 200 characters");
    for (char ch : s.topic_prefix)
        if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' ||
              ch == '_' || ch == '-'))
            refuse("topic_prefix", "= '" + s.topic_prefix +
                                       "' has a character Kafka refuses in "
                                       "topic names (allowed: a-z A-Z 0-9 . "
                                       "_ -)");
    s.topics = static_cast<int>(ranged(c, "topics", 1, 1000));
    s.partitions = static_cast<int>(ranged(c, "partitions", 1, 10000));
    s.replication_factor =
        static_cast<int>(ranged(c, "replication_factor", -1, 32767));
    if (s.replication_factor == 0)
        refuse("replication_factor", "= 0: use -1 (broker default) or >= 1");
    s.retention_ms = ranged(c, "retention_ms", 60000, 365LL * 86400000);
    s.create_topics = flag(c, "create_topics");

    s.security_protocol =
        one_of(c, "security_protocol",
               {"plaintext", "ssl", "sasl_plaintext", "sasl_ssl"});
    const bool sasl = s.security_protocol.rfind("sasl_", 0) == 0;
    const bool ssl =
        s.security_protocol == "ssl" || s.security_protocol == "sasl_ssl";
    s.sasl_mechanism = one_of(c, "sasl_mechanism",
                              {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"});
    s.sasl_username = text(c, "sasl_username");
    s.sasl_password = text(c, "sasl_password");
    if (sasl && s.sasl_username.empty())
        refuse("sasl_username", "is missing: security_protocol '" +
                                    s.security_protocol + "' needs it");
    if (sasl && !c.has("sasl_password"))
        refuse("sasl_password", "is missing: security_protocol '" +
                                    s.security_protocol + "' needs it");
    if (!sasl && (!s.sasl_username.empty() || c.has("sasl_password")))
        refuse("security_protocol",
               "= '" + s.security_protocol +
                   "' does not use SASL, but sasl_username or sasl_password "
                   "is set (use sasl_plaintext or sasl_ssl)");
    s.ssl_ca = text(c, "ssl_ca");
    s.ssl_cert = text(c, "ssl_cert");
    s.ssl_key = text(c, "ssl_key");
    s.ssl_key_password = text(c, "ssl_key_password");
    s.ssl_verify_hostname = flag(c, "ssl_verify_hostname");
    if (!ssl &&
        (!s.ssl_ca.empty() || !s.ssl_cert.empty() || !s.ssl_key.empty()))
        refuse("security_protocol",
               "= '" + s.security_protocol +
                   "' does not use TLS, but ssl_ca, ssl_cert or ssl_key is "
                   "set (use ssl or sasl_ssl)");
    if (s.ssl_cert.empty() != s.ssl_key.empty())
        refuse(s.ssl_cert.empty() ? "ssl_cert" : "ssl_key",
               "is missing: ssl_cert and ssl_key go together");
    readable("ssl_ca", s.ssl_ca);
    readable("ssl_cert", s.ssl_cert);
    readable("ssl_key", s.ssl_key);

    s.connect_timeout = ms(c, "connect_timeout_ms", 1000, 3600000);
    s.publish_timeout = ms(c, "publish_timeout_ms", 100, 3600000);
    s.reconnect_max = ms(c, "reconnect_max_ms", 10, 3600000);
    s.session_timeout = ms(c, "session_timeout_ms", 1000, 3600000);
    s.heartbeat = ms(c, "heartbeat_interval_ms", 100, 3600000);
    if (s.heartbeat >= s.session_timeout)
        refuse("heartbeat_interval_ms",
               "is not shorter than session_timeout_ms (a member would "
               "time out between two heartbeats)");
    s.max_poll_interval = ms(c, "max_poll_interval_ms", 1000, 86400000);
    if (s.max_poll_interval < s.session_timeout)
        refuse("max_poll_interval_ms",
               "is shorter than session_timeout_ms (librdkafka requires it "
               "to be at least as long)");
    s.commit_interval = ms(c, "commit_interval_ms", 10, 3600000);
    s.linger = ms(c, "linger_ms", 0, 10000);
    s.route_refresh = ms(c, "route_refresh_ms", 100, 3600000);
    s.debug = text(c, "debug");
    // librdkafka checks the rest of each value (and the debug contexts).
    make_conf(s, Role::producer);
    make_conf(s, Role::consumer);
    return s;
}

ConfPtr make_conf(const Settings &s, Role role)
{
    ConfPtr conf(rd_kafka_conf_new());
    rd_kafka_conf_t *c = conf.get();
    std::string servers;
    for (const auto &b : s.bootstrap)
        servers += (servers.empty() ? "" : ",") + b;
    set(c, "bootstrap.servers", servers, "bootstrap_servers");
    set(c, "client.id", s.client_id, "client_id");
    set(c, "security.protocol", s.security_protocol, "security_protocol");
    if (s.security_protocol.rfind("sasl_", 0) == 0) {
        set(c, "sasl.mechanisms", s.sasl_mechanism, "sasl_mechanism");
        set(c, "sasl.username", s.sasl_username, "sasl_username");
        set(c, "sasl.password", s.sasl_password, "sasl_password");
    }
    if (!s.ssl_ca.empty())
        set(c, "ssl.ca.location", s.ssl_ca, "ssl_ca");
    if (!s.ssl_cert.empty())
        set(c, "ssl.certificate.location", s.ssl_cert, "ssl_cert");
    if (!s.ssl_key.empty())
        set(c, "ssl.key.location", s.ssl_key, "ssl_key");
    if (!s.ssl_key_password.empty())
        set(c, "ssl.key.password", s.ssl_key_password, "ssl_key_password");
    if (s.security_protocol == "ssl" || s.security_protocol == "sasl_ssl")
        set(c, "ssl.endpoint.identification.algorithm",
            s.ssl_verify_hostname ? "https" : "none", "ssl_verify_hostname");
    set(c, "socket.connection.setup.timeout.ms", count(s.connect_timeout),
        "connect_timeout_ms");
    set(c, "reconnect.backoff.max.ms", count(s.reconnect_max),
        "reconnect_max_ms");
    set(c, "reconnect.backoff.ms",
        count(std::min(s.reconnect_max, milliseconds(100))),
        "reconnect_max_ms");
    if (!s.debug.empty())
        set(c, "debug", s.debug, "debug");
    // Our own test of liveness is the metadata probe; librdkafka's
    // broker.address.family default (any) is right for host names.
    if (role == Role::producer) {
        set(c, "enable.idempotence", "true", "publish_timeout_ms");
        set(c, "message.timeout.ms", count(s.publish_timeout),
            "publish_timeout_ms");
        set(c, "linger.ms", count(s.linger), "linger_ms");
    } else {
        set(c, "enable.auto.commit", "true", "commit_interval_ms");
        // Offsets are stored only once the host gave its verdict.
        set(c, "enable.auto.offset.store", "false", "commit_interval_ms");
        set(c, "auto.commit.interval.ms", count(s.commit_interval),
            "commit_interval_ms");
        // A destination nobody consumed from yet: everything it holds.
        set(c, "auto.offset.reset", "earliest", "topic_prefix");
        set(c, "session.timeout.ms", count(s.session_timeout),
            "session_timeout_ms");
        set(c, "heartbeat.interval.ms", count(s.heartbeat),
            "heartbeat_interval_ms");
        set(c, "max.poll.interval.ms", count(s.max_poll_interval),
            "max_poll_interval_ms");
        // Bound the prefetch (an agent reads a whole topic's traffic), but
        // not below what a subscription drains in a second: librdkafka 2.0
        // stops fetching a partition whose queue is over either bound and
        // looks again only ~1 s later (fetch.queue.backoff.ms came in 2.2),
        // so a bound of 1000 messages capped a subscription at about one
        // fetch (3,000 small records) a second. The byte bound is what
        // limits memory; the message count is librdkafka's default.
        set(c, "queued.min.messages", "100000", "topic_prefix");
        set(c, "queued.max.messages.kbytes", "65536", "topic_prefix");
    }
    return conf;
}

void check_security(const Settings &s)
{
    if (s.security_protocol == "plaintext")
        return;
    ConfPtr conf = make_conf(s, Role::producer);
    char err[512] = "";
    // No servers: the handle loads keys and certificates but connects to
    // nothing.
    set(conf.get(), "bootstrap.servers", "", "bootstrap_servers");
    rd_kafka_t *rk =
        rd_kafka_new(RD_KAFKA_PRODUCER, conf.get(), err, sizeof err);
    if (rk == nullptr) {
        // librdkafka names its property first ("ssl.key.location failed:
        // ..."): name ours, and the file.
        const struct {
            const char *prop, *key;
            const std::string &path;
        } files[] = {{"ssl.ca.location", "ssl_ca", s.ssl_ca},
                     {"ssl.certificate.location", "ssl_cert", s.ssl_cert},
                     {"ssl.key.location", "ssl_key", s.ssl_key}};
        for (const auto &f : files)
            if (std::strncmp(err, f.prop, std::strlen(f.prop)) == 0)
                refuse(f.key, "names '" + f.path +
                                  "', which librdkafka cannot use: " + err);
        throw Error(TODD_COMMS_E_CONFIG,
                    std::string("the TLS/SASL settings cannot be used "
                                "(ssl_ca, ssl_cert, ssl_key, "
                                "ssl_key_password): ") +
                        err);
    }
    conf.release(); // rd_kafka_new owns it now
    rd_kafka_destroy(rk);
}

} // namespace todd_kafka
