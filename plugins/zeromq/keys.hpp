// SPDX-License-Identifier: Apache-2.0
// The ZeroMQ plugin's configuration keys: the one place their defaults are
// stated. The plugin reads them from here, the engine's own defaults too.
#pragma once

#include <todd/comms/sdk.hpp>

#include <string_view>

namespace todd_zmq {

inline constexpr todd_comms_config_key kKeys[] = {
    {"role", TODD_COMMS_CFG_STRING, 0, "agent",
     "server: bind the endpoint and run the queue engine; agent: connect to "
     "it (todd-server and todd-agent fill this in)"},
    {"endpoint", TODD_COMMS_CFG_STRING, 0, "tcp://127.0.0.1:47570",
     "ZeroMQ address the server binds and agents connect to (tcp://host:port "
     "or ipc://path)"},
    {"publish_timeout_ms", TODD_COMMS_CFG_INT, 0, "5000",
     "how long publish waits for the engine's confirmation before "
     "E_UNAVAILABLE"},
    {"max_held", TODD_COMMS_CFG_INT, 0, "100000",
     "server: undelivered messages one destination may hold; publishing more "
     "fails with E_FULL"},
    {"prefetch", TODD_COMMS_CFG_INT, 0, "256",
     "unsettled deliveries per subscription when the host gives none"},
    {"heartbeat_ms", TODD_COMMS_CFG_INT, 0, "1000",
     "heartbeat interval between instances and the engine"},
    {"heartbeat_timeout_ms", TODD_COMMS_CFG_INT, 0, "5000",
     "a silent peer is gone after this; its unacknowledged messages are "
     "requeued"},
    {"max_frame_bytes", TODD_COMMS_CFG_INT, 0, "16777216",
     "largest frame a peer may send (ZMQ_MAXMSGSIZE on every socket); a "
     "peer announcing more is disconnected before anything is allocated"},
};

/** The default text of key name, nullptr for a name not in kKeys. */
constexpr const char *key_default(std::string_view name)
{
    return todd::comms::sdk::key_default(kKeys, name);
}

/** The default of the integer key name (decimal digits in the table). */
constexpr long long key_default_int(std::string_view name)
{
    long long v = 0;
    for (const char *p = key_default(name); *p != '\0'; ++p)
        v = v * 10 + (*p - '0');
    return v;
}

} // namespace todd_zmq
