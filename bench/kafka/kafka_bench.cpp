// SPDX-License-Identifier: Apache-2.0
// The benchmarks' shared part: see kafka_bench.hpp.
#include "kafka_bench.hpp"

#if __has_include(<kafka_broker.hpp>)
#include <kafka_broker.hpp>
#define KBENCH_PRIVATE_BROKER 1
#endif

#include <todd/core/log.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unistd.h>

namespace kbench {

using namespace std::chrono_literals;

namespace {

[[noreturn]] void fail(const std::string &what)
{
    throw std::runtime_error(what);
}

struct QueueDeleter {
    void operator()(rd_kafka_queue_t *q) const { rd_kafka_queue_destroy(q); }
};
struct EventDeleter {
    void operator()(rd_kafka_event_t *e) const { rd_kafka_event_destroy(e); }
};
using Event = std::unique_ptr<rd_kafka_event_t, EventDeleter>;
struct ListDeleter {
    void operator()(rd_kafka_topic_partition_list_t *l) const
    {
        rd_kafka_topic_partition_list_destroy(l);
    }
};
using PartitionList =
    std::unique_ptr<rd_kafka_topic_partition_list_t, ListDeleter>;

PartitionList one_partition(const std::string &topic, int32_t partition,
                            int64_t offset)
{
    PartitionList l(rd_kafka_topic_partition_list_new(1));
    rd_kafka_topic_partition_list_add(l.get(), topic.c_str(), partition)
        ->offset = offset;
    return l;
}

/** Issue one admin call (call(queue, options)) and wait for its result. */
template <class Call>
Event admin(rd_kafka_t *rk, rd_kafka_admin_op_t op, const char *what, Call call)
{
    std::unique_ptr<rd_kafka_queue_t, QueueDeleter> q(rd_kafka_queue_new(rk));
    rd_kafka_AdminOptions_t *o = rd_kafka_AdminOptions_new(rk, op);
    char err[256];
    rd_kafka_AdminOptions_set_request_timeout(o, 10000, err, sizeof err);
    call(q.get(), o);
    rd_kafka_AdminOptions_destroy(o);
    Event ev(rd_kafka_queue_poll(q.get(), 15000));
    if (!ev)
        fail(std::string(what) + ": no answer within 15 s");
    if (rd_kafka_event_error(ev.get()) != RD_KAFKA_RESP_ERR_NO_ERROR)
        fail(std::string(what) + ": " + rd_kafka_event_error_string(ev.get()));
    return ev;
}

// The topic is in the metadata with its partitions, each with a leader.
bool visible(rd_kafka_t *rk, const std::string &topic, int partitions)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
    const rd_kafka_metadata_t *md = nullptr;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, 5000);
    rd_kafka_topic_destroy(rkt);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        return false;
    bool ok = md->topic_cnt == 1 && md->topics[0].err == 0 &&
              md->topics[0].partition_cnt == partitions;
    for (int i = 0; ok && i < md->topics[0].partition_cnt; ++i)
        ok = md->topics[0].partitions[i].err == 0 &&
             md->topics[0].partitions[i].leader >= 0;
    rd_kafka_metadata_destroy(md);
    return ok;
}

void dr_cb(rd_kafka_t *, const rd_kafka_message_t *m, void *opaque)
{
    auto *r = static_cast<Reports *>(opaque);
    ++(m->err == RD_KAFKA_RESP_ERR_NO_ERROR ? r->ok : r->failed);
}

} // namespace

double now_s()
{
    return std::chrono::duration<double>(Clock::now().time_since_epoch())
        .count();
}

uint32_t destination_hash(const std::string &destination)
{
    uint32_t h = 2166136261u;
    for (unsigned char c : destination) {
        h ^= c;
        h *= 16777619u;
    }
    return h;
}

std::string topic_of(const std::string &prefix, const std::string &dest)
{
    return prefix + "messages." +
           std::to_string(destination_hash(dest) % uint32_t(kTopics));
}

int32_t home_of(const std::string &dest)
{
    return int32_t((destination_hash(dest) / uint32_t(kTopics)) %
                   uint32_t(kPartitions));
}

std::string group_of(const std::string &prefix, const std::string &dest)
{
    return prefix + "dest." + dest;
}

std::map<std::string, std::string> raw_properties(const std::string &bootstrap,
                                                  bool consumer,
                                                  const std::string &group)
{
    // plugins/kafka/settings.cpp's make_conf with the values below.
    std::map<std::string, std::string> p{
        {"bootstrap.servers", bootstrap},
        {"client.id", "todd"},
        {"security.protocol", "plaintext"},
        {"socket.connection.setup.timeout.ms", "10000"},
        {"reconnect.backoff.max.ms", "5000"},
        {"reconnect.backoff.ms", "100"},
    };
    if (!consumer) {
        p["enable.idempotence"] = "true";
        p["acks"] = "all";
        p["message.timeout.ms"] = "10000";
        p["linger.ms"] = "1";
    } else {
        p["enable.auto.commit"] = "true";
        p["enable.auto.offset.store"] = "false";
        p["auto.commit.interval.ms"] = "500";
        p["auto.offset.reset"] = "earliest";
        p["session.timeout.ms"] = "10000";
        p["heartbeat.interval.ms"] = "3333";
        p["max.poll.interval.ms"] = "300000";
        p["queued.min.messages"] = "100000";
        p["queued.max.messages.kbytes"] = "65536";
    }
    if (!group.empty())
        p["group.id"] = group;
    if (!debug_contexts().empty())
        p["debug"] = debug_contexts();
    return p;
}

std::string debug_contexts()
{
    const char *d = std::getenv("TODD_BENCH_KAFKA_DEBUG");
    return d != nullptr ? d : "";
}

todd::core::Options plugin_options(const std::string &bootstrap,
                                   const std::string &prefix)
{
    return {{"bootstrap_servers", bootstrap},
            {"topic_prefix", prefix},
            {"topics", std::to_string(kTopics)},
            {"partitions", std::to_string(kPartitions)},
            {"linger_ms", "1"},
            {"publish_timeout_ms", "10000"},
            {"commit_interval_ms", "500"},
            {"session_timeout_ms", "10000"},
            {"debug", debug_contexts()}};
}

std::shared_ptr<const todd::core::Plugin> kafka_plugin()
{
    static auto plugin =
        todd::core::PluginRegistry({KAFKA_PLUGIN_DIR}).load("kafka");
    return plugin;
}

namespace {
std::mutex failures_mu;
std::map<std::string, int> failures_seen;
} // namespace

std::map<std::string, int> false_failures()
{
    std::lock_guard g(failures_mu);
    return failures_seen;
}

std::unique_ptr<todd::core::Transport>
started_transport(const todd::core::Options &options,
                  std::chrono::milliseconds limit)
{
    using todd::core::LinkState;
    struct Wait {
        std::mutex m;
        std::condition_variable cv;
        LinkState state = LinkState::idle;
        std::string detail;
        int failures = 0;
        std::string first_failure;
    };
    auto w = std::make_shared<Wait>();
    auto t = todd::core::Transport::create(kafka_plugin(), options);
    t->on_state([w](LinkState s, int32_t, const std::string &detail) {
        std::lock_guard g(w->m);
        if (s == LinkState::failed && w->state != LinkState::connected &&
            w->failures++ == 0)
            w->first_failure = detail;
        w->state = s;
        w->detail = detail;
        w->cv.notify_all();
    });
    t->start();
    std::unique_lock lk(w->m);
    if (!w->cv.wait_for(lk, limit,
                        [&] { return w->state == LinkState::connected; }))
        fail("the plugin did not connect within " +
             std::to_string(limit.count()) + " ms" +
             (w->failures != 0 ? " (it failed: " + w->detail + ")" : ""));
    if (w->failures != 0) {
        std::lock_guard g(failures_mu);
        failures_seen[w->first_failure] += w->failures;
    }
    return t;
}

void HandleDeleter::operator()(rd_kafka_t *rk) const
{
    if (rd_kafka_type(rk) == RD_KAFKA_CONSUMER)
        rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

Handle make_handle(rd_kafka_type_t type,
                   const std::map<std::string, std::string> &props,
                   Reports *reports)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512];
    for (const auto &[k, v] : props)
        if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err) !=
            RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            fail("librdkafka refused " + k + "=" + v + ": " + err);
        }
    if (reports != nullptr) {
        rd_kafka_conf_set_opaque(conf, reports);
        rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    }
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof err);
    if (rk == nullptr) {
        rd_kafka_conf_destroy(conf);
        fail(std::string("rd_kafka_new: ") + err);
    }
    return Handle(rk);
}

RawProducer::RawProducer(const std::string &bootstrap)
    : rk(make_handle(RD_KAFKA_PRODUCER, raw_properties(bootstrap, false),
                     &reports))
{
}

void RawProducer::produce(const std::string &topic, int32_t partition,
                          const std::string &dest, const std::string &body)
{
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            rk.get(), RD_KAFKA_V_TOPIC(topic.c_str()),
            RD_KAFKA_V_PARTITION(partition),
            RD_KAFKA_V_KEY(dest.data(), dest.size()),
            RD_KAFKA_V_VALUE(const_cast<char *>(body.data()), body.size()),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            ++sent;
            return;
        }
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            fail(std::string("raw produce: ") + rd_kafka_err2str(err));
        rd_kafka_poll(rk.get(), 10); // reports make room
    }
}

void RawProducer::wait(uint64_t upto)
{
    const auto limit = Clock::now() + 30s;
    while (reports.ok + reports.failed < upto && Clock::now() < limit)
        rd_kafka_poll(rk.get(), 1000);
    if (reports.failed != 0)
        fail(std::to_string(reports.failed) + " raw produce(s) failed");
    if (reports.ok < upto)
        fail("raw delivery reports missing after 30 s");
}

Handle raw_consumer(const std::string &bootstrap, const std::string &group,
                    const std::string &topic)
{
    Handle rk =
        make_handle(RD_KAFKA_CONSUMER, raw_properties(bootstrap, true, group));
    rd_kafka_poll_set_consumer(rk.get());
    PartitionList l = one_partition(topic, RD_KAFKA_PARTITION_UA, 0);
    if (rd_kafka_resp_err_t e = rd_kafka_subscribe(rk.get(), l.get()))
        fail("raw subscribe " + topic + ": " + rd_kafka_err2str(e));
    return rk;
}

OffsetStore::OffsetStore(rd_kafka_t *rk, const std::string &topic)
    : rk_(rk), list_(one_partition(topic, 0, 0).release())
{
}

OffsetStore::~OffsetStore()
{
    rd_kafka_topic_partition_list_destroy(list_);
}

void OffsetStore::operator()(const rd_kafka_message_t *m)
{
    rd_kafka_topic_partition_t &e = list_->elems[0];
    e.partition = m->partition;
    e.offset = m->offset + 1;
    e.err = RD_KAFKA_RESP_ERR_NO_ERROR;
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(rk_, list_);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
        err = e.err;
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        fail(std::string("raw offsets_store: ") + rd_kafka_err2str(err));
}

Handle admin_handle(const std::string &bootstrap)
{
    return make_handle(RD_KAFKA_PRODUCER, raw_properties(bootstrap, false));
}

void create_topics(rd_kafka_t *rk, const std::vector<std::string> &names,
                   int partitions)
{
    std::vector<rd_kafka_NewTopic_t *> nts;
    char err[256];
    for (const auto &n : names)
        nts.push_back(
            rd_kafka_NewTopic_new(n.c_str(), partitions, -1, err, sizeof err));
    Event ev =
        admin(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS, "CreateTopics",
              [&](rd_kafka_queue_t *q, rd_kafka_AdminOptions_t *o) {
                  rd_kafka_CreateTopics(rk, nts.data(), nts.size(), o, q);
              });
    rd_kafka_NewTopic_destroy_array(nts.data(), nts.size());
    size_t n = 0;
    auto **rs = rd_kafka_CreateTopics_result_topics(
        rd_kafka_event_CreateTopics_result(ev.get()), &n);
    for (size_t i = 0; i < n; ++i) {
        auto e = rd_kafka_topic_result_error(rs[i]);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR &&
            e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
            fail(std::string("create topic ") +
                 rd_kafka_topic_result_name(rs[i]) + ": " +
                 rd_kafka_err2str(e));
    }
    // The broker answers before its metadata shows the topics; a consumer
    // subscribing in between is told they do not exist.
    const auto limit = Clock::now() + 10s;
    for (const auto &name : names)
        while (!visible(rk, name, partitions)) {
            if (Clock::now() > limit)
                fail("topic " + name +
                     " not in the metadata 10 s after "
                     "its creation");
            std::this_thread::sleep_for(10ms);
        }
}

void delete_topics(rd_kafka_t *rk, const std::vector<std::string> &names)
{
    std::vector<rd_kafka_DeleteTopic_t *> dts;
    for (const auto &n : names)
        dts.push_back(rd_kafka_DeleteTopic_new(n.c_str()));
    Event ev =
        admin(rk, RD_KAFKA_ADMIN_OP_DELETETOPICS, "DeleteTopics",
              [&](rd_kafka_queue_t *q, rd_kafka_AdminOptions_t *o) {
                  rd_kafka_DeleteTopics(rk, dts.data(), dts.size(), o, q);
              });
    rd_kafka_DeleteTopic_destroy_array(dts.data(), dts.size());
}

void delete_groups(rd_kafka_t *rk, const std::vector<std::string> &groups)
{
    // Batches: one request per coordinator, bounded in size.
    for (size_t at = 0; at < groups.size(); at += 500) {
        std::vector<rd_kafka_DeleteGroup_t *> dgs;
        for (size_t i = at; i < groups.size() && i < at + 500; ++i)
            dgs.push_back(rd_kafka_DeleteGroup_new(groups[i].c_str()));
        Event ev =
            admin(rk, RD_KAFKA_ADMIN_OP_DELETEGROUPS, "DeleteGroups",
                  [&](rd_kafka_queue_t *q, rd_kafka_AdminOptions_t *o) {
                      rd_kafka_DeleteGroups(rk, dgs.data(), dgs.size(), o, q);
                  });
        rd_kafka_DeleteGroup_destroy_array(dgs.data(), dgs.size());
    }
}

std::vector<std::string> list_groups(rd_kafka_t *rk)
{
    Event ev =
        admin(rk, RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPS, "ListConsumerGroups",
              [&](rd_kafka_queue_t *q, rd_kafka_AdminOptions_t *o) {
                  rd_kafka_ListConsumerGroups(rk, o, q);
              });
    size_t n = 0;
    auto **gs = rd_kafka_ListConsumerGroups_result_valid(
        rd_kafka_event_ListConsumerGroups_result(ev.get()), &n);
    std::vector<std::string> out;
    for (size_t i = 0; i < n; ++i)
        out.emplace_back(rd_kafka_ConsumerGroupListing_group_id(gs[i]));
    return out;
}

std::vector<std::string> list_topics(rd_kafka_t *rk)
{
    const rd_kafka_metadata_t *md = nullptr;
    if (rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, nullptr, &md, 10000))
        fail(std::string("metadata: ") + rd_kafka_err2str(e));
    std::vector<std::string> out;
    for (int i = 0; i < md->topic_cnt; ++i)
        out.emplace_back(md->topics[i].topic);
    rd_kafka_metadata_destroy(md);
    return out;
}

std::vector<std::string> plugin_topics(const std::string &prefix)
{
    std::vector<std::string> out;
    for (int i = 0; i < kTopics; ++i)
        out.push_back(prefix + "messages." + std::to_string(i));
    return out;
}

std::vector<int64_t> end_offsets(rd_kafka_t *rk, const std::string &topic,
                                 int partitions)
{
    std::vector<int64_t> out;
    for (int p = 0; p < partitions; ++p) {
        int64_t lo = 0, hi = 0;
        if (rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(
                rk, topic.c_str(), p, &lo, &hi, 10000))
            fail("watermarks of " + topic + ": " + rd_kafka_err2str(e));
        out.push_back(hi);
    }
    return out;
}

int64_t committed(rd_kafka_t *group_handle, const std::string &topic,
                  int32_t partition)
{
    PartitionList l = one_partition(topic, partition, RD_KAFKA_OFFSET_INVALID);
    if (rd_kafka_resp_err_t e = rd_kafka_committed(group_handle, l.get(), 5000))
        fail("committed offsets of " + topic + ": " + rd_kafka_err2str(e));
    return l->elems[0].offset;
}

std::optional<Broker> open_broker(std::string &why)
{
    if (const char *b = std::getenv("TODD_BENCH_KAFKA_BOOTSTRAP");
        b != nullptr && *b != '\0') {
        std::string s = b;
        auto colon = s.rfind(':');
        int port =
            colon == std::string::npos ? 0 : std::atoi(s.c_str() + colon + 1);
        if (port <= 0 || port > 65535)
            fail("TODD_BENCH_KAFKA_BOOTSTRAP='" + s +
                 "' is not host:port (e.g. 127.0.0.1:9092)");
        return Broker{s, port, 0, nullptr};
    }
#ifdef KBENCH_PRIVATE_BROKER
    if (auto w = todd::test::KafkaBroker::unavailable()) {
        why = *w;
        return std::nullopt;
    }
    auto broker = std::make_shared<todd::test::KafkaBroker>();
    return Broker{broker->bootstrap(), broker->port(), broker->pid(), broker};
#else
    why = "no private broker in this tree (tests/common/kafka_broker.hpp): "
          "set TODD_BENCH_KAFKA_BOOTSTRAP=host:port";
    return std::nullopt;
#endif
}

std::optional<Broker> broker_for(const char *program, int &status)
{
    todd::log::set_level(debug_contexts().empty() ? todd::log::Level::warn
                                                  : todd::log::Level::trace);
    std::string why;
    std::optional<Broker> broker;
    try {
        broker = open_broker(why);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "%s: the broker: %s\n", program, e.what());
        status = 2;
        return std::nullopt;
    }
    if (!broker) {
        const bool required = kafka_required();
        std::fprintf(stderr, "%s: %s: %s\n", program,
                     required ? "no broker (TODD_REQUIRE_KAFKA is set)"
                              : "skipped",
                     why.c_str());
        status = required ? 2 : 77;
    }
    return broker;
}

std::string loadavg()
{
    std::ifstream f("/proc/loadavg");
    std::string a, b, c;
    f >> a >> b >> c;
    return a + " " + b + " " + c;
}

bool kafka_required()
{
    const char *v = std::getenv("TODD_REQUIRE_KAFKA");
    return v != nullptr && *v != '\0' && std::string(v) != "0";
}

std::string fresh_prefix(const std::string &tag)
{
    static std::atomic<int> n{0};
    return tag + std::to_string(::getpid()) + "-" + std::to_string(n++) + ".";
}

} // namespace kbench
