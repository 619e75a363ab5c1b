// SPDX-License-Identifier: Apache-2.0
// todd-agent over a real RabbitMQ (private rabbitmq-server started by the
// binary): the broker suite of agent_broker_suite.hpp, with a ToDD
// agent.cfg in ToDD's own spelling and a stop_app/start_app restart.
#include "agent_broker_suite.hpp"
#include "rabbitmq_broker.hpp"

using namespace todd;
using namespace todd::test;

namespace {

struct Rabbitmq {
    using Shared = SharedRabbitmqBroker;
    static void require()
    {
        TODD_SKIP_WITHOUT_RABBITMQ();
        ASSERT_NE(SharedRabbitmqBroker::get(), nullptr);
    }
    static std::unique_ptr<core::Transport> transport()
    {
        static auto plugin =
            core::PluginRegistry({RABBITMQ_DIR}).load("rabbitmq");
        return core::Transport::create(
            plugin,
            {{"host", "127.0.0.1"},
             {"port", std::to_string(SharedRabbitmqBroker::get()->port())},
             {"reconnect_max", "500"},
             {"heartbeat", "5"}});
    }
    static std::string agent_cfg_comms()
    {
        // ToDD's agent.cfg layout, keys in ToDD's spelling.
        return "Plugin = rabbitmq\nUser = guest\nPassword = guest\n"
               "Host = 127.0.0.1\nPort = " +
               std::to_string(SharedRabbitmqBroker::get()->port()) + "\n";
    }
    static std::vector<std::string> program_args()
    {
        return {std::string("--plugin-dir=") + RABBITMQ_DIR, "--comms-opt",
                "reconnect_max=500"};
    }
    static void restart()
    {
        SharedRabbitmqBroker::get()->stop_app();
        SharedRabbitmqBroker::get()->start_app();
    }
};

} // namespace

namespace todd::test {
INSTANTIATE_TYPED_TEST_SUITE_P(RabbitMQ, AgentOverBroker, Rabbitmq);
} // namespace todd::test
