// SPDX-License-Identifier: Apache-2.0
// `todd run` when things go wrong, end to end: the real todd binary against
// a real todd-server and two real todd-agent processes (hosts "red-1" and
// "blue-1", each in its own group) over the embedded ZeroMQ transport on an
// ipc:// endpoint. The run does not finish within --timeout; the status
// stream is down; the server goes away mid-run; --source-group and
// --source-app redirect a run; a topology no agent can fill.
#include "../server/server_program.hpp"
#include "files.hpp"
#include "process.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <thread>

namespace fs = std::filesystem;
using namespace todd::test::program;
using todd::test::Process;
using todd::test::read_file_if_exists;

namespace {

struct Result {
    int code;
    std::string out, err;
};

void write_exec(const std::string &path, const std::string &text)
{
    write_text(path, text);
    fs::permissions(path, fs::perms::owner_all);
}

/** A testlet printing `json` (ToDD's testlet protocol: "check" first). */
std::string testlet(const std::string &body)
{
    return "#!/bin/sh\n[ \"$1\" = check ] && { echo 'Check mode PASSED'; "
           "exit 0; }\n" +
           body;
}

/** A TCP listener on 127.0.0.1 (port bound here, 0) that accepts each
 *  connection and closes it at once: a status stream that is down. */
class ClosingListener {
  public:
    ClosingListener()
    {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        if (::bind(fd_, reinterpret_cast<sockaddr *>(&a), len) != 0 ||
            ::listen(fd_, 16) != 0 ||
            ::getsockname(fd_, reinterpret_cast<sockaddr *>(&a), &len) != 0)
            throw std::runtime_error("cannot listen");
        port_ = ntohs(a.sin_port);
        thread_ = std::thread([this] {
            int c;
            while ((c = ::accept(fd_, nullptr, nullptr)) >= 0) {
                ++accepted_;
                ::close(c);
            }
        });
    }
    ~ClosingListener()
    {
        ::shutdown(fd_, SHUT_RDWR); // ends accept()
        thread_.join();
        ::close(fd_);
    }
    int port() const { return port_; }
    int accepted() const { return accepted_; }

  private:
    int fd_ = -1, port_ = 0;
    std::atomic<int> accepted_{0};
    std::thread thread_;
};

class RunFailures : public ::testing::Test {
  protected:
    void SetUp() override
    {
        std::string t = path("opt/assets/testlets");
        fs::create_directories(t);
        fs::create_directories(path("opt/assets/factcollectors"));
        fs::create_directories(path("empty"));
        write_exec(t + "/says-1", testlet("echo '{\"which\":1}'\n"));
        write_exec(t + "/says-2", testlet("echo '{\"which\":2}'\n"));
        // Runs until the test creates the release file (or its directory
        // is gone): a run that cannot finish in time, with no guess at how
        // long anything takes.
        write_exec(
            t + "/blocked",
            testlet("while [ ! -e " + release() + " ] && [ -d " + dir_.path() +
                    " ]; do sleep 0.05; done\necho '{\"released\":1}'\n"));
        write_text(path("server.cfg"), server_cfg(path("opt")));
        const std::string endpoint = "ipc://" + path("zmq.sock");
        comms_ = {"--comms",       "zeromq",      "--plugin-dir",
                  TODD_PLUGIN_DIR, "--comms-opt", "endpoint=" + endpoint};
        start_server();
        for (const char *host : {"red-1", "blue-1"})
            uuids_.push_back(start_agent(host));
        ASSERT_EQ(uuids_[0].size(), 64u);
        ASSERT_EQ(uuids_[1].size(), 64u);
        ASSERT_EQ(todd({"create", "-"}, group_yaml("red")).code, 0);
        ASSERT_EQ(todd({"create", "-"}, group_yaml("blue")).code, 0);
        ASSERT_EQ(
            todd({"create", "-"}, testrun_yaml("say", "red", "says-1")).code,
            0);
        ASSERT_EQ(
            todd({"create", "-"}, testrun_yaml("stuck", "red", "blocked")).code,
            0);
        // Both agents grouped before any run.
        auto deadline = sigtest::Clock::now() + 30s;
        std::string groups;
        while (sigtest::Clock::now() < deadline) {
            groups = http_get(started_.api, "/v1/groups").body;
            if (groups.find(uuids_[0] + "\": \"red\"") != std::string::npos &&
                groups.find(uuids_[1] + "\": \"blue\"") != std::string::npos)
                break;
            std::this_thread::sleep_for(50ms);
        }
        ASSERT_NE(groups.find(uuids_[1] + "\": \"blue\""), std::string::npos)
            << groups << "\n"
            << server_->output();
    }
    void TearDown() override
    {
        write_text(release(), ""); // let a blocked testlet end
    }

    std::string path(const std::string &sub) const
    {
        return dir_.path() + "/" + sub;
    }
    std::string release() const { return path("release"); }

    void start_server()
    {
        std::vector<std::string> argv = {TODD_SERVER_EXE, "--config",
                                         path("server.cfg")};
        argv.insert(argv.end(), comms_.begin(), comms_.end());
        server_ = std::make_unique<Program>(argv);
        auto s = wait_started(*server_);
        ASSERT_TRUE(s) << server_->output();
        started_ = *s;
    }

    /** A todd-agent whose host name is `host`; its UUID ("" if none). */
    std::string start_agent(const std::string &host)
    {
        std::string fc = path(host + "-collectors"), state = path(host);
        fs::create_directories(fc);
        fs::create_directories(state);
        write_exec(fc + "/get_hostname",
                   "#!/bin/sh\necho '{\"Hostname\":[\"" + host + "\"]}'\n");
        std::vector<std::string> argv = {TODD_AGENT_EXE,
                                         "--opt-dir",
                                         path(host + "-opt"),
                                         "--state-dir",
                                         state,
                                         "--testlet-dir",
                                         path("empty"),
                                         "--factcollector-dir",
                                         fc,
                                         "--ip-addr-override",
                                         "127.0.0.1",
                                         "--advert-interval",
                                         "0.2",
                                         "--log-level",
                                         "warn"};
        argv.insert(argv.end(), comms_.begin(), comms_.end());
        agents_.push_back(std::make_unique<Program>(argv));
        return wait_agent_uuid(state);
    }

    static std::string group_yaml(const std::string &name)
    {
        return "type: group\nlabel: " + name + "\nspec:\n  group: " + name +
               "\n  matches:\n  - hostname: ^" + name + "-\n";
    }
    static std::string testrun_yaml(const std::string &label,
                                    const std::string &group,
                                    const std::string &app)
    {
        return "type: testrun\nlabel: " + label +
               "\nspec:\n  targettype: uncontrolled\n  source: {name: " +
               group + ", app: " + app +
               ", args: \"\"}\n  target: [127.0.0.1]\n";
    }

    /** The todd binary against the server (its stream port unless given
     *  with --stream-port in `args`), run to its end. */
    Result todd(std::vector<std::string> args, const std::string &in = "",
                int stream_port = 0)
    {
        auto p = start_todd(args, in, stream_port);
        auto st = p->wait(90s);
        if (st.running())
            p->kill_now();
        return {st.running() ? -1 : st.code(),
                read_file_if_exists(base_ + ".out"),
                read_file_if_exists(base_ + ".err")};
    }
    std::unique_ptr<Process> start_todd(std::vector<std::string> args,
                                        const std::string &in, int stream_port)
    {
        base_ = path("cli" + std::to_string(++counter_));
        write_text(base_ + ".in", in);
        std::vector<std::string> argv = {
            TODD_CLI_EXE,
            "-H",
            "127.0.0.1",
            "-P",
            std::to_string(started_.api),
            "--stream-port",
            std::to_string(stream_port ? stream_port : started_.stream)};
        argv.insert(argv.end(), args.begin(), args.end());
        todd::test::SpawnOptions o;
        o.stdin_path = base_ + ".in";
        o.stdout_path = base_ + ".out";
        o.stderr_path = base_ + ".err";
        return std::make_unique<Process>(argv, o);
    }

    sigtest::TempDir dir_;
    std::vector<std::string> comms_;
    std::unique_ptr<Program> server_;
    Started started_;
    std::vector<std::unique_ptr<Program>> agents_;
    std::vector<std::string> uuids_;
    std::string base_;
    int counter_ = 0;
};

TEST_F(RunFailures, ARunThatOutlivesTimeoutIsAnError)
{
    Result r = todd({"run", "stuck", "-y", "--timeout", "1"});
    EXPECT_EQ(r.code, 1) << r.out << r.err;
    EXPECT_EQ(r.err.rfind("ERROR: failed to retrieve test data within 1 "
                          "seconds (--timeout); last reply: ",
                          0),
              0u)
        << r.err;
    EXPECT_NE(r.out.find("\nRUNNING TEST: "), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("\nDone.\n"), std::string::npos) << r.out;
    // The run itself goes on: released, it ends with its result.
    write_text(release(), "");
}

TEST_F(RunFailures, StatusStreamDownFallsBackToTheResult)
{
    ClosingListener down;
    Result r = todd({"run", "say", "-y"}, "", down.port());
    EXPECT_EQ(r.code, 0) << r.out << r.err;
    EXPECT_GE(down.accepted(), 1);
    EXPECT_NE(r.out.find("Problem subscribing to testrun updates stream: "
                         "disconnected from testrun status stream\n"),
              std::string::npos)
        << r.out;
    auto pos = r.out.find("\nDone.\n");
    ASSERT_NE(pos, std::string::npos) << r.out << r.err;
    EXPECT_NE(
        r.out.find(uuids_[0].substr(0, 12) + "\t127.0.0.1\twhich\t1\n", pos),
        std::string::npos)
        << r.out;
}

TEST_F(RunFailures, ServerGoneMidRunIsAnErrorNamingIt)
{
    auto cli = start_todd({"run", "stuck", "-y", "--timeout", "10"}, "", 0);
    const std::string out = base_ + ".out", err = base_ + ".err";
    const std::string testing = uuids_[0].substr(0, 12) + "=testing";
    auto deadline = sigtest::Clock::now() + 30s;
    while (read_file_if_exists(out).find(testing) == std::string::npos &&
           cli->poll().running() && sigtest::Clock::now() < deadline)
        std::this_thread::sleep_for(10ms);
    ASSERT_NE(read_file_if_exists(out).find(testing), std::string::npos)
        << read_file_if_exists(out) << read_file_if_exists(err);
    std::chrono::milliseconds took{};
    ASSERT_EQ(server_->terminate(10s, &took), "exit 0");

    auto st = cli->wait(60s);
    int code = st.running() ? -1 : st.code();
    std::string o = read_file_if_exists(out), e = read_file_if_exists(err);
    EXPECT_EQ(code, 1) << o << e;
    EXPECT_NE(o.find("Problem subscribing to testrun updates stream: "
                     "disconnected from testrun status stream\n"),
              std::string::npos)
        << o;
    EXPECT_EQ(e, "ERROR: failed to retrieve test data within 10 seconds "
                 "(--timeout); last reply: cannot reach ToDD server at "
                 "127.0.0.1:" +
                     std::to_string(started_.api) + ": connection refused\n")
        << o;
}

TEST_F(RunFailures, SourceGroupAndSourceAppRedirectTheRun)
{
    // --source-group: blue runs it instead of red; JSON output implied.
    Result r = todd({"run", "say", "-y", "--source-group", "blue"});
    ASSERT_EQ(r.code, 0) << r.out << r.err;
    auto pos = r.out.find("\nDone.\n");
    ASSERT_NE(pos, std::string::npos) << r.out;
    EXPECT_EQ(r.out.substr(pos + 7), "{\n  \"" + uuids_[1] +
                                         "\": {\n    \"127.0.0.1\": {\n"
                                         "      \"which\": 1\n    }\n  }\n}\n")
        << r.out;

    // --source-app: red runs says-2 instead of says-1.
    r = todd({"run", "say", "-y", "--source-app", "says-2"});
    ASSERT_EQ(r.code, 0) << r.out << r.err;
    pos = r.out.find("\nDone.\n");
    ASSERT_NE(pos, std::string::npos) << r.out;
    EXPECT_EQ(r.out.substr(pos + 7), "AGENT\t\tTARGET\t\tMETRIC\tVALUE\n" +
                                         uuids_[0].substr(0, 12) +
                                         "\t127.0.0.1\twhich\t2\n")
        << r.out;

    // The testrun object itself is unchanged.
    r = todd({"run", "say", "-y", "-j"});
    ASSERT_EQ(r.code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("\"" + uuids_[0] + "\""), std::string::npos);
    EXPECT_NE(r.out.find("\"which\": 1"), std::string::npos) << r.out;

    // A source group with no agent: not enough agents.
    r = todd({"run", "say", "-y", "--source-group", "nobody"});
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_EQ(r.err, "ERROR: Not enough agents are in the groups specified "
                     "by the testrun\n");
}

TEST_F(RunFailures, ATopologyNoAgentFillsIsRefusedBeforeRunning)
{
    ASSERT_EQ(
        todd({"create", "-"}, testrun_yaml("orphan", "green", "says-1")).code,
        0);
    // A group target whose group is empty.
    ASSERT_EQ(todd({"create", "-"},
                   "type: testrun\nlabel: to-green\nspec:\n"
                   "  targettype: group\n"
                   "  source: {name: red, app: says-1, args: \"\"}\n"
                   "  target: {name: green, app: says-2, args: \"\"}\n")
                  .code,
              0);
    for (const char *run : {"orphan", "to-green"}) {
        Result r = todd({"run", run, "-y"});
        EXPECT_EQ(r.code, 1) << run << "\n" << r.out;
        EXPECT_EQ(r.err, "ERROR: Not enough agents are in the groups "
                         "specified by the testrun\n")
            << run;
        EXPECT_EQ(r.out.find("RUNNING TEST"), std::string::npos) << r.out;
    }
}

} // namespace
