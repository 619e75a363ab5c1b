// SPDX-License-Identifier: Apache-2.0
// What is particular to the loopback plugin, on the real shared object: its
// descriptor, its queue bound and its own configuration refusals. What every
// transport must show is stated once for all of them in tests/transport.
#include "log_capture.hpp"

#include <todd/core/transport.hpp>

#include <gtest/gtest.h>

#include <atomic>

using namespace todd::core;
using namespace std::chrono_literals;

namespace {

std::shared_ptr<const Plugin> loopback()
{
    static auto p = PluginRegistry({LOOPBACK_DIR}).load("loopback");
    return p;
}

std::unique_ptr<Transport> make(const Options &o = {})
{
    auto t = Transport::create(loopback(), o);
    t->start();
    return t;
}

/** A unique queue name per call: the loopback broker is process-wide. */
std::string queue(const std::string &base)
{
    static std::atomic<int> n{0};
    return base + "-" + std::to_string(n++);
}

TEST(Loopback, Metadata)
{
    const PluginInfo &i = loopback()->info();
    EXPECT_EQ(i.name, "loopback");
    EXPECT_EQ(i.abi_major, 1u);
    EXPECT_EQ(i.capabilities,
              TODD_COMMS_CAP_ACK | TODD_COMMS_CAP_TTL | TODD_COMMS_CAP_BATCH);
    ASSERT_EQ(i.keys.size(), 2u);
    EXPECT_EQ(i.keys[0].name, "max_queue_length");
}

TEST(Loopback, PublishBatchStatusesStopAtTheBound) // ABI-11
{
    auto t = make({{"max_queue_length", "2"}});
    const std::string q = queue("batch");
    auto st = t->publish_batch({{q, "a"}, {q, "b"}, {q, "c"}});
    EXPECT_EQ(st, (std::vector<int32_t>{TODD_COMMS_OK, TODD_COMMS_OK,
                                        TODD_COMMS_E_FULL}));
}

TEST(Loopback, BoundGivesFullWithReason)
{
    auto t = make({{"max_queue_length", "1"}});
    const std::string q = queue("full");
    t->publish(q, "a");
    try {
        t->publish(q, "b");
        FAIL() << "no error";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_FULL);
        EXPECT_NE(std::string(e.what()).find("max_queue_length"),
                  std::string::npos)
            << e.what();
    }
}

TEST(Loopback, ConfigurationRefusedNamingTheKey) // ABI-1
{
    auto expect_config = [](const Options &o, const std::string &needle) {
        try {
            Transport::create(loopback(), o);
            FAIL() << "accepted";
        } catch (const CommsError &e) {
            EXPECT_EQ(e.status(), TODD_COMMS_E_CONFIG);
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
                << e.what();
        }
    };
    expect_config({{"max_queue_length", "-1"}},
                  "max_queue_length"); // refused by the plugin
    expect_config({{"max_queue_length", "many"}},
                  "max_queue_length"); // by the host
}

TEST(Loopback, PluginLogLinesGoThroughHostLog)
{
    todd::test::LogCapture logs;
    try {
        Transport::create(loopback(), {{"prefetch", "-3"}});
        FAIL() << "a negative prefetch was accepted";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_CONFIG) << e.what();
    }
    auto lines = logs.lines();
    ASSERT_FALSE(lines.empty());
    EXPECT_NE(lines.back().find("loopback: create: configuration key "
                                "'prefetch'"),
              std::string::npos)
        << lines.back();
}

} // namespace
