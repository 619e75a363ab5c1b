// SPDX-License-Identifier: Apache-2.0
// The private nats-server of the tests (tests/common/nats_server.*): it
// answers on loopback with JetStream on, keeps what JetStream acknowledged
// across a restart and a crash on the same port, trusts TLS clients only
// through its own CA (and, when asked, only with a client certificate),
// checks users and tokens, and a three-node cluster keeps an R3 stream
// writable and readable with one node down, the node rejoining when
// restarted. Clients are nats.c's, as the transport's will be.
#include "nats_server.hpp"

#include "files.hpp"
#include "rabbitmq_broker.hpp"
#include "temp_dir.hpp"

#include <gtest/gtest.h>
#include <nats/nats.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using todd::test::NatsCluster;
using todd::test::NatsServer;
namespace fs = std::filesystem;

// nats.c's threads and caches go at the end, so ASan sees no leak.
class NatsLibrary : public ::testing::Environment {
  public:
    void TearDown() override { nats_CloseAndWait(5000); }
};
const auto *const kLibrary =
    ::testing::AddGlobalTestEnvironment(new NatsLibrary);

// How a client connects: TLS files, credentials, a server list.
struct ClientOpts {
    std::string ca, cert, key;
    bool tls = false;
    std::string user, password, token;
    int max_reconnect = 0; // cluster clients move to another node
};

ClientOpts over_tls(const std::string &ca, const std::string &cert = "",
                    const std::string &key = "")
{
    ClientOpts o;
    o.tls = true;
    o.ca = ca;
    o.cert = cert;
    o.key = key;
    return o;
}

ClientOpts with_user(const std::string &user, const std::string &password)
{
    ClientOpts o;
    o.user = user;
    o.password = password;
    return o;
}

ClientOpts with_token(const std::string &token)
{
    ClientOpts o;
    o.token = token;
    return o;
}

// A connection with its JetStream context, or the error that refused it.
class Client {
  public:
    Client(const std::string &urls, const ClientOpts &c = {})
    {
        natsOptions *o = nullptr;
        status_ = natsOptions_Create(&o);
        // natsOptions_SetURL takes one URL: a list goes to SetServers.
        std::vector<std::string> list;
        std::istringstream in(urls);
        for (std::string u; std::getline(in, u, ',');)
            list.push_back(u);
        std::vector<const char *> ptrs;
        for (const auto &u : list)
            ptrs.push_back(u.c_str());
        if (status_ == NATS_OK)
            status_ = natsOptions_SetServers(o, ptrs.data(),
                                             static_cast<int>(ptrs.size()));
        if (status_ == NATS_OK)
            status_ = natsOptions_SetTimeout(o, 2000);
        if (status_ == NATS_OK)
            status_ = natsOptions_SetMaxReconnect(o, c.max_reconnect);
        if (status_ == NATS_OK)
            status_ = natsOptions_SetReconnectWait(o, 100);
        if (status_ == NATS_OK && c.tls)
            status_ = natsOptions_SetSecure(o, true);
        if (status_ == NATS_OK && !c.ca.empty())
            status_ = natsOptions_LoadCATrustedCertificates(o, c.ca.c_str());
        if (status_ == NATS_OK && !c.cert.empty())
            status_ = natsOptions_LoadCertificatesChain(o, c.cert.c_str(),
                                                        c.key.c_str());
        if (status_ == NATS_OK && !c.user.empty())
            status_ =
                natsOptions_SetUserInfo(o, c.user.c_str(), c.password.c_str());
        if (status_ == NATS_OK && !c.token.empty())
            status_ = natsOptions_SetToken(o, c.token.c_str());
        if (status_ == NATS_OK)
            status_ = natsConnection_Connect(&nc_, o);
        if (status_ == NATS_OK)
            status_ = natsConnection_JetStream(&js_, nc_, nullptr);
        if (status_ != NATS_OK)
            error_ = std::string(natsStatus_GetText(status_)) + ": " +
                     nats_GetLastError(nullptr);
        natsOptions_Destroy(o);
    }
    ~Client()
    {
        jsCtx_Destroy(js_);
        natsConnection_Destroy(nc_);
    }
    Client(const Client &) = delete;
    Client &operator=(const Client &) = delete;

    bool ok() const { return status_ == NATS_OK; }
    natsStatus status() const { return status_; }
    const std::string &error() const { return error_; }

    /** A file stream over `<name>.>` with this many replicas: "" or the
     *  error. */
    std::string add_stream(const std::string &name, int replicas = 1)
    {
        jsStreamConfig cfg;
        jsStreamConfig_Init(&cfg);
        std::string subj = name + ".>";
        const char *subjects[] = {subj.c_str()};
        cfg.Name = name.c_str();
        cfg.Subjects = subjects;
        cfg.SubjectsLen = 1;
        cfg.Storage = js_FileStorage;
        cfg.Replicas = replicas;
        jsErrCode jerr = static_cast<jsErrCode>(0);
        jsStreamInfo *si = nullptr;
        natsStatus s = js_AddStream(&si, js_, &cfg, nullptr, &jerr);
        jsStreamInfo_Destroy(si);
        return s == NATS_OK ? "" : failure(s, jerr);
    }
    /** js_Publish: the acknowledged sequence, or 0 (and *err). */
    uint64_t publish(const std::string &subject, const std::string &data,
                     std::string *err = nullptr)
    {
        jsPubAck *ack = nullptr;
        jsErrCode jerr = static_cast<jsErrCode>(0);
        natsStatus s =
            js_Publish(&ack, js_, subject.c_str(), data.data(),
                       static_cast<int>(data.size()), nullptr, &jerr);
        uint64_t seq = s == NATS_OK && ack != nullptr ? ack->Sequence : 0;
        if (s != NATS_OK && err != nullptr)
            *err = failure(s, jerr);
        jsPubAck_Destroy(ack);
        return seq;
    }
    /** The stream's message at seq ("" and *err when there is none). */
    std::string get(const std::string &stream, uint64_t seq,
                    std::string *err = nullptr)
    {
        natsMsg *m = nullptr;
        jsErrCode jerr = static_cast<jsErrCode>(0);
        natsStatus s = js_GetMsg(&m, js_, stream.c_str(), seq, nullptr, &jerr);
        std::string data;
        if (s == NATS_OK)
            data.assign(natsMsg_GetData(m),
                        static_cast<size_t>(natsMsg_GetDataLength(m)));
        else if (err != nullptr)
            *err = failure(s, jerr);
        natsMsg_Destroy(m);
        return data;
    }
    /** The stream's message count, or -1 (and *err). */
    int64_t count(const std::string &stream, std::string *err = nullptr)
    {
        jsStreamInfo *si = nullptr;
        jsErrCode jerr = static_cast<jsErrCode>(0);
        natsStatus s =
            js_GetStreamInfo(&si, js_, stream.c_str(), nullptr, &jerr);
        int64_t n = s == NATS_OK ? static_cast<int64_t>(si->State.Msgs) : -1;
        if (s != NATS_OK && err != nullptr)
            *err = failure(s, jerr);
        jsStreamInfo_Destroy(si);
        return n;
    }

  private:
    static std::string failure(natsStatus s, jsErrCode jerr)
    {
        return std::string(natsStatus_GetText(s)) + " (js error " +
               std::to_string(static_cast<int>(jerr)) +
               "): " + nats_GetLastError(nullptr);
    }

    natsStatus status_ = NATS_ERR;
    std::string error_;
    natsConnection *nc_ = nullptr;
    jsCtx *js_ = nullptr;
};

// Each running node's /jsz, for failure messages.
std::string jsz_of_all(const NatsCluster &cl)
{
    std::string s;
    for (size_t i = 0; i < cl.size(); ++i) {
        if (!cl.node(i).running())
            continue;
        try {
            s += cl.node(i).name() + " /jsz: " + cl.node(i).monitor("/jsz");
        } catch (const std::runtime_error &e) {
            s += cl.node(i).name() + ": " + e.what();
        }
        s += "\n";
    }
    return s;
}

class NatsServerHelper : public ::testing::Test {
  protected:
    void SetUp() override { TODD_SKIP_WITHOUT_NATS(); }
};

TEST_F(NatsServerHelper, StartsWithJetStreamAndAcksAPublish)
{
    NatsServer s;
    EXPECT_TRUE(s.running());
    EXPECT_GT(s.pid(), 0);
    EXPECT_EQ(s.url(), "nats://127.0.0.1:" + std::to_string(s.port()));
    EXPECT_EQ(s.tls_port(), 0);
    EXPECT_EQ(s.tls_url(), "");
    EXPECT_NE(s.port(), s.monitor_port());
    std::cout << "started in " << s.last_start_time().count() << " ms\n";
    // Loopback only, JetStream on, the store in the private directory.
    std::string varz = s.monitor("/varz");
    EXPECT_NE(varz.find("\"host\": \"127.0.0.1\""), std::string::npos) << varz;
    std::string jsz = s.monitor("/jsz");
    EXPECT_NE(jsz.find(s.dir() + "/store"), std::string::npos) << jsz;

    Client c(s.url());
    ASSERT_TRUE(c.ok()) << c.error() << "\n" << s.log_tail();
    ASSERT_EQ(c.add_stream("T"), "");
    std::string err;
    EXPECT_EQ(c.publish("T.a", "one", &err), 1u) << err;
    EXPECT_EQ(c.get("T", 1, &err), "one") << err;
}

TEST_F(NatsServerHelper, RestartKeepsThePortAndTheStream)
{
    NatsServer s;
    int port = s.port(), mport = s.monitor_port();
    pid_t pid = s.pid();
    {
        Client c(s.url());
        ASSERT_TRUE(c.ok()) << c.error();
        ASSERT_EQ(c.add_stream("R"), "");
        ASSERT_EQ(c.publish("R.x", "kept"), 1u);
    }
    s.restart();
    EXPECT_TRUE(s.running());
    EXPECT_NE(s.pid(), pid);
    EXPECT_EQ(s.port(), port);
    EXPECT_EQ(s.monitor_port(), mport);
    Client c(s.url());
    ASSERT_TRUE(c.ok()) << c.error() << "\n" << s.log_tail();
    std::string err;
    EXPECT_EQ(c.count("R", &err), 1) << err;
    EXPECT_EQ(c.get("R", 1, &err), "kept") << err;
    EXPECT_EQ(c.publish("R.x", "more", &err), 2u) << err;
    s.stop();
    EXPECT_FALSE(s.running());
    EXPECT_EQ(s.pid(), 0);
    s.stop(); // no-op
}

TEST_F(NatsServerHelper, KillThenStartKeepsWhatWasAcknowledged)
{
    NatsServer s;
    {
        Client c(s.url());
        ASSERT_TRUE(c.ok()) << c.error();
        ASSERT_EQ(c.add_stream("K"), "");
        for (int i = 1; i <= 20; ++i)
            ASSERT_EQ(c.publish("K.x", "m" + std::to_string(i)),
                      static_cast<uint64_t>(i));
        s.kill(); // right after the last ack
    }
    EXPECT_FALSE(s.running());
    s.kill(); // no-op
    s.start();
    Client c(s.url());
    ASSERT_TRUE(c.ok()) << c.error() << "\n" << s.log_tail();
    std::string err;
    EXPECT_EQ(c.count("K", &err), 20) << err;
    EXPECT_EQ(c.get("K", 20, &err), "m20") << err;
}

TEST_F(NatsServerHelper, NotStartedHasItsUrlAndRefusesUntilStarted)
{
    NatsServer::Options o;
    o.start = false;
    NatsServer s(o);
    EXPECT_FALSE(s.running());
    EXPECT_GT(s.port(), 0);
    {
        Client c(s.url());
        EXPECT_FALSE(c.ok());
    }
    s.start();
    Client c(s.url());
    EXPECT_TRUE(c.ok()) << c.error();
}

TEST_F(NatsServerHelper, DirectoryGoesWithTheServer)
{
    std::string dir;
    {
        NatsServer s;
        dir = s.dir();
        EXPECT_TRUE(fs::exists(dir + "/nats-server.conf"));
        EXPECT_TRUE(fs::exists(dir + "/nats-server.log"));
    }
    EXPECT_FALSE(fs::exists(dir));
}

TEST_F(NatsServerHelper, ABadConfigLineFailsWithTheServersMessage)
{
    NatsServer::Options o;
    o.extra_config = {"no_such_setting_at_all: {"};
    try {
        NatsServer s(o);
        FAIL() << "started with a broken config";
    } catch (const std::runtime_error &e) {
        EXPECT_NE(std::string(e.what()).find("exited during start-up"),
                  std::string::npos)
            << e.what();
    }
}

TEST_F(NatsServerHelper, UserPasswordAndTokenAreChecked)
{
    NatsServer::Options o;
    o.user = "todd";
    o.password = "s3cret";
    NatsServer s(o);
    EXPECT_FALSE(Client(s.url()).ok());
    EXPECT_FALSE(Client(s.url(), with_user("todd", "wrong")).ok());
    Client good(s.url(), with_user("todd", "s3cret"));
    EXPECT_TRUE(good.ok()) << good.error();

    NatsServer::Options t;
    t.token = "tok-123";
    NatsServer ts(t);
    EXPECT_FALSE(Client(ts.url()).ok());
    EXPECT_FALSE(Client(ts.url(), with_token("tok-124")).ok());
    Client tgood(ts.url(), with_token("tok-123"));
    EXPECT_TRUE(tgood.ok()) << tgood.error();
}

class NatsServerTls : public NatsServerHelper {
  protected:
    static void SetUpTestSuite()
    {
        if (NatsServer::unavailable())
            return;
        pki_dir_ = std::make_unique<todd::test::TempDir>("todd-nats-pki");
        pki_ = todd::test::make_test_pki(pki_dir_->path());
    }
    static void TearDownTestSuite() { pki_dir_.reset(); }
    static inline std::unique_ptr<todd::test::TempDir> pki_dir_;
    static inline todd::test::TestPki pki_;
};

TEST_F(NatsServerTls, TrustedCaConnectsWrongCaAndPlainAreRefused)
{
    NatsServer::Options o;
    o.tls = NatsServer::Tls::from(pki_);
    NatsServer s(o);
    EXPECT_EQ(s.tls_port(), s.port());
    EXPECT_EQ(s.tls_url(), "tls://127.0.0.1:" + std::to_string(s.port()));

    Client good(s.tls_url(), over_tls(pki_.ca_cert));
    ASSERT_TRUE(good.ok()) << good.error() << "\n" << s.log_tail();
    ASSERT_EQ(good.add_stream("S"), "");
    EXPECT_EQ(good.publish("S.x", "over tls"), 1u);

    Client wrong(s.tls_url(), over_tls(pki_.other_ca_cert));
    EXPECT_FALSE(wrong.ok());
    std::cout << "wrong CA: " << wrong.error() << "\n";
    Client plain(s.url());
    EXPECT_FALSE(plain.ok());
    std::cout << "plain: " << plain.error() << "\n";
}

TEST_F(NatsServerTls, RequiredClientCertificate)
{
    NatsServer::Options o;
    o.tls = NatsServer::Tls::from(pki_);
    o.tls->require_client_cert = true;
    NatsServer s(o);

    Client nocert(s.tls_url(), over_tls(pki_.ca_cert));
    EXPECT_FALSE(nocert.ok());
    std::cout << "no client cert: " << nocert.error() << "\n";
    Client withcert(s.tls_url(),
                    over_tls(pki_.ca_cert, pki_.client_cert, pki_.client_key));
    ASSERT_TRUE(withcert.ok()) << withcert.error() << "\n" << s.log_tail();
    ASSERT_EQ(withcert.add_stream("C"), "");
    EXPECT_EQ(withcert.publish("C.x", "mutual"), 1u);
}

TEST_F(NatsServerHelper, ClusterKeepsAnR3StreamThroughANodeKill)
{
    NatsCluster cl;
    ASSERT_EQ(cl.size(), 3u);
    std::cout << "cluster ready in " << cl.last_start_time().count()
              << " ms, meta leader " << cl.meta_leader() << "\n";
    std::string urls = cl.urls();
    EXPECT_EQ(std::count(urls.begin(), urls.end(), ','), 2) << urls;
    EXPECT_EQ(cl.node(0).name(), "n1");
    EXPECT_NE(cl.meta_leader(), "");

    ClientOpts co;
    co.max_reconnect = 50;
    Client c(urls, co);
    ASSERT_TRUE(c.ok()) << c.error();
    ASSERT_EQ(c.add_stream("CL", 3), "") << cl.log_tail();
    std::string err;
    for (int i = 1; i <= 10; ++i)
        ASSERT_EQ(c.publish("CL.x", "m" + std::to_string(i), &err),
                  static_cast<uint64_t>(i))
            << err;

    // Kill the meta leader's node: the hardest one to lose.
    std::string leader = cl.meta_leader();
    size_t victim = leader.empty() ? 0 : std::stoul(leader.substr(1)) - 1;
    auto t0 = std::chrono::steady_clock::now();
    cl.node(victim).kill();
    EXPECT_FALSE(cl.node(victim).running());
    // A client of the two others: the stream's group has its quorum, and
    // its leader may move, so a publish may fail once while it does.
    std::string others;
    for (size_t i = 0; i < cl.size(); ++i)
        if (i != victim)
            others += (others.empty() ? "" : ",") + cl.node(i).url();
    Client o(others, co);
    ASSERT_TRUE(o.ok()) << o.error();
    uint64_t seq = 0;
    ASSERT_TRUE(todd::test::eventually(
        [&] { return (seq = o.publish("CL.x", "m11", &err)) != 0; }, 20s,
        100ms))
        << err << "\n"
        << cl.log_tail();
    EXPECT_EQ(seq, 11u);
    std::cout << "published with " << leader << " down after "
              << std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::steady_clock::now() - t0)
                     .count()
              << " ms\n";
    EXPECT_EQ(o.get("CL", 1, &err), "m1") << err;
    EXPECT_EQ(o.get("CL", 11, &err), "m11") << err;
    EXPECT_EQ(o.count("CL", &err), 11) << err;

    // The two others elect a new meta leader (an election timer, seconds);
    // until then stream creates would time out, publishes do not.
    ASSERT_TRUE(todd::test::eventually(
        [&] {
            std::string l = cl.meta_leader();
            return !l.empty() && l != leader;
        },
        30s, 50ms))
        << jsz_of_all(cl) << cl.log_tail();
    std::cout << "new meta leader " << cl.meta_leader() << " after "
              << std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::steady_clock::now() - t0)
                     .count()
              << " ms\n";

    // Rejoining: the cluster waits until the leader sees it current.
    t0 = std::chrono::steady_clock::now();
    cl.start();
    EXPECT_TRUE(cl.node(victim).running());
    std::cout << "node rejoined in "
              << std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::steady_clock::now() - t0)
                     .count()
              << " ms\n";
    // Served by the restarted node alone once its replica caught up.
    Client back(cl.node(victim).url());
    ASSERT_TRUE(back.ok()) << back.error();
    EXPECT_EQ(back.count("CL", &err), 11) << err;
    EXPECT_EQ(back.publish("CL.x", "m12", &err), 12u) << err;
    ASSERT_TRUE(todd::test::eventually(
        [&] {
            try { // full health: its stream replica is current too
                cl.node(victim).monitor("/healthz");
                return true;
            } catch (const std::runtime_error &) {
                return false;
            }
        },
        20s, 100ms))
        << cl.node(victim).log_tail();
}

} // namespace
