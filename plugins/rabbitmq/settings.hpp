// SPDX-License-Identifier: Apache-2.0
// The RabbitMQ plugin's configuration, parsed and checked once in create:
// anything a retry cannot fix (a bad value, a TLS file that cannot be used)
// is refused there with E_CONFIG, never retried.
#pragma once

#include <todd/comms/sdk.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace todd_rabbitmq {

using std::chrono::milliseconds;

struct Broker {
    std::string host;
    int port;
};

// The defaults are the key table's (keys.hpp), set by parse_settings.
struct Settings {
    std::vector<Broker> brokers;
    std::string user, password, vhost, exchange;
    int heartbeat = 0;
    milliseconds connect_timeout{0}, publish_timeout{0}, reconnect_max{0};
    bool tls = false, verify_peer = false, verify_hostname = false;
    std::string tls_ca, tls_cert, tls_key;
    uint32_t prefetch = 0;
    bool confirms = false, durable = false;
    /** x-dead-letter-exchange of ToDD's queues; empty = none (Go ToDD). */
    std::string dead_letter_exchange;
};

/** Throws todd::comms::sdk::Error(E_CONFIG) naming the key and the reason. */
Settings parse_settings(const todd::comms::sdk::Config &c);

/** Check that the TLS files can be used: readable PEM, a certificate in
 *  tls_ca and tls_cert, an unencrypted private key in tls_key that matches
 *  tls_cert. Throws Error(E_CONFIG) naming the key, the path and why. */
void check_tls_files(const Settings &s);

} // namespace todd_rabbitmq
