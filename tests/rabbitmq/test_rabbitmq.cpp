// SPDX-License-Identifier: Apache-2.0
// The RabbitMQ plugin (real .so through core's Transport) against a real
// rabbitmq-server started by the suite: ToDD's topology and properties as
// the broker reports them, Go wire vectors both ways, verdicts settled on
// the broker (the behaviour every transport shares is in tests/transport),
// refusals (406, unroutable, wrong password) and the threading rules.
#include "files.hpp"
#include "ports.hpp"
#include "rabbitmq_test_util.hpp"

#include <todd/core/messages.hpp>

#include <filesystem>
#include <set>
#include <thread>

using namespace rmqtest;
using todd::core::CommsError;
using todd::core::LinkState;
using todd::core::PublishOptions;

namespace {

[[maybe_unused]] auto *const env =
    ::testing::AddGlobalTestEnvironment(new SharedBroker);

class Rabbit : public ::testing::Test {
  protected:
    void SetUp() override { TODD_SKIP_WITHOUT_RABBITMQ(); }
    RabbitmqBroker &broker() { return SharedBroker::get(); }
    int port() { return broker().port(); }
    /** Wait until a transport is connected (both links). */
    void connected(Transport &t)
    {
        auto deadline = std::chrono::steady_clock::now() + 30s;
        while (t.state() != LinkState::connected &&
               std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(10ms);
        ASSERT_EQ(t.state(), LinkState::connected);
    }
    /** Lines of rabbitmqctl output containing `needle`. */
    std::vector<std::string> lines(const std::vector<std::string> &args,
                                   const std::string &needle)
    {
        std::istringstream in(broker().rabbitmqctl(args));
        std::vector<std::string> out;
        for (std::string l; std::getline(in, l);)
            if (l.find(needle) != std::string::npos)
                out.push_back(l);
        return out;
    }
};

TEST_F(Rabbit, MetadataDeclaresEveryKey)
{
    const auto &info = plugin()->info();
    EXPECT_EQ(info.name, "rabbitmq");
    std::set<std::string> keys;
    for (const auto &k : info.keys)
        keys.insert(k.name);
    for (const char *k : {"host",
                          "port",
                          "user",
                          "password",
                          "password_file",
                          "password_env",
                          "vhost",
                          "heartbeat",
                          "connect_timeout",
                          "brokers",
                          "tls",
                          "tls_ca",
                          "tls_cert",
                          "tls_key",
                          "tls_verify_peer",
                          "tls_verify_hostname",
                          "prefetch",
                          "confirms",
                          "durable",
                          "publish_timeout"})
        EXPECT_TRUE(keys.count(k)) << "missing key " << k;
    for (const auto &k : info.keys) {
        if (k.name == "password") {
            EXPECT_EQ(k.type, static_cast<uint32_t>(TODD_COMMS_CFG_SECRET));
        }
    }
    EXPECT_TRUE(info.capabilities & TODD_COMMS_CAP_ACK);
    EXPECT_TRUE(info.capabilities & TODD_COMMS_CAP_CONFIRMS);
    EXPECT_TRUE(info.capabilities & TODD_COMMS_CAP_TTL);
}

TEST_F(Rabbit, TopologyIsToddsOnTheBroker)
{
    std::string agent = unique("aa11");
    auto server = make(opts(port()));
    auto agent_t = make(opts(port()));
    Inbox tasks;
    auto sub = agent_t->subscribe(agent, tasks.handler());
    server->publish("agentadvert", "{}", {std::chrono::milliseconds(5000)});
    connected(*agent_t);

    auto ex = lines({"list_exchanges", "name", "type", "durable", "auto_delete",
                     "internal", "arguments"},
                    "test_exchange");
    ASSERT_EQ(ex.size(), 1u);
    EXPECT_EQ(ex[0], "test_exchange\tdirect\tfalse\tfalse\tfalse\t[]");

    for (const std::string &q : {std::string("agentadvert"), agent}) {
        auto ql = lines({"list_queues", "name", "durable", "auto_delete",
                         "exclusive", "arguments"},
                        q);
        ASSERT_EQ(ql.size(), 1u) << q;
        EXPECT_EQ(ql[0], q + "\tfalse\tfalse\tfalse\t[]");
        auto bl = lines({"list_bindings", "source_name", "destination_name",
                         "routing_key", "arguments"},
                        "test_exchange\t" + q);
        ASSERT_EQ(bl.size(), 1u) << q;
        EXPECT_EQ(bl[0], "test_exchange\t" + q + "\t" + q + "\t[]");
    }
    // Long-lived connections: exactly two per transport (publish, consume),
    // once those of earlier tests on the shared broker have closed.
    size_t conns = 0;
    EXPECT_TRUE(todd::test::eventually(
        [&] {
            conns =
                lines({"list_connections", "peer_host"}, "127.0.0.1").size();
            return conns == 4;
        },
        30s))
        << conns << " connections for 2 transports";
}

TEST_F(Rabbit, PropertiesAreToddsOnTheWire)
{
    std::string q = unique("props");
    auto t = make(opts(port()));
    t->publish(q, "advert", {std::chrono::milliseconds(5000)});
    t->publish(q, "task");
    PublishOptions json;
    json.content_type = "application/json";
    t->publish(q, "other", json);

    RawPeer raw(port());
    auto a = raw.get(q);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->body, "advert");
    EXPECT_EQ(a->content_type, "text/plain");
    EXPECT_EQ(a->expiration, "5000");
    EXPECT_FALSE(a->has_delivery_mode); // transient, as Go
    EXPECT_FALSE(a->has_other_properties);
    auto b = raw.get(q);
    ASSERT_TRUE(b);
    EXPECT_EQ(b->body, "task");
    EXPECT_EQ(b->content_type, "text/plain");
    EXPECT_FALSE(b->expiration);
    EXPECT_FALSE(b->has_delivery_mode);
    auto c = raw.get(q);
    ASSERT_TRUE(c);
    EXPECT_EQ(c->content_type, "application/json");
}

std::vector<std::filesystem::path> go_vectors()
{
    std::vector<std::filesystem::path> v;
    for (auto &e : std::filesystem::directory_iterator(VECTORS_DIR))
        if (e.path().filename().string().rfind("go-", 0) == 0)
            v.push_back(e.path());
    std::sort(v.begin(), v.end());
    return v;
}

// Decode a body as the Go peers' message kind named by the file.
void decodes_like_go(const std::string &name, const std::string &body)
{
    if (name.find("advert") != std::string::npos)
        EXPECT_NO_THROW(todd::msg::decode_advert(body)) << name;
    else if (name.find("-task-") != std::string::npos)
        EXPECT_NO_THROW(todd::msg::decode_task(body)) << name;
    else
        EXPECT_NO_THROW(todd::msg::decode_response(body)) << name;
}

TEST_F(Rabbit, PluginPublishedVectorsReachARawPeerByteExact)
{
    auto vectors = go_vectors();
    ASSERT_GE(vectors.size(), 10u);
    auto t = make(opts(port()));
    RawPeer raw(port());
    for (const auto &p : vectors) {
        std::string body = read_file(p.string());
        std::string q = unique("vec");
        t->publish(q, body);
        auto m = raw.get(q);
        ASSERT_TRUE(m) << p;
        EXPECT_EQ(m->body, body) << p;
        EXPECT_EQ(m->content_type, "text/plain");
        decodes_like_go(p.filename().string(), m->body);
    }
}

TEST_F(Rabbit, RawGoVectorsReachTheSubscriberIntact)
{
    auto vectors = go_vectors();
    std::string q = unique("govec");
    RawPeer raw(port());
    raw.declare(q); // the Go server's declaration, before us
    auto t = make(opts(port()));
    Inbox in;
    auto sub = t->subscribe(q, in.handler());
    for (const auto &p : vectors)
        raw.publish(q, read_file(p.string()));
    ASSERT_TRUE(in.wait_for(vectors.size()));
    auto got = in.all();
    ASSERT_EQ(got.size(), vectors.size());
    for (size_t i = 0; i < vectors.size(); ++i) {
        EXPECT_EQ(got[i].payload, read_file(vectors[i].string()));
        EXPECT_EQ(got[i].content_type, "text/plain");
        EXPECT_EQ(got[i].destination, q);
        decodes_like_go(vectors[i].filename().string(), got[i].payload);
    }
}

TEST_F(Rabbit, RequeueRedeliversAndRejectDrops)
{
    std::string q = unique("verdict");
    auto t = make(opts(port()));
    Inbox in;
    // First sight of "again": requeue; "poison": reject; others: ack.
    in.verdict = [](const Received &r, size_t) {
        if (r.payload == "again" && !r.redelivered)
            return Verdict::requeue;
        if (r.payload == "poison")
            return Verdict::reject;
        return Verdict::ack;
    };
    auto sub = t->subscribe(q, in.handler());
    t->publish(q, "again");
    t->publish(q, "poison");
    t->publish(q, "fine");
    ASSERT_TRUE(in.wait_for(4)); // again, again (redelivered), poison, fine
    // A marker published last proves nothing else is coming.
    t->publish(q, "marker");
    ASSERT_TRUE(in.wait_for(5));
    auto got = in.all();
    int again = 0, poison = 0, redelivered_again = 0;
    for (auto &r : got) {
        again += r.payload == "again";
        poison += r.payload == "poison";
        redelivered_again += r.payload == "again" && r.redelivered;
    }
    EXPECT_EQ(again, 2);
    EXPECT_EQ(redelivered_again, 1);
    EXPECT_EQ(poison, 1); // rejected: never redelivered
    EXPECT_EQ(got.back().payload, "marker");
    sub.reset();
    RawPeer raw(port());
    EXPECT_EQ(raw.count(q), 0u); // all settled, nothing left
}

TEST_F(Rabbit, RefusedDeclarationNamesTheQueue)
{
    std::string q = unique("conflict");
    RawPeer raw(port());
    raw.declare(q, /*durable=*/true); // someone else's flags
    LogCapture log;
    auto t = make(opts(port()));
    Inbox in;
    try {
        auto sub = t->subscribe(q, in.handler());
        FAIL() << "subscribe to a queue with other flags succeeded";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_PROTOCOL);
        std::string w = e.what();
        EXPECT_NE(w.find(q), std::string::npos) << w;
        EXPECT_NE(w.find("PRECONDITION_FAILED"), std::string::npos) << w;
    }
    try {
        t->publish(q, "x");
        FAIL() << "publish to a queue with other flags succeeded";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_PROTOCOL);
        EXPECT_NE(std::string(e.what()).find(q), std::string::npos);
    }
    // The transport still works for other queues.
    std::string ok = unique("after-conflict");
    auto sub = t->subscribe(ok, in.handler());
    t->publish(ok, "still fine");
    ASSERT_TRUE(in.wait_for(1));
}

TEST_F(Rabbit, UnroutablePublishIsNoRouteThenRedeclared)
{
    std::string q = unique("noroute");
    auto t = make(opts(port()));
    t->publish(q, "first"); // declares and binds q
    broker().rabbitmqctl({"delete_queue", q});
    try {
        t->publish(q, "lost");
        FAIL() << "publish to a deleted queue succeeded";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_NOROUTE) << e.what();
        EXPECT_NE(std::string(e.what()).find(q), std::string::npos);
    }
    // The return dropped the cached declaration: the queue comes back.
    t->publish(q, "again");
    RawPeer raw(port());
    auto m = raw.get(q);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->body, "again");
}

TEST_F(Rabbit, WrongPasswordIsAClearErrorAndNeverLogged)
{
    LogCapture log;
    const std::string secret = "Wr0ng-S3cret-xyz";
    StateLog states;
    auto t =
        make(opts(port(), {{"password", secret}, {"publish_timeout", "300"}}),
             false);
    states.attach(*t);
    t->start();
    auto failed = states.wait_state(LinkState::failed);
    ASSERT_TRUE(failed);
    EXPECT_EQ(failed->status, TODD_COMMS_E_AUTH);
    EXPECT_NE(failed->detail.find("guest"), std::string::npos)
        << failed->detail; // names the user
    try {
        t->publish(unique("auth"), "x");
        FAIL() << "publish without a connection succeeded";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_UNAVAILABLE);
        EXPECT_NE(std::string(e.what()).find("password"), std::string::npos)
            << e.what();
    }
    t.reset();
    std::string text = log.text();
    EXPECT_NE(text.find("wrong user name or password"), std::string::npos)
        << text;
    EXPECT_EQ(text.find(secret), std::string::npos) << "password logged";
    for (auto &e : states.all())
        EXPECT_EQ(e.detail.find(secret), std::string::npos);
}

TEST_F(Rabbit, PasswordFromFileAndEnvironment)
{
    broker().add_user("todd-file", "from-file-pw");
    std::string path = broker().dir() + "/pw.txt";
    {
        std::ofstream f(path);
        f << "from-file-pw\n";
    }
    ::setenv("TODD_TEST_RMQ_PW", "from-file-pw", 1);
    for (const auto &extra : {Options{{"password_file", path}},
                              Options{{"password_env", "TODD_TEST_RMQ_PW"}}}) {
        Options o = opts(port(), extra);
        o["user"] = "todd-file";
        o["password"] = "not-this-one";
        auto t = make(o);
        std::string q = unique("pw");
        t->publish(q, "ok");
        RawPeer raw(port());
        ASSERT_TRUE(raw.get(q));
    }
    Options missing = opts(port(), {{"password_env", "TODD_NO_SUCH_VAR_X"}});
    try {
        make(missing);
        FAIL() << "missing password variable accepted";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_CONFIG);
        EXPECT_NE(std::string(e.what()).find("TODD_NO_SUCH_VAR_X"),
                  std::string::npos);
    }
}

TEST_F(Rabbit, BrokerListSkipsADeadAddress)
{
    // Bound, never listening: refused at once, and no one can take it.
    auto dead = todd::test::DeadPort::refusing();
    Options o = opts(port());
    o["brokers"] = "127.0.0.1:" + dead.port_str() +
                   ", 127.0.0.1:" + std::to_string(port());
    auto t = make(o);
    std::string q = unique("cluster");
    Inbox in;
    auto sub = t->subscribe(q, in.handler());
    t->publish(q, "via second broker");
    ASSERT_TRUE(in.wait_for(1));
}

TEST_F(Rabbit, UnsubscribeIsQuiescent)
{
    std::string q = unique("quiet");
    auto t = make(opts(port()));
    std::atomic<bool> in_handler{false}, after{false};
    std::atomic<int> calls{0};
    std::mutex m;
    std::condition_variable cv;
    bool entered = false;
    auto sub = t->subscribe(q, [&](const todd::core::Delivery &) {
        in_handler = true;
        if (after)
            ADD_FAILURE() << "delivery after unsubscribe returned";
        {
            std::lock_guard g(m);
            entered = true;
            cv.notify_all();
        }
        std::this_thread::sleep_for(200ms); // busy while unsubscribing
        ++calls;
        in_handler = false;
        return Verdict::ack;
    });
    for (int i = 0; i < 20; ++i)
        t->publish(q, "x");
    {
        std::unique_lock lk(m);
        ASSERT_TRUE(cv.wait_for(lk, 30s, [&] { return entered; }));
    }
    sub.reset();
    after = true;
    EXPECT_FALSE(in_handler);
    int seen = calls;
    // Unconsumed messages went back to the queue, none lost.
    RawPeer raw(port());
    int left = 0;
    while (raw.get(q, 2s))
        ++left;
    EXPECT_EQ(seen + left, 20);
}

TEST_F(Rabbit, BatchPublishesWithConfirms)
{
    std::string q = unique("batch");
    auto t = make(opts(port()));
    std::vector<std::pair<std::string, std::string>> msgs;
    for (int i = 0; i < 500; ++i)
        msgs.emplace_back(q, "b" + std::to_string(i));
    auto st = t->publish_batch(msgs);
    ASSERT_EQ(st.size(), 500u);
    for (auto s : st)
        EXPECT_EQ(s, TODD_COMMS_OK);
    RawPeer raw(port());
    EXPECT_EQ(raw.count(q), 500u);
}

TEST_F(Rabbit, NoConfirmsModeStillDelivers)
{
    std::string q = unique("noconf");
    auto t = make(opts(port(), {{"confirms", "false"}}));
    Inbox in;
    auto sub = t->subscribe(q, in.handler());
    for (int i = 0; i < 100; ++i)
        t->publish(q, std::to_string(i));
    ASSERT_TRUE(in.wait_for(100));
    auto got = in.all();
    for (int i = 0; i < 100; ++i)
        EXPECT_EQ(got[i].payload, std::to_string(i)); // in order
}

TEST_F(Rabbit, BadConfigurationIsRefusedAtCreate)
{
    try {
        make(opts(port(), {{"port", "70000"}}));
        FAIL();
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_CONFIG);
        EXPECT_NE(std::string(e.what()).find("port"), std::string::npos);
    }
    try {
        make(opts(port(), {{"tls", "true"}, {"tls_ca", "/nonexistent/ca"}}));
        FAIL();
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_CONFIG);
        EXPECT_NE(std::string(e.what()).find("/nonexistent/ca"),
                  std::string::npos);
    }
}

} // namespace
