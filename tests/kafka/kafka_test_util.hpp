// SPDX-License-Identifier: Apache-2.0
// Shared pieces of the Kafka transport tests: the plugin loaded through
// core's registry, options that reach a private broker
// (tests/common/kafka_broker.hpp), names no other test uses, and the real
// todd-agent / todd-server programs on Kafka.
#pragma once

#include "inbox.hpp"
#include "kafka_broker.hpp"
#include "log_capture.hpp"
#include "plugin_instance.hpp"
#include "state_log.hpp"

#include <todd/core/plugin_registry.hpp>
#include <todd/core/transport.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <ostream>
#include <string>
#include <unistd.h>

namespace todd::core {
/** gtest prints a LinkState by its name. */
inline void PrintTo(LinkState s, std::ostream *os)
{
    *os << to_string(s);
}
} // namespace todd::core

namespace kafkatest {

using namespace std::chrono_literals;
using todd::core::LinkState;
using todd::core::Options;
using todd::core::Transport;
using todd::core::Verdict;
using todd::test::KafkaBroker;
using todd::test::LogCapture;
using todd::test::StateLog;
using Inbox = todd::test::DeliveryInbox;

/** The Kafka plugin of the build tree. */
inline std::shared_ptr<const todd::core::Plugin> plugin()
{
    static auto p =
        todd::core::PluginRegistry({KAFKA_PLUGIN_DIR}).load("kafka");
    return p;
}

/** Options for a broker at `bootstrap` ("127.0.0.1:P"): fast reconnects
 *  and short group timeouts (a test never waits for a lost member), then
 *  `extra`. */
inline Options opts(const std::string &bootstrap, Options extra = {})
{
    Options o = {{"bootstrap_servers", bootstrap},
                 {"reconnect_max_ms", "1000"},
                 {"session_timeout_ms", "6000"}};
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

} // namespace kafkatest
