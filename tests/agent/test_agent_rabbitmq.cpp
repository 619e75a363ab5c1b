// SPDX-License-Identifier: Apache-2.0
// todd-agent over a real RabbitMQ (private rabbitmq-server started by the
// binary): the same Go task vectors as over loopback, the todd-agent
// program reading a ToDD agent.cfg unchanged, and a broker restart the
// agent survives.
#include "agent_child.hpp"
#include "agent_scenarios.hpp"
#include "rabbitmq_broker.hpp"

using namespace todd;
using namespace todd::test;

namespace {

using SharedBroker = SharedRabbitmqBroker;

[[maybe_unused]] auto *const env =
    ::testing::AddGlobalTestEnvironment(new SharedBroker);

std::unique_ptr<core::Transport> rabbitmq()
{
    static auto plugin = core::PluginRegistry({RABBITMQ_DIR}).load("rabbitmq");
    return core::Transport::create(
        plugin, {{"host", "127.0.0.1"},
                 {"port", std::to_string(SharedBroker::get()->port())},
                 {"reconnect_max", "500"},
                 {"heartbeat", "5"}});
}

class AgentRabbitmq : public ::testing::Test {
  protected:
    void SetUp() override
    {
        TODD_SKIP_WITHOUT_RABBITMQ();
        ASSERT_NE(SharedBroker::get(), nullptr);
    }
};

} // namespace

TEST_F(AgentRabbitmq, KeyValueAndGroupVectors)
{
    AgentHarness h(rabbitmq);
    scenario_keyvalue_and_group(h);
}

TEST_F(AgentRabbitmq, BogusAndNotJsonRejectedOnce)
{
    LogCapture logs;
    AgentHarness h(rabbitmq);
    scenario_rejects(h, logs);
}

TEST_F(AgentRabbitmq, MissingTestletFails)
{
    LogCapture logs;
    AgentHarness h(rabbitmq);
    scenario_missing_testlet(h, logs);
}

TEST_F(AgentRabbitmq, PingRunInstallExecuteDataDelete)
{
    AgentHarness h(rabbitmq);
    scenario_ping_run(h);
}

TEST_F(AgentRabbitmq, ProgramReadsToddAgentCfgAndSurvivesBrokerRestart)
{
    TempDir dir;
    auto &broker = *SharedBroker::get();
    std::string cfg = dir.path() + "/agent.cfg";
    // ToDD's agent.cfg layout, keys in ToDD's spelling.
    write_file(cfg,
               "[Comms]\nPlugin = rabbitmq\nUser = guest\nPassword = guest\n"
               "Host = 127.0.0.1\nPort = " +
                   std::to_string(broker.port()) +
                   "\n\n[LocalResources]\nDefaultInterface = lo\n"
                   "OptDir = " +
                   dir.path() + "/opt\n",
               fs::perms(0644));
    Child c({"--config", cfg, std::string("--plugin-dir=") + RABBITMQ_DIR,
             "--state-dir", dir.path() + "/state", "--comms-opt",
             "reconnect_max=500", "--advert-interval", "1", "--log-level",
             "debug", "--testlet-dir",
             std::string(TODD_SOURCE_ROOT) + "/share/testlets"});
    ASSERT_TRUE(c.wait_output("advert sent")) << c.output();
    ASSERT_TRUE(eventually(
        [&] { return fs::exists(dir.path() + "/state/agent-uuid"); }));
    std::string uuid = read_file(dir.path() + "/state/agent-uuid");
    uuid.erase(uuid.find_last_not_of("\n") + 1);

    // The test's own client on the same broker drives the program.
    auto comms = std::make_unique<core::Comms>(rabbitmq());
    comms->start();
    PayloadInbox responses;
    auto sub = comms->transport().subscribe(core::queue_agentresponses,
                                            std::ref(responses));
    comms->send_raw(
        uuid, vector_text("hand-task-installtestrun-missing-testlet.json"));
    ASSERT_TRUE(responses.wait_for([&](const std::string &p) {
        return is_status(p, uuid, "hand-test-0002", "fail");
    })) << c.output();

    // Broker goes away and comes back: the agent keeps running and resumes.
    broker.stop_app();
    broker.start_app();
    bool answered = eventually(
        [&] {
            try {
                comms->send_raw(uuid,
                                vector_text("hand-task-installtestrun.json"));
            } catch (const std::exception &) {
            }
            return responses
                .wait_for(
                    [&](const std::string &p) {
                        return is_status(p, uuid, "hand-test-0001", "ready");
                    },
                    2s)
                .has_value();
        },
        60s);
    EXPECT_TRUE(answered)
        << "the agent did not resume after the broker restart:\n"
        << c.output();
    sub.reset();
    comms->stop();
    c.signal(SIGTERM);
    EXPECT_EQ(c.wait_exit(), 0) << c.output();
}
