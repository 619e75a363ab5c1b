// SPDX-License-Identifier: Apache-2.0
// The NATS plugin's configuration keys: the one place their defaults are
// stated (settings.cpp reads them through the SDK's KeyReader).
#pragma once

#include <todd/comms/sdk.hpp>

namespace todd_nats {

// clang-format off
inline constexpr todd_comms_config_key kKeys[] = {
    {"servers", TODD_COMMS_CFG_LIST, 0, "nats://127.0.0.1:4222", "NATS server URLs (nats://host:port or tls://host:port), a list for a cluster"},
    {"name", TODD_COMMS_CFG_STRING, 0, "todd", "connection name the server shows (connz, logs)"},
    {"user", TODD_COMMS_CFG_STRING, 0, nullptr, "user name, with password"},
    {"password", TODD_COMMS_CFG_SECRET, 0, nullptr, "password of user (never logged)"},
    {"token", TODD_COMMS_CFG_SECRET, 0, nullptr, "authentication token (never logged); not with user or creds_file"},
    {"creds_file", TODD_COMMS_CFG_STRING, 0, nullptr, "JWT and NKey seed credentials file (.creds) of a decentralised-auth account"},
    {"tls", TODD_COMMS_CFG_BOOL, 0, "false", "require TLS on every connection (also on for a tls:// server or when tls_ca is set)"},
    {"tls_ca", TODD_COMMS_CFG_STRING, 0, nullptr, "CA certificate file (PEM) the servers' certificates must chain to"},
    {"tls_cert", TODD_COMMS_CFG_STRING, 0, nullptr, "client certificate file (PEM), with tls_key"},
    {"tls_key", TODD_COMMS_CFG_STRING, 0, nullptr, "client private key file (PEM), with tls_cert"},
    {"tls_hostname", TODD_COMMS_CFG_STRING, 0, nullptr, "name the servers' certificates must carry, when not the host of the URL"},
    {"tls_verify", TODD_COMMS_CFG_BOOL, 0, "true", "verify the servers' certificates (off only for tests)"},
    {"stream", TODD_COMMS_CFG_STRING, 0, "TODD", "JetStream stream that holds the messages of every destination"},
    {"subject_prefix", TODD_COMMS_CFG_STRING, 0, "todd.msg", "subjects of destinations: <prefix>.<encoded destination> (the stream's subjects are <prefix>.>)"},
    {"create_stream", TODD_COMMS_CFG_BOOL, 0, "true", "create the stream at start if missing (off: an operator made it)"},
    {"replicas", TODD_COMMS_CFG_INT, 0, "1", "replicas of the stream and its consumers when the plugin creates them (1-5; 3 in a cluster)"},
    {"storage", TODD_COMMS_CFG_STRING, 0, "file", "stream storage when the plugin creates it: file or memory"},
    {"retention_ms", TODD_COMMS_CFG_INT, 0, "86400000", "how long the stream keeps a message nobody acknowledged, ms (MaxAge)"},
    {"duplicate_window_ms", TODD_COMMS_CFG_INT, 0, "120000", "the stream's de-duplication window: a publish retried within it is stored once, ms"},
    {"ack_wait_ms", TODD_COMMS_CFG_INT, 0, "60000", "how long a delivery may take before JetStream delivers the message again, ms"},
    {"max_ack_pending", TODD_COMMS_CFG_INT, 0, "64", "unacknowledged messages a destination's subscribers hold at once (a subscription's prefetch, when given, is used instead)"},
    {"connect_timeout_ms", TODD_COMMS_CFG_INT, 0, "5000", "TCP connect + TLS + handshake timeout per server, ms"},
    {"publish_timeout_ms", TODD_COMMS_CFG_INT, 0, "10000", "how long a publish waits for JetStream's acknowledgement (retrying through a reconnect or leader election), ms"},
    {"reconnect_wait_ms", TODD_COMMS_CFG_INT, 0, "1000", "wait between reconnect attempts to the same server, ms"},
    {"ping_interval_ms", TODD_COMMS_CFG_INT, 0, "5000", "client pings: a dead server is noticed after two unanswered ones, ms"},
};
// clang-format on

} // namespace todd_nats
