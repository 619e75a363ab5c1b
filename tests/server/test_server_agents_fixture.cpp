// SPDX-License-Identifier: Apache-2.0
// AgentsFixture: a server and three real agents in one group, shared by the
// agent-based server suites.
#include "server_test_agents.hpp"

using namespace todd;

namespace todd::test {

void AgentsFixture::start_server()
{
    srv_ = std::make_unique<server::Server>(cfg_, factory_());
    srv_->start();
    api_ = srv_->api_port();
    stream_ = srv_->stream_port();
}

void AgentsFixture::SetUp()
{
    factory_ = transport_factory();
    cfg_ = test_server_config(dir_.path());
    tweak_config(cfg_);
    install_server_testlet(cfg_.opt_dir, "ping");
    start_server();
    ASSERT_EQ(http(api_, "POST", "/v1/object/create",
                   group_json("loopgroup", "127.0.0.0/8"))
                  .status,
              200);
    for (int i = 0; i < 3; ++i) {
        agent::AgentConfig ac;
        tweak_agent(ac);
        agents_.push_back(make_agent(factory_, dir_.path(), i, &ac));
        agents_.back()->start();
    }
    // Registered only after the DownloadAsset round trip (agents start
    // without the server's ping testlet), then put into the group.
    ASSERT_TRUE(wait_until(
        [&] {
            for (auto &a : agents_)
                if (a->group() != "loopgroup")
                    return false;
            return srv_->groups().size() == 3;
        },
        30s))
        << "agents did not all reach their group";
}

void AgentsFixture::TearDown()
{
    // Agents first, so nothing of theirs is left queued for the next test.
    for (auto &a : agents_)
        a->stop();
    agents_.clear();
    if (srv_)
        srv_->stop();
}

} // namespace todd::test
