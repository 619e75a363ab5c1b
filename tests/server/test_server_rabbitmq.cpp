// SPDX-License-Identifier: Apache-2.0
// The agent-based server tests over a private RabbitMQ (the rabbitmq
// plugin, ToDD's exchange and queues): one broker for the whole binary.
#include "server_test_agents.hpp"

#include <rabbitmq_broker.hpp>

namespace todd::test {

namespace {
const auto *env = ::testing::AddGlobalTestEnvironment(new SharedRabbitmqBroker);
} // namespace

void Agents::SetUp()
{
    TODD_SKIP_WITHOUT_RABBITMQ();
    AgentsFixture::SetUp();
}

TransportFactory Agents::transport_factory()
{
    return plugin_factory(
        RABBITMQ_PLUGIN_DIR, "rabbitmq",
        {{"host", SharedRabbitmqBroker::get()->host()},
         {"port", std::to_string(SharedRabbitmqBroker::get()->port())}});
}

INSTANTIATE_TEST_SUITE_P(RabbitMQ, Agents, ::testing::Values("rabbitmq"));

} // namespace todd::test
