// SPDX-License-Identifier: Apache-2.0
// Shared pieces of the NATS transport tests: the plugin loaded through
// core's registry, options that reach a private server
// (tests/common/nats_server.hpp), and names no other test uses.
#pragma once

#include "inbox.hpp"
#include "log_capture.hpp"
#include "nats_server.hpp"
#include "plugin_instance.hpp"
#include "state_log.hpp"

#include <todd/core/plugin_registry.hpp>
#include <todd/core/transport.hpp>

#include <gtest/gtest.h>

#include <memory>
#include <ostream>
#include <string>

namespace todd::core {
/** gtest prints a LinkState by its name. */
inline void PrintTo(LinkState s, std::ostream *os)
{
    *os << to_string(s);
}
} // namespace todd::core

namespace natstest {

using namespace std::chrono_literals;
using todd::core::LinkState;
using todd::core::Options;
using todd::core::Transport;
using todd::core::Verdict;
using todd::test::NatsServer;
using todd::test::StateLog;
using Inbox = todd::test::DeliveryInbox;

/** The NATS plugin of the build tree. */
inline std::shared_ptr<const todd::core::Plugin> plugin()
{
    static auto p = todd::core::PluginRegistry({NATS_PLUGIN_DIR}).load("nats");
    return p;
}

/** Options for servers `urls`: fast reconnects, and a short ack wait so
 *  that what a lost connection left unacknowledged comes again soon. */
inline Options opts(const std::string &urls, Options extra = {})
{
    Options o = {{"servers", urls},
                 {"reconnect_wait_ms", "100"},
                 {"ack_wait_ms", "2000"}};
    return todd::test::with(std::move(o), extra);
}

/** A created instance, started unless told otherwise. */
inline std::unique_ptr<Transport> make(const Options &o, bool start = true)
{
    return todd::test::make_instance(plugin(), o, start);
}

/** A destination name no other test of this process uses. */
inline std::string unique(const std::string &base)
{
    return todd::test::unique_name(base);
}

} // namespace natstest
