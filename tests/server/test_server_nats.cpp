// SPDX-License-Identifier: Apache-2.0
// The agent-based server tests over a private nats-server with JetStream
// (the nats plugin: one work-queue stream, a durable consumer per
// destination): one server for the whole binary.
#include "server_test_agents.hpp"

#include <nats_server.hpp>

namespace todd::test {

namespace {
const auto *env = ::testing::AddGlobalTestEnvironment(new SharedNatsServer);
} // namespace

void Agents::SetUp()
{
    TODD_SKIP_WITHOUT_NATS();
    ASSERT_NE(SharedNatsServer::get(), nullptr) << SharedNatsServer::error();
    AgentsFixture::SetUp();
}

TransportFactory Agents::transport_factory()
{
    return plugin_factory(NATS_PLUGIN_DIR, "nats",
                          {{"servers", SharedNatsServer::get()->url()},
                           {"reconnect_wait_ms", "100"}});
}

INSTANTIATE_TEST_SUITE_P(Nats, Agents, ::testing::Values("nats"));

} // namespace todd::test
