// SPDX-License-Identifier: Apache-2.0
// todd-agent-lib over the loopback plugin (a real .so, in-process broker):
// the Go task vectors, the full test-run life cycle, bad testlets,
// downloads from a local HTTP server and asset-directory changes.
#include "agent_scenarios.hpp"
#include "http_server.hpp"

#include <todd/agent/assets.hpp>
#include <todd/agent/identity.hpp>
#include <todd/core/hash.hpp>

#include <csignal>
#include <sys/stat.h>

using namespace todd;
using namespace todd::test;

namespace {

std::unique_ptr<core::Transport> loopback()
{
    static auto plugin = core::PluginRegistry({LOOPBACK_DIR}).load("loopback");
    return core::Transport::create(plugin, {});
}

std::string install(const std::string &test, const std::string &testlet,
                    const std::vector<std::string> &targets,
                    const std::string &args = "")
{
    msg::InstallTestRunTask t;
    t.test_run = {test, targets, testlet, args};
    return msg::encode(msg::Task{t});
}

std::string execute(const std::string &test, int64_t limit)
{
    return msg::encode(msg::Task{msg::ExecuteTestRunTask{test, limit}});
}

bool process_alive(pid_t pid)
{
    return ::kill(pid, 0) == 0;
}

} // namespace

TEST(AgentLoopback, KeyValueAndGroupVectors)
{
    AgentHarness h(loopback);
    scenario_keyvalue_and_group(h);
}

TEST(AgentLoopback, BogusAndNotJsonRejectedOnce)
{
    LogCapture logs;
    AgentHarness h(loopback);
    scenario_rejects(h, logs);
}

TEST(AgentLoopback, MissingTestletFails)
{
    LogCapture logs;
    AgentHarness h(loopback);
    scenario_missing_testlet(h, logs);
}

TEST(AgentLoopback, PingRunInstallExecuteDataDelete)
{
    AgentHarness h(loopback);
    scenario_ping_run(h);
}

TEST(AgentLoopback, FirstAdvertLikeGo)
{
    AgentHarness h(loopback);
    auto a = h.wait_advert([](const msg::AgentAdvert &) { return true; });
    ASSERT_TRUE(a);
    EXPECT_TRUE(agent::valid_uuid(a->uuid));
    EXPECT_EQ(a->expires_ns, 0);
    ASSERT_TRUE(a->facts.has_value());
    EXPECT_TRUE(a->facts->empty()); // no collectors configured
    EXPECT_TRUE(a->fact_collectors.empty());
    EXPECT_TRUE(a->testlets.empty());
    // Same keys, in the same order, as the Go agent's bare advert.
    std::string ours = msg::encode(*a);
    std::vector<size_t> pos;
    for (const char *name :
         {"{\"Uuid\":", ",\"DefaultAddr\":", ",\"Expires\":0,",
          ",\"LocalTime\":",
          ",\"Facts\":{},\"FactCollectors\":{},\"Testlets\":{}}"})
        pos.push_back(ours.find(name));
    for (size_t i = 0; i < pos.size(); ++i) {
        ASSERT_NE(pos[i], std::string::npos) << ours;
        if (i > 0) {
            EXPECT_LT(pos[i - 1], pos[i]) << ours;
        }
    }
}

TEST(AgentLoopback, RestartKeepsIdentity)
{
    TempDir dir;
    std::string first, second;
    for (std::string *id : {&first, &second}) {
        agent::AgentConfig cfg;
        cfg.state_dir = dir.path() + "/state";
        cfg.opt_dir = dir.path() + "/opt";
        agent::Agent a(cfg, std::make_unique<core::Comms>(loopback()));
        *id = a.uuid();
    }
    EXPECT_TRUE(agent::valid_uuid(first));
    EXPECT_EQ(first, second);
}

TEST(AgentLoopback, HangingTestletKilledAtTimeLimit)
{
    AgentHarness h(loopback);
    std::string pidfile = h.dir.path() + "/hang.pid";
    write_executable(
        h.agent->config().opt_dir + "/assets/testlets/hang",
        "#!/bin/sh\n"
        "[ \"$1\" = check ] && { echo 'Check mode PASSED'; exit 0; }\n"
        "sleep 600 &\n"
        "echo $! > " +
            pidfile +
            "\n"
            "wait\n");
    h.publish_task(install("hang-1", "hang", {"127.0.0.1"}));
    ASSERT_TRUE(h.responses.wait_for([&](const std::string &p) {
        return is_status(p, h.uuid(), "hang-1", "ready");
    }));
    h.publish_task(execute("hang-1", 1));
    // As the Go agent: a target killed at the limit gives no data, and the
    // run still reports (a server-mode testlet ends this way).
    auto data = h.responses.wait_for(
        [&](const std::string &p) { return is_data(p, h.uuid(), "hang-1"); });
    ASSERT_TRUE(data) << "no TestData after the time limit";
    EXPECT_EQ(
        std::get<msg::TestDataResponse>(msg::decode_response(*data)).test_data,
        "{}");
    // The testlet's child died with it (whole process group killed).
    pid_t child = std::stoi(read_file(pidfile));
    EXPECT_TRUE(eventually([&] { return !process_alive(child); }, 10s));
}

TEST(AgentLoopback, GarbageTestletFails)
{
    LogCapture logs;
    AgentHarness h(loopback);
    write_executable(
        h.agent->config().opt_dir + "/assets/testlets/garbage",
        "#!/bin/sh\n"
        "[ \"$1\" = check ] && { echo 'Check mode PASSED'; exit 0; }\n"
        "echo 'this is not json'\n");
    h.publish_task(install("garbage-1", "garbage", {"127.0.0.1", "127.0.0.2"}));
    ASSERT_TRUE(h.responses.wait_for([&](const std::string &p) {
        return is_status(p, h.uuid(), "garbage-1", "ready");
    }));
    h.publish_task(execute("garbage-1", 10));
    ASSERT_TRUE(h.responses.wait_for([&](const std::string &p) {
        return is_status(p, h.uuid(), "garbage-1", "fail");
    }));
    EXPECT_GE(logs.count("not JSON"), 1u);
    EXPECT_EQ(h.responses.count([&](const std::string &p) {
        return is_data(p, h.uuid(), "garbage-1");
    }),
              0u);
}

TEST(AgentLoopback, CrashingAndFailingCheckTestlets)
{
    LogCapture logs;
    AgentHarness h(loopback);
    const std::string dir = h.agent->config().opt_dir + "/assets/testlets/";
    write_executable(
        dir + "crash",
        "#!/bin/sh\n"
        "[ \"$1\" = check ] && { echo 'Check mode PASSED'; exit 0; }\n"
        "kill -SEGV $$\n");
    write_executable(dir + "nocheck", "#!/bin/sh\necho 'something else'\n");
    h.publish_task(install("crash-1", "crash", {"127.0.0.1"}));
    h.publish_task(install("nocheck-1", "nocheck", {"127.0.0.1"}));
    ASSERT_TRUE(h.responses.wait_for([&](const std::string &p) {
        return is_status(p, h.uuid(), "nocheck-1", "fail");
    }));
    ASSERT_TRUE(h.responses.wait_for([&](const std::string &p) {
        return is_status(p, h.uuid(), "crash-1", "ready");
    }));
    h.publish_task(execute("crash-1", 10));
    ASSERT_TRUE(h.responses.wait_for([&](const std::string &p) {
        return is_status(p, h.uuid(), "crash-1", "fail");
    }));
    EXPECT_GE(logs.count("signal"), 1u);
    // Executing a run that was never installed: testing, then fail (as Go).
    h.publish_task(execute("never-installed", 5));
    ASSERT_TRUE(h.responses.wait_for([&](const std::string &p) {
        return is_status(p, h.uuid(), "never-installed", "fail");
    }));
}

TEST(AgentLoopback, RunsDoNotWaitForEachOtherAndStopKillsTestlets)
{
    AgentHarness h(loopback);
    std::string pidfile = h.dir.path() + "/slow.pid";
    write_executable(
        h.agent->config().opt_dir + "/assets/testlets/slow",
        "#!/bin/sh\n"
        "[ \"$1\" = check ] && { echo 'Check mode PASSED'; exit 0; }\n"
        "echo $$ > " +
            pidfile +
            "\n"
            "exec sleep 600\n");
    h.publish_task(install("slow-1", "slow", {"127.0.0.1"}));
    ASSERT_TRUE(h.responses.wait_for([&](const std::string &p) {
        return is_status(p, h.uuid(), "slow-1", "ready");
    }));
    h.publish_task(execute("slow-1", 600));
    ASSERT_TRUE(eventually(
        [&] { return fs::exists(pidfile) && fs::file_size(pidfile) > 0; }));
    // A second run completes while the first one is still running.
    h.publish_task(install("quick-1", "ping", {"127.0.0.1"}, "-c 1"));
    h.publish_task(execute("quick-1", 20));
    ASSERT_TRUE(h.responses.wait_for(
        [&](const std::string &p) { return is_data(p, h.uuid(), "quick-1"); }));
    pid_t slow = std::stoi(read_file(pidfile));
    EXPECT_TRUE(process_alive(slow));
    h.agent->stop(); // bounded by the test timeout: never stuck
    EXPECT_TRUE(eventually([&] { return !process_alive(slow); }, 10s));
}

TEST(AgentLoopback, DownloadFromLocalHttpServerThenAdvert)
{
    LogCapture logs;
    const std::string testlet = "#!/bin/sh\necho 'Check mode PASSED'\n";
    const std::string collector = "#!/bin/sh\necho '{\"Color\":[\"blue\"]}'\n";
    HttpServer server({{"/testlets/newtestlet", testlet},
                       {"/factcollectors/get_color", collector}});
    AgentHarness h(loopback);
    ASSERT_TRUE(h.wait_advert([](const msg::AgentAdvert &) { return true; }));
    std::string base = "http://127.0.0.1:" + std::to_string(server.port());
    msg::DownloadAssetTask t;
    t.assets = {base + "/testlets/newtestlet", base + "/testlets/absent",
                base + "/factcollectors/get_color"};
    h.publish_task(msg::encode(msg::Task{t}));

    std::string dir = h.agent->config().opt_dir + "/assets/";
    auto a = h.wait_advert([&](const msg::AgentAdvert &ad) {
        return ad.testlets.count("newtestlet") &&
               ad.fact_collectors.count("get_color") && ad.facts &&
               ad.facts->count("Color");
    });
    ASSERT_TRUE(a) << "no advert reflects the download";
    EXPECT_EQ(a->testlets.at("newtestlet"),
              core::sha256_file(dir + "testlets/newtestlet"));
    EXPECT_EQ(read_file(dir + "testlets/newtestlet"), testlet);
    EXPECT_EQ(a->facts->at("Color"), std::vector<std::string>{"blue"});
    EXPECT_EQ(a->testlets.count("absent"), 0u);
    struct stat st {};
    ASSERT_EQ(::stat((dir + "testlets/newtestlet").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0755u);
    EXPECT_FALSE(fs::exists(dir + "testlets/absent"));
    for (auto &e : fs::directory_iterator(dir + "testlets"))
        EXPECT_EQ(
            e.path().filename().string().rfind(agent::download_temp_prefix, 0),
            std::string::npos)
            << "temporary left behind: " << e.path();
    EXPECT_GE(logs.count("404"), 1u) << "the failed URL is logged";
    // The downloaded testlet is usable at once.
    h.publish_task(install("dl-1", "newtestlet", {"x"}));
    ASSERT_TRUE(h.responses.wait_for([&](const std::string &p) {
        return is_status(p, h.uuid(), "dl-1", "ready");
    }));
}

TEST(AgentLoopback, AdvertReflectsTestletDroppedIntoAssetDir)
{
    AgentHarness h(loopback);
    ASSERT_TRUE(h.wait_advert(
        [](const msg::AgentAdvert &a) { return a.testlets.empty(); }));
    std::string path = h.agent->config().opt_dir + "/assets/testlets/dropped";
    write_executable(path, "#!/bin/sh\necho dropped\n");
    std::string hash = core::sha256_file(path);
    auto a = h.wait_advert([&](const msg::AgentAdvert &ad) {
        auto it = ad.testlets.find("dropped");
        return it != ad.testlets.end() && it->second == hash;
    });
    ASSERT_TRUE(a)
        << "no advert with the dropped testlet (advert interval is 1 h: "
           "only the directory watch can trigger it)";
}

TEST(AgentData, CompactsLikeGo)
{
    EXPECT_EQ(agent::compact_testlet_output(
                  "{ \"a\" : 1.50 ,\n \"b\":\"<x> & y\" }\n"),
              "{\"a\":1.50,\"b\":\"\\u003cx\\u003e \\u0026 y\"}");
    EXPECT_THROW(agent::compact_testlet_output("[1,2]"), std::invalid_argument);
    EXPECT_THROW(agent::compact_testlet_output("{\"a\":1} trailing"),
                 std::invalid_argument);
    EXPECT_EQ(agent::encode_test_data({{"b", "{}"}, {"a", "{\"x\":1}"}}),
              "{\"a\":{\"x\":1},\"b\":{}}");
}

TEST(AgentLoopback, UndeletedDataDroppedAfterGiveUp)
{
    AgentHarness h(loopback, [](agent::AgentConfig &c) {
        c.resend_initial = 50ms;
        c.resend_max = 50ms;
        c.resend_give_up = 300ms;
    });
    h.publish_task(install("giveup-1", "ping", {}));
    h.publish_task(execute("giveup-1", 5));
    auto data = h.responses.wait_for(
        [&](const std::string &p) { return is_data(p, h.uuid(), "giveup-1"); });
    ASSERT_TRUE(data);
    EXPECT_EQ(
        std::get<msg::TestDataResponse>(msg::decode_response(*data)).test_data,
        "{}"); // no targets
    EXPECT_TRUE(eventually([&] { return !h.agent->has_test_run("giveup-1"); }));
}
