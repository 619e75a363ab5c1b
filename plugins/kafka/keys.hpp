// SPDX-License-Identifier: Apache-2.0
// The Kafka plugin's configuration keys: the one place their defaults are
// stated. parse_settings falls back on them (the host fills them in).
#pragma once

#include <todd/comms/sdk.hpp>

#include <string_view>

namespace todd_kafka {

// clang-format off
inline constexpr todd_comms_config_key kKeys[] = {
    {"bootstrap_servers", TODD_COMMS_CFG_LIST, 0, "127.0.0.1:9092", "brokers to bootstrap from: host:port list"},
    {"client_id", TODD_COMMS_CFG_STRING, 0, "todd", "client.id the broker logs and quotas see"},
    {"topic_prefix", TODD_COMMS_CFG_STRING, 0, "todd.", "prefix of the plugin's topics (<prefix>messages.<n>) and consumer groups (<prefix>dest.<destination>)"},
    {"topics", TODD_COMMS_CFG_INT, 0, "8", "how many message topics destinations are spread over (1-1000; every peer must use the same value)"},
    {"partitions", TODD_COMMS_CFG_INT, 0, "4", "partitions per message topic when the plugin creates it: how many competing subscribers of one destination can share it"},
    {"replication_factor", TODD_COMMS_CFG_INT, 0, "-1", "replicas per partition when the plugin creates a topic (-1 = the broker's default.replication.factor)"},
    {"retention_ms", TODD_COMMS_CFG_INT, 0, "86400000", "how long the broker keeps messages nobody consumed, ms (topic retention.ms)"},
    {"create_topics", TODD_COMMS_CFG_BOOL, 0, "true", "create the message topics at start if missing (off: an operator made them)"},
    {"security_protocol", TODD_COMMS_CFG_STRING, 0, "plaintext", "plaintext, ssl, sasl_plaintext or sasl_ssl"},
    {"sasl_mechanism", TODD_COMMS_CFG_STRING, 0, "PLAIN", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (sasl_* protocols)"},
    {"sasl_username", TODD_COMMS_CFG_STRING, 0, nullptr, "SASL user name (sasl_* protocols)"},
    {"sasl_password", TODD_COMMS_CFG_SECRET, 0, nullptr, "SASL password (never logged)"},
    {"ssl_ca", TODD_COMMS_CFG_STRING, 0, nullptr, "CA certificate file (PEM) to verify the brokers (ssl, sasl_ssl)"},
    {"ssl_cert", TODD_COMMS_CFG_STRING, 0, nullptr, "client certificate file (PEM), with ssl_key"},
    {"ssl_key", TODD_COMMS_CFG_STRING, 0, nullptr, "client private key file (PEM), with ssl_cert"},
    {"ssl_key_password", TODD_COMMS_CFG_SECRET, 0, nullptr, "password of an encrypted ssl_key (never logged)"},
    {"ssl_verify_hostname", TODD_COMMS_CFG_BOOL, 0, "true", "check that the broker's certificate names the host connected to"},
    {"connect_timeout_ms", TODD_COMMS_CFG_INT, 0, "10000", "TCP connect + TLS + SASL setup timeout per broker connection, ms"},
    {"publish_timeout_ms", TODD_COMMS_CFG_INT, 0, "10000", "how long a publish waits for the broker's acknowledgement, ms"},
    {"reconnect_max_ms", TODD_COMMS_CFG_INT, 0, "5000", "cap of the exponential reconnect backoff, ms"},
    {"session_timeout_ms", TODD_COMMS_CFG_INT, 0, "10000", "consumer group session timeout: a subscriber that vanished loses its share after this, ms"},
    {"heartbeat_interval_ms", TODD_COMMS_CFG_INT, 0, "1000", "consumer group heartbeat: a new competing subscriber waits up to this long for the others to make room, ms"},
    {"max_poll_interval_ms", TODD_COMMS_CFG_INT, 0, "300000", "longest one delivery may take before the subscriber is thought dead, ms"},
    {"commit_interval_ms", TODD_COMMS_CFG_INT, 0, "500", "how often settled offsets are committed, ms (a crash redelivers at most this much)"},
    {"linger_ms", TODD_COMMS_CFG_INT, 0, "1", "how long the producer waits to batch messages, ms"},
    {"route_refresh_ms", TODD_COMMS_CFG_INT, 0, "2000", "how often a publisher re-reads who subscribes to a destination it sends to, ms"},
    {"debug", TODD_COMMS_CFG_STRING, 0, "", "librdkafka debug contexts (e.g. broker,protocol,cgrp), logged at debug level"},
};
// clang-format on

/** The default text of key name, nullptr for a name not in kKeys. */
constexpr const char *key_default(std::string_view name)
{
    return todd::comms::sdk::key_default(kKeys, name);
}

} // namespace todd_kafka
