// SPDX-License-Identifier: Apache-2.0
// todd-agent against testlets and fact collectors that print JSON nested
// 500 000 levels deep (it used to overflow the stack parsing it): the run
// fails naming the bound, the facts are skipped, and the agent carries on.
#include "agent_scenarios.hpp"

#include <sys/stat.h>

using namespace todd;
using namespace todd::test;

namespace {

std::unique_ptr<core::Transport> loopback()
{
    static auto plugin = core::PluginRegistry({LOOPBACK_DIR}).load("loopback");
    return core::Transport::create(plugin, {});
}

std::string install(const std::string &test, const std::string &testlet)
{
    msg::InstallTestRunTask t;
    t.test_run = {test, {"127.0.0.1"}, testlet, ""};
    return msg::encode(msg::Task{t});
}

std::string execute(const std::string &test)
{
    return msg::encode(msg::Task{msg::ExecuteTestRunTask{test, 20}});
}

/** A shell line printing n '[' then n ']' (no newline in between). */
std::string print_nested(size_t n)
{
    const std::string k = std::to_string(n);
    return "head -c " + k + " /dev/zero | tr '\\0' '['; head -c " + k +
           " /dev/zero | tr '\\0' ']'\n";
}

void run_testlet(AgentHarness &h, const std::string &id,
                 const std::string &body)
{
    write_executable(
        h.agent->config().opt_dir + "/assets/testlets/" + id,
        "#!/bin/sh\n"
        "[ \"$1\" = check ] && { echo 'Check mode PASSED'; exit 0; }\n" +
            body);
    h.publish_task(install(id, id));
    ASSERT_TRUE(h.responses.wait_for([&](const std::string &p) {
        return is_status(p, h.uuid(), id, "ready");
    }));
    h.publish_task(execute(id));
}

TEST(AgentHostile, DeepTestletOutputFailsTheRunAndTheAgentCarriesOn)
{
    LogCapture logs;
    AgentHarness h(loopback);
    // 1 000 000 bytes: under the 1 MiB output bound, so depth is the issue.
    run_testlet(h, "deep",
                "printf '{\"x\":'; " + print_nested(500000) + "printf '}'\n");
    ASSERT_TRUE(h.responses.wait_for([&](const std::string &p) {
        return is_status(p, h.uuid(), "deep", "fail");
    }));
    EXPECT_TRUE(logs.wait_for("output refused: nesting deeper than 62 levels"));
    EXPECT_EQ(h.responses.count([&](const std::string &p) {
        return is_data(p, h.uuid(), "deep");
    }),
              0u);

    // At the bound the output is data (62 levels, then two more on the way).
    run_testlet(h, "edge",
                "printf '{\"x\":'; " + print_nested(61) + "printf '}'\n");
    ASSERT_TRUE(h.responses.wait_for(
        [&](const std::string &p) { return is_data(p, h.uuid(), "edge"); }));

    // Still running: a later task is processed.
    h.publish_task(msg::encode(msg::Task{msg::KeyValueTask{"after", "ok"}}));
    EXPECT_TRUE(
        eventually([&] { return h.agent->key_value("after") == "ok"; }, 20s));
}

TEST(AgentHostile, DeepFactCollectorOutputIsSkipped)
{
    LogCapture logs;
    AgentHarness h(loopback);
    write_executable(h.agent->config().opt_dir + "/assets/factcollectors/deep",
                     "#!/bin/sh\nprintf '{\"Deep\":'; " + print_nested(500000) +
                         "printf '}'\n");
    write_executable(h.agent->config().opt_dir + "/assets/factcollectors/fine",
                     "#!/bin/sh\necho '{\"Fine\":[\"yes\"]}'\n");
    auto a = h.wait_advert([](const msg::AgentAdvert &a) {
        return a.facts && a.facts->count("Fine");
    });
    ASSERT_TRUE(a);
    EXPECT_EQ(a->facts->count("Deep"), 0u);
    EXPECT_TRUE(logs.wait_for("refused: nesting deeper than 64 levels"));
}

TEST(AgentHostile, KeptTestRunsAndTheirDataAreBounded)
{
    LogCapture logs;
    AgentHarness h(loopback, [](agent::AgentConfig &c) {
        c.max_test_runs = 2;
        c.max_kept_data_bytes = 150;
    });
    const std::string print =
        "echo '{\"v\":\"" + std::string(80, 'x') + "\"}'\n";
    // Three installs, never executed: the oldest idle one makes room.
    for (const char *id : {"a", "b", "c"}) {
        write_executable(h.agent->config().opt_dir + "/assets/testlets/" + id,
                         "#!/bin/sh\n[ \"$1\" = check ] && { echo 'Check mode "
                         "PASSED'; exit 0; }\n" +
                             print);
        h.publish_task(install(id, id));
        ASSERT_TRUE(h.responses.wait_for([&](const std::string &p) {
            return is_status(p, h.uuid(), id, "ready");
        }));
    }
    EXPECT_FALSE(h.agent->has_test_run("a"));
    EXPECT_TRUE(h.agent->has_test_run("b"));
    EXPECT_TRUE(h.agent->has_test_run("c"));
    EXPECT_EQ(logs.count("test run a dropped: installed but not executed"), 1u);

    // Nobody deletes the data here: the first run's ~100 bytes are kept,
    // the second run's would pass the 150-byte bound and it fails.
    h.publish_task(execute("b"));
    ASSERT_TRUE(h.responses.wait_for(
        [&](const std::string &p) { return is_data(p, h.uuid(), "b"); }));
    h.publish_task(execute("c"));
    ASSERT_TRUE(h.responses.wait_for([&](const std::string &p) {
        return is_status(p, h.uuid(), "c", "fail");
    }));
    EXPECT_TRUE(logs.wait_for("already wait for DeleteTestData (bound 150, "
                              "max_kept_data_bytes)"));
}

} // namespace

namespace {

std::string install_targets(const std::string &test, size_t n)
{
    msg::InstallTestRunTask t;
    t.test_run = {test, {}, test, ""};
    for (size_t i = 0; i < n; ++i)
        t.test_run.targets.push_back("127.0.0." + std::to_string(i % 250 + 1) +
                                     "#" + std::to_string(i));
    return msg::encode(msg::Task{t});
}

} // namespace

TEST(AgentHostile, TargetsAreBoundedInCountAndInProcessesAtOnce)
{
    AgentHarness h(loopback, [](agent::AgentConfig &c) {
        c.max_targets = 40;
        c.max_parallel_testlets = 3;
    });
    const std::string runs = h.dir.path() + "/running";
    ASSERT_EQ(::mkdir(runs.c_str(), 0700), 0);
    // Each target marks itself running, records how many are, and lingers a
    // little so that unbounded starts would overlap.
    write_executable(
        h.agent->config().opt_dir + "/assets/testlets/many",
        "#!/bin/sh\n"
        "[ \"$1\" = check ] && { echo 'Check mode PASSED'; exit 0; }\n"
        "d=" +
            runs +
            "\n"
            "touch \"$d/$$\"\n"
            "ls \"$d\" | grep -vc seen >> \"$d/seen\"\n"
            "sleep 0.05\n"
            "rm -f \"$d/$$\"\n"
            "echo '{\"ok\":1}'\n");

    h.publish_task(install_targets("many", 41));
    ASSERT_TRUE(h.responses.wait_for([&](const std::string &p) {
        return is_status(p, h.uuid(), "many", "ready");
    }));
    LogCapture logs;
    h.publish_task(execute("many"));
    ASSERT_TRUE(h.responses.wait_for([&](const std::string &p) {
        return is_status(p, h.uuid(), "many", "fail");
    }));
    EXPECT_TRUE(logs.wait_for("41 targets, more than the bound of 40"));

    h.publish_task(install_targets("many", 40));
    ASSERT_TRUE(eventually(
        [&] {
            return h.responses.count([&](const std::string &p) {
                return is_status(p, h.uuid(), "many", "ready");
            }) == 2;
        },
        20s));
    h.publish_task(execute("many"));
    ASSERT_TRUE(h.responses.wait_for(
        [&](const std::string &p) { return is_data(p, h.uuid(), "many"); }));
    std::ifstream seen(runs + "/seen");
    size_t count = 0, most = 0;
    for (size_t n; seen >> n; ++count)
        most = std::max(most, n);
    EXPECT_EQ(count, 40u) << "every target ran once";
    EXPECT_GE(most, 1u);
    EXPECT_LE(most, 3u) << "more testlet processes at once than the bound";
}
