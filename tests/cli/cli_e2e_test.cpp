// The todd CLI end to end: a real todd-server process and three real
// todd-agent processes over the embedded ZeroMQ transport (or, built with
// TODD_CLI_E2E_BROKER_RABBITMQ, _KAFKA or _NATS, a private
// broker of that kind), all on 127.0.0.1 with ports chosen at run time,
// driven by the real todd binary.
// Agents start without testlets or fact collectors and download them from
// the server (DownloadAsset), then run ToDD's ping testlet against
// 127.0.0.1.
#include "files.hpp"
#include "ports.hpp"
#include "process.hpp"
#include "temp_dir.hpp"

// A broker build: the broker, and the programs' options that reach it.
#if defined(TODD_CLI_E2E_BROKER_RABBITMQ)
#include <rabbitmq_broker.hpp>
#define SKIP_WITHOUT_BROKER() TODD_SKIP_WITHOUT_RABBITMQ()
using Broker = todd::test::RabbitmqBroker;
static std::vector<std::string> broker_comms(const Broker &b)
{
    return {"--comms",     "rabbitmq",
            "--comms-opt", "host=" + b.host(),
            "--comms-opt", "port=" + std::to_string(b.port())};
}
#elif defined(TODD_CLI_E2E_BROKER_KAFKA)
#include <kafka_broker.hpp>
#define SKIP_WITHOUT_BROKER() TODD_SKIP_WITHOUT_KAFKA()
using Broker = todd::test::KafkaBroker;
static std::vector<std::string> broker_comms(const Broker &b)
{
    return {"--comms", "kafka", "--comms-opt",
            "bootstrap_servers=" + b.bootstrap()};
}
#elif defined(TODD_CLI_E2E_BROKER_NATS)
#include <nats_server.hpp>
#define SKIP_WITHOUT_BROKER() TODD_SKIP_WITHOUT_NATS()
using Broker = todd::test::NatsServer;
static std::vector<std::string> broker_comms(const Broker &b)
{
    return {"--comms", "nats", "--comms-opt", "servers=" + b.url()};
}
#endif

#include <csignal>
#include <filesystem>
#include <memory>
#include <set>

#include <gtest/gtest.h>
#include <rapidjson/document.h>

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using todd::test::Process;
using todd::test::read_file;
using todd::test::read_file_if_exists;
using todd::test::SpawnOptions;
using todd::test::write_file;

namespace {

// The todd binary under test; TODD_CLI_TEST_EXE runs another build of it
// (e.g. the ASan one) against this build's server and agents.
std::string cli_exe()
{
    const char *e = getenv("TODD_CLI_TEST_EXE");
    return e && *e ? e : TODD_CLI_EXE;
}

struct Result {
    int code;
    std::string out, err;
};

// A testlet: executable by its owner and group.
constexpr auto exec_mode =
    fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec;

class CliEndToEnd : public ::testing::Test {
  protected:
    static inline std::unique_ptr<todd::test::TempDir> tmp;
    static inline fs::path dir;
    static inline std::unique_ptr<Process> server;
    static inline std::vector<std::unique_ptr<Process>> agents;
    static inline std::vector<std::string> agent_uuids;
    static inline std::string api_port, stream_port;
    static inline std::vector<std::string> comms; // transport options
#ifdef SKIP_WITHOUT_BROKER
    static inline std::unique_ptr<Broker> broker;
#endif
    static inline int counter = 0;

#ifdef SKIP_WITHOUT_BROKER
    // A skip in SetUpTestSuite does not skip the tests (gtest 1.12): each
    // one skips (or fails, when CI requires the broker) by itself.
    void SetUp() override
    {
        SKIP_WITHOUT_BROKER();
    }
#endif

    static void SetUpTestSuite()
    {
        tmp = std::make_unique<todd::test::TempDir>("todd-cli-e2e");
        dir = tmp->path();
        // The server's assets: ToDD's ping testlet and fact collectors, and
        // "flaky", which fails on the agent started with
        // TODD_CLI_TEST_FAIL=1.
        fs::path assets = dir / "server" / "assets";
        fs::create_directories(assets / "testlets");
        fs::create_directories(assets / "factcollectors");
        for (const char *f : {"ping"})
            fs::copy_file(fs::path(TODD_SHARE_DIR) / "testlets" / f,
                          assets / "testlets" / f);
        for (const char *f : {"get_addresses", "get_hostname"})
            fs::copy_file(fs::path(TODD_SHARE_DIR) / "factcollectors" / f,
                          assets / "factcollectors" / f);
        write_file(
            assets / "testlets" / "flaky",
            "#!/bin/sh\n"
            "[ \"$1\" = check ] && { echo 'Check mode PASSED'; exit 0; }\n"
            "[ -n \"${TODD_CLI_TEST_FAIL:-}\" ] && { echo broken >&2; "
            "exit 3; }\n"
            "echo '{\"answer\":42}'\n",
            exec_mode);
        write_file(
            assets / "testlets" / "slow",
            "#!/bin/sh\n"
            "[ \"$1\" = check ] && { echo 'Check mode PASSED'; exit 0; }\n"
            "sleep 1\necho '{\"slept_s\":1}'\n",
            exec_mode);
        fs::create_directories(dir / "empty");
        write_file(dir / "server.cfg", "[API]\nHost = 127.0.0.1\nPort = 0\n"
                                       "StreamPort = 0\n"
                                       "[Assets]\nIP = 127.0.0.1\nPort = 0\n"
                                       "[Testing]\nTimeout = 3\n"
                                       "SourceTimeLimit = 3\n"
                                       "ResultGrace = 1\n"
                                       "[LocalResources]\nOptDir = " +
                                           (dir / "server").string() + "\n");

#ifdef SKIP_WITHOUT_BROKER
        SKIP_WITHOUT_BROKER();
        broker = std::make_unique<Broker>();
        comms = broker_comms(*broker);
        comms.insert(comms.end(), {"--plugin-dir", TODD_PLUGIN_DIR});
#else
        // An ipc:// endpoint: the agents must know it before the server
        // binds it, and a TCP port cannot be held for the server meanwhile.
        comms = {
            "--comms",      "zeromq",
            "--plugin-dir", TODD_PLUGIN_DIR,
            "--comms-opt",  "endpoint=ipc://" + (dir / "zmq.sock").string()};
#endif
        fs::path server_err = dir / "server.err";
        std::vector<std::string> argv = {TODD_SERVER_EXE, "--config",
                                         (dir / "server.cfg").string(), "--db",
                                         (dir / "server.db").string()};
        argv.insert(argv.end(), comms.begin(), comms.end());
        server = std::make_unique<Process>(
            argv, SpawnOptions{{},
                               "/dev/null",
                               (dir / "server.out").string(),
                               server_err.string()});
        // The server logs the ports it bound:
        // "Serving ToDD Server API at: 127.0.0.1:P (status stream S, ...".
        // (No std::regex: GCC 12 -O2 with ASan warns inside <regex>.)
        const std::string api_mark = "Serving ToDD Server API at: 127.0.0.1:";
        const std::string stream_mark = " (status stream ";
        auto number_after = [](const std::string &text, std::size_t pos) {
            std::string n;
            while (pos < text.size() &&
                   std::isdigit(static_cast<unsigned char>(text[pos])))
                n.push_back(text[pos++]);
            return n;
        };
        auto deadline = std::chrono::steady_clock::now() + 20s;
        std::string log;
        while (std::chrono::steady_clock::now() < deadline) {
            log = read_file_if_exists(server_err);
            auto a = log.find(api_mark);
            if (a != std::string::npos) {
                api_port = number_after(log, a + api_mark.size());
                auto s = log.find(stream_mark, a);
                if (s != std::string::npos)
                    stream_port = number_after(log, s + stream_mark.size());
                break;
            }
            ASSERT_TRUE(server->poll().running()) << "todd-server exited:\n"
                                                  << log;
            std::this_thread::sleep_for(20ms);
        }
        ASSERT_FALSE(api_port.empty() || stream_port.empty())
            << "todd-server did not start:\n"
            << log;

        for (int i = 0; i < 3; ++i)
            start_agent(i, i == 2 ? "TODD_CLI_TEST_FAIL=1" : "");
        for (int i = 0; i < 3; ++i) {
            agent_uuids.push_back(agent_uuid(i));
            ASSERT_EQ(agent_uuids.back().size(), 64u)
                << "agent " << i << " has no UUID";
        }
    }

    static Process &start_agent(int i, const std::string &env)
    {
        fs::path a = dir / ("agent" + std::to_string(i));
        fs::create_directories(a / "state");
        std::vector<std::string> envs;
        if (!env.empty())
            envs.push_back(env);
        std::vector<std::string> argv = {TODD_AGENT_EXE,
                                         "--opt-dir",
                                         a.string(),
                                         "--state-dir",
                                         (a / "state").string(),
                                         "--testlet-dir",
                                         (dir / "empty").string(),
                                         "--factcollector-dir",
                                         (dir / "empty").string(),
                                         "--ip-addr-override",
                                         "127.0.0.1",
                                         "--advert-interval",
                                         "0.2"};
        argv.insert(argv.end(), comms.begin(), comms.end());
        agents.push_back(std::make_unique<Process>(
            argv, SpawnOptions{envs, "/dev/null", (a / "out").string(),
                               (a / "err").string()}));
        return *agents.back();
    }

    // The agent's identity (written by the agent at start), "" if none
    // within 20 s.
    static std::string agent_uuid(int i)
    {
        fs::path f =
            dir / ("agent" + std::to_string(i)) / "state" / "agent-uuid";
        std::string id;
        todd::test::eventually(
            [&] {
                id = todd::test::read_trimmed(f);
                return id.size() == 64;
            },
            20s);
        return id.size() == 64 ? id : std::string();
    }

    static void TearDownTestSuite()
    {
        for (auto &p : agents)
            p->stop();
        agents.clear();
        if (server)
            server->stop();
        server.reset();
#ifdef SKIP_WITHOUT_BROKER
        broker.reset();
#endif
        if (!dir.empty() && getenv("TODD_CLI_KEEP")) {
            fs::path kept = dir.string() + "-kept";
            fs::rename(dir, kept);
            std::cerr << "logs kept in " << kept << "\n";
        }
        tmp.reset();
    }

    // Runs the real todd binary against the server.
    static Result todd(std::vector<std::string> args,
                       const std::string &stdin_text = "",
                       bool add_server = true)
    {
        std::string base = (dir / ("cli" + std::to_string(++counter))).string();
        write_file(base + ".in", stdin_text);
        std::vector<std::string> argv = {cli_exe()};
        if (add_server) {
            argv.insert(argv.end(), {"-H", "127.0.0.1", "-P", api_port,
                                     "--stream-port", stream_port});
        }
        argv.insert(argv.end(), args.begin(), args.end());
        Process p(argv,
                  SpawnOptions{{}, base + ".in", base + ".out", base + ".err"});
        int code = p.wait(90s).code();
        p.kill_now();
        return {code, read_file(base + ".out"), read_file(base + ".err")};
    }

    // Repeats `todd args` until @p pred holds on its output (bounded).
    template <class Pred>
    static Result todd_until(std::vector<std::string> args, Pred pred,
                             std::chrono::seconds limit = 30s)
    {
        auto deadline = std::chrono::steady_clock::now() + limit;
        Result r;
        do {
            r = todd(args);
            if (r.code == 0 && pred(r.out))
                return r;
            std::this_thread::sleep_for(50ms);
        } while (std::chrono::steady_clock::now() < deadline);
        ADD_FAILURE() << "condition never met; last output:\n"
                      << r.out << r.err;
        return r;
    }

    static std::string short_id(int i)
    {
        return agent_uuids[i].substr(0, 12);
    }

    static void ensure_group()
    {
        auto r = todd({"create", TODD_CLI_TEST_DATA "/group-loopgroup.yml"});
        ASSERT_EQ(r.code, 0) << r.err;
        ASSERT_EQ(r.out, "[OK]\n");
        // Every agent lands in the group once its facts are known.
        todd_until({"groups"}, [](const std::string &out) {
            for (int i = 0; i < 3; ++i)
                if (out.find(short_id(i) + "\tloopgroup\n") ==
                    std::string::npos)
                    return false;
            return true;
        });
    }
};

// JSON after "Done.\n" in `todd run -j` output.
rapidjson::Document run_json(const std::string &out)
{
    rapidjson::Document d;
    auto pos = out.find("\nDone.\n");
    EXPECT_NE(pos, std::string::npos) << out;
    if (pos == std::string::npos)
        return d;
    std::string json = out.substr(pos + 7);
    d.Parse(json.c_str());
    EXPECT_FALSE(d.HasParseError()) << json;
    return d;
}

} // namespace

TEST_F(CliEndToEnd, AgentsAreListedAndShownInDetail)
{
    auto r = todd_until({"agents"}, [](const std::string &out) {
        for (int i = 0; i < 3; ++i)
            if (out.find(short_id(i) + "\t") == std::string::npos)
                return false;
        return true;
    });
    EXPECT_EQ(r.out.rfind("UUID\t\tEXPIRES\tADDR\t\tFACT SUMMARY\t", 0), 0u)
        << r.out;
    EXPECT_NE(r.out.find("127.0.0.1"), std::string::npos);
    EXPECT_EQ(r.out.substr(r.out.size() - 2), "\n\n");

    r = todd({"agents", agent_uuids[1].substr(0, 8)});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out.rfind("Agent UUID:  " + agent_uuids[1] + "\n", 0), 0u)
        << r.out;
    EXPECT_NE(r.out.find("Facts:\n{\n    \"Addresses\": ["), std::string::npos)
        << r.out;

    r = todd({"agents", "zzzz"});
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.err, "ERROR: no agent with a UUID starting with 'zzzz'\n");
}

TEST_F(CliEndToEnd, GroupFromYamlAndObjects)
{
    ensure_group();
    auto r = todd({"objects", "group"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "LABEL\t\tTYPE\tSPEC\t\n"
                     "loopgroup\tgroup\t{loopgroup "
                     "[map[within_subnet:127.0.0.0/8]]}\n\n");
}

TEST_F(CliEndToEnd, PingRunFromThreeAgentsAsJson)
{
    ensure_group();
    // From stdin this time, as ToDD's scripts do (cat x.yml | todd create).
    auto r =
        todd({"create"}, read_file(TODD_CLI_TEST_DATA "/testrun-ping-lo.yml"));
    ASSERT_EQ(r.code, 0) << r.err;
    ASSERT_EQ(r.out, "[OK]\n");

    // Agent 2 fails only "flaky", so ping runs on all three.
    r = todd({"run", "ping-lo", "-y", "-j", "--source-args", "-c 1"});
    ASSERT_EQ(r.code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("\nRUNNING TEST: "), std::string::npos);
    EXPECT_NE(r.out.find("FINISHED: (3/3)"), std::string::npos) << r.out;
    auto d = run_json(r.out);
    ASSERT_TRUE(d.IsObject()) << r.out;
    EXPECT_EQ(d.MemberCount(), 3u) << r.out;
    for (const auto &id : agent_uuids) {
        ASSERT_TRUE(d.HasMember(id.c_str())) << id << "\n" << r.out;
        const auto &target = d[id.c_str()];
        ASSERT_TRUE(target.IsObject() && target.HasMember("127.0.0.1"))
            << r.out;
        const auto &m = target["127.0.0.1"];
        ASSERT_TRUE(m.IsObject() && m.HasMember("packet_loss")) << r.out;
        EXPECT_EQ(m["packet_loss"].GetDouble(), 0.0);
        EXPECT_TRUE(m.HasMember("avg_latency_ms") &&
                    m["avg_latency_ms"].IsNumber());
    }
}

TEST_F(CliEndToEnd, PingRunAsTable)
{
    ensure_group();
    auto r = todd({"create", TODD_CLI_TEST_DATA "/testrun-ping-lo.yml"});
    ASSERT_EQ(r.code, 0) << r.err;
    r = todd({"run", "ping-lo", "--source-args=-c 1"}, "y\n");
    ASSERT_EQ(r.code, 0) << r.out << r.err;
    EXPECT_EQ(r.out.rfind("Activate testrun \"ping-lo\"? (y/n): ", 0), 0u);
    auto pos = r.out.find("\nDone.\n");
    ASSERT_NE(pos, std::string::npos) << r.out;
    std::string table = r.out.substr(pos + 7);
    EXPECT_EQ(table.rfind("AGENT\t\tTARGET\t\tMETRIC\t\tVALUE\n", 0), 0u)
        << table;
    for (int i = 0; i < 3; ++i)
        EXPECT_NE(table.find(short_id(i) + "\t127.0.0.1\tpacket_loss\t0\n"),
                  std::string::npos)
            << table;
}

TEST_F(CliEndToEnd, FailedAgentIsReportedAndRunCompletes)
{
    ensure_group();
    auto r = todd({"create", "-"}, "type: testrun\nlabel: flaky-run\nspec:\n"
                                   "  targettype: uncontrolled\n"
                                   "  source: {name: loopgroup, app: flaky, "
                                   "args: \"\"}\n"
                                   "  target: [127.0.0.1]\n");
    ASSERT_EQ(r.code, 0) << r.err;
    r = todd({"run", "flaky-run", "-y"});
    ASSERT_EQ(r.code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find(short_id(2) + "=fail"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("FAIL: (1/3)"), std::string::npos) << r.out;
    auto pos = r.out.find("\nDone.\n");
    ASSERT_NE(pos, std::string::npos) << r.out;
    std::string table = r.out.substr(pos + 7);
    for (int i = 0; i < 2; ++i)
        EXPECT_NE(table.find(short_id(i) + "\t127.0.0.1\tanswer\t42\n"),
                  std::string::npos)
            << table;
    EXPECT_NE(table.find(short_id(2)), std::string::npos) << table;
    EXPECT_NE(r.err.find("WARNING: 1 of 3 agents failed: " + agent_uuids[2]),
              std::string::npos)
        << r.err;
}

TEST_F(CliEndToEnd, DeleteObjects)
{
    auto r =
        todd({"create"}, read_file(TODD_CLI_TEST_DATA "/testrun-iperf.yml"));
    ASSERT_EQ(r.code, 0) << r.err;
    r = todd({"objects", "testrun"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("test-iperf\ttestrun\t{group map[app:iperf args:-c "
                         "{{ target }} name:red] map[app:iperf args:-s "
                         "name:blue]}\n"),
              std::string::npos)
        << r.out;
    r = todd({"delete", "testrun", "test-iperf"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "[OK]\n");
    r = todd({"objects", "testrun"});
    EXPECT_EQ(r.out.find("test-iperf"), std::string::npos) << r.out;
    r = todd({"delete", "testrun", "test-iperf"});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("ERROR: "), std::string::npos);
    EXPECT_NE(r.err.find("(Are you sure you provided the right object type "
                         "and/or label?)"),
              std::string::npos)
        << r.err;
}

TEST_F(CliEndToEnd, MalformedYamlIsRejectedBeforeSending)
{
    auto r = todd({"create", "-"}, "type: group\nlabel: broken\nspec:\n"
                                   "  matches: [within_subnet: 10.0.0.0/8\n");
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(r.err.rfind("ERROR: <stdin>:", 0), 0u) << r.err;
    EXPECT_NE(r.err.find("not valid YAML"), std::string::npos) << r.err;
    r = todd({"objects", "group"});
    EXPECT_EQ(r.out.find("broken"), std::string::npos);
}

TEST_F(CliEndToEnd, UnknownTestrunIsAnError)
{
    auto r = todd({"run", "no-such-run", "-y"});
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_NE(r.err.find("ERROR: "), std::string::npos) << r.err;
}

TEST_F(CliEndToEnd, UnreachableServer)
{
    // Bound, never listening: connects are refused and no one else can
    // take the port meanwhile.
    auto dead = todd::test::DeadPort::refusing();
    std::string port = dead.port_str();
    auto r = todd({"-H", "127.0.0.1", "-P", port, "groups"}, "", false);
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.err, "ERROR: cannot reach ToDD server at 127.0.0.1:" + port +
                         ": connection refused\n");
    EXPECT_EQ(r.out, "");
}

TEST_F(CliEndToEnd, LocalhostTriesEveryAddress)
{
    // The server listens on 127.0.0.1 only; "localhost" may resolve to ::1
    // first, which refuses: the next address must be tried, as Go does.
    auto r = todd({"-H", "localhost", "-P", api_port, "groups"}, "", false);
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out.rfind("UUID\t", 0), 0u) << r.out;
}

// Last: it adds a fourth agent and kills it while it runs a test.
TEST_F(CliEndToEnd, AgentKilledMidRunIsReportedAsFailed)
{
    ensure_group();
    Process &victim = start_agent(3, "");
    std::string victim_id = agent_uuid(3);
    ASSERT_EQ(victim_id.size(), 64u);
    todd_until({"groups"}, [&](const std::string &out) {
        return out.find(victim_id.substr(0, 12) + "\tloopgroup\n") !=
               std::string::npos;
    });
    auto r = todd({"create", "-"}, "type: testrun\nlabel: slow-run\nspec:\n"
                                   "  targettype: uncontrolled\n"
                                   "  source: {name: loopgroup, app: slow}\n"
                                   "  target: [127.0.0.1]\n");
    ASSERT_EQ(r.code, 0) << r.err;

    // The run in the background; kill the victim once it is testing.
    std::string base = (dir / "killed-run").string();
    write_file(base + ".in", "");
    Process cli({cli_exe(), "-H", "127.0.0.1", "-P", api_port, "--stream-port",
                 stream_port, "run", "slow-run", "-y", "--timeout", "60"},
                SpawnOptions{{}, base + ".in", base + ".out", base + ".err"});
    std::string mark = victim_id.substr(0, 12) + "=testing";
    ASSERT_TRUE(cli.wait_output(mark, 20s))
        << cli.output() << cli.error_output();
    victim.kill_now();

    int code = cli.wait(60s).code();
    std::string out = cli.output(), err = cli.error_output();
    ASSERT_EQ(code, 0) << out << err;
    EXPECT_NE(out.find(victim_id.substr(0, 12) + "=fail"), std::string::npos)
        << out;
    EXPECT_NE(out.find("FINISHED: (3/4)  FAIL: (1/4)"), std::string::npos)
        << out;
    auto pos = out.find("\nDone.\n");
    ASSERT_NE(pos, std::string::npos) << out;
    std::string table = out.substr(pos + 7);
    for (int i = 0; i < 3; ++i)
        EXPECT_NE(table.find(short_id(i) + "\t127.0.0.1\tslept_s\t1\n"),
                  std::string::npos)
            << table;
    EXPECT_NE(err.find("WARNING: 1 of 4 agents failed: " + victim_id),
              std::string::npos)
        << err;
}
