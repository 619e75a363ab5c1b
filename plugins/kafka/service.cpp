// SPDX-License-Identifier: Apache-2.0
// The service thread: it tells when the cluster answers (a metadata
// request), makes the message topics, reads their partition counts, and
// keeps the publishers' routes: for each destination they send to, which
// partitions its subscribers hold (DescribeConsumerGroups, batched).
#include "transport.hpp"

#include <algorithm>
#include <cstring>

namespace todd_kafka {

using todd::comms::sdk::Error;

namespace {

// Each blocking call of the service thread is bounded by this, so that
// stop never waits longer for it.
constexpr int call_ms = 1000;

struct QueueDeleter {
    void operator()(rd_kafka_queue_t *q) const { rd_kafka_queue_destroy(q); }
};
struct EventDeleter {
    void operator()(rd_kafka_event_t *e) const { rd_kafka_event_destroy(e); }
};
struct OptionsDeleter {
    void operator()(rd_kafka_AdminOptions_t *o) const
    {
        rd_kafka_AdminOptions_destroy(o);
    }
};
using Queue = std::unique_ptr<rd_kafka_queue_t, QueueDeleter>;
using Event = std::unique_ptr<rd_kafka_event_t, EventDeleter>;
using AdminOptions = std::unique_ptr<rd_kafka_AdminOptions_t, OptionsDeleter>;

AdminOptions admin_options(rd_kafka_t *rk, rd_kafka_admin_op_t op)
{
    AdminOptions o(rd_kafka_AdminOptions_new(rk, op));
    char err[256];
    rd_kafka_AdminOptions_set_request_timeout(o.get(), call_ms, err,
                                              sizeof err);
    return o;
}

// The result event of an admin call on q, waiting in slices so that a stop
// is noticed; null on timeout or stop.
Event wait_result(rd_kafka_queue_t *q, const std::atomic<bool> &stopping,
                  int limit_ms)
{
    for (int waited = 0; waited < limit_ms && !stopping; waited += 100)
        if (rd_kafka_event_t *e = rd_kafka_queue_poll(q, 100))
            return Event(e);
    return nullptr;
}

} // namespace

int KafkaTransport::topic_index(const std::string &destination) const
{
    return static_cast<int>(destination_hash(destination) %
                            static_cast<uint32_t>(s_.topics));
}

void KafkaTransport::service_loop()
{
    auto backoff = std::chrono::milliseconds(100);
    while (!stopping_) {
        if (!connected_) {
            if (probe() && (ready_ || prepare_topics())) {
                backoff = std::chrono::milliseconds(100);
                {
                    std::lock_guard<std::mutex> g(svc_mu_);
                    ready_ = true;
                    reprobe_ = false;
                    connected_ = true;
                    svc_cv_.notify_all();
                }
                report(TODD_COMMS_STATE_CONNECTED, TODD_COMMS_OK, "");
            } else {
                std::unique_lock<std::mutex> lk(svc_mu_);
                svc_cv_.wait_for(lk, backoff, [&] { return stopping_.load(); });
                backoff = std::min(backoff * 2, s_.reconnect_max);
                continue;
            }
        }
        refresh_routes();
        std::unique_lock<std::mutex> lk(svc_mu_);
        svc_cv_.wait_for(lk, std::chrono::seconds(1), [&] {
            return stopping_ || reprobe_ || !wanted_.empty();
        });
        if (reprobe_)
            connected_ = false;
    }
    if (describe_q_ != nullptr) {
        rd_kafka_queue_destroy(describe_q_); // before the producer is
        describe_q_ = nullptr;
    }
}

bool KafkaTransport::probe()
{
    const rd_kafka_metadata_t *md = nullptr;
    rd_kafka_resp_err_t err =
        rd_kafka_metadata(producer_, 0, nullptr, &md, call_ms);
    const bool any = err == RD_KAFKA_RESP_ERR_NO_ERROR && md->broker_cnt > 0;
    if (md != nullptr)
        rd_kafka_metadata_destroy(md);
    std::string why;
    {
        std::lock_guard<std::mutex> g(state_mu_);
        why = last_error_.empty() ? rd_kafka_err2str(err) : last_error_;
    }
    // Once per outage at warning level, then quietly until it answers.
    if (!any && !unreachable_logged_) {
        std::string servers;
        for (const auto &b : s_.bootstrap)
            servers += (servers.empty() ? "" : ",") + b;
        host().logf(TODD_COMMS_LOG_WARN,
                    "Kafka cluster at %s not answering (%s); retrying",
                    servers.c_str(), why.c_str());
        unreachable_logged_ = true;
    } else if (!any) {
        host().logf(TODD_COMMS_LOG_DEBUG, "cluster not answering: %s",
                    why.c_str());
    } else if (unreachable_logged_) {
        host().log(TODD_COMMS_LOG_INFO, "Kafka cluster answering again");
        unreachable_logged_ = false;
    }
    return any;
}

bool KafkaTransport::prepare_topics()
{
    if (s_.create_topics) {
        std::vector<rd_kafka_NewTopic_t *> nts;
        char err[256];
        const std::string retention = std::to_string(s_.retention_ms);
        for (int i = 0; i < s_.topics; ++i) {
            rd_kafka_NewTopic_t *nt =
                rd_kafka_NewTopic_new(s_.topic_name(i).c_str(), s_.partitions,
                                      s_.replication_factor, err, sizeof err);
            if (nt == nullptr) {
                for (auto *t : nts)
                    rd_kafka_NewTopic_destroy(t);
                report(TODD_COMMS_STATE_FAILED, TODD_COMMS_E_CONFIG, err);
                return false;
            }
            rd_kafka_NewTopic_set_config(nt, "retention.ms", retention.c_str());
            nts.push_back(nt);
        }
        Queue q(rd_kafka_queue_new(producer_));
        auto opts = admin_options(producer_, RD_KAFKA_ADMIN_OP_CREATETOPICS);
        rd_kafka_CreateTopics(producer_, nts.data(), nts.size(), opts.get(),
                              q.get());
        rd_kafka_NewTopic_destroy_array(nts.data(), nts.size());
        Event ev = wait_result(q.get(), stopping_, 5000);
        if (!ev)
            return false;
        if (rd_kafka_event_error(ev.get()) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            host().logf(TODD_COMMS_LOG_WARN, "creating the topics: %s",
                        rd_kafka_event_error_string(ev.get()));
            return false;
        }
        size_t n = 0;
        const rd_kafka_topic_result_t **rs =
            rd_kafka_CreateTopics_result_topics(
                rd_kafka_event_CreateTopics_result(ev.get()), &n);
        for (size_t i = 0; i < n; ++i) {
            rd_kafka_resp_err_t e = rd_kafka_topic_result_error(rs[i]);
            if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
                host().logf(TODD_COMMS_LOG_INFO, "created topic %s",
                            rd_kafka_topic_result_name(rs[i]));
            else if (e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                const char *m = rd_kafka_topic_result_error_string(rs[i]);
                report(
                    TODD_COMMS_STATE_FAILED,
                    e == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED ||
                            e == RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED
                        ? TODD_COMMS_E_AUTH
                        : TODD_COMMS_E_PROTOCOL,
                    std::string("cannot create topic ") +
                        rd_kafka_topic_result_name(rs[i]) + ": " +
                        (m != nullptr ? m : rd_kafka_err2str(e)));
                return false;
            }
        }
    }
    // The real partition counts: an operator may have made the topics
    // with others, and every peer must agree on them.
    std::vector<Topic> topics;
    for (int i = 0; i < s_.topics; ++i) {
        Topic t{s_.topic_name(i), 0};
        rd_kafka_topic_t *rkt =
            rd_kafka_topic_new(producer_, t.name.c_str(), nullptr);
        const rd_kafka_metadata_t *md = nullptr;
        rd_kafka_resp_err_t err =
            rd_kafka_metadata(producer_, 0, rkt, &md, call_ms);
        rd_kafka_topic_destroy(rkt);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
            return false;
        rd_kafka_resp_err_t terr =
            md->topic_cnt == 1 ? md->topics[0].err
                               : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
        if (terr == RD_KAFKA_RESP_ERR_NO_ERROR)
            t.partitions = md->topics[0].partition_cnt;
        rd_kafka_metadata_destroy(md);
        if ((terr == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
             terr == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE ||
             t.partitions <= 0) &&
            s_.create_topics) {
            // Just created: the broker's metadata may not list it for a
            // moment yet. Not a configuration error: ask again.
            host().logf(TODD_COMMS_LOG_DEBUG, "topic %s not listed yet (%s)",
                        t.name.c_str(), rd_kafka_err2str(terr));
            return false;
        }
        if (terr != RD_KAFKA_RESP_ERR_NO_ERROR || t.partitions <= 0) {
            report(TODD_COMMS_STATE_FAILED, TODD_COMMS_E_CONFIG,
                   "topic " + t.name + " is not usable (" +
                       rd_kafka_err2str(terr) +
                       "): create it, or set create_topics = true");
            return false;
        }
        topics.push_back(std::move(t));
    }
    std::lock_guard<std::mutex> g(svc_mu_);
    topics_ = std::move(topics);
    return true;
}

bool KafkaTransport::wait_ready(Clock::time_point deadline)
{
    std::unique_lock<std::mutex> lk(svc_mu_);
    return svc_cv_.wait_until(lk, deadline,
                              [&] { return ready_ || stopping_; }) &&
           ready_ && !stopping_;
}

std::pair<const KafkaTransport::Topic *, int32_t>
KafkaTransport::route(const std::string &destination,
                      Clock::time_point deadline)
{
    std::unique_lock<std::mutex> lk(svc_mu_);
    const Topic *topic =
        &topics_[static_cast<size_t>(topic_index(destination))];
    const auto now = Clock::now();
    auto it = routes_.find(destination);
    if (it == routes_.end()) {
        // First message to it: ask who subscribes, briefly. Without an
        // answer, its home partition (held messages wait there).
        wanted_.insert(destination);
        svc_cv_.notify_all();
        const auto limit = std::min(deadline, now + std::chrono::seconds(2));
        svc_cv_.wait_until(lk, limit, [&] {
            return stopping_ || routes_.count(destination) != 0;
        });
        it = routes_.find(destination);
        if (it == routes_.end())
            return {topic, static_cast<int32_t>(home(destination, *topic))};
    } else if (now - it->second.fetched > s_.route_refresh &&
               asked_.count(destination) == 0) {
        wanted_.insert(destination);
        svc_cv_.notify_all();
    }
    Route &r = it->second;
    r.used = now;
    return {topic, r.partitions[r.next++ % r.partitions.size()]};
}

uint32_t KafkaTransport::home(const std::string &destination,
                              const Topic &t) const
{
    return (destination_hash(destination) / static_cast<uint32_t>(s_.topics)) %
           static_cast<uint32_t>(t.partitions);
}

// librdkafka 2.0.2 aborts the process (rd_kafka_enq_once_del_source_return:
// "Assertion `eonce->refcnt > 0' failed", confluentinc/librdkafka#4605) when
// a coordinator-targeted admin request such as DescribeConsumerGroups
// reaches its timeout while it still waits for its coordinator, as it does
// while the broker is away: when the coordinator is up again, the request
// is sent with state its timeout already freed. So a describe is asked for
// only while the cluster answers, with the longest timeout librdkafka
// allows, and it is never given up: at most one is under way, and the
// next one waits for its answer. Only an outage longer than this timeout
// with a describe pending can still meet the bug.
constexpr int describe_timeout_ms = 3600000;

void KafkaTransport::refresh_routes()
{
    if (describe_q_ == nullptr) {
        std::lock_guard<std::mutex> g(svc_mu_);
        // Forget routes nobody used for a while: the cache is bounded by
        // the destinations in use.
        const auto now = Clock::now();
        for (auto it = routes_.begin(); it != routes_.end();)
            it = now - it->second.used > 30 * s_.route_refresh
                     ? routes_.erase(it)
                     : std::next(it);
        // For each destination asked for: its group and home partition.
        for (auto it = wanted_.begin();
             it != wanted_.end() && describing_.size() < 1000;
             it = wanted_.erase(it)) {
            const Topic &t = topics_[static_cast<size_t>(topic_index(*it))];
            describing_.push_back({*it,
                                   s_.group_of(*it),
                                   t.partitions,
                                   static_cast<int32_t>(home(*it, t)),
                                   {}});
            asked_.insert(*it);
        }
    }
    if (describing_.empty())
        return;
    const bool first_wait = describe_q_ == nullptr;
    if (first_wait) {
        std::vector<const char *> ptrs;
        for (auto &a : describing_)
            ptrs.push_back(a.group.c_str());
        describe_q_ = rd_kafka_queue_new(producer_);
        AdminOptions opts(rd_kafka_AdminOptions_new(
            producer_, RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS));
        char err[256];
        rd_kafka_AdminOptions_set_request_timeout(
            opts.get(), describe_timeout_ms, err, sizeof err);
        rd_kafka_DescribeConsumerGroups(producer_, ptrs.data(), ptrs.size(),
                                        opts.get(), describe_q_);
    }
    Event ev = wait_result(describe_q_, stopping_, call_ms + 500);
    if (!ev) {
        // Still under way: the destinations without a route use their
        // home partition meanwhile; the answer is read on a later turn.
        if (first_wait)
            apply_routes(describing_, false);
        return;
    }
    rd_kafka_queue_destroy(describe_q_);
    describe_q_ = nullptr;
    std::map<std::string, Ask *> by_group;
    for (auto &a : describing_)
        by_group[a.group] = &a;
    const bool answered =
        rd_kafka_event_error(ev.get()) == RD_KAFKA_RESP_ERR_NO_ERROR;
    if (answered) {
        size_t n = 0;
        auto **gs = rd_kafka_DescribeConsumerGroups_result_groups(
            rd_kafka_event_DescribeConsumerGroups_result(ev.get()), &n);
        for (size_t i = 0; i < n; ++i) {
            auto it = by_group.find(
                rd_kafka_ConsumerGroupDescription_group_id(gs[i]));
            if (it == by_group.end() ||
                rd_kafka_ConsumerGroupDescription_error(gs[i]) != nullptr)
                continue;
            Ask &a = *it->second;
            const auto state = rd_kafka_ConsumerGroupDescription_state(gs[i]);
            a.rebalancing =
                state == RD_KAFKA_CONSUMER_GROUP_STATE_PREPARING_REBALANCE ||
                state == RD_KAFKA_CONSUMER_GROUP_STATE_COMPLETING_REBALANCE;
            for (size_t k = 0;
                 k < rd_kafka_ConsumerGroupDescription_member_count(gs[i]);
                 ++k) {
                auto *m = rd_kafka_ConsumerGroupDescription_member(gs[i], k);
                auto *as = rd_kafka_MemberDescription_assignment(m);
                auto *l = as != nullptr
                              ? rd_kafka_MemberAssignment_partitions(as)
                              : nullptr;
                // One partition per member: the first at or after the
                // destination's home, so that destinations spread.
                int32_t best = -1, best_d = 0;
                for (int j = 0; l != nullptr && j < l->cnt; ++j) {
                    int32_t p = l->elems[j].partition;
                    int32_t d = (p - a.home + a.partitions) % a.partitions;
                    if (best < 0 || d < best_d)
                        best = p, best_d = d;
                }
                if (best >= 0)
                    a.found.push_back(best);
            }
        }
    }
    apply_routes(describing_, true);
    // A group mid-rebalance has members without partitions yet: ask again
    // shortly, so the route soon counts every member.
    std::vector<std::string> again;
    for (auto &a : describing_)
        if (a.rebalancing)
            again.push_back(a.destination);
    describing_.clear();
    if (!again.empty()) {
        std::unique_lock<std::mutex> lk(svc_mu_);
        svc_cv_.wait_for(lk, std::chrono::milliseconds(50),
                         [&] { return stopping_.load(); });
        wanted_.insert(again.begin(), again.end());
    }
}

void KafkaTransport::apply_routes(std::vector<Ask> &asks, bool answered)
{
    std::lock_guard<std::mutex> g(svc_mu_);
    const auto now = Clock::now();
    for (auto &a : asks) {
        if (!answered && routes_.count(a.destination) != 0)
            continue; // the route it had stays until the answer
        // A first publisher waits (briefly, in route) for a settled group
        // rather than route by a half-made assignment.
        if (a.rebalancing && routes_.count(a.destination) == 0) {
            asked_.erase(a.destination);
            continue;
        }
        std::vector<int32_t> found = a.found;
        std::sort(found.begin(), found.end());
        found.erase(std::unique(found.begin(), found.end()), found.end());
        if (found.empty())
            found.push_back(a.home);
        Route &r = routes_[a.destination];
        r.partitions = std::move(found);
        r.fetched = now;
        if (r.used == Clock::time_point())
            r.used = now;
        if (answered)
            asked_.erase(a.destination);
    }
    svc_cv_.notify_all();
}

} // namespace todd_kafka
