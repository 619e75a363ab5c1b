// SPDX-License-Identifier: Apache-2.0
// The fixture of the agent-based server tests, parameterised by transport.
#pragma once

#include "server_test_util.hpp"

#include <gtest/gtest.h>

namespace todd::test {

class AgentsFixture {
  public:
    virtual ~AgentsFixture() = default;

  protected:
    virtual TransportFactory transport_factory() = 0;
    virtual void tweak_config(server::ServerConfig &c)
    {
        c.agent_expiry = 1500ms; // so a stopped agent vanishes quickly
        c.stream_ack_timeout = 1s;
        c.install_timeout = 20s;
        c.source_time_limit = 20;
        c.result_grace = 5s;
    }
    virtual void tweak_agent(agent::AgentConfig &c)
    {
        c.advert_interval = 300ms; // well inside agent_expiry
    }
    void SetUp();
    void TearDown();
    void start_server();

    TempDir dir_;
    TransportFactory factory_;
    server::ServerConfig cfg_;
    std::unique_ptr<server::Server> srv_;
    std::vector<std::unique_ptr<agent::Agent>> agents_;
    uint16_t api_ = 0, stream_ = 0;
};

/** Parameter: the transport's name ("loopback", "rabbitmq", "kafka", "nats").
 */
class Agents : public AgentsFixture,
               public ::testing::TestWithParam<std::string> {
  protected:
    void SetUp() override;
    void TearDown() override { AgentsFixture::TearDown(); }
    TransportFactory transport_factory() override;
};

} // namespace todd::test
