// SPDX-License-Identifier: Apache-2.0
// The RabbitMQ plugin's configuration keys: the one place their defaults are
// stated. parse_settings falls back on them (the host fills them in).
#pragma once

#include <todd/comms/sdk.hpp>

#include <string_view>

namespace todd_rabbitmq {

// clang-format off
inline constexpr todd_comms_config_key kKeys[] = {
    {"host", TODD_COMMS_CFG_STRING, 0, "localhost", "broker host name or address (used when 'brokers' is empty)"},
    {"port", TODD_COMMS_CFG_INT, 0, "5672", "broker port (5671 is the usual amqps port)"},
    {"brokers", TODD_COMMS_CFG_LIST, 0, nullptr, "cluster: host:port list tried in turn (overrides host/port)"},
    {"user", TODD_COMMS_CFG_STRING, 0, "guest", "user name"},
    {"password", TODD_COMMS_CFG_SECRET, 0, "guest", "password (never logged)"},
    {"password_file", TODD_COMMS_CFG_STRING, 0, nullptr, "read the password from this file (first line); overrides 'password'"},
    {"password_env", TODD_COMMS_CFG_STRING, 0, nullptr, "read the password from this environment variable; overrides 'password'"},
    {"vhost", TODD_COMMS_CFG_STRING, 0, "/", "virtual host"},
    {"heartbeat", TODD_COMMS_CFG_INT, 0, "10", "heartbeat interval in seconds (0 = off)"},
    {"connect_timeout", TODD_COMMS_CFG_INT, 0, "5000", "TCP connect + login timeout per broker, ms"},
    {"publish_timeout", TODD_COMMS_CFG_INT, 0, "5000", "how long a publish waits for a connection or a confirm, ms"},
    {"reconnect_max", TODD_COMMS_CFG_INT, 0, "5000", "cap of the exponential reconnect backoff, ms"},
    {"tls", TODD_COMMS_CFG_BOOL, 0, "false", "use amqps (TLS)"},
    {"tls_ca", TODD_COMMS_CFG_STRING, 0, nullptr, "CA certificate file (PEM) to verify the broker"},
    {"tls_cert", TODD_COMMS_CFG_STRING, 0, nullptr, "client certificate file (PEM)"},
    {"tls_key", TODD_COMMS_CFG_STRING, 0, nullptr, "client private key file (PEM)"},
    {"tls_verify_peer", TODD_COMMS_CFG_BOOL, 0, "true", "verify the broker's certificate"},
    {"tls_verify_hostname", TODD_COMMS_CFG_BOOL, 0, "true", "check the broker's certificate names its host"},
    {"prefetch", TODD_COMMS_CFG_INT, 0, "100", "unacked deliveries per subscription (0 = unlimited)"},
    {"confirms", TODD_COMMS_CFG_BOOL, 0, "true", "publisher confirms: a publish succeeds only once the broker has the message"},
    {"durable", TODD_COMMS_CFG_BOOL, 0, "false", "durable exchange/queues and persistent messages (NOT compatible with Go ToDD peers)"},
    {"exchange", TODD_COMMS_CFG_STRING, 0, "test_exchange", "exchange name (ToDD: test_exchange)"},
    {"dead_letter_exchange", TODD_COMMS_CFG_STRING, 0, "", "declare queues with this x-dead-letter-exchange so rejected messages go there (empty = off; NOT compatible with queues declared without it, see docs/rabbitmq.md)"},
};
// clang-format on

/** The default text of key name, nullptr for a name not in kKeys. */
constexpr const char *key_default(std::string_view name)
{
    return todd::comms::sdk::key_default(kKeys, name);
}

} // namespace todd_rabbitmq
