// SPDX-License-Identifier: Apache-2.0
// Subscriptions: each is one consumer handle in the destination's own
// consumer group, subscribed to the destination's message topic. Its thread
// skips the records of other destinations and expired ones, delivers the
// rest one at a time, and stores the offset after the host's verdict (the
// thread commits stored offsets once nothing more came for 5 ms, one
// commit request at a time; the handle every commit_interval_ms and when
// it closes). A requeue seeks the partition back to the message, so it
// comes again, flagged, before anything after it.
#include "transport.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace todd_kafka {

using todd::comms::sdk::Error;

namespace {

// The subscription whose thread is serving librdkafka's callbacks (they run
// inside rd_kafka_consumer_poll, on that thread).
thread_local KafkaTransport::Sub *tl_polling = nullptr;

// A commit's result (ours, or an auto-commit's): the next may go.
void commit_cb(rd_kafka_t *, rd_kafka_resp_err_t,
               rd_kafka_topic_partition_list_t *, void *)
{
    if (tl_polling != nullptr)
        tl_polling->commit_in_flight = false;
}

// How long subscribe waits for the first assignment (see subscribe). Short:
// a program's loop that moves a subscription also sends its adverts.
constexpr std::chrono::milliseconds join_wait{300};

struct ListDeleter {
    void operator()(rd_kafka_topic_partition_list_t *l) const
    {
        rd_kafka_topic_partition_list_destroy(l);
    }
};
using PartitionList =
    std::unique_ptr<rd_kafka_topic_partition_list_t, ListDeleter>;

PartitionList one_partition(const char *topic, int32_t partition,
                            int64_t offset)
{
    PartitionList l(rd_kafka_topic_partition_list_new(1));
    rd_kafka_topic_partition_list_add(l.get(), topic, partition)->offset =
        offset;
    return l;
}

// The last value of header name, or false.
bool header(rd_kafka_headers_t *hs, const char *name, std::string &out)
{
    const void *v = nullptr;
    size_t n = 0;
    if (hs == nullptr || rd_kafka_header_get_last(hs, name, &v, &n) !=
                             RD_KAFKA_RESP_ERR_NO_ERROR)
        return false;
    out.assign(v != nullptr ? static_cast<const char *>(v) : "", n);
    return true;
}

int64_t wall_ms()
{
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

} // namespace

void KafkaTransport::subscribe(const char *destination, uint64_t cookie,
                               const todd_comms_subscribe_opts *)
{
    std::lock_guard<std::mutex> g(control_mu_);
    if (stopped_)
        throw Error(TODD_COMMS_E_STATE, "subscribe after stop");
    if (subs_.count(cookie) != 0)
        throw Error(TODD_COMMS_E_INVAL,
                    "cookie " + std::to_string(cookie) + " is in use");
    auto s = std::make_unique<Sub>();
    s->destination = destination;
    s->group = s_.group_of(destination);
    s->topic = s_.topic_name(topic_index(destination));
    s->cookie = cookie;
    Sub &sub = *s;
    subs_.emplace(cookie, std::move(s));
    if (!started_)
        return; // launched by start
    try {
        launch(sub);
    } catch (...) {
        subs_.erase(cookie);
        throw;
    }
    // While the cluster answers, return once the group gave this member
    // its partitions, or after join_wait: by then its join is under way, so
    // a publisher that counts the destination's members afterwards finds
    // the group rebalancing and waits for it (route). Joining a group with
    // members takes up to their heartbeat interval.
    if (connected_) {
        std::unique_lock<std::mutex> lk(svc_mu_);
        svc_cv_.wait_for(lk, join_wait,
                         [&] { return sub.live || stopping_.load(); });
    }
}

void KafkaTransport::unsubscribe(uint64_t cookie)
{
    std::lock_guard<std::mutex> g(control_mu_);
    auto it = subs_.find(cookie);
    if (it == subs_.end())
        throw Error(TODD_COMMS_E_INVAL,
                    "no subscription with cookie " + std::to_string(cookie));
    finish(*it->second);
    subs_.erase(it);
}

void KafkaTransport::launch(Sub &s)
{
    ConfPtr conf = make_conf(s_, Role::consumer);
    rd_kafka_conf_set_offset_commit_cb(conf.get(), commit_cb);
    char err[512];
    if (rd_kafka_conf_set(conf.get(), "group.id", s.group.c_str(), err,
                          sizeof err) != RD_KAFKA_CONF_OK)
        throw Error(TODD_COMMS_E_INVAL, "destination '" + s.destination +
                                            "' makes no group id: " + err);
    s.rk = new_handle(RD_KAFKA_CONSUMER, std::move(conf));
    rd_kafka_poll_set_consumer(s.rk);
    s.thread = std::thread([this, &s] { consume(s); });
}

void KafkaTransport::finish(Sub &s)
{
    s.stop = true;
    {
        std::lock_guard<std::mutex> g(svc_mu_);
        svc_cv_.notify_all();
    }
    if (s.thread.joinable())
        s.thread.join();
    if (s.rk == nullptr)
        return;
    // With the cluster up, close commits what was settled and leaves the
    // group at once (the others take over the partitions now, not after
    // session_timeout_ms). Without it, close would wait for a coordinator
    // that does not answer: skip it.
    if (connected_) {
        rd_kafka_consumer_close(s.rk);
        rd_kafka_destroy(s.rk);
    } else {
        rd_kafka_destroy_flags(s.rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    }
    s.rk = nullptr;
}

void KafkaTransport::consume(Sub &s)
{
    {
        // The topic may not exist until the service thread made it.
        std::unique_lock<std::mutex> lk(svc_mu_);
        svc_cv_.wait(lk, [&] { return ready_ || stopping_ || s.stop; });
        if (!ready_)
            return;
    }
    PartitionList topics =
        one_partition(s.topic.c_str(), RD_KAFKA_PARTITION_UA, 0);
    if (rd_kafka_resp_err_t err = rd_kafka_subscribe(s.rk, topics.get())) {
        host().logf(TODD_COMMS_LOG_ERROR, "subscribe '%s' (topic %s): %s",
                    s.destination.c_str(), s.topic.c_str(),
                    rd_kafka_err2str(err));
        return;
    }
    // Settled offsets are committed once nothing more came for idle_commit,
    // rather than at the next auto-commit (up to commit_interval_ms later),
    // so that a stream's end is committed at once; not when the queue is
    // empty only until the next fetch arrives (commit requests in the middle
    // of a stream slow the broker's fetches down), and one commit request at
    // a time. A result that never comes (the cluster went away) holds the
    // next commit back for commit_interval_ms at most.
    constexpr int idle_commit_ms = 5;
    PartitionList store = one_partition(s.topic.c_str(), 0, 0);
    s.store = store.get();
    tl_polling = &s;
    Clock::time_point commit_sent;
    while (!s.stop) {
        if (!s.live) {
            rd_kafka_topic_partition_list_t *a = nullptr;
            if (rd_kafka_assignment(s.rk, &a) == RD_KAFKA_RESP_ERR_NO_ERROR &&
                a != nullptr && a->cnt > 0)
                mark_live(s);
            if (a != nullptr)
                rd_kafka_topic_partition_list_destroy(a);
        }
        if (s.commit_in_flight &&
            Clock::now() - commit_sent >= s_.commit_interval)
            s.commit_in_flight = false;
        const int wait_ms = s.uncommitted ? idle_commit_ms : s.live ? 100 : 10;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(s.rk, wait_ms);
        if (m == nullptr) {
            if (s.uncommitted && !s.commit_in_flight) {
                rd_kafka_commit(s.rk, nullptr, 1); // async
                s.uncommitted = false;
                s.commit_in_flight = true;
                commit_sent = Clock::now();
            }
            continue;
        }
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR)
            on_error(true, m->err, rd_kafka_message_errstr(m));
        else
            handle(s, m);
        rd_kafka_message_destroy(m);
    }
    s.store = nullptr;
}

void KafkaTransport::mark_live(Sub &s)
{
    std::lock_guard<std::mutex> g(svc_mu_);
    if (s.live)
        return;
    s.live = true;
    svc_cv_.notify_all();
}

void KafkaTransport::handle(Sub &s, rd_kafka_message_t *m)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    auto settle = [&] {
        rd_kafka_topic_partition_t &e = s.store->elems[0];
        e.partition = m->partition;
        e.offset = m->offset + 1;
        e.err = RD_KAFKA_RESP_ERR_NO_ERROR;
        rd_kafka_resp_err_t err = rd_kafka_offsets_store(s.rk, s.store);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
            err = e.err;
        // Not assigned any more (a rebalance): its new owner delivers it
        // again; at-least-once allows that.
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
            host().logf(TODD_COMMS_LOG_DEBUG, "offset of %s [%d] @%lld: %s",
                        topic, int(m->partition), (long long)m->offset,
                        rd_kafka_err2str(err));
        s.requeued.erase({m->partition, m->offset});
        s.uncommitted = true;
    };
    // The key is the destination, followed by a NUL when the record has
    // headers: another destination's record on the shared topic is
    // skipped, and a plain one delivered, without asking for headers.
    const size_t n = s.destination.size();
    const bool has_headers =
        m->key_len == n + 1 && static_cast<const char *>(m->key)[n] == '\0';
    if (m->key == nullptr || (m->key_len != n && !has_headers) ||
        std::memcmp(m->key, s.destination.data(), n) != 0) {
        settle();
        return;
    }
    rd_kafka_headers_t *hs = nullptr;
    if (has_headers &&
        rd_kafka_message_headers(m, &hs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        hs = nullptr;
    std::string ttl, ct;
    if (header(hs, "todd-ttl-ms", ttl)) {
        rd_kafka_timestamp_type_t type;
        int64_t ts = rd_kafka_message_timestamp(m, &type);
        long long t = std::atoll(ttl.c_str());
        if (ts > 0 && t > 0 && wall_ms() >= ts + t) {
            host().logf(TODD_COMMS_LOG_DEBUG,
                        "'%s': dropped a message that expired %lld ms ago",
                        s.destination.c_str(), (long long)(wall_ms() - ts - t));
            settle();
            return;
        }
    }
    const bool has_ct = header(hs, "content-type", ct);
    todd_comms_message msg{};
    msg.struct_size = sizeof msg;
    msg.flags = s.requeued.count({m->partition, m->offset}) != 0
                    ? TODD_COMMS_MSG_REDELIVERED
                    : 0u;
    msg.destination = s.destination.c_str();
    msg.payload = static_cast<const uint8_t *>(m->payload);
    msg.payload_len = m->len;
    msg.content_type = has_ct ? ct.c_str() : default_content_type;
    int32_t verdict = host().deliver(s.cookie, msg);
    if (verdict != TODD_COMMS_VERDICT_REQUEUE) {
        settle(); // ACK, or REJECT: gone for good either way
        return;
    }
    s.requeued.insert({m->partition, m->offset});
    // Back to this message: the fetched records after it are dropped and
    // fetched again, so it is the next one of its partition.
    auto l = one_partition(topic, m->partition, m->offset);
    if (rd_kafka_error_t *e = rd_kafka_seek_partitions(s.rk, l.get(), 2000)) {
        host().logf(TODD_COMMS_LOG_WARN, "requeue on '%s' (seek): %s",
                    s.destination.c_str(), rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
}

} // namespace todd_kafka
