// SPDX-License-Identifier: Apache-2.0
// todd-agent over a real broker that the test binary starts itself: the Go
// task vectors (agent_scenarios.hpp) through the broker, and the todd-agent
// program reading a ToDD agent.cfg that names the plugin and the broker,
// answering again after the broker restarted. One typed suite, instantiated
// once per broker transport by a file that says how to reach its broker:
//
//   struct MyBroker {
//       // The gtest Environment that starts one broker for the binary.
//       using Shared = SharedMyBroker;
//       // In SetUp: skip (or fail when CI requires it) unless the broker runs.
//       static void require();
//       // A new transport instance on the broker.
//       static std::unique_ptr<core::Transport> transport();
//       // The [Comms] lines of an agent.cfg that reach the broker.
//       static std::string agent_cfg_comms();
//       // --plugin-dir and extra --comms-opt arguments of todd-agent.
//       static std::vector<std::string> program_args();
//       // Take the broker away and bring it back, same ports.
//       static void restart();
//   };
//   INSTANTIATE_TYPED_TEST_SUITE_P(My, AgentOverBroker, MyBroker);
#pragma once

#include "agent_child.hpp"
#include "agent_scenarios.hpp"

#include <csignal>

namespace todd::test {

template <class Broker> class AgentOverBroker : public ::testing::Test {
  protected:
    void SetUp() override
    {
        (void)shared_; // instantiated, so registered before main runs
        Broker::require();
    }

  private:
    static inline auto *const shared_ =
        ::testing::AddGlobalTestEnvironment(new typename Broker::Shared);
};

TYPED_TEST_SUITE_P(AgentOverBroker);

TYPED_TEST_P(AgentOverBroker, KeyValueAndGroupVectors)
{
    AgentHarness h(TypeParam::transport);
    scenario_keyvalue_and_group(h);
}

TYPED_TEST_P(AgentOverBroker, BogusAndNotJsonRejectedOnce)
{
    LogCapture logs;
    AgentHarness h(TypeParam::transport);
    scenario_rejects(h, logs);
}

TYPED_TEST_P(AgentOverBroker, MissingTestletFails)
{
    LogCapture logs;
    AgentHarness h(TypeParam::transport);
    scenario_missing_testlet(h, logs);
}

TYPED_TEST_P(AgentOverBroker, PingRunInstallExecuteDataDelete)
{
    AgentHarness h(TypeParam::transport);
    scenario_ping_run(h);
}

TYPED_TEST_P(AgentOverBroker, ProgramReadsToddAgentCfgAndSurvivesBrokerRestart)
{
    TempDir dir;
    std::string cfg = dir.path() + "/agent.cfg";
    write_file(cfg,
               "[Comms]\n" + TypeParam::agent_cfg_comms() +
                   "\n[LocalResources]\nDefaultInterface = lo\n"
                   "OptDir = " +
                   dir.path() + "/opt\n",
               fs::perms(0644));
    std::vector<std::string> args = {"--config", cfg, "--state-dir",
                                     dir.path() + "/state"};
    for (auto &a : TypeParam::program_args())
        args.push_back(a);
    for (auto a : {"--advert-interval", "1", "--log-level", "debug"})
        args.push_back(a);
    args.push_back("--testlet-dir");
    args.push_back(std::string(TODD_SOURCE_ROOT) + "/share/testlets");
    Child c(args);
    ASSERT_TRUE(c.wait_output("advert sent")) << c.output();
    ASSERT_TRUE(eventually(
        [&] { return fs::exists(dir.path() + "/state/agent-uuid"); }));
    std::string uuid = read_file(dir.path() + "/state/agent-uuid");
    uuid.erase(uuid.find_last_not_of("\n") + 1);

    // The test's own client on the same broker drives the program.
    auto comms = std::make_unique<core::Comms>(TypeParam::transport());
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
    TypeParam::restart();
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

REGISTER_TYPED_TEST_SUITE_P(AgentOverBroker, KeyValueAndGroupVectors,
                            BogusAndNotJsonRejectedOnce, MissingTestletFails,
                            PingRunInstallExecuteDataDelete,
                            ProgramReadsToddAgentCfgAndSurvivesBrokerRestart);

} // namespace todd::test
