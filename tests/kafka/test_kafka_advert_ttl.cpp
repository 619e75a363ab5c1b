// SPDX-License-Identifier: Apache-2.0
// The advert time-to-live over Kafka. A broker keeps every record for the
// topic's retention, whatever its time-to-live: the plugin's subscribers
// drop the expired ones. So a real todd-agent's advert that no server
// consumed within its TTL (core::advert_ttl, 5 s) is still on the broker
// afterwards, and a server that comes later is handed only the agent's
// fresh advert, never the stale one.
#include "../signals/program.hpp"
#include "kafka_test_util.hpp"

#include <todd/core/comms.hpp>
#include <todd/core/log.hpp>

#include <librdkafka/rdkafka.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

using namespace kafkatest;
using sigtest::Program;

namespace {

[[maybe_unused]] auto *const env =
    ::testing::AddGlobalTestEnvironment(new todd::test::SharedKafkaBroker);

KafkaBroker &broker()
{
    return *todd::test::SharedKafkaBroker::get();
}

/** A record as a plain librdkafka consumer reads it off the broker. */
struct Record {
    std::string topic, destination, ttl_ms, payload;
    int32_t partition = -1;
    int64_t offset = -1, timestamp_ms = -1;
    bool headers_flagged = false; // a NUL after the destination in the key
};

/** Reads every record of the plugin's message topics (todd.messages.*)
 *  from the start, outside any of the plugin's consumer groups and without
 *  committing: what is really on the broker. */
class RawReader {
  public:
    explicit RawReader(const std::string &bootstrap)
    {
        rd_kafka_conf_t *c = rd_kafka_conf_new();
        char err[512];
        for (auto [k, v] : {std::pair{"bootstrap.servers", bootstrap.c_str()},
                            {"group.id", "todd-test-raw-reader"},
                            {"enable.auto.commit", "false"},
                            {"log_level", "3"}})
            if (rd_kafka_conf_set(c, k, v, err, sizeof err) != RD_KAFKA_CONF_OK)
                throw std::runtime_error(std::string(k) + ": " + err);
        rk_ = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof err);
        if (rk_ == nullptr) {
            rd_kafka_conf_destroy(c);
            throw std::runtime_error(std::string("rd_kafka_new: ") + err);
        }
    }
    ~RawReader()
    {
        rd_kafka_destroy_flags(rk_, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    }
    RawReader(const RawReader &) = delete;
    RawReader &operator=(const RawReader &) = delete;

    /** Read until a record for which pred holds (bounded); that record. */
    template <class P>
    std::optional<Record> wait_for(P pred, std::chrono::milliseconds limit)
    {
        const auto end = std::chrono::steady_clock::now() + limit;
        for (const auto &r : seen_)
            if (pred(r))
                return r;
        while (std::chrono::steady_clock::now() < end) {
            assign_new_partitions();
            rd_kafka_message_t *m = rd_kafka_consumer_poll(rk_, 100);
            if (m == nullptr)
                continue;
            if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
                seen_.push_back(record_of(m));
                if (pred(seen_.back())) {
                    rd_kafka_message_destroy(m);
                    return seen_.back();
                }
            }
            rd_kafka_message_destroy(m);
        }
        return std::nullopt;
    }

  private:
    // The topics appear when the plugin makes them: assign each new
    // partition from its first record.
    void assign_new_partitions()
    {
        const rd_kafka_metadata_t *md = nullptr;
        if (rd_kafka_metadata(rk_, 1, nullptr, &md, 1000) !=
            RD_KAFKA_RESP_ERR_NO_ERROR)
            return;
        bool added = false;
        for (int i = 0; i < md->topic_cnt; ++i) {
            const auto &t = md->topics[i];
            if (std::string(t.topic).rfind("todd.messages.", 0) != 0)
                continue;
            for (int p = 0; p < t.partition_cnt; ++p)
                if (assigned_.insert({t.topic, t.partitions[p].id}).second)
                    added = true;
        }
        rd_kafka_metadata_destroy(md);
        if (!added)
            return;
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(int(assigned_.size()));
        for (const auto &[topic, partition] : assigned_)
            rd_kafka_topic_partition_list_add(l, topic.c_str(), partition)
                ->offset = RD_KAFKA_OFFSET_BEGINNING;
        rd_kafka_assign(rk_, l);
        rd_kafka_topic_partition_list_destroy(l);
        seen_.clear(); // every assigned partition is read again from 0
    }
    static Record record_of(rd_kafka_message_t *m)
    {
        Record r;
        r.topic = rd_kafka_topic_name(m->rkt);
        r.partition = m->partition;
        r.offset = m->offset;
        r.timestamp_ms = rd_kafka_message_timestamp(m, nullptr);
        r.payload.assign(static_cast<const char *>(m->payload), m->len);
        rd_kafka_headers_t *hs = nullptr;
        rd_kafka_message_headers(m, &hs);
        const auto header = [&](const char *name) {
            const void *v = nullptr;
            size_t n = 0;
            if (hs == nullptr || rd_kafka_header_get_last(hs, name, &v, &n))
                return std::string();
            return std::string(static_cast<const char *>(v), n);
        };
        // The key is the destination, and a NUL after it when the record
        // has headers (docs/kafka.md).
        if (m->key != nullptr)
            r.destination.assign(static_cast<const char *>(m->key), m->key_len);
        r.headers_flagged =
            !r.destination.empty() && r.destination.back() == '\0';
        if (r.headers_flagged)
            r.destination.pop_back();
        r.ttl_ms = header("todd-ttl-ms");
        return r;
    }

    rd_kafka_t *rk_ = nullptr;
    std::set<std::pair<std::string, int32_t>> assigned_;
    std::vector<Record> seen_;
};

/** The advert of the agent at addr, as found on the broker. */
auto advert_of(const std::string &addr)
{
    return [addr](const Record &r) {
        return r.destination == todd::core::queue_agentadvert &&
               r.payload.find("\"" + addr + "\"") != std::string::npos;
    };
}

class KafkaAdvertTtl : public ::testing::Test {
  protected:
    void SetUp() override
    {
        TODD_SKIP_WITHOUT_KAFKA();
        ASSERT_NE(todd::test::SharedKafkaBroker::get(), nullptr)
            << todd::test::SharedKafkaBroker::error();
    }

    /** A todd-agent advertising `addr`, once at start (the next advert
     *  would be an hour later). */
    std::unique_ptr<Program> agent(const std::string &addr)
    {
        const std::string d = dir_.path() + "/" + addr;
        std::filesystem::create_directories(d + "/empty");
        return std::make_unique<Program>(std::vector<std::string>{
            TODD_AGENT_EXE, "--comms", "kafka", "--plugin-dir",
            KAFKA_PLUGIN_DIR, "--comms-opt",
            "bootstrap_servers=" + broker().bootstrap(), "--state-dir",
            d + "/state", "--opt-dir", d + "/opt", "--testlet-dir",
            d + "/empty", "--factcollector-dir", d + "/empty",
            "--ip-addr-override", addr, "--advert-interval", "3600"});
    }

    sigtest::TempDir dir_;
};

TEST_F(KafkaAdvertTtl, AStaleAdvertIsNeverDeliveredALaterConsumerGetsTheFresh)
{
    RawReader raw(broker().bootstrap());
    std::optional<Record> stale;
    {
        auto first = agent("127.0.0.2");
        stale = raw.wait_for(advert_of("127.0.0.2"), 60s);
        ASSERT_TRUE(stale) << "the first agent's advert is not on the broker\n"
                           << first->output();
        std::chrono::milliseconds took{};
        ASSERT_EQ(first->terminate(10s, &took), "exit 0") << first->output();
    }
    EXPECT_EQ(stale->ttl_ms, std::to_string(todd::core::advert_ttl.count()));
    EXPECT_TRUE(stale->headers_flagged)
        << "a record with headers must say so in its key";
    // Nobody consumed it while it was fresh. Let its TTL pass (measured
    // from the broker's timestamp of the record, the clock the plugin
    // judges by): it stays on the broker, but it is stale now.
    std::this_thread::sleep_until(
        std::chrono::system_clock::time_point(
            std::chrono::milliseconds(stale->timestamp_ms)) +
        todd::core::advert_ttl + 500ms);

    // A server-side consumer now: it reads the destination from its
    // start, so the stale advert comes first, and must be dropped.
    todd::log::set_level(todd::log::Level::debug);
    LogCapture log;
    std::mutex mu;
    std::condition_variable cv;
    std::vector<todd::msg::AgentAdvert> got;
    todd::core::Comms server(make(opts(broker().bootstrap())));
    auto sub = server.listen_for_agent([&](const todd::msg::AgentAdvert &a) {
        std::lock_guard lk(mu);
        got.push_back(a);
        cv.notify_all();
        return Verdict::ack;
    });
    EXPECT_TRUE(
        log.wait_for("'agentadvert': dropped a message that expired", 60s))
        << "the subscriber never dropped the stale advert\n"
        << log.text();
    auto second = agent("127.0.0.3");
    {
        std::unique_lock lk(mu);
        ASSERT_TRUE(cv.wait_for(lk, 60s, [&] { return !got.empty(); }))
            << second->output();
        EXPECT_EQ(got.front().default_addr, "127.0.0.3")
            << "the first advert handed over is the stale one";
    }
    // Both are on the broker, the stale one still there: it was read
    // (and dropped, above) before the fresh one was published.
    auto fresh = raw.wait_for(advert_of("127.0.0.3"), 30s);
    ASSERT_TRUE(fresh);
    std::cout << "stale advert: " << stale->topic << " [" << stale->partition
              << "] @" << stale->offset << "; fresh: " << fresh->topic << " ["
              << fresh->partition << "] @" << fresh->offset << "\n";
    EXPECT_EQ(fresh->topic, stale->topic);
    std::lock_guard lk(mu);
    for (const auto &a : got)
        EXPECT_NE(a.default_addr, "127.0.0.2") << "a stale advert delivered";
}

} // namespace
