// SPDX-License-Identifier: Apache-2.0
// Publishing: every message goes to librdkafka's idempotent producer with
// its destination, content type and time-to-live as headers, and a publish
// returns once the broker acknowledged it (the delivery report, acks=all)
// or failed it. The poll thread serves the reports.
#include "transport.hpp"

#include <algorithm>
#include <cstring>

namespace todd_kafka {

using todd::comms::sdk::Error;

namespace {

struct HeadersDeleter {
    void operator()(rd_kafka_headers_t *h) const
    {
        rd_kafka_headers_destroy(h);
    }
};
using Headers = std::unique_ptr<rd_kafka_headers_t, HeadersDeleter>;

todd_comms_status status_of(rd_kafka_resp_err_t e, std::string &why,
                            const Settings &s)
{
    switch (e) {
    case RD_KAFKA_RESP_ERR_NO_ERROR: return TODD_COMMS_OK;
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
        why = "the broker did not acknowledge it within publish_timeout_ms (" +
              std::to_string(s.publish_timeout.count()) + " ms)";
        return TODD_COMMS_E_UNAVAILABLE;
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
        why = "stopped before the broker acknowledged it";
        return TODD_COMMS_E_STATE;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
        why = std::string(rd_kafka_err2str(e)) +
              " (the broker's message.max.bytes)";
        return TODD_COMMS_E_FULL;
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
        why = rd_kafka_err2str(e);
        return TODD_COMMS_E_AUTH;
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
        why = rd_kafka_err2str(e);
        return TODD_COMMS_E_NOROUTE;
    case RD_KAFKA_RESP_ERR__FATAL:
        why = "fatal producer error";
        return TODD_COMMS_E_INTERNAL;
    default: why = rd_kafka_err2str(e); return TODD_COMMS_E_PROTOCOL;
    }
}

} // namespace

void KafkaTransport::publish(const char *destination, const uint8_t *payload,
                             uint64_t len, const todd_comms_publish_opts *opts)
{
    todd_comms_outgoing m{destination, payload, len, opts};
    todd_comms_status st = TODD_COMMS_OK;
    std::vector<std::string> errors;
    send(&m, 1, &st, errors);
    if (st != TODD_COMMS_OK)
        throw Error(st, std::string("publish to '") + destination +
                            "': " + errors[0]);
}

todd_comms_status KafkaTransport::publish_batch(const todd_comms_outgoing *msgs,
                                                uint32_t count,
                                                todd_comms_status *statuses)
{
    std::vector<std::string> errors;
    send(msgs, count, statuses, errors);
    for (uint32_t i = 0; i < count; ++i)
        if (statuses[i] != TODD_COMMS_OK) {
            host().logf(TODD_COMMS_LOG_ERROR,
                        "publish_batch: message %u to "
                        "'%s': %s",
                        i, msgs[i].destination ? msgs[i].destination : "",
                        errors[i].c_str());
            return statuses[i];
        }
    return TODD_COMMS_OK;
}

void KafkaTransport::send(const todd_comms_outgoing *msgs, uint32_t count,
                          todd_comms_status *statuses,
                          std::vector<std::string> &errors)
{
    errors.assign(count, std::string());
    {
        std::lock_guard<std::mutex> g(pub_mu_);
        if (!running_ || stopping_) {
            for (uint32_t i = 0; i < count; ++i) {
                statuses[i] = TODD_COMMS_E_STATE;
                errors[i] =
                    running_ ? "publish after stop" : "publish before start";
            }
            return;
        }
        ++publishers_;
    }
    const auto deadline = Clock::now() + s_.publish_timeout;
    std::vector<uint64_t> ids(count, 0);
    for (uint32_t i = 0; i < count; ++i) {
        if (msgs[i].destination == nullptr || *msgs[i].destination == '\0' ||
            (msgs[i].payload == nullptr && msgs[i].payload_len != 0)) {
            statuses[i] = TODD_COMMS_E_INVAL;
            errors[i] = "no destination, or a NULL payload with a length";
            continue;
        }
        ids[i] = produce(msgs[i], deadline, statuses[i], errors[i]);
    }
    await(ids, statuses, errors);
    std::lock_guard<std::mutex> g(pub_mu_);
    --publishers_;
    pub_cv_.notify_all();
}

uint64_t KafkaTransport::produce(const todd_comms_outgoing &m,
                                 Clock::time_point deadline,
                                 todd_comms_status &status, std::string &error)
{
    if (!wait_ready(deadline)) {
        status = stopping_ ? TODD_COMMS_E_STATE : TODD_COMMS_E_UNAVAILABLE;
        error = stopping_
                    ? "publish during stop"
                    : "the cluster did not answer within "
                      "publish_timeout_ms (" +
                          std::to_string(s_.publish_timeout.count()) + " ms)";
        return 0;
    }
    const std::string dest = m.destination;
    auto [topic, partition] = route(dest, deadline);
    // The destination is the record's key; headers only for what is not
    // the default, so that most records carry none and a consumer skips
    // other destinations' records without parsing any. A record with
    // headers says so with a NUL after the destination (a destination has
    // none): a consumer reads headers only then, since merely asking
    // librdkafka for them costs a cache miss per record.
    Headers h;
    const char *ct = todd::comms::sdk::content_type(m.opts);
    if (std::strcmp(ct, default_content_type) != 0) {
        h.reset(rd_kafka_headers_new(2));
        rd_kafka_header_add(h.get(), "content-type", -1, ct, -1);
    }
    if (int64_t ttl = todd::comms::sdk::ttl_ms(m.opts); ttl > 0) {
        if (!h)
            h.reset(rd_kafka_headers_new(1));
        const std::string t = std::to_string(ttl);
        rd_kafka_header_add(h.get(), "todd-ttl-ms", -1, t.data(),
                            static_cast<ssize_t>(t.size()));
    }
    uint64_t id;
    {
        std::lock_guard<std::mutex> g(pub_mu_);
        id = next_id_++;
        pending_[id] = Pending{};
    }
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            producer_, RD_KAFKA_V_TOPIC(topic->name.c_str()),
            RD_KAFKA_V_PARTITION(partition),
            RD_KAFKA_V_KEY(dest.c_str(), dest.size() + (h ? 1 : 0)),
            RD_KAFKA_V_VALUE(const_cast<uint8_t *>(m.payload),
                             static_cast<size_t>(m.payload_len)),
            RD_KAFKA_V_HEADERS(h.get()),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_OPAQUE(reinterpret_cast<void *>(id)), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            h.release(); // librdkafka owns the headers now
            return id;
        }
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && !stopping_ &&
            Clock::now() < deadline) {
            // The producer's queue is bounded: wait for reports to drain it.
            std::unique_lock<std::mutex> lk(pub_mu_);
            pub_cv_.wait_for(lk, std::chrono::milliseconds(5));
            continue;
        }
        status = status_of(err, error, s_);
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            status = stopping_ ? TODD_COMMS_E_STATE : TODD_COMMS_E_FULL,
            error = "the producer's queue stayed full";
        std::lock_guard<std::mutex> g(pub_mu_);
        pending_.erase(id);
        return 0;
    }
}

void KafkaTransport::await(const std::vector<uint64_t> &ids,
                           todd_comms_status *statuses,
                           std::vector<std::string> &errors)
{
    // librdkafka reports every message within message.timeout.ms; the
    // extra bound only guards against a report that never comes.
    const auto limit =
        Clock::now() + s_.publish_timeout + std::chrono::seconds(5);
    std::unique_lock<std::mutex> lk(pub_mu_);
    for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] == 0)
            continue;
        auto it = pending_.find(ids[i]);
        pub_cv_.wait_until(lk, limit,
                           [&] { return it->second.status != not_yet; });
        if (it->second.status == not_yet) {
            statuses[i] = TODD_COMMS_E_TIMEOUT;
            errors[i] = "no delivery report from librdkafka";
        } else {
            statuses[i] = it->second.status;
            errors[i] = std::move(it->second.error);
        }
        pending_.erase(it);
    }
}

void KafkaTransport::on_delivery(const rd_kafka_message_t *m)
{
    const uint64_t id = reinterpret_cast<uint64_t>(m->_private);
    std::string why;
    todd_comms_status st = status_of(m->err, why, s_);
    std::lock_guard<std::mutex> g(pub_mu_);
    auto it = pending_.find(id);
    if (it == pending_.end())
        return; // its publisher gave up waiting
    it->second.status = st;
    it->second.error = std::move(why);
    pub_cv_.notify_all();
}

void KafkaTransport::poll_loop()
{
    for (;;) {
        {
            std::lock_guard<std::mutex> g(pub_mu_);
            if (poll_done_)
                return;
        }
        rd_kafka_poll(producer_, 100);
    }
}

} // namespace todd_kafka
