// SPDX-License-Identifier: Apache-2.0
// The private Kafka broker of the tests (tests/common/kafka_broker.*, over
// share/scripts/kafka-broker): it answers on loopback, keeps what it
// acknowledged across a restart and a crash, its SSL listener is trusted
// only through its own CA, its directory goes away with it; the script
// refuses bad input and picks another port when one was taken. Clients are
// librdkafka's, as the transport's will be.
#include "kafka_broker.hpp"

#include "files.hpp"
#include "ports.hpp"
#include "rabbitmq_broker.hpp"
#include "temp_dir.hpp"

#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using todd::test::KafkaBroker;
namespace fs = std::filesystem;

using Conf = std::vector<std::pair<std::string, std::string>>;
struct RkDelete {
    void operator()(rd_kafka_t *rk) const { rd_kafka_destroy(rk); }
};
using Rk = std::unique_ptr<rd_kafka_t, RkDelete>;

// A client of `type`; its log goes nowhere (failures are asserted on), its
// errors to *errors when given.
Rk client(rd_kafka_type_t type, const std::string &bootstrap,
          const Conf &extra = {}, std::vector<std::string> *errors = nullptr)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (errors != nullptr) {
        rd_kafka_conf_set_opaque(conf, errors);
        rd_kafka_conf_set_error_cb(conf, [](rd_kafka_t *, int,
                                            const char *reason, void *opaque) {
            static_cast<std::vector<std::string> *>(opaque)->push_back(reason);
        });
    }
    char err[512];
    Conf all = {{"bootstrap.servers", bootstrap}, {"log_level", "0"}};
    all.insert(all.end(), extra.begin(), extra.end());
    for (const auto &[k, v] : all)
        if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err) !=
            RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            ADD_FAILURE() << k << "=" << v << ": " << err;
            return nullptr;
        }
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof err);
    if (rk == nullptr) {
        rd_kafka_conf_destroy(conf);
        ADD_FAILURE() << "rd_kafka_new: " << err;
    }
    return Rk(rk);
}

// A metadata request: the brokers' "id@host:port", or "error NAME: " and
// the client's first error report.
std::string metadata(const std::string &bootstrap, const Conf &extra = {},
                     std::chrono::milliseconds timeout = 10s)
{
    std::vector<std::string> errors;
    Rk rk = client(RD_KAFKA_PRODUCER, bootstrap, extra, &errors);
    if (!rk)
        return "no client";
    const rd_kafka_metadata_t *md = nullptr;
    rd_kafka_resp_err_t err = rd_kafka_metadata(
        rk.get(), 0, nullptr, &md, static_cast<int>(timeout.count()));
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_poll(rk.get(), 100); // serves error_cb
        return std::string("error ") + rd_kafka_err2name(err) + ": " +
               (errors.empty() ? "" : errors.front());
    }
    std::string s;
    for (int i = 0; i < md->broker_cnt; ++i)
        s += (s.empty() ? "" : ",") + std::to_string(md->brokers[i].id) + "@" +
             md->brokers[i].host + ":" + std::to_string(md->brokers[i].port);
    rd_kafka_metadata_destroy(md);
    return s;
}

// CreateTopics (1 partition): the broker does not create topics itself.
void create_topic(const std::string &bootstrap, const std::string &topic)
{
    Rk rk = client(RD_KAFKA_PRODUCER, bootstrap);
    ASSERT_TRUE(rk);
    char err[512];
    rd_kafka_NewTopic_t *nt =
        rd_kafka_NewTopic_new(topic.c_str(), 1, 1, err, sizeof err);
    ASSERT_NE(nt, nullptr) << err;
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk.get());
    rd_kafka_CreateTopics(rk.get(), &nt, 1, nullptr, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    rd_kafka_NewTopic_destroy(nt);
    ASSERT_NE(ev, nullptr) << "CreateTopics: no answer within 30 s";
    std::string failure;
    if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        failure = rd_kafka_event_error_string(ev);
    } else {
        size_t n = 0;
        const rd_kafka_topic_result_t **r = rd_kafka_CreateTopics_result_topics(
            rd_kafka_event_CreateTopics_result(ev), &n);
        if (n != 1 || rd_kafka_topic_result_error(r[0]) != 0)
            failure = n == 1
                          ? rd_kafka_err2name(rd_kafka_topic_result_error(r[0]))
                          : "no result";
    }
    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    ASSERT_EQ(failure, "") << "CreateTopics " << topic;
}

// Produce one record with an idempotent producer and assert that the broker
// acknowledged it (its delivery report says so).
void produce(const std::string &bootstrap, const std::string &topic,
             const std::string &value)
{
    rd_kafka_resp_err_t delivered = RD_KAFKA_RESP_ERR__IN_PROGRESS;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_opaque(conf, &delivered);
    rd_kafka_conf_set_dr_msg_cb(
        conf, [](rd_kafka_t *, const rd_kafka_message_t *m, void *opaque) {
            *static_cast<rd_kafka_resp_err_t *>(opaque) = m->err;
        });
    char err[512];
    for (auto [k, v] : Conf{{"bootstrap.servers", bootstrap},
                            {"log_level", "0"},
                            {"enable.idempotence", "true"},
                            {"message.timeout.ms", "30000"}})
        ASSERT_EQ(
            rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err),
            RD_KAFKA_CONF_OK)
            << err;
    Rk rk(rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err));
    ASSERT_TRUE(rk) << err;
    ASSERT_EQ(
        rd_kafka_producev(
            rk.get(), RD_KAFKA_V_TOPIC(topic.c_str()),
            RD_KAFKA_V_VALUE(const_cast<char *>(value.data()), value.size()),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
        RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_flush(rk.get(), 40000);
    ASSERT_EQ(delivered, RD_KAFKA_RESP_ERR_NO_ERROR)
        << "delivery report: " << rd_kafka_err2name(delivered);
}

// Every value in partition 0 of topic, read from the beginning until
// `want` values came or `limit` passed.
std::vector<std::string> consume(const std::string &bootstrap,
                                 const std::string &topic, size_t want,
                                 std::chrono::milliseconds limit = 30s)
{
    Rk rk = client(
        RD_KAFKA_CONSUMER, bootstrap,
        {{"group.id", "todd-broker-helper"}, {"enable.auto.commit", "false"}});
    std::vector<std::string> got;
    if (!rk)
        return got;
    rd_kafka_topic_partition_list_t *parts =
        rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, topic.c_str(), 0)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk.get(), parts);
    rd_kafka_topic_partition_list_destroy(parts);
    auto end = std::chrono::steady_clock::now() + limit;
    while (got.size() < want && std::chrono::steady_clock::now() < end) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk.get(), 200);
        if (m == nullptr)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
            got.emplace_back(static_cast<const char *>(m->payload), m->len);
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk.get());
    return got;
}

std::string seconds(std::chrono::milliseconds d)
{
    return std::to_string(d.count() / 1000) + "." +
           std::to_string(d.count() % 1000 / 100) + " s";
}

// One broker (with an SSL listener) for the suite: each JVM start costs
// about a second of CPU on a 2-core machine.
class KafkaBrokerHelper : public ::testing::Test {
  protected:
    static void SetUpTestSuite()
    {
        if (KafkaBroker::unavailable())
            return;
        try {
            pki_dir_ = std::make_unique<todd::test::TempDir>("todd-kafka-pki");
            pki_ = todd::test::make_test_pki(pki_dir_->path());
            KafkaBroker::Options o;
            o.tls = KafkaBroker::Tls::from(pki_);
            broker_ = std::make_unique<KafkaBroker>(o);
            broker_dir_ = broker_->dir();
            std::cout << "[kafka] first start (format + start) took "
                      << seconds(broker_->last_start_time()) << std::endl;
        } catch (const std::exception &e) {
            error_ = e.what();
        }
    }
    static void TearDownTestSuite()
    {
        broker_.reset();
        // The destructor stopped the broker and removed its directory.
        if (!broker_dir_.empty()) {
            EXPECT_FALSE(fs::exists(broker_dir_)) << broker_dir_;
        }
        pki_dir_.reset();
    }
    void SetUp() override
    {
        TODD_SKIP_WITHOUT_KAFKA();
        ASSERT_NE(broker_, nullptr) << error_;
        if (!broker_->running())
            broker_->start();
    }

    static inline std::unique_ptr<todd::test::TempDir> pki_dir_;
    static inline todd::test::TestPki pki_;
    static inline std::unique_ptr<KafkaBroker> broker_;
    static inline std::string broker_dir_, error_;
};

TEST_F(KafkaBrokerHelper, AnswersOnLoopbackOnly)
{
    KafkaBroker &b = *broker_;
    EXPECT_TRUE(b.running());
    EXPECT_GT(b.pid(), 0);
    EXPECT_EQ(b.bootstrap(), "127.0.0.1:" + std::to_string(b.port()));
    EXPECT_EQ(metadata(b.bootstrap()),
              "1@127.0.0.1:" + std::to_string(b.port()));
    std::string props = todd::test::read_file(b.dir() + "/server.properties");
    EXPECT_NE(
        props.find(
            "listeners=PLAINTEXT://127.0.0.1:" + std::to_string(b.port()) +
            ",CONTROLLER://127.0.0.1:" + std::to_string(b.controller_port()) +
            ",SSL://127.0.0.1:" + std::to_string(b.tls_port()) + "\n"),
        std::string::npos)
        << props;
    EXPECT_TRUE(fs::exists(b.dir() + "/data/meta.properties"));
}

TEST_F(KafkaBrokerHelper, TlsListenerTrustedOnlyThroughItsCa)
{
    KafkaBroker &b = *broker_;
    ASSERT_GT(b.tls_port(), 0);
    EXPECT_EQ(metadata(b.tls_bootstrap(), {{"security.protocol", "ssl"},
                                           {"ssl.ca.location", pki_.ca_cert}}),
              "1@127.0.0.1:" + std::to_string(b.tls_port()));
    // Another CA: the client refuses the broker's certificate.
    std::string r = metadata(
        b.tls_bootstrap(),
        {{"security.protocol", "ssl"}, {"ssl.ca.location", pki_.other_ca_cert}},
        2s);
    EXPECT_EQ(r.rfind("error ", 0), 0u) << r;
    EXPECT_NE(r.find("certificate verify failed"), std::string::npos) << r;
    // Plain text on the SSL port gets nowhere either.
    r = metadata(b.tls_bootstrap(), {}, 2s);
    EXPECT_EQ(r.rfind("error ", 0), 0u) << r;
}

TEST_F(KafkaBrokerHelper, RestartAndCrashKeepAcknowledgedRecords)
{
    KafkaBroker &b = *broker_;
    create_topic(b.bootstrap(), "todd.helper");
    produce(b.bootstrap(), "todd.helper", "before-restart");
    const int port = b.port(), tls_port = b.tls_port();
    const pid_t old_pid = b.pid();

    b.restart();
    std::cout << "[kafka] restart: start took " << seconds(b.last_start_time())
              << std::endl;
    EXPECT_EQ(b.port(), port);
    EXPECT_EQ(b.tls_port(), tls_port);
    EXPECT_NE(b.pid(), old_pid);
    EXPECT_EQ(consume(b.bootstrap(), "todd.helper", 1),
              std::vector<std::string>{"before-restart"});
    produce(b.bootstrap(), "todd.helper", "before-kill");

    b.kill();
    EXPECT_FALSE(b.running());
    EXPECT_EQ(b.pid(), 0);
    std::string r = metadata(b.bootstrap(), {}, 1s);
    EXPECT_EQ(r.rfind("error ", 0), 0u) << r;
    b.start();
    std::cout << "[kafka] start after SIGKILL took "
              << seconds(b.last_start_time()) << std::endl;
    EXPECT_EQ(b.port(), port);
    EXPECT_EQ(consume(b.bootstrap(), "todd.helper", 2),
              (std::vector<std::string>{"before-restart", "before-kill"}));
}

// Clients that start before the broker need its address first.
TEST(KafkaBrokerFixture, AddressKnownBeforeTheFirstStart)
{
    TODD_SKIP_WITHOUT_KAFKA();
    std::string dir;
    {
        KafkaBroker::Options o;
        o.start = false;
        KafkaBroker b(o);
        dir = b.dir();
        ASSERT_GT(b.port(), 0);
        EXPECT_FALSE(b.running());
        std::string r = metadata(b.bootstrap(), {}, 1s);
        EXPECT_EQ(r.rfind("error ", 0), 0u) << r;
        const int port = b.port();
        b.start();
        EXPECT_EQ(b.port(), port);
        EXPECT_EQ(metadata(b.bootstrap()), "1@" + b.bootstrap());
    }
    EXPECT_FALSE(fs::exists(dir)) << dir;
}

// --- the script alone -------------------------------------------------

todd::test::RunResult script(const std::vector<std::string> &args,
                             const std::vector<std::string> &env = {})
{
    std::vector<std::string> argv = {KafkaBroker::script()};
    argv.insert(argv.end(), args.begin(), args.end());
    return todd::test::run_capture(argv, 120s, env);
}

TEST(KafkaBrokerScript, RefusesBadInputWithAReason)
{
    struct Case {
        std::vector<std::string> args, env;
        std::string says;
    };
    todd::test::TempDir tmp("todd-kafka-args");
    const std::string d = tmp / "b";
    for (const Case &c : std::vector<Case>{
             {{}, {}, "Usage: kafka-broker COMMAND"},
             {{"bogus"}, {}, "unknown command 'bogus'"},
             {{"start"}, {}, "start: missing the directory"},
             {{"start", d, "--port", "http"}, {}, "bad port 'http'"},
             {{"start", d, "--port", "65536"}, {}, "bad port '65536'"},
             {{"start", d, "--port"}, {}, "--port needs a value"},
             {{"start", d, "--timeout", "0"}, {}, "bad --timeout '0'"},
             {{"start", d, "--ssl-port", "1"}, {}, "needs --ssl-ca"},
             {{"start", d, "--ssl-ca", "/nonexistent", "--ssl-cert", "/x",
               "--ssl-key", "/y"},
              {},
              "cannot read the TLS file /nonexistent"},
             {{"start", d, "--set", "novalue"}, {}, "--set wants KEY=VALUE"},
             {{"start", d, "--frobnicate", "1"}, {}, "unknown option"},
             {{"stop", tmp / "nonexistent"}, {}, "no such directory"},
             {{"wait", tmp.path()}, {}, "no broker was started in"},
             {{"classpath"},
              {"JAVA_HOME=" + tmp / "no-jdk"},
              "java not found at " + tmp / "no-jdk/bin/java"},
         }) {
        auto r = script(c.args, c.env);
        std::string shown;
        for (const auto &a : c.args)
            shown += " " + a;
        EXPECT_NE(r.exit_code, 0) << shown;
        EXPECT_NE(r.output.find(c.says), std::string::npos)
            << "kafka-broker" << shown << " said: " << r.output;
    }
    // Nothing was made for the refused starts.
    EXPECT_FALSE(fs::exists(d));
}

// A JVM cannot be handed a bound socket, so the script picks free ports and
// starts again on others when one was taken in between. A python3 first in
// PATH hands out a port that is already held, then defers to the real one.
TEST(KafkaBrokerScript, DetachedStartRetriesATakenPortThenStops)
{
    TODD_SKIP_WITHOUT_KAFKA();
    todd::test::TempDir tmp("todd-kafka-script");
    auto held = todd::test::DeadPort::listening(false);
    todd::test::write_executable(
        tmp / "bin/python3",
        "#!/bin/sh\n"
        "if [ ! -e '" +
            tmp / "handed-out" +
            "' ]; then\n"
            "  : > '" +
            tmp / "handed-out" + "'; echo " + held.port_str() +
            "\n"
            "  exit 0\nfi\nexec /usr/bin/python3 \"$@\"\n");
    const std::string path =
        "PATH=" + tmp / "bin" + ":" + std::string(std::getenv("PATH"));
    const std::string d = tmp / "b";

    auto r = script({"start", d}, {path});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("port " + held.port_str() + " was taken"),
              std::string::npos)
        << r.output;
    std::string ports = todd::test::read_file(d + "/ports");
    EXPECT_EQ(ports.find("=" + held.port_str() + "\n"), std::string::npos)
        << ports;
    pid_t pid = std::stoi(todd::test::read_trimmed(d + "/broker.pid"));
    EXPECT_EQ(::kill(pid, 0), 0);

    r = script({"wait", d, "--timeout", "30"});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    r = script({"start", d});
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.output.find("a broker already runs in"), std::string::npos)
        << r.output;

    r = script({"stop", d});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_FALSE(fs::exists(d + "/broker.pid"));
    EXPECT_TRUE(todd::test::eventually(
        [&] {
            return !fs::exists("/proc/" + std::to_string(pid) + "/cmdline") ||
                   todd::test::read_file_if_exists(
                       "/proc/" + std::to_string(pid) + "/cmdline")
                           .find(d) == std::string::npos;
        },
        10s));
}

} // namespace
