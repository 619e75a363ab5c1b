// SPDX-License-Identifier: Apache-2.0
// The agent-based server tests over the loopback plugin.
#include "server_test_agents.hpp"

namespace todd::test {

void Agents::SetUp()
{
    AgentsFixture::SetUp();
}
TransportFactory Agents::transport_factory()
{
    return loopback_factory();
}

INSTANTIATE_TEST_SUITE_P(Loopback, Agents, ::testing::Values("loopback"));

} // namespace todd::test
