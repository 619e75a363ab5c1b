// SPDX-License-Identifier: Apache-2.0
// The todd-server program itself (docs/server.md): exit status 0 after
// SIGTERM (within 5 s), 1 on a runtime failure, 2 on a bad option or
// configuration file; the implicit /etc/todd/server.cfg when no --config is
// given; command-line options over the file, the file over the defaults.
#include "server_program.hpp"

#include <gtest/gtest.h>

#include <filesystem>

#include <netdb.h>

namespace fs = std::filesystem;
using namespace todd::test::program;

namespace {

constexpr auto sigterm_bound = 5s; // promised by docs/server.md

std::string plugin_dir(const std::string &name)
{
    return std::string(PLUGINS_BUILD_DIR) + "/" + name;
}

class ServerProgram : public ::testing::Test {
  protected:
    void SetUp() override { fs::create_directories(path("opt")); }
    std::string path(const std::string &sub) const
    {
        return dir_.path() + "/" + sub;
    }
    /** todd-server with `cfg_text` as its --config (none when empty) over
     *  the loopback plugin, plus `more` arguments. */
    std::unique_ptr<Program> run(const std::string &cfg_text,
                                 std::vector<std::string> more = {},
                                 bool loopback = true)
    {
        std::vector<std::string> argv = {TODD_SERVER_EXE};
        if (!cfg_text.empty()) {
            write_text(path("server.cfg"), cfg_text);
            argv.insert(argv.end(), {"--config", path("server.cfg")});
        }
        if (loopback)
            argv.insert(argv.end(), {"--comms", "loopback", "--plugin-dir",
                                     plugin_dir("loopback")});
        argv.insert(argv.end(), more.begin(), more.end());
        return std::make_unique<Program>(argv);
    }
    std::string cfg(const std::string &extra = "") const
    {
        return server_cfg(path("opt"), extra);
    }
    /** Runs to its end (it must end by itself): "exit N" and the output. */
    std::string exit_of(const std::string &cfg_text,
                        std::vector<std::string> more, std::string *out,
                        bool loopback = true)
    {
        auto p = run(cfg_text, std::move(more), loopback);
        std::string status = wait_exit(*p);
        *out = p->output();
        return status;
    }

    sigtest::TempDir dir_;
};

TEST_F(ServerProgram, SigtermAfterACleanStartExitsZeroWithin5s)
{
    auto p = run(cfg());
    auto s = wait_started(*p);
    ASSERT_TRUE(s) << p->output();
    EXPECT_EQ(http_get(s->api, "/v1/agent").status, 200);
    std::chrono::milliseconds took{};
    EXPECT_EQ(p->terminate(sigterm_bound + 5s, &took), "exit 0") << p->output();
    EXPECT_LT(took, sigterm_bound) << p->output();
    EXPECT_NE(p->output().find("received SIGTERM, shutting down"),
              std::string::npos)
        << p->output();
}

TEST_F(ServerProgram, ConfigurationErrorsExitTwoNamingTheCause)
{
    struct Case {
        std::string what, cfg_text;
        std::vector<std::string> args;
        std::string says;     // part of the message
        bool loopback = true; // add --comms loopback
    };
    const std::string cfg_path = path("server.cfg");
    const std::vector<Case> cases = {
        {"unknown key", cfg("[API]\nPrt = 1\n"), {}, cfg_path + ":12: "},
        {"unknown section", cfg("[Nope]\nx = 1\n"), {}, "nope"},
        {"bad value", cfg("[Testing]\nTimeout = soon\n"), {}, "timeout"},
        {"port out of range",
         "[API]\nPort = 70000\n[LocalResources]\nOptDir = " + path("opt") +
             "\n",
         {},
         "port"},
        {"missing file", "", {"--config", path("no-such.cfg")}, "no-such.cfg"},
        {"bad option", cfg(), {"--no-such-option"}, "no-such-option"},
        {"bad log level", cfg(), {"--log-level", "loud"}, "loud"},
        {"unknown plugin key", cfg(), {"--comms-opt", "nosuch=1"}, "nosuch"},
        {"bad plugin value",
         cfg("[Comms]\nmax_queue_length = -1\n"),
         {},
         "max_queue_length"},
        {"comms-opt without =",
         cfg(),
         {"--comms-opt", "prefetch"},
         "KEY=VALUE"},
        {"unknown plugin",
         cfg(),
         {"--comms", "no-such-transport"},
         "no plugin named 'no-such-transport'",
         false},
        {"unknown plugin in the file",
         cfg("[Comms]\nPlugin = nope\n"),
         {},
         "no plugin named 'nope'",
         false},
    };
    for (const auto &c : cases) {
        std::string out;
        EXPECT_EQ(exit_of(c.cfg_text, c.args, &out, c.loopback), "exit 2")
            << c.what << "\n"
            << out;
        EXPECT_NE(out.find(c.says), std::string::npos)
            << c.what << ": the message does not name " << c.says << "\n"
            << out;
        EXPECT_EQ(out.find("Serving ToDD Server API"), std::string::npos)
            << c.what << ": it started\n"
            << out;
    }
}

TEST_F(ServerProgram, AListenAddressThatDoesNotExistIsAConfigurationError)
{
    const char *name = "no-such-host.invalid"; // RFC 2606: never exists
    addrinfo *res = nullptr;
    int rc = ::getaddrinfo(name, nullptr, nullptr, &res);
    if (res)
        ::freeaddrinfo(res);
    if (rc != EAI_NONAME)
        GTEST_SKIP() << "this resolver cannot say that " << name
                     << " does not exist: " << ::gai_strerror(rc);
    for (const char *section : {"API", "Assets"}) {
        std::string key = std::string(section) == "API" ? "Host" : "IP";
        std::string out;
        EXPECT_EQ(exit_of(cfg("[" + std::string(section) + "]\n" + key + " = " +
                              name + "\n"),
                          {"--db", path("r.db")}, &out),
                  "exit 2")
            << section << "\n"
            << out;
        EXPECT_NE(out.find(std::string("\"") + name + "\" does not resolve"),
                  std::string::npos)
            << out;
    }
}

TEST_F(ServerProgram, RuntimeFailuresExitOne)
{
    std::string out;
    // The store cannot be opened: its directory does not exist.
    EXPECT_EQ(exit_of(cfg(), {"--db", path("no/such/dir/server.db")}, &out),
              "exit 1")
        << out;
    EXPECT_NE(out.find("cannot open database"), std::string::npos) << out;

    // The store is a directory.
    fs::create_directories(path("a-directory.db"));
    EXPECT_EQ(exit_of(cfg(), {"--db", path("a-directory.db")}, &out), "exit 1")
        << out;

    // A port in use (held by this test, listening), for each listener:
    // the message names the listener and the address.
    sigtest::DeadPort busy(/*full=*/false);
    const std::string port = std::to_string(busy.port());
    struct Busy {
        const char *listener;
        std::string api, stream, assets;
    };
    for (const Busy &b :
         {Busy{"api", port, "0", "0"}, Busy{"stream", "0", port, "0"},
          Busy{"assets", "0", "0", port}}) {
        std::string text = "[API]\nHost = 127.0.0.1\nPort = " + b.api +
                           "\nStreamPort = " + b.stream +
                           "\n[Assets]\nIP = 127.0.0.1\nPort = " + b.assets +
                           "\n[LocalResources]\nOptDir = " + path("opt") + "\n";
        EXPECT_EQ(exit_of(text, {"--db", path("busy.db")}, &out), "exit 1")
            << b.listener << "\n"
            << out;
        EXPECT_NE(out.find("cannot listen on 127.0.0.1:" + port + " (" +
                           b.listener + "): "),
                  std::string::npos)
            << out;
    }

    // The transport cannot start: zeromq cannot bind its endpoint.
    EXPECT_EQ(exit_of(cfg(),
                      {"--db", path("s3.db"), "--comms", "zeromq",
                       "--plugin-dir", plugin_dir("zeromq"), "--comms-opt",
                       "endpoint=ipc://" + path("no/such/dir/zmq.sock")},
                      &out, /*loopback=*/false),
              "exit 1")
        << out;
}

TEST_F(ServerProgram, CommandLineBeatsTheFileWhichBeatsTheDefaults)
{
    // The store: <OptDir>/todd-server.db from the file's OptDir unless
    // --db names another.
    {
        auto p = run(cfg());
        auto s = wait_started(*p);
        ASSERT_TRUE(s) << p->output();
        EXPECT_EQ(s->store, path("opt") + "/todd-server.db");
        EXPECT_TRUE(fs::exists(path("opt") + "/todd-server.db"));
    }
    fs::remove(path("opt") + "/todd-server.db");
    {
        auto p = run(cfg(), {"--db", path("given.db")});
        auto s = wait_started(*p);
        ASSERT_TRUE(s) << p->output();
        EXPECT_EQ(s->store, path("given.db"));
        EXPECT_TRUE(fs::exists(path("given.db")));
        EXPECT_FALSE(fs::exists(path("opt") + "/todd-server.db"));
    }
    // A plugin key: --comms-opt over [Comms]. The file's value alone is
    // refused, so the start proves the option won.
    const std::string bad_key = cfg("[Comms]\nmax_queue_length = -1\n");
    {
        auto p = run(bad_key, {"--db", path("k.db"), "--comms-opt",
                               "max_queue_length=10"});
        EXPECT_TRUE(wait_started(*p)) << p->output();
    }
    // The plugin: --comms over [Comms] Plugin (the file names one that
    // does not exist, so only the option can have chosen loopback).
    {
        auto p = run(cfg("[Comms]\nPlugin = no-such-transport\n"),
                     {"--db", path("p.db")});
        EXPECT_TRUE(wait_started(*p)) << p->output();
        EXPECT_NE(p->output().find("comms plugin loopback"), std::string::npos)
            << p->output();
    }
    // [Comms] Plugin over the default, and the endpoint the server binds:
    // the command line's, not the file's.
    const std::string file_ep = path("file.sock"), opt_ep = path("opt.sock");
    {
        auto p = run(
            cfg("[Comms]\nPlugin = zeromq\nEndpoint = ipc://" + file_ep + "\n"),
            {"--db", path("z1.db"), "--plugin-dir", plugin_dir("zeromq")},
            /*loopback=*/false);
        ASSERT_TRUE(wait_started(*p)) << p->output();
        EXPECT_TRUE(fs::exists(file_ep)) << p->output();
    }
    fs::remove(file_ep);
    {
        auto p = run(
            cfg("[Comms]\nPlugin = zeromq\nEndpoint = ipc://" + file_ep + "\n"),
            {"--db", path("z2.db"), "--plugin-dir", plugin_dir("zeromq"),
             "--comms-opt", "endpoint=ipc://" + opt_ep},
            /*loopback=*/false);
        ASSERT_TRUE(wait_started(*p)) << p->output();
        EXPECT_TRUE(fs::exists(opt_ep)) << p->output();
        EXPECT_FALSE(fs::exists(file_ep)) << p->output();
    }
}

// ---- the implicit config path ---------------------------------------------

/** Runs `argv` with /etc overlaid in a private mount namespace, so that
 *  `etc_upper`/todd/server.cfg is seen as /etc/todd/server.cfg by it alone.
 *  Needs root (or CAP_SYS_ADMIN) and overlayfs. */
std::unique_ptr<Program> with_private_etc(const std::string &work,
                                          std::vector<std::string> argv)
{
    fs::create_directories(work + "/upper/todd");
    fs::create_directories(work + "/work");
    std::vector<std::string> full = {
        "/usr/bin/unshare",
        "-m",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        "mount -t overlay overlay -o lowerdir=/etc,upperdir=" + work +
            "/upper,workdir=" + work + "/work /etc && exec \"$0\" \"$@\""};
    full.insert(full.end(), argv.begin(), argv.end());
    return std::make_unique<Program>(full);
}

TEST_F(ServerProgram, WithoutConfigItReadsEtcToddServerCfg)
{
    const std::string work = path("etc");
    {
        if (::geteuid() != 0 || !fs::exists("/usr/bin/unshare"))
            GTEST_SKIP() << "needs root and unshare(1) to overlay /etc";
        auto probe = with_private_etc(work, {"/bin/true"});
        if (wait_exit(*probe) != "exit 0")
            GTEST_SKIP() << "cannot overlay /etc in a mount namespace: "
                         << probe->output();
    }
    const std::string etc_cfg = work + "/upper/todd/server.cfg";
    const std::vector<std::string> server = {TODD_SERVER_EXE, "--comms",
                                             "loopback", "--plugin-dir",
                                             plugin_dir("loopback")};

    // The implicit file's OptDir decides the store (no --db given).
    fs::create_directories(path("implicit-opt"));
    fs::create_directories(path("given-opt"));
    write_text(etc_cfg, server_cfg(path("implicit-opt")));
    {
        auto p = with_private_etc(work, server);
        auto s = wait_started(*p);
        ASSERT_TRUE(s) << p->output();
        EXPECT_EQ(s->store, path("implicit-opt") + "/todd-server.db");
        std::chrono::milliseconds took{};
        EXPECT_EQ(p->terminate(sigterm_bound + 5s, &took), "exit 0");
    }
    // An error in it is reported against that path, with status 2.
    write_text(etc_cfg, "[API]\nPrt = 1\n");
    {
        auto p = with_private_etc(work, server);
        EXPECT_EQ(wait_exit(*p), "exit 2") << p->output();
        EXPECT_NE(p->output().find("/etc/todd/server.cfg:2"), std::string::npos)
            << p->output();
    }
    // --config names another file: the implicit one is not read at all.
    write_text(path("given.cfg"), server_cfg(path("given-opt")));
    {
        std::vector<std::string> argv = server;
        argv.insert(argv.end(), {"--config", path("given.cfg")});
        auto p = with_private_etc(work, argv);
        auto s = wait_started(*p);
        ASSERT_TRUE(s) << p->output();
        EXPECT_EQ(s->store, path("given-opt") + "/todd-server.db");
    }
}

} // namespace
