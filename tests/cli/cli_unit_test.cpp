// Unit tests of the todd CLI's pure parts: YAML object files to JSON (byte
// for byte against the Go CLI's captured bodies), tables and durations as
// the Go CLI prints them, reply parsing, and the command line's own errors.
#include "commands.hpp"
#include "format.hpp"
#include "json_text.hpp"
#include "objects.hpp"
#include "todd_build_config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

using namespace todd::cli;

namespace {

std::string read_data(const std::string &name)
{
    std::ifstream f(std::string(TODD_CLI_TEST_DATA) + "/" + name);
    EXPECT_TRUE(f) << name;
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::string object_error(const std::string &yaml)
{
    try {
        yaml_object_to_json(yaml, "obj.yml");
    } catch (const ObjectError &e) {
        return e.what();
    }
    ADD_FAILURE() << "no error for:\n" << yaml;
    return {};
}

} // namespace

// ---- YAML -> JSON (todd-rest-api.md 5.4) -----------------------------------

TEST(CreateBody, GroupMatchesGoCliBytes)
{
    auto obj = yaml_object_to_json(read_data("group-loopgroup.yml"), "g.yml");
    EXPECT_EQ(obj.type, "group");
    EXPECT_EQ(obj.label, "loopgroup");
    EXPECT_EQ(
        obj.json,
        R"({"label":"loopgroup","type":"group","spec":{"group":"loopgroup","matches":[{"within_subnet":"127.0.0.0/8"}]}})");
    EXPECT_EQ(obj.json.size(), 109u); // the captured Content-Length
}

TEST(CreateBody, GroupTargetTestrunMatchesGoCliBytes)
{
    auto obj = yaml_object_to_json(read_data("testrun-iperf.yml"), "t.yml");
    EXPECT_EQ(
        obj.json,
        R"({"label":"test-iperf","type":"testrun","spec":{"targettype":"group","source":{"app":"iperf","args":"-c {{ target }}","name":"red"},"target":{"app":"iperf","args":"-s","name":"blue"}}})");
}

TEST(CreateBody, UncontrolledTestrunMatchesGoCliBytes)
{
    auto obj = yaml_object_to_json(read_data("testrun-ping-lo.yml"), "t.yml");
    EXPECT_EQ(obj.type, "testrun");
    EXPECT_EQ(obj.label, "ping-lo");
    EXPECT_EQ(
        obj.json,
        R"({"label":"ping-lo","type":"testrun","spec":{"targettype":"uncontrolled","source":{"app":"ping","args":"-c 3","name":"loopgroup"},"target":["127.0.0.1"]}})");
}

TEST(CreateBody, ScalarsAreTextUnknownKeysDroppedAbsentMatchesNull)
{
    auto obj = yaml_object_to_json("type: group\nlabel: 5\nextra: 1\n"
                                   "spec:\n  group: true\n  other: x\n",
                                   "g.yml");
    EXPECT_EQ(
        obj.json,
        R"({"label":"5","type":"group","spec":{"group":"true","matches":null}})");
    obj = yaml_object_to_json(
        "type: group\nlabel: g\nspec:\n  matches:\n  - hostname: 5\n"
        "    within_subnet: 10.0.0.0/8\n  - hostname: \"a.*\"\n",
        "g.yml");
    EXPECT_EQ(
        obj.json,
        R"({"label":"g","type":"group","spec":{"group":"","matches":[{"hostname":"5","within_subnet":"10.0.0.0/8"},{"hostname":"a.*"}]}})");
}

TEST(CreateBody, StringsEscapedLikeGo)
{
    auto obj = yaml_object_to_json(
        "type: testrun\nlabel: \"a<b>&\\\"c\\\\\"\nspec:\n  targettype: "
        "uncontrolled\n  source: {name: g, app: http, args: \"-u "
        "'x?a=1&b=2'\\t\\u2028\"}\n  target: [\"h\\u00e9\"]\n",
        "t.yml");
    EXPECT_EQ(obj.json,
              "{\"label\":\"a\\u003cb\\u003e\\u0026\\\"c\\\\\",\"type\":"
              "\"testrun\",\"spec\":{\"targettype\":\"uncontrolled\","
              "\"source\":{\"app\":\"http\",\"args\":\"-u "
              "'x?a=1\\u0026b=2'\\t\\u2028\",\"name\":\"g\"},\"target\":"
              "[\"h\xC3\xA9\"]}}");
}

TEST(CreateBody, OnlyFirstDocumentIsRead)
{
    auto obj = yaml_object_to_json(
        read_data("group-loopgroup.yml") + "---\ntype: testrun\n", "g.yml");
    EXPECT_EQ(obj.type, "group");
}

TEST(GoJson, Quote)
{
    EXPECT_EQ(go_json_quote("plain"), "\"plain\"");
    EXPECT_EQ(go_json_quote(std::string("\x01\x1f\b\f\n\r\t", 7)),
              "\"\\u0001\\u001f\\u0008\\u000c\\n\\r\\t\"");
    EXPECT_EQ(go_json_quote("\xff ok \xC3"), "\"\\ufffd ok \\ufffd\"");
    EXPECT_EQ(go_json_quote("\xE2\x80\xA9"), "\"\\u2029\"");
    EXPECT_EQ(go_json_quote("\x7f/"), "\"\x7f/\"");
}

// ---- Object file errors: clear, with line and field ------------------------

TEST(CreateErrors, SyntaxErrorNamesLine)
{
    EXPECT_EQ(object_error("type: group\nlabel: [oops\n"),
              "obj.yml:3:1: not valid YAML: end of sequence flow not found");
}

TEST(CreateErrors, TypeAndLabel)
{
    EXPECT_EQ(object_error(""), "obj.yml: empty object definition (expected "
                                "a map with type, label and spec)");
    EXPECT_EQ(object_error("- a\n- b\n"),
              "obj.yml:1: an object definition must be a map with type, "
              "label and spec, not a list");
    EXPECT_EQ(object_error("label: x\nspec: {}\n"),
              "obj.yml:1: type is missing (expected group or testrun)");
    EXPECT_EQ(object_error("type: grup\nlabel: x\n"),
              "obj.yml:1: invalid object type 'grup' (expected group or "
              "testrun)");
    EXPECT_EQ(object_error("type: group\nspec: {}\n"),
              "obj.yml:1: group object without a label (label: NAME is "
              "required)");
    EXPECT_EQ(object_error("type: group\nlabel: [a]\n"),
              "obj.yml:2: label must be a string, not a list");
    EXPECT_EQ(object_error("type: group\nlabel: g\n"),
              "obj.yml:1: group 'g': spec must be a map, not nothing");
}

TEST(CreateErrors, GroupMatches)
{
    EXPECT_EQ(object_error("type: group\nlabel: g\nspec:\n  matches: abc\n"),
              "obj.yml:4: group 'g': spec.matches must be a list of match "
              "statements (- hostname: REGEX or - within_subnet: CIDR), not "
              "a scalar");
    EXPECT_EQ(
        object_error("type: group\nlabel: g\nspec:\n  matches:\n  - host: x\n"),
        "obj.yml:5: group 'g': spec.matches[0]: unknown match key 'host' "
        "(expected hostname or within_subnet)");
    EXPECT_EQ(object_error("type: group\nlabel: g\nspec:\n  matches:\n"
                           "  - within_subnet: 10.0.0.0/33\n"),
              "obj.yml:5: group 'g': spec.matches[0].within_subnet: "
              "invalid CIDR \"10.0.0.0/33\": prefix length 33 is over 32 "
              "for an IPv4 address");
    EXPECT_EQ(object_error("type: group\nlabel: g\nspec:\n  matches:\n"
                           "  - hostname: [a]\n"),
              "obj.yml:5: spec.matches[0].hostname must be a string, not a "
              "list");
}

TEST(CreateErrors, TestrunFields)
{
    const std::string head = "type: testrun\nlabel: t\nspec:\n";
    EXPECT_EQ(object_error(head + "  targettype: both\n"),
              "obj.yml:4: testrun 't': spec.targettype must be 'group' or "
              "'uncontrolled', not 'both'");
    EXPECT_EQ(object_error(head + "  targettype: group\n"),
              "obj.yml:4: testrun 't': spec.source is missing (name: GROUP, "
              "app: TESTLET, args: ARGS)");
    EXPECT_EQ(object_error(head + "  targettype: group\n  source: {name: a}\n"),
              "obj.yml:5: testrun 't': spec.source.app is missing");
    const std::string src = "  source: {name: a, app: ping}\n";
    // The Go CLI panics on these two.
    EXPECT_EQ(object_error(head + "  targettype: group\n" + src +
                           "  target:\n  - 1.2.3.4\n"),
              "obj.yml:7: testrun 't': spec.target must be a map with name, "
              "app and args when targettype is group, not a list");
    EXPECT_EQ(object_error(head + "  targettype: group\n" + src +
                           "  target:\n    name: b\n    app: iperf\n"
                           "    args:\n"),
              "obj.yml:7: testrun 't': spec.target.args must be a string "
              "(write args: \"\" for none)");
    EXPECT_EQ(object_error(head + "  targettype: uncontrolled\n" + src +
                           "  target: []\n"),
              "obj.yml:6: testrun 't': spec.target must be a non-empty list "
              "of target addresses when targettype is uncontrolled, not an "
              "empty list");
    EXPECT_EQ(object_error(head + "  targettype: uncontrolled\n" + src),
              "obj.yml:4: testrun 't': spec.target must be a non-empty list "
              "of target addresses when targettype is uncontrolled, not "
              "nothing");
}

// ---- Tables as the Go CLI prints them (todd-rest-api.md 6) -----------------

const char *const kTwoAgents = R"([
  {
    "Uuid": "a6c65b80665399c590d8aad0f3e936a4f4a6cb48bc118abb42b4139a18cbf650",
    "DefaultAddr": "127.0.0.1",
    "Expires": 300000000000,
    "LocalTime": "2026-11-25T19:12:28.918444915Z",
    "Facts": {"Hostname": ["vm"], "Addresses": ["127.0.0.1", "::1"]},
    "FactCollectors": {"get_hostname": "e3dd", "get_addresses": "630e"},
    "Testlets": {"http": "9bbb"}
  },
  {
    "uuid": "b0559445e382aa",
    "defaultaddr": "127.0.0.2",
    "EXPIRES": 300000000000,
    "Facts": {"Addresses": ["127.0.0.2"], "Hostname": ["vm2"]},
    "FactCollectors": {"get_addresses": "630e", "get_hostname": "e3dd"},
    "Unknown": 1
  }
])";

TEST(Tables, AgentsLikeGoTabwriter)
{
    auto agents = parse_agents(kTwoAgents);
    ASSERT_EQ(agents.size(), 2u);
    EXPECT_EQ(agents[1].uuid, "b0559445e382aa"); // keys case-insensitive
    EXPECT_EQ(format_agents_table(agents),
              "UUID\t\tEXPIRES\tADDR\t\tFACT SUMMARY\t\tCOLLECTOR SUMMARY\n"
              "a6c65b806653\t5m0s\t127.0.0.1\tAddresses, "
              "Hostname\tget_addresses, get_hostname\n"
              "b0559445e382\t5m0s\t127.0.0.2\tAddresses, "
              "Hostname\tget_addresses, get_hostname\n"
              "\n");
}

TEST(Tables, AgentDetail)
{
    auto agents = parse_agents(kTwoAgents);
    EXPECT_EQ(
        format_agent_detail(agents[0]),
        "Agent UUID:  "
        "a6c65b80665399c590d8aad0f3e936a4f4a6cb48bc118abb42b4139a18cbf650\n"
        "Expires:  5m0s\n"
        "Collector Summary: get_addresses, get_hostname\n"
        "Facts:\n"
        "{\n"
        "    \"Addresses\": [\n"
        "        \"127.0.0.1\",\n"
        "        \"::1\"\n"
        "    ],\n"
        "    \"Hostname\": [\n"
        "        \"vm\"\n"
        "    ]\n"
        "}\n");
}

TEST(Tables, Groups)
{
    auto groups = parse_groups(
        R"({"b0559445e382ff": "other", "a6c65b80665399": "loopgroup"})");
    EXPECT_EQ(format_groups_table(groups), "UUID\t\tGROUP NAME\n"
                                           "a6c65b806653\tloopgroup\n"
                                           "b0559445e382\tother\n"
                                           "\n");
    EXPECT_EQ(format_groups_table({}), "UUID\tGROUP NAME\n\n");
}

TEST(Tables, ObjectsGroup)
{
    EXPECT_EQ(format_objects_table(R"([
  {
    "label": "loopgroup",
    "type": "group",
    "spec": {
      "group": "loopgroup",
      "matches": [
        {"within_subnet": "127.0.0.0/8"},
        {"hostname": "todd-agent-.*[13579]"}
      ]
    }
  }
])"),
              "LABEL\t\tTYPE\tSPEC\t\n"
              "loopgroup\tgroup\t{loopgroup [map[within_subnet:127.0.0.0/8] "
              "map[hostname:todd-agent-.*[13579]]]}\n"
              "\n");
}

TEST(Tables, ObjectsTestrun)
{
    EXPECT_EQ(format_objects_table(R"([
  {"label": "ping-lo", "type": "testrun",
   "spec": {"targettype": "uncontrolled",
            "source": {"app": "ping", "args": "-c 3", "name": "loopgroup"},
            "target": ["127.0.0.1"]}},
  {"label": "test-iperf", "type": "testrun",
   "spec": {"targettype": "group",
            "source": {"app": "iperf", "args": "-c {{ target }}",
                       "name": "loopgroup"},
            "target": {"app": "iperf", "args": "-s", "name": "other"}}}
])"),
              "LABEL\t\tTYPE\tSPEC\t\n"
              "ping-lo\t\ttestrun\t{uncontrolled map[app:ping args:-c 3 "
              "name:loopgroup] [127.0.0.1]}\n"
              "test-iperf\ttestrun\t{group map[app:iperf args:-c {{ target }} "
              "name:loopgroup] map[app:iperf args:-s name:other]}\n"
              "\n");
    EXPECT_EQ(format_objects_table("[]"), "LABEL\tTYPE\tSPEC\t\n\n");
}

TEST(Tables, TabwriterPaddingKeepsCellsApart)
{
    // Go's padding 0 glues an 8-wide cell to the next; ours keeps a tab.
    EXPECT_EQ(tabwrite("12345678\tx\nab\ty\n", 0), "12345678x\nab\ty\n");
    EXPECT_EQ(tabwrite("12345678\tx\nab\ty\n"), "12345678\tx\nab\t\ty\n");
    // Columns are per block: a one-cell line ends the block.
    EXPECT_EQ(tabwrite("a\tb\nlonger-than-8\tc\n\nx\ty\n"),
              "a\t\tb\nlonger-than-8\tc\n\nx\ty\n");
    // Widths count code points, not bytes.
    EXPECT_EQ(tabwrite("\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\tz\n"),
              "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\tz\n");
}

TEST(Tables, Results)
{
    EXPECT_EQ(
        format_results_table(
            R"({"b0559445e382ff":{"127.0.0.1":{"packet_loss":0,"avg_latency_ms":0.0094139995}},)"
            R"("a6c65b80665399":{"127.0.0.1":{"avg_latency_ms":0.05,"packet_loss":0}},)"
            R"("c1":"timed out"})",
            {"d0d0d0d0d0d0d0d0", "c1"}),
        "AGENT\t\tTARGET\t\tMETRIC\t\tVALUE\n"
        "a6c65b806653\t127.0.0.1\tavg_latency_ms\t0.05\n"
        "a6c65b806653\t127.0.0.1\tpacket_loss\t0\n"
        "b0559445e382\t127.0.0.1\tavg_latency_ms\t0.0094139995\n"
        "b0559445e382\t127.0.0.1\tpacket_loss\t0\n"
        "c1\t\t-\t\t-\t\ttimed out\n"
        "d0d0d0d0d0d0\t-\t\tstatus\t\tfail\n");
}

TEST(Durations, GoFormat)
{
    EXPECT_EQ(go_duration(0), "0s");
    EXPECT_EQ(go_duration(23000000000), "23s");
    EXPECT_EQ(go_duration(300000000000), "5m0s");
    EXPECT_EQ(go_duration(3600000000000), "1h0m0s");
    EXPECT_EQ(go_duration(3723500000000), "1h2m3.5s");
    EXPECT_EQ(go_duration(1500000000), "1.5s");
    EXPECT_EQ(go_duration(250000000), "250ms");
    EXPECT_EQ(go_duration(1500), "1.5\xC2\xB5s");
    EXPECT_EQ(go_duration(7), "7ns");
    EXPECT_EQ(go_duration(-2000000000), "-2s");
}

TEST(Status, CountsAndAgents)
{
    auto s = parse_status_line(
        R"({"a6c65b80665399":"testing","b0559445e382ff":"fail","c3":"finished"})");
    EXPECT_EQ(format_status_counts(s, 3),
              "INIT: (0/3)  READY: (0/3)  TESTING: (1/3)  FINISHED: (1/3)  "
              "FAIL: (1/3)");
    EXPECT_EQ(format_agent_statuses(s),
              "a6c65b806653=testing b0559445e382=fail c3=finished");
    EXPECT_EQ(format_status_counts(parse_status_line(R"({"a":"init"})"), 1),
              "INIT: (1/1)  READY: (0/1)  TESTING: (0/1)  FINISHED: (0/1)");
    EXPECT_THROW(parse_status_line("[1]"), ReplyError);
    EXPECT_THROW(parse_status_line(R"({"a":1})"), ReplyError);
}

// ---- Reply parsing errors -----------------------------------------------

TEST(Replies, AgentErrors)
{
    try {
        parse_agents("Internal Error\n");
        FAIL();
    } catch (const ReplyError &e) {
        EXPECT_EQ(std::string(e.what()),
                  "agent list is not valid JSON (Invalid value. at offset "
                  "0): \"Internal Error\"");
    }
    try {
        parse_agents(R"([{"Uuid":"a","Expires":2.3e10}])");
        FAIL();
    } catch (const ReplyError &e) {
        EXPECT_EQ(std::string(e.what()),
                  "agent #1: Expires is not an integer (nanoseconds)");
    }
    EXPECT_TRUE(parse_agents("null").empty());
    EXPECT_TRUE(parse_agents("[]").empty());
    EXPECT_THROW(parse_agents("{}"), ReplyError);
    EXPECT_THROW(format_objects_table("404 page not found\n"), ReplyError);
}

TEST(JsonIndent, LikeGoIndent)
{
    const std::string body =
        R"({"a6c65b80665399c590d8aad0f3e936a4f4a6cb48bc118abb42b4139a18cbf650":{"127.0.0.1":{"avg_latency_ms":0.0094139995,"packet_loss":0}}})";
    ASSERT_TRUE(json_is_valid(body));
    EXPECT_EQ(json_indent(body, "  "),
              "{\n"
              "  \"a6c65b80665399c590d8aad0f3e936a4f4a6cb48bc118abb42b4139a18cb"
              "f650\": {\n"
              "    \"127.0.0.1\": {\n"
              "      \"avg_latency_ms\": 0.0094139995,\n"
              "      \"packet_loss\": 0\n"
              "    }\n"
              "  }\n"
              "}");
    EXPECT_EQ(json_indent(R"( {"a" : [ ], "b":{}, "c":["x\"]",1e-7]} )", "  "),
              "{\n  \"a\": [],\n  \"b\": {},\n  \"c\": [\n    \"x\\\"]\",\n"
              "    1e-7\n  ]\n}");
    std::string why;
    EXPECT_FALSE(json_is_valid("{} x", &why));
    EXPECT_FALSE(why.empty());
}

// ---- The command line ------------------------------------------------------

namespace {

struct Run {
    int code;
    std::string out, err;
};

Run cli(std::vector<std::string> args, const std::string &in = "",
        bool tty = false)
{
    std::istringstream is(in);
    std::ostringstream os, es;
    int code = run_cli(args, Io{is, tty, os, es});
    return {code, os.str(), es.str()};
}

// A TCP port on 127.0.0.1 that is bound but not listening: connecting to it
// is refused, and no other test can take it while this lives.
class ClosedPort {
  public:
    ClosedPort()
    {
        fd_ = socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr *>(&a), sizeof a), 0);
        socklen_t len = sizeof a;
        getsockname(fd_, reinterpret_cast<sockaddr *>(&a), &len);
        port_ = std::to_string(ntohs(a.sin_port));
    }
    ~ClosedPort() { close(fd_); }
    const std::string &port() const { return port_; }

  private:
    int fd_;
    std::string port_;
};

} // namespace

TEST(CommandLine, HelpAndVersion)
{
    auto r = cli({"--version"});
    EXPECT_EQ(r.code, 0);
    EXPECT_EQ(r.out, "todd version " TODD_VERSION "\n");
    r = cli({"--help"});
    EXPECT_EQ(r.code, 0);
    EXPECT_NE(r.out.find("Usage: todd [GLOBAL OPTIONS] COMMAND"),
              std::string::npos);
    for (const char *c :
         {"agents", "groups", "objects", "create", "delete", "run"}) {
        r = cli({c, "--help"});
        EXPECT_EQ(r.code, 0) << c;
        EXPECT_EQ(r.out.rfind(std::string("Usage: todd ") + c, 0), 0u) << c;
        EXPECT_EQ(cli({"help", c}).out, r.out) << c;
    }
}

TEST(CommandLine, UsageErrorsExit2WithoutContactingServer)
{
    // No server anywhere: a usage error must be found before connecting.
    struct Case {
        std::vector<std::string> args;
        std::string err;
    } cases[] = {
        {{}, "ERROR: no command given\nRun 'todd --help' for usage.\n"},
        {{"frobnicate"},
         "ERROR: unknown command 'frobnicate'\nRun 'todd --help' for usage.\n"},
        {{"--bogus", "agents"},
         "ERROR: unknown option --bogus\nRun 'todd --help' for usage.\n"},
        {{"objects"},
         "ERROR: please provide the object type (group or testrun)\n"
         "Run 'todd objects --help' for usage.\n"},
        {{"objects", "delete"},
         "ERROR: unknown object type 'delete' (expected group or testrun)\n"
         "Run 'todd objects --help' for usage.\n"},
        {{"delete", "group"},
         "ERROR: need to provide type and label (Ex. 'todd delete group "
         "datacenter')\nRun 'todd delete --help' for usage.\n"},
        {{"run", "-y"},
         "ERROR: please provide testrun object name to run\n"
         "Run 'todd run --help' for usage.\n"},
        {{"run", "x", "--frob"},
         "ERROR: unknown option --frob for 'run'\n"
         "Run 'todd run --help' for usage.\n"},
        {{"run", "x", "--timeout", "soon"},
         "ERROR: --timeout: 'soon' is not a number of seconds between 0 and "
         "86400\nRun 'todd run --help' for usage.\n"},
        {{"-P", "99999", "groups"},
         "ERROR: -P: '99999' is not a port number (1-65535)\n"
         "Run 'todd --help' for usage.\n"},
        {{"groups", "extra"},
         "ERROR: too many arguments for 'groups'\n"
         "Run 'todd groups --help' for usage.\n"},
    };
    for (const auto &c : cases) {
        auto r = cli(c.args);
        EXPECT_EQ(r.code, kExitUsage) << c.err;
        EXPECT_EQ(r.err, c.err);
        EXPECT_EQ(r.out, "");
    }
    auto r = cli({"create"}, "", /*tty=*/true);
    EXPECT_EQ(r.code, kExitUsage);
    EXPECT_EQ(r.err, "ERROR: object definition file not provided - please "
                     "provide via filename or stdin\n"
                     "Run 'todd create --help' for usage.\n");
}

TEST(CommandLine, UnreachableServerIsClearError)
{
    ClosedPort port;
    for (const char *c : {"agents", "groups"}) {
        auto r = cli({"-H", "127.0.0.1", "-P", port.port(), c});
        EXPECT_EQ(r.code, kExitError);
        EXPECT_EQ(r.err, "ERROR: cannot reach ToDD server at 127.0.0.1:" +
                             port.port() + ": connection refused\n");
    }
    // Global options may also follow the command.
    auto r = cli({"delete", "group", "g", "--port=" + port.port(), "--host",
                  "127.0.0.1"});
    EXPECT_EQ(r.code, kExitError);
    EXPECT_EQ(r.err, "ERROR: cannot reach ToDD server at 127.0.0.1:" +
                         port.port() + ": connection refused\n");
    r = cli({"-H", "127.0.0.1", "-P", port.port(), "run", "-y", "x"});
    EXPECT_EQ(r.code, kExitError);
    EXPECT_EQ(r.err, "ERROR: cannot reach ToDD server at 127.0.0.1:" +
                         port.port() + ": connection refused\n");
    // A name is resolved to every address; all refuse.
    r = cli({"-H", "localhost", "-P", port.port(), "objects", "group"});
    EXPECT_EQ(r.code, kExitError);
    EXPECT_EQ(r.err, "ERROR: cannot reach ToDD server at localhost:" +
                         port.port() + ": connection refused\n");
}

TEST(CommandLine, CreateChecksFileBeforeSending)
{
    ClosedPort port; // reaching the server would be a different error
    auto r = cli({"-P", port.port(), "create", "-"},
                 "type: testrun\nlabel: t\nspec:\n  targettype: group\n"
                 "  source: {name: a, app: ping}\n  target: [1.2.3.4]\n");
    EXPECT_EQ(r.code, kExitError);
    EXPECT_EQ(r.err, "ERROR: <stdin>:6: testrun 't': spec.target must be a "
                     "map with name, app and args when targettype is group, "
                     "not a list\n");
    r = cli({"-P", port.port(), "create", "/nonexistent/x.yml"});
    EXPECT_EQ(r.code, kExitError);
    EXPECT_EQ(r.err, "ERROR: cannot read object definition file "
                     "'/nonexistent/x.yml': No such file or directory\n");
    // A valid file gets as far as the (unreachable) server.
    r = cli({"-H", "127.0.0.1", "-P", port.port(), "create",
             std::string(TODD_CLI_TEST_DATA) + "/group-loopgroup.yml"});
    EXPECT_EQ(r.code, kExitError);
    EXPECT_NE(r.err.find("cannot reach ToDD server"), std::string::npos);
}

TEST(CommandLine, RunConfirmation)
{
    ClosedPort port;
    auto r = cli({"-P", port.port(), "run", "ping"}, "n\n");
    EXPECT_EQ(r.code, 0);
    EXPECT_EQ(r.out, "Activate testrun \"ping\"? (y/n): Aborted.\n");
    r = cli({"-P", port.port(), "run", "ping"}, "");
    EXPECT_EQ(r.code, kExitError);
    EXPECT_EQ(r.err, "ERROR: no answer to the confirmation on stdin (use -y "
                     "to skip it)\n");
}

TEST(CreateBody, SharedExampleObjectsAreAccepted)
{
    // The example objects shipped in share/server/objects.
    namespace fs = std::filesystem;
    fs::path dir = fs::path(TODD_SHARE_DIR) / "server" / "objects";
    ASSERT_TRUE(fs::is_directory(dir)) << dir;
    int n = 0;
    for (const auto &e : fs::directory_iterator(dir)) {
        if (e.path().extension() != ".yml")
            continue;
        std::ifstream f(e.path());
        std::ostringstream ss;
        ss << f.rdbuf();
        ObjectJson obj;
        EXPECT_NO_THROW(obj = yaml_object_to_json(ss.str(), e.path().string()))
            << e.path();
        EXPECT_EQ(e.path().filename().string().rfind(obj.type + "-", 0), 0u)
            << e.path();
        EXPECT_TRUE(json_is_valid(obj.json)) << obj.json;
        ++n;
    }
    EXPECT_GT(n, 0);
}
