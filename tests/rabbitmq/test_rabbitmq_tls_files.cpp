// SPDX-License-Identifier: Apache-2.0
// A TLS file that cannot be used (missing, a directory, not PEM, a key that
// does not match its certificate) is refused when the plugin is created:
// the real todd-agent and todd-server exit at once with their
// configuration-error status 2 and one line naming the key, the path and
// why, instead of retrying forever. No broker needed: nothing connects.
#include "program.hpp"

#include "rabbitmq_broker.hpp"

#include <fstream>

using namespace sigtest;

namespace {

struct Files {
    TempDir dir;
    todd::test::TestPki pki = todd::test::make_test_pki(dir.path() + "/pki");
    std::string text = dir.path() + "/not-pem.txt";
    Files() { std::ofstream(text) << "this is not a certificate\n"; }
};

Files &files()
{
    static Files f;
    return f;
}

std::vector<std::string> comms_args(const std::vector<std::string> &opts)
{
    std::vector<std::string> a = {
        "--comms",     "rabbitmq",       "--plugin-dir", RABBITMQ_PLUGIN_DIR,
        "--comms-opt", "host=127.0.0.1", "--comms-opt",  "port=1",
        "--comms-opt", "tls=true"};
    for (const auto &o : opts) {
        a.push_back("--comms-opt");
        a.push_back(o);
    }
    return a;
}

struct Case {
    const char *name;
    std::vector<std::string> opts;
    std::string key, path, why;
};

std::vector<Case> cases()
{
    Files &f = files();
    return {
        {"CaMissing",
         {"tls_ca=/nonexistent/ca.pem"},
         "tls_ca",
         "/nonexistent/ca.pem",
         "No such file"},
        {"CaDirectory",
         {"tls_ca=" + f.dir.path()},
         "tls_ca",
         f.dir.path(),
         "no PEM certificate"},
        {"CaNotPem",
         {"tls_ca=" + f.text},
         "tls_ca",
         f.text,
         "no PEM certificate"},
        {"CertNotPem",
         {"tls_ca=" + f.pki.ca_cert, "tls_cert=" + f.text,
          "tls_key=" + f.pki.client_key},
         "tls_cert",
         f.text,
         "no PEM certificate"},
        {"KeyNotPem",
         {"tls_ca=" + f.pki.ca_cert, "tls_cert=" + f.pki.client_cert,
          "tls_key=" + f.text},
         "tls_key",
         f.text,
         "no unencrypted PEM private key"},
        {"KeyDoesNotMatchCert",
         {"tls_ca=" + f.pki.ca_cert, "tls_cert=" + f.pki.client_cert,
          "tls_key=" + f.pki.server_key},
         "tls_key",
         f.pki.server_key,
         "does not match the certificate"},
    };
}

void expect_refused(Program &p, const Case &c)
{
    std::chrono::milliseconds took{};
    // Exits by itself; SIGTERM only if it is still running after 10 s.
    bool exited = !p.wait_output("\x01never", 10s);
    std::string got = p.terminate(1s, &took);
    EXPECT_TRUE(exited) << "still running 10 s later, retrying?\n"
                        << p.output();
    EXPECT_EQ(got, "exit 2") << p.output();
    const std::string &out = p.output();
    size_t at = out.find(c.key + ": '" + c.path + "'");
    if (at == std::string::npos)
        at = out.find(c.key + ": cannot read '" + c.path + "'");
    ASSERT_NE(at, std::string::npos) << out;
    std::string line = out.substr(at, out.find('\n', at) - at);
    EXPECT_NE(line.find(c.why), std::string::npos) << line;
    EXPECT_EQ(out.find("connecting"), std::string::npos) << out;
}

TEST(TlsFiles, AgentRefusesAtStart)
{
    for (const auto &c : cases()) {
        SCOPED_TRACE(c.name);
        TempDir dir;
        auto args = comms_args(c.opts);
        args.insert(args.begin(), TODD_AGENT_EXE);
        for (const char *a : {"--state-dir", "STATE", "--opt-dir", "OPT",
                              "--ip-addr-override", "127.0.0.1"})
            args.push_back(std::string(a) == "STATE" ? dir.path() + "/state"
                           : std::string(a) == "OPT" ? dir.path() + "/opt"
                                                     : a);
        Program p(args);
        expect_refused(p, c);
    }
}

TEST(TlsFiles, ServerRefusesAtStart)
{
    for (const auto &c : cases()) {
        SCOPED_TRACE(c.name);
        TempDir dir;
        std::string cfg = dir.path() + "/server.cfg";
        std::ofstream(cfg) << "[API]\nHost = 127.0.0.1\nPort = 0\n"
                              "StreamPort = 0\n[Assets]\nPort = 0\n"
                              "[LocalResources]\nOptDir = "
                           << dir.path() << "\n";
        auto args = comms_args(c.opts);
        args.insert(args.begin(), {TODD_SERVER_EXE, "--config", cfg});
        Program p(args);
        expect_refused(p, c);
    }
}

} // namespace
