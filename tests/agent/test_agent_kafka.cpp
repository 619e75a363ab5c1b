// SPDX-License-Identifier: Apache-2.0
// todd-agent over a real Kafka broker (a private KRaft node started by the
// binary): the broker suite of agent_broker_suite.hpp, with an agent.cfg
// naming `Plugin = kafka` and `bootstrap_servers`, and a full broker
// restart (same ports, same data) in the middle.
#include "agent_broker_suite.hpp"
#include "kafka_broker.hpp"

using namespace todd;
using namespace todd::test;

namespace {

struct Kafka {
    using Shared = SharedKafkaBroker;
    static void require()
    {
        TODD_SKIP_WITHOUT_KAFKA();
        ASSERT_NE(SharedKafkaBroker::get(), nullptr)
            << SharedKafkaBroker::error();
    }
    static std::unique_ptr<core::Transport> transport()
    {
        static auto plugin = core::PluginRegistry({KAFKA_DIR}).load("kafka");
        return core::Transport::create(
            plugin,
            {{"bootstrap_servers", SharedKafkaBroker::get()->bootstrap()},
             {"reconnect_max_ms", "500"}});
    }
    static std::string agent_cfg_comms()
    {
        return "Plugin = kafka\nbootstrap_servers = " +
               SharedKafkaBroker::get()->bootstrap() + "\n";
    }
    static std::vector<std::string> program_args()
    {
        return {std::string("--plugin-dir=") + KAFKA_DIR, "--comms-opt",
                "reconnect_max_ms=500"};
    }
    static void restart() { SharedKafkaBroker::get()->restart(); }
};

} // namespace

namespace todd::test {
INSTANTIATE_TYPED_TEST_SUITE_P(Kafka, AgentOverBroker, Kafka);
} // namespace todd::test
