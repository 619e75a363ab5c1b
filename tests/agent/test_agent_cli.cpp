// SPDX-License-Identifier: Apache-2.0
// The todd-agent program as a child process: --help with the plugin's keys,
// configuration errors refused with exit 2 before connecting, SIGTERM -> 0.
#include "agent_child.hpp"

#include <todd/agent/cli.hpp>

using namespace todd::test;

namespace {

const std::string loopback_args = std::string("--plugin-dir=") + LOOPBACK_DIR;

} // namespace

TEST(AgentCli, HelpListsPluginKeysAndExitCodes)
{
    Child c({"--help", "--comms", "loopback", loopback_args});
    EXPECT_EQ(c.wait_exit(), 0) << c.output();
    EXPECT_NE(c.output().find("max_queue_length"), std::string::npos)
        << c.output();
    EXPECT_NE(c.output().find("--comms-opt"), std::string::npos);
    EXPECT_NE(c.output().find("Exit status"), std::string::npos);
}

TEST(AgentCli, UnknownCommsOptRefusedBeforeConnecting)
{
    TempDir dir;
    Child c({"--comms", "loopback", loopback_args, "--comms-opt", "nosuchkey=1",
             "--state-dir", dir.path() + "/state"});
    EXPECT_EQ(c.wait_exit(), todd::agent::exit_usage) << c.output();
    EXPECT_NE(c.output().find("nosuchkey"), std::string::npos) << c.output();
    EXPECT_FALSE(fs::exists(dir.path() + "/state/agent-uuid"))
        << "nothing may start before the options are checked";
}

TEST(AgentCli, BadlyTypedKeyAndUnknownConfigKeyRefused)
{
    TempDir dir;
    {
        Child c({"--comms", "loopback", loopback_args, "--comms-opt",
                 "prefetch=many", "--state-dir", dir.path() + "/state"});
        EXPECT_EQ(c.wait_exit(), todd::agent::exit_usage) << c.output();
        EXPECT_NE(c.output().find("prefetch"), std::string::npos) << c.output();
    }
    std::string cfg = dir.path() + "/agent.cfg";
    write_file(
        cfg,
        "[comms]\nplugin = loopback\n\n[LocalResources]\nOptDir = /tmp/x\n"
        "DefaultInterfaec = eth0\n",
        fs::perms(0644));
    Child c(
        {"--config", cfg, loopback_args, "--state-dir", dir.path() + "/state"});
    EXPECT_EQ(c.wait_exit(), todd::agent::exit_usage) << c.output();
    EXPECT_NE(c.output().find(cfg + ":6"), std::string::npos) << c.output();
    EXPECT_NE(c.output().find("defaultinterfaec"), std::string::npos)
        << c.output();
}

TEST(AgentCli, SigtermStopsCleanlyAndIdentitySurvives)
{
    TempDir dir;
    std::string cfg = dir.path() + "/agent.cfg";
    write_file(
        cfg,
        "; ToDD agent.cfg\n[Comms]\n\tPlugin = loopback\n[LocalResources]\n"
        "IPAddrOverride = 192.0.2.77\nOptDir = " +
            dir.path() + "/opt\n",
        fs::perms(0644));
    std::string uuid;
    for (int round = 0; round < 2; ++round) {
        Child c({"--config", cfg, loopback_args, "--state-dir",
                 dir.path() + "/state", "--testlet-dir",
                 std::string(TODD_SOURCE_ROOT) + "/share/testlets",
                 "--factcollector-dir",
                 std::string(TODD_SOURCE_ROOT) + "/share/factcollectors",
                 "--log-level", "debug"});
        ASSERT_TRUE(c.wait_output("advert sent")) << c.output();
        c.signal(SIGTERM);
        EXPECT_EQ(c.wait_exit(), 0) << c.output();
        EXPECT_NE(c.output().find("192.0.2.77"), std::string::npos)
            << c.output();
        std::string now = read_file(dir.path() + "/state/agent-uuid");
        if (round == 0)
            uuid = now;
        EXPECT_EQ(now, uuid) << "a restart must keep the agent UUID";
        EXPECT_TRUE(fs::is_directory(dir.path() + "/opt/assets/testlets"));
    }
}
