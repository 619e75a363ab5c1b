// SPDX-License-Identifier: Apache-2.0
// The Kafka plugin's configuration, parsed and checked once in create:
// anything a retry cannot fix (a bad value, a TLS file librdkafka cannot
// load) is refused there with E_CONFIG naming the key, before anything
// connects.
#pragma once

#include <todd/comms/sdk.hpp>

#include <librdkafka/rdkafka.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace todd_kafka {

using std::chrono::milliseconds;

// The defaults are the key table's (keys.hpp), set by parse_settings.
struct Settings {
    std::vector<std::string> bootstrap; // host:port
    std::string client_id, topic_prefix;
    int topics = 0, partitions = 0, replication_factor = 0;
    long long retention_ms = 0;
    bool create_topics = false;
    std::string security_protocol, sasl_mechanism, sasl_username, sasl_password;
    std::string ssl_ca, ssl_cert, ssl_key, ssl_key_password;
    bool ssl_verify_hostname = true;
    milliseconds connect_timeout{0}, publish_timeout{0}, reconnect_max{0},
        session_timeout{0}, heartbeat{0}, max_poll_interval{0},
        commit_interval{0}, linger{0}, route_refresh{0};
    std::string debug;

    /** The name of message topic i. */
    std::string topic_name(int i) const
    {
        return topic_prefix + "messages." + std::to_string(i);
    }
    /** The consumer group of a destination's subscribers. */
    std::string group_of(const std::string &destination) const
    {
        return topic_prefix + "dest." + destination;
    }
};

/** Throws todd::comms::sdk::Error(E_CONFIG) naming the key and the reason. */
Settings parse_settings(const todd::comms::sdk::Config &c);

/** Owns an rd_kafka_conf_t until it is handed to rd_kafka_new. */
struct ConfDeleter {
    void operator()(rd_kafka_conf_t *c) const { rd_kafka_conf_destroy(c); }
};
using ConfPtr = std::unique_ptr<rd_kafka_conf_t, ConfDeleter>;

/** What the handle is for: properties differ per role. */
enum class Role { producer, consumer };

/**
 * librdkafka properties common to every handle of the instance (servers,
 * client id, security, timeouts) plus the role's own. Throws Error(E_CONFIG)
 * naming our key when librdkafka refuses a value.
 */
ConfPtr make_conf(const Settings &s, Role role);

/**
 * Refuse TLS and SASL settings librdkafka cannot use (unreadable or bad PEM
 * files, a key that does not match its certificate) by building a handle
 * that connects nowhere. Throws Error(E_CONFIG) with librdkafka's reason.
 */
void check_security(const Settings &s);

} // namespace todd_kafka
