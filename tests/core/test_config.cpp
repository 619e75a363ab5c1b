// SPDX-License-Identifier: Apache-2.0
// gcfg-style INI parsing, the shared --comms options, their precedence, and
// open_transport on real plugin files.
#include <todd/core/config.hpp>
#include <todd/core/log.hpp>

#include <todd_build_config.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <unistd.h>

namespace po = boost::program_options;
using namespace todd::core;

namespace {

bool contains(std::string_view hay, std::string_view needle)
{
    return hay.find(needle) != std::string_view::npos;
}

std::string ini_error(const std::string &text)
{
    try {
        (void)parse_ini(text, "t.cfg");
    } catch (const ConfigError &e) {
        return e.what();
    }
    return "<no error>";
}

po::variables_map parse_args(std::vector<std::string> args)
{
    po::options_description desc;
    add_comms_options(desc);
    std::vector<const char *> argv{"prog"};
    for (const auto &a : args)
        argv.push_back(a.c_str());
    po::variables_map vm;
    po::store(po::parse_command_line(static_cast<int>(argv.size()), argv.data(),
                                     desc),
              vm);
    po::notify(vm);
    return vm;
}

/** Captures log lines for the life of the object. */
class LogCapture {
  public:
    LogCapture()
    {
        prev_ = todd::log::set_sink(
            [this](todd::log::Level, std::string_view c, std::string_view m) {
                std::lock_guard lk(mu_);
                lines_.push_back(std::string(c) + ": " + std::string(m));
            });
    }
    ~LogCapture() { todd::log::set_sink(prev_); }
    bool saw(std::string_view needle)
    {
        std::lock_guard lk(mu_);
        for (const auto &l : lines_)
            if (contains(l, needle))
                return true;
        return false;
    }

  private:
    todd::log::Sink prev_;
    std::mutex mu_;
    std::vector<std::string> lines_;
};

} // namespace

// -------------------------------------------------------------------------
// INI

TEST(Ini, ReadsToddServerCfg)
{
    // As shipped with the Go ToDD, plus the comment styles gcfg accepts.
    const auto ini = parse_ini(R"(# ToDD server configuration
[Comms]
Plugin = rabbitmq
User = guest ; inline comment
Password = "gu;e#st"
Host = localhost   # trailing comment
Port = 5672

; the API
[API]
Host = 0.0.0.0
Port = 8080

[Testing]
Timeout = 30
)",
                               "server.cfg");
    EXPECT_EQ(ini.path, "server.cfg");
    EXPECT_EQ(ini.get("Comms", "Plugin"), "rabbitmq");
    EXPECT_EQ(ini.get("COMMS", "user"), "guest");
    EXPECT_EQ(ini.get("comms", "PASSWORD"), "gu;e#st");
    EXPECT_EQ(ini.get("comms", "host"), "localhost");
    EXPECT_EQ(ini.get("api", "port"), "8080");
    EXPECT_EQ(ini.get("testing", "timeout"), "30");
    EXPECT_TRUE(ini.has("Api", "HOST"));
    EXPECT_FALSE(ini.has("api", "nope"));
    EXPECT_FALSE(ini.has("nope", "host"));
    EXPECT_EQ(ini.get("nope", "x", "fb"), "fb");
    EXPECT_EQ(ini.lines.at("comms").at("port"), 7);
    EXPECT_EQ(ini.sections.at("comms").size(), 5u);
}

TEST(Ini, ValuesQuotesEscapesAndContinuations)
{
    const auto ini = parse_ini("[s]\n"
                               "a = \"x\\\"y\\\\z\\tw\"\n"
                               "b = one\"  two \"three\n"
                               "c = inner  spaces kept   \n"
                               "d = \"  padded  \"\n"
                               "e =\n"
                               "f\n"
                               "g = \"\"\n"
                               "h = first \\\n"
                               "   second\n"
                               "i = a\\nb\n"
                               "j = last\n"
                               "J = wins\n"
                               "k-2_x = dash\n");
    EXPECT_EQ(ini.get("s", "a"), "x\"y\\z\tw");
    EXPECT_EQ(ini.get("s", "b"), "one  two three");
    EXPECT_EQ(ini.get("s", "c"), "inner  spaces kept");
    EXPECT_EQ(ini.get("s", "d"), "  padded  ");
    EXPECT_EQ(ini.get("s", "e"), "");
    EXPECT_EQ(ini.get("s", "f"), "true"); // gcfg: a bare name is true
    EXPECT_EQ(ini.get("s", "g"), "");
    EXPECT_EQ(ini.get("s", "h"), "first    second");
    EXPECT_EQ(ini.get("s", "i"), "a\nb");
    EXPECT_EQ(ini.get("s", "j"), "wins");
    EXPECT_EQ(ini.lines.at("s").at("j"), 13);
    EXPECT_EQ(ini.get("s", "k-2_x"), "dash");
}

TEST(Ini, SubsectionsBomCrlfAndEmptySections)
{
    const auto ini = parse_ini("\xEF\xBB\xBF[Comms \"Extra\"]\r\n"
                               "Key = v\r\n"
                               "\r\n"
                               "  [ Empty ]  ; nothing here\r\n");
    EXPECT_EQ(ini.get("comms.extra", "key"), "v");
    EXPECT_TRUE(ini.sections.count("empty"));
    EXPECT_TRUE(ini.sections.at("empty").empty());
}

TEST(Ini, SyntaxErrorsNameFileLineAndReason)
{
    EXPECT_EQ(ini_error("[s\nk=v\n"),
              "t.cfg:1: expected ']' to close the section header");
    EXPECT_EQ(ini_error("\n\nk = v\n"),
              "t.cfg:3: key \"k\" appears before any [section]");
    EXPECT_EQ(ini_error("[s]\nk = \"open\n"),
              "t.cfg:2: unterminated quoted value");
    EXPECT_TRUE(
        contains(ini_error("[s]\nk = a\\qb\n"), "t.cfg:2: invalid escape \\q"));
    EXPECT_EQ(ini_error("[s]\n= v\n"),
              "t.cfg:2: invalid key name starting with '=' (keys start "
              "with a letter)");
    EXPECT_EQ(ini_error("[s]\nkey value\n"),
              "t.cfg:2: expected '=' after key \"key\"");
    EXPECT_EQ(ini_error("[s] junk\n"),
              "t.cfg:1: unexpected text after the section header");
    EXPECT_EQ(ini_error("[]\n"), "t.cfg:1: missing or invalid section name");
    EXPECT_EQ(ini_error("[s \"sub]\n"),
              "t.cfg:1: unterminated subsection name");
    EXPECT_EQ(ini_error("[s]\nk = a \\"),
              "t.cfg:2: backslash at the end of the file");
}

TEST(Ini, FilesThatCannotBeRead)
{
    try {
        (void)parse_ini_file("/nonexistent/todd.cfg");
        FAIL();
    } catch (const ConfigError &e) {
        EXPECT_EQ(std::string(e.what()),
                  "/nonexistent/todd.cfg: cannot open: No such file or "
                  "directory");
    }
    try {
        (void)parse_ini_file("/");
        FAIL();
    } catch (const ConfigError &e) {
        EXPECT_TRUE(contains(e.what(), "/: cannot read: Is a directory"))
            << e.what();
    }
    const std::string path = ::testing::TempDir() + "todd-config-test-" +
                             std::to_string(::getpid()) + ".cfg";
    {
        std::ofstream(path) << "[Comms]\nPlugin = loopback\n[x]\nbad line\n";
    }
    try {
        (void)parse_ini_file(path);
        FAIL();
    } catch (const ConfigError &e) {
        EXPECT_EQ(std::string(e.what()),
                  path + ":4: expected '=' after key \"bad\"");
    }
    std::remove(path.c_str());
}

// -------------------------------------------------------------------------
// Options and precedence

TEST(Options, HelpListsTheSharedOptions)
{
    po::options_description desc("Comms");
    add_comms_options(desc);
    std::ostringstream help;
    help << desc;
    for (const char *o : {"--comms NAME", "--plugin-dir DIR", "--config FILE",
                          "--comms-opt KEY=VALUE"})
        EXPECT_TRUE(contains(help.str(), o)) << help.str();
}

TEST(Options, DefaultPluginWhenNothingSaysOtherwise)
{
    EXPECT_EQ(default_comms_plugin(), TODD_DEFAULT_COMMS);
    const auto sel = resolve_comms(parse_args({}), nullptr);
    EXPECT_EQ(sel.plugin_name, default_comms_plugin());
    EXPECT_TRUE(sel.options.empty());
    EXPECT_TRUE(sel.plugin_dirs.empty());
    EXPECT_TRUE(sel.config_path.empty());
}

TEST(Options, CommandLineOverConfigOverDefault)
{
    const auto ini = parse_ini("[Comms]\nPlugin = loopback\nHost = h1\n"
                               "Max_Queue_Length = 7\n[Other]\nx = 1\n",
                               "a.cfg");
    auto sel = resolve_comms(parse_args({"--config", "a.cfg"}), &ini);
    EXPECT_EQ(sel.plugin_name, "loopback");
    EXPECT_EQ(sel.config_path, "a.cfg");
    EXPECT_EQ(sel.options,
              (Options{{"host", "h1"}, {"max_queue_length", "7"}}));

    sel = resolve_comms(
        parse_args({"--comms", "zeromq", "--comms-opt", "HOST=h2",
                    "--comms-opt", "url=amqp://u:p@h/?a=b", "--comms-opt",
                    "empty=", "--plugin-dir", "/d1", "--plugin-dir", "/d2"}),
        &ini);
    EXPECT_EQ(sel.plugin_name, "zeromq");
    EXPECT_EQ(sel.options, (Options{{"host", "h2"},
                                    {"max_queue_length", "7"},
                                    {"url", "amqp://u:p@h/?a=b"},
                                    {"empty", ""}}));
    EXPECT_EQ(sel.plugin_dirs, (std::vector<std::string>{"/d1", "/d2"}));

    const auto blank = parse_ini("[Comms]\nPlugin =\n");
    EXPECT_EQ(resolve_comms(parse_args({}), &blank).plugin_name,
              default_comms_plugin());
}

TEST(Options, MalformedCommsOptIsRefused)
{
    for (const char *bad : {"novalue", "=x", "  =x"}) {
        try {
            (void)resolve_comms(parse_args({"--comms-opt", bad}), nullptr);
            ADD_FAILURE() << bad;
        } catch (const ConfigError &e) {
            EXPECT_EQ(std::string(e.what()), std::string("--comms-opt \"") +
                                                 bad +
                                                 "\": expected KEY=VALUE");
        }
    }
}

// -------------------------------------------------------------------------
// open_transport on real plugin files

TEST(OpenTransport, LoadsTheChosenPluginWithItsOptions)
{
    CommsSelection sel;
    sel.plugin_name = "loopback";
    sel.plugin_dirs = {LOOPBACK_DIR};
    sel.options = {{"max_queue_length", "1"}};
    auto t = open_transport(sel);
    EXPECT_EQ(t->plugin().name, "loopback");
    t->start();
    // The option reached the plugin: a second message exceeds the bound.
    const std::string q = "open-transport-" + std::to_string(::getpid());
    t->publish(q, "one");
    try {
        t->publish(q, "two");
        FAIL() << "max_queue_length=1 was not applied";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_FULL);
    }
    auto drain = t->subscribe(q, [](const Delivery &) { return Verdict::ack; });
}

TEST(OpenTransport, UnknownKeysAreRefusedBeforeAnythingIsCreated)
{
    CommsSelection sel;
    sel.plugin_name = "loopback";
    sel.plugin_dirs = {LOOPBACK_DIR};
    sel.config_path = "/etc/todd/agent.cfg";
    sel.options = {{"user", "guest"}};
    try {
        (void)open_transport(sel);
        FAIL();
    } catch (const ConfigError &e) {
        EXPECT_EQ(std::string(e.what()),
                  "unknown option \"user\" for comms plugin \"loopback\" (set "
                  "by --comms-opt or [Comms] in /etc/todd/agent.cfg); its "
                  "keys are: max_queue_length, prefetch");
    }
}

TEST(OpenTransport, BadlyTypedValuesAreRefused)
{
    CommsSelection sel;
    sel.plugin_name = "loopback";
    sel.plugin_dirs = {LOOPBACK_DIR};
    sel.options = {{"max_queue_length", "lots"}};
    try {
        (void)open_transport(sel);
        FAIL();
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_CONFIG);
        EXPECT_TRUE(contains(e.what(), "max_queue_length")) << e.what();
    }
}

TEST(OpenTransport, MissingRequiredKeyAndUnknownPlugin)
{
    CommsSelection sel;
    sel.plugin_name = "unreachable";
    sel.plugin_dirs = {FIXTURE_DIR};
    try {
        (void)open_transport(sel);
        FAIL();
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_CONFIG);
        EXPECT_TRUE(contains(e.what(), "endpoint")) << e.what();
    }
    sel.plugin_name = "no-such-transport";
    try {
        (void)open_transport(sel);
        FAIL();
    } catch (const PluginError &e) {
        EXPECT_TRUE(contains(e.what(), "no-such-transport")) << e.what();
    }
}

TEST(OpenTransport, RoleIsFilledOnlyWhenDeclaredAndUnset)
{
    CommsSelection sel;
    sel.plugin_name = "unreachable";
    sel.plugin_dirs = {FIXTURE_DIR};
    sel.options = {{"endpoint", "x"}};
    sel.role = "agent";
    {
        LogCapture log;
        auto t = open_transport(sel);
        EXPECT_TRUE(log.saw("created with role=agent"));
    }
    {
        sel.options["role"] = "server";
        LogCapture log;
        auto t = open_transport(sel);
        EXPECT_TRUE(log.saw("created with role=server"));
    }
    // loopback declares no role key: the role is not passed (else the
    // unknown-key check would refuse it).
    CommsSelection lb;
    lb.plugin_name = "loopback";
    lb.plugin_dirs = {LOOPBACK_DIR};
    lb.role = "server";
    EXPECT_NO_THROW((void)open_transport(lb));
}

TEST(DescribeKeys, OneLinePerKeyWithSecretsHidden)
{
    PluginRegistry reg({FIXTURE_DIR});
    const std::string text = describe_keys(reg.load("unreachable")->info());
    EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 5);
    EXPECT_TRUE(contains(text, "fail_publishes  int     default: -1")) << text;
    EXPECT_TRUE(contains(text, "role            string  optional"));
    EXPECT_TRUE(contains(text, "token           secret  default: (hidden)"));
    EXPECT_FALSE(contains(text, "s3cret"));
    EXPECT_TRUE(contains(text, "endpoint        string  required"));
    EXPECT_TRUE(contains(text, "where the service would be"));

    PluginInfo none;
    EXPECT_EQ(describe_keys(none), "  (no configuration keys)\n");
}
