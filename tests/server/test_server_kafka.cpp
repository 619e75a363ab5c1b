// SPDX-License-Identifier: Apache-2.0
// The agent-based server tests over a private Kafka broker (the kafka
// plugin, its fixed topics and a consumer group per destination): one
// broker for the whole binary.
#include "server_test_agents.hpp"

#include <kafka_broker.hpp>

namespace todd::test {

namespace {
const auto *env = ::testing::AddGlobalTestEnvironment(new SharedKafkaBroker);
} // namespace

void Agents::SetUp()
{
    TODD_SKIP_WITHOUT_KAFKA();
    ASSERT_NE(SharedKafkaBroker::get(), nullptr) << SharedKafkaBroker::error();
    AgentsFixture::SetUp();
}

TransportFactory Agents::transport_factory()
{
    return plugin_factory(
        KAFKA_PLUGIN_DIR, "kafka",
        {{"bootstrap_servers", SharedKafkaBroker::get()->bootstrap()},
         {"reconnect_max_ms", "1000"}});
}

INSTANTIATE_TEST_SUITE_P(Kafka, Agents, ::testing::Values("kafka"));

} // namespace todd::test
