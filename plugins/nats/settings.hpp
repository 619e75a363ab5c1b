// SPDX-License-Identifier: Apache-2.0
// The NATS plugin's configuration, parsed and checked once in create:
// anything a retry cannot fix (a bad value, a credentials or TLS file the
// client cannot load) is refused there with E_CONFIG naming the key, before
// anything connects. Also the names a destination gets on the server.
#pragma once

#include <todd/comms/sdk.hpp>

#include <nats/nats.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace todd_nats {

using std::chrono::milliseconds;

// The defaults are the key table's (keys.hpp).
struct Settings {
    std::vector<std::string> servers;
    std::string name, user, password, token, creds_file;
    bool tls = false, tls_verify = true;
    std::string tls_ca, tls_cert, tls_key, tls_hostname;
    std::string stream, subject_prefix, storage;
    bool create_stream = true;
    int replicas = 1, max_ack_pending = 0;
    milliseconds retention{0}, duplicate_window{0}, ack_wait{0},
        connect_timeout{0}, publish_timeout{0}, reconnect_wait{0},
        ping_interval{0};

    /** The subject of a destination's messages. */
    std::string subject_of(const std::string &destination) const
    {
        return subject_prefix + "." + encode(destination);
    }
    /** The durable consumer its subscribers share. */
    std::string consumer_of(const std::string &destination) const;
    /** Where that consumer pushes its messages (outside the stream's
     *  subjects, or the stream would store its own deliveries). */
    std::string deliver_subject_of(const std::string &destination) const
    {
        return "_TODD." + stream + "." + consumer_of(destination);
    }

    /**
     * A destination as one subject token: [A-Za-z0-9-] stay, every other
     * byte becomes _XX (upper-case hex), so any destination maps, and two
     * destinations never share a token. Documented in docs/nats.md.
     */
    static std::string encode(const std::string &destination);
};

/** Throws todd::comms::sdk::Error(E_CONFIG) naming the key and the reason. */
Settings parse_settings(const todd::comms::sdk::Config &c);

struct OptionsDeleter {
    void operator()(natsOptions *o) const { natsOptions_Destroy(o); }
};
using OptionsPtr = std::unique_ptr<natsOptions, OptionsDeleter>;

/**
 * nats.c connection options from the settings: servers, name, credentials,
 * TLS (files loaded now), timeouts, endless reconnects. Throws Error(E_CONFIG)
 * naming our key when nats.c refuses a value or cannot load a file.
 */
OptionsPtr make_options(const Settings &s);

/** Options of the JetStream API calls (stream and consumer lookups and
 *  creation): answered within 2 s (or publish_timeout_ms, if shorter), as
 *  unsubscribe and stop wait for a thread inside one. */
inline jsOptions api_options(const Settings &s)
{
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = std::min<int64_t>(s.publish_timeout.count(), 2000);
    return o;
}

/** "<nats.c status text>: <nats.c's last error>" for an error message. */
std::string nats_error(natsStatus st);

} // namespace todd_nats
