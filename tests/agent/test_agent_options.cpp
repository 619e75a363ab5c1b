// SPDX-License-Identifier: Apache-2.0
// todd-agent's settings come from the command line over agent.cfg over the
// defaults ("Command-line values override the file", todd-agent --help),
// seen through what the agent does: the transport and endpoint it reaches
// a real todd-server on (zeromq, ipc://), the address it advertises and the
// testlets it finds under its OptDir, as the server's /v1/agent shows them.
#include "../server/server_program.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

namespace fs = std::filesystem;
using namespace todd::test::program;

namespace {

std::string zeromq_dir()
{
    return std::string(PLUGINS_BUILD_DIR) + "/zeromq";
}

class AgentOptions : public ::testing::Test {
  protected:
    void SetUp() override
    {
        endpoint_ = "ipc://" + path("zmq.sock");
        fs::create_directories(path("opt/assets/testlets"));
        fs::create_directories(path("opt/assets/factcollectors"));
        fs::create_directories(path("empty"));
        write_text(path("server.cfg"), server_cfg(path("opt")));
        server_ = std::make_unique<Program>(std::vector<std::string>{
            TODD_SERVER_EXE, "--config", path("server.cfg"), "--comms",
            "zeromq", "--plugin-dir", zeromq_dir(), "--comms-opt",
            "endpoint=" + endpoint_});
        auto s = wait_started(*server_);
        ASSERT_TRUE(s) << server_->output();
        api_ = s->api;
        // Two OptDirs, each with a testlet the other lacks.
        for (const char *which : {"file-opt", "cli-opt"}) {
            std::string t = path(which) + "/assets/testlets";
            fs::create_directories(t);
            write_text(t + "/only-in-" + which, "#!/bin/sh\necho '{}'\n");
            fs::permissions(t + "/only-in-" + which, fs::perms::owner_all);
        }
    }

    std::string path(const std::string &sub) const
    {
        return dir_.path() + "/" + sub;
    }

    /** Starts todd-agent `name` with `cfg_text` as its --config and `args`;
     *  returns its /v1/agent record once the server has registered it. */
    std::string agent_record(const std::string &name,
                             const std::string &cfg_text,
                             std::vector<std::string> args)
    {
        std::string state = path(name + "-state");
        fs::create_directories(state);
        write_text(path(name + ".cfg"), cfg_text);
        std::vector<std::string> argv = {TODD_AGENT_EXE,
                                         "--config",
                                         path(name + ".cfg"),
                                         "--plugin-dir",
                                         zeromq_dir(),
                                         "--state-dir",
                                         state,
                                         "--testlet-dir",
                                         path("empty"),
                                         "--factcollector-dir",
                                         path("empty"),
                                         "--advert-interval",
                                         "0.2",
                                         "--log-level",
                                         "warn"};
        argv.insert(argv.end(), args.begin(), args.end());
        agents_.push_back(std::make_unique<Program>(argv));
        const std::string id = wait_agent_uuid(state);
        auto deadline = sigtest::Clock::now() + 20s;
        while (!id.empty() && sigtest::Clock::now() < deadline) {
            Reply r = http_get(api_, "/v1/agent?uuid=" + id);
            if (r.body.find("\"Uuid\": \"" + id + "\"") != std::string::npos)
                return r.body;
            // Not registered yet: the agent adverts every 0.2 s.
            std::this_thread::sleep_for(50ms);
        }
        ADD_FAILURE() << name << " never registered:\n"
                      << agents_.back()->output() << "\nserver:\n"
                      << server_->output();
        return {};
    }

    sigtest::TempDir dir_;
    std::string endpoint_;
    std::unique_ptr<Program> server_;
    std::vector<std::unique_ptr<Program>> agents_;
    int api_ = 0;
};

TEST_F(AgentOptions, TheFileBeatsTheDefaults)
{
    // Plugin and endpoint only in the file: the default plugin is not
    // zeromq, so registering proves the file's [Comms] was used.
    std::string rec =
        agent_record("file",
                     "[Comms]\nPlugin = zeromq\nEndpoint = " + endpoint_ +
                         "\n[LocalResources]\nIPAddrOverride = 127.0.0.2\n"
                         "OptDir = " +
                         path("file-opt") + "\n",
                     {});
    EXPECT_NE(rec.find("\"DefaultAddr\": \"127.0.0.2\""), std::string::npos)
        << rec;
    EXPECT_NE(rec.find("\"only-in-file-opt\""), std::string::npos) << rec;
    EXPECT_EQ(rec.find("\"only-in-cli-opt\""), std::string::npos) << rec;
}

TEST_F(AgentOptions, TheCommandLineBeatsTheFile)
{
    // Every setting in the file is wrong: a plugin that does not exist, an
    // endpoint nobody binds, another address and OptDir.
    std::string rec = agent_record(
        "cli",
        "[Comms]\nPlugin = no-such-transport\nEndpoint = ipc://" +
            path("nobody.sock") +
            "\n[LocalResources]\nIPAddrOverride = 127.0.0.2\n"
            "OptDir = " +
            path("file-opt") + "\n",
        {"--comms", "zeromq", "--comms-opt", "endpoint=" + endpoint_,
         "--ip-addr-override", "127.0.0.3", "--opt-dir", path("cli-opt")});
    EXPECT_NE(rec.find("\"DefaultAddr\": \"127.0.0.3\""), std::string::npos)
        << rec;
    EXPECT_NE(rec.find("\"only-in-cli-opt\""), std::string::npos) << rec;
    EXPECT_EQ(rec.find("\"only-in-file-opt\""), std::string::npos) << rec;
}

} // namespace
