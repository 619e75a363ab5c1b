// SPDX-License-Identifier: Apache-2.0
// The shipped testlets (share/testlets) run for real with hostile test-run
// arguments: options that read or write files and non-http targets are
// refused (exit 2, a message on stderr, nothing written); the documented
// arguments still measure a local HTTP server and 127.0.0.1.
#include "http_server.hpp"

#include "files.hpp"
#include "process.hpp"
#include "temp_dir.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <vector>

namespace fs = std::filesystem;

namespace {

struct Outcome {
    int status = -1;
    std::string out, err;
};

class Testlets : public ::testing::Test {
  protected:
    void SetUp() override { fs::create_directories(dir_ / "cwd"); }

    /** argv [testlet, target, args] as the agent runs it, cwd dir_/cwd,
     *  HOME dir_ (so a ~/.curlrc there would be read). */
    Outcome run(const std::string &testlet, const std::string &target,
                const std::string &args)
    {
        std::string path = std::string(TODD_SHARE_DIR) + "/testlets/" + testlet;
        std::string out = (dir_ / "out").string(),
                    err = (dir_ / "err").string();
        std::string cwd = (dir_ / "cwd").string();
        std::string script = "cd \"$0\" && exec /bin/sh \"$@\"";
        todd::test::Process p(
            {"/bin/sh", "-c", script, cwd, path, target, args},
            todd::test::SpawnOptions{
                {"HOME=" + dir_.string()}, "/dev/null", out, err});
        Outcome r;
        auto st = p.wait(std::chrono::seconds(60));
        EXPECT_FALSE(st.running()) << testlet << " still running after 60 s";
        r.status = st.code();
        r.out = todd::test::read_file(out);
        r.err = todd::test::read_file(err);
        return r;
    }

    /** Nothing but the run's own out/err files anywhere under dir_. */
    void expect_nothing_written(const std::string &what)
    {
        for (auto &e : fs::recursive_directory_iterator(dir_)) {
            auto name = e.path().filename().string();
            if (name == "out" || name == "err" || name == "cwd" ||
                name == "config" || name == ".curlrc")
                continue;
            ADD_FAILURE() << what << " wrote " << e.path();
        }
    }

    todd::test::TempDir tmp_{"todd-testlets"};
    fs::path dir_ = tmp_.path();
};

TEST_F(Testlets, HttpRefusesOptionsThatTouchFilesAndOtherSchemes)
{
    todd::test::HttpServer srv(
        std::map<std::string, std::string>{{"/page", "hello"}});
    std::string url =
        "http://127.0.0.1:" + std::to_string(srv.port()) + "/page";
    std::string victim = (dir_ / "victim").string();
    std::ofstream(dir_ / "config") << "output = \"" << victim << "\"\n";
    struct Case {
        std::string target, args;
    } cases[] = {
        {url, "-o " + victim},
        {url, "--output " + victim},
        {url, "-O"},
        {url, "--remote-name"},
        {url, "-K " + (dir_ / "config").string()},
        {url, "--config " + (dir_ / "config").string()},
        {url, "--upload-file /etc/passwd"},
        {url, "-T /etc/passwd"},
        {url, "-D " + victim},
        {url, "-c " + victim},
        {url, "--trace " + victim},
        {url, "-d @/etc/passwd"},
        {url, "-m"},
        {url, "-m 5;touch"},
        {url, "-X GET\\ x"},
        {"file:///etc/passwd", ""},
        {"FILE:///etc/passwd", "-m 5"},
        {"ftp://127.0.0.1/", ""},
        {"dict://127.0.0.1:1/", ""},
        {"-o" + victim, ""},
        {"--config=" + (dir_ / "config").string(), ""},
    };
    for (const auto &c : cases) {
        Outcome r = run("http", c.target, c.args);
        std::string what = "http '" + c.target + "' '" + c.args + "'";
        EXPECT_EQ(r.status, 2) << what << "\n" << r.err;
        EXPECT_EQ(r.out, "") << what;
        EXPECT_NE(r.err.find("http: refused: "), std::string::npos)
            << what << "\n"
            << r.err;
        EXPECT_FALSE(fs::exists(victim)) << what;
    }
    expect_nothing_written("hostile http arguments");
}

TEST_F(Testlets, HttpIgnoresCurlrc)
{
    todd::test::HttpServer srv(
        std::map<std::string, std::string>{{"/page", "hello"}});
    std::string victim = (dir_ / "victim").string();
    std::ofstream(dir_ / ".curlrc") << "output = \"" << victim << "\"\n";
    Outcome r = run(
        "http", "http://127.0.0.1:" + std::to_string(srv.port()) + "/page", "");
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_FALSE(fs::exists(victim));
}

TEST_F(Testlets, HttpDocumentedArgumentsStillMeasure)
{
    todd::test::HttpServer srv(
        std::map<std::string, std::string>{{"/page", "hello"}});
    std::string hostport = "127.0.0.1:" + std::to_string(srv.port());
    for (const auto &[target, args] :
         std::vector<std::pair<std::string, std::string>>{
             {"http://" + hostport + "/page", ""},
             {"http://" + hostport + "/page", "-m 5 --connect-timeout 2 -L"},
             {"HTTP://" + hostport + "/page", "-4 --max-redirs 3 -X GET"},
             {hostport + "/page", "--max-time 5"}}) {
        Outcome r = run("http", target, args);
        EXPECT_EQ(r.status, 0) << target << " " << args << "\n" << r.err;
        EXPECT_EQ(r.out.rfind("{\"http_code\":200,", 0), 0u)
            << target << " " << args << "\n"
            << r.out << r.err;
    }
    expect_nothing_written("documented http arguments");
}

TEST_F(Testlets, PingRefusesUndocumentedOptionsAndOddTargets)
{
    struct Case {
        std::string target, args;
    } cases[] = {
        {"127.0.0.1", "-f"},
        {"127.0.0.1", "-c 1 -I lo"},
        {"127.0.0.1", "-c 1 -p ff"},
        {"127.0.0.1", "-c x"},
        {"127.0.0.1", "-c"},
        {"127.0.0.1", "-c 1;id"},
        {"-f", "-c 1"},
        {"127.0.0.1 -f", "-c 1"},
        {"$(id)", "-c 1"},
    };
    for (const auto &c : cases) {
        Outcome r = run("ping", c.target, c.args);
        std::string what = "ping '" + c.target + "' '" + c.args + "'";
        EXPECT_EQ(r.status, 2) << what << "\n" << r.err;
        EXPECT_EQ(r.out, "") << what;
        EXPECT_NE(r.err.find("ping: refused: "), std::string::npos)
            << what << "\n"
            << r.err;
    }
}

TEST_F(Testlets, PingOfLoopbackStillWorks)
{
    for (const std::string args : {"", "-c 1", "-c 2 -i 0.2 -W 1"}) {
        Outcome r = run("ping", "127.0.0.1", args);
        EXPECT_EQ(r.status, 0) << args << "\n" << r.err;
        EXPECT_EQ(r.out.rfind("{\"avg_latency_ms\":", 0), 0u) << args << "\n"
                                                              << r.out << r.err;
    }
}

} // namespace
