// SPDX-License-Identifier: Apache-2.0
//
// ToDD comms transport over Apache Kafka (librdkafka 2.0), built only
// against the public plugin SDK. The mapping is transport.hpp's summary and
// docs/kafka.md.
//
// Handles and threads of one instance:
//  - one idempotent producer, whose delivery reports and errors a poll
//    thread serves; a publish returns once its report arrived;
//  - a service thread that probes the cluster, makes the topics and reads
//    the routes (who subscribes to a destination);
//  - one consumer handle and thread per subscription (its own consumer
//    group), which delivers to the host and stores offsets after the
//    verdict.

#include "keys.hpp"
#include "transport.hpp"

#include <cstring>

namespace todd_kafka {

using namespace todd::comms::sdk;

namespace {

void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    static_cast<KafkaTransport *>(opaque)->on_error(
        rd_kafka_type(rk) == RD_KAFKA_CONSUMER, err, reason);
}

void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    if (void *opaque = rd_kafka_opaque(rk))
        static_cast<KafkaTransport *>(opaque)->on_log(level, fac, buf);
}

void dr_cb(rd_kafka_t *, const rd_kafka_message_t *m, void *opaque)
{
    static_cast<KafkaTransport *>(opaque)->on_delivery(m);
}

} // namespace

uint32_t destination_hash(const std::string &destination)
{
    uint32_t h = 2166136261u;
    for (unsigned char c : destination) {
        h ^= c;
        h *= 16777619u;
    }
    return h;
}

KafkaTransport::KafkaTransport(const Host &host, const Config &config)
    : Transport(host, config), s_(parse_settings(config))
{
    check_security(s_);
    std::string servers;
    for (const auto &b : s_.bootstrap)
        servers += (servers.empty() ? "" : ",") + b;
    host.logf(TODD_COMMS_LOG_DEBUG,
              "bootstrap %s, %s, topics %s0..%d, %d partitions each",
              servers.c_str(), s_.security_protocol.c_str(),
              s_.topic_name(0).c_str(), s_.topics - 1, s_.partitions);
}

rd_kafka_t *KafkaTransport::new_handle(rd_kafka_type_t type, ConfPtr conf)
{
    rd_kafka_conf_set_opaque(conf.get(), this);
    rd_kafka_conf_set_error_cb(conf.get(), error_cb);
    rd_kafka_conf_set_log_cb(conf.get(), log_cb);
    if (type == RD_KAFKA_PRODUCER)
        rd_kafka_conf_set_dr_msg_cb(conf.get(), dr_cb);
    char err[512] = "";
    rd_kafka_t *rk = rd_kafka_new(type, conf.get(), err, sizeof err);
    if (rk == nullptr)
        throw Error(TODD_COMMS_E_CONFIG,
                    std::string("librdkafka refused the configuration: ") +
                        err);
    conf.release(); // owned by rk now
    return rk;
}

void KafkaTransport::start()
{
    std::lock_guard<std::mutex> g(control_mu_);
    if (started_)
        throw Error(TODD_COMMS_E_STATE,
                    stopped_ ? "start after stop" : "already started");
    producer_ = new_handle(RD_KAFKA_PRODUCER, make_conf(s_, Role::producer));
    started_ = true;
    running_ = true;
    report(TODD_COMMS_STATE_CONNECTING, TODD_COMMS_OK, "");
    poll_thread_ = std::thread([this] { poll_loop(); });
    service_thread_ = std::thread([this] { service_loop(); });
    for (auto &[cookie, sub] : subs_)
        launch(*sub);
}

void KafkaTransport::stop()
{
    std::lock_guard<std::mutex> g(control_mu_);
    if (stopped_)
        return;
    stopped_ = true;
    if (!started_) {
        subs_.clear();
        started_ = true; // a later start is refused
        report(TODD_COMMS_STATE_STOPPED, TODD_COMMS_OK, "");
        return;
    }
    stopping_ = true;
    {
        std::lock_guard<std::mutex> s(svc_mu_);
        svc_cv_.notify_all();
    }
    for (auto &[cookie, sub] : subs_)
        finish(*sub);
    subs_.clear();
    if (service_thread_.joinable())
        service_thread_.join();
    {
        // Messages on their way get a moment to be acknowledged; what is
        // left then fails its publish with E_STATE.
        std::unique_lock<std::mutex> p(pub_mu_);
        pub_cv_.notify_all();
        if (connected_)
            pub_cv_.wait_for(p, std::chrono::milliseconds(500),
                             [&] { return pending_.empty(); });
    }
    rd_kafka_purge(producer_, RD_KAFKA_PURGE_F_QUEUE |
                                  RD_KAFKA_PURGE_F_INFLIGHT |
                                  RD_KAFKA_PURGE_F_NON_BLOCKING);
    {
        // The poll thread hands the purged messages' reports back; the
        // publishers waiting on them leave.
        std::unique_lock<std::mutex> p(pub_mu_);
        pub_cv_.wait_for(p, std::chrono::seconds(2),
                         [&] { return pending_.empty() && publishers_ == 0; });
        poll_done_ = true;
    }
    if (poll_thread_.joinable())
        poll_thread_.join();
    {
        // Whatever did not get a report by now (none, normally) fails.
        std::lock_guard<std::mutex> p(pub_mu_);
        for (auto &[id, pd] : pending_)
            if (pd.status == not_yet) {
                pd.status = TODD_COMMS_E_STATE;
                pd.error = "stopped before the broker acknowledged it";
            }
        pub_cv_.notify_all();
    }
    {
        std::unique_lock<std::mutex> p(pub_mu_);
        pub_cv_.wait(p, [&] { return publishers_ == 0; });
    }
    rd_kafka_destroy(producer_);
    producer_ = nullptr;
    report(TODD_COMMS_STATE_STOPPED, TODD_COMMS_OK, "");
}

void KafkaTransport::report(int32_t state, todd_comms_status st,
                            const std::string &why)
{
    std::lock_guard<std::mutex> g(state_mu_);
    if (state_ == TODD_COMMS_STATE_STOPPED || (state == state_ && why.empty()))
        return;
    state_ = state;
    host().state(state, st, why);
}

void KafkaTransport::on_error(bool consumer, int err, const char *reason)
{
    const auto e = static_cast<rd_kafka_resp_err_t>(err);
    const std::string why = reason != nullptr ? reason : rd_kafka_err2str(e);
    switch (e) {
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__RESOLVE:
        // Informational: librdkafka reconnects by itself. The service
        // thread's probe says when the cluster answers again.
        if (!consumer && e == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN &&
            connected_.exchange(false)) {
            report(TODD_COMMS_STATE_RECONNECTING, TODD_COMMS_E_UNAVAILABLE,
                   why);
            std::lock_guard<std::mutex> g(svc_mu_);
            reprobe_ = true;
            svc_cv_.notify_all();
        }
        if (!consumer) {
            std::lock_guard<std::mutex> g(state_mu_);
            last_error_ = why;
        }
        host().logf(TODD_COMMS_LOG_DEBUG, "%s: %s",
                    consumer ? "consumer" : "producer", why.c_str());
        return;
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
    case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
        report(TODD_COMMS_STATE_FAILED, TODD_COMMS_E_AUTH, why);
        break;
    case RD_KAFKA_RESP_ERR__SSL:
        report(TODD_COMMS_STATE_FAILED, TODD_COMMS_E_PROTOCOL, why);
        break;
    case RD_KAFKA_RESP_ERR__FATAL: {
        char text[512] = "";
        rd_kafka_fatal_error(producer_, text, sizeof text);
        report(TODD_COMMS_STATE_FAILED, TODD_COMMS_E_INTERNAL,
               std::string("fatal producer error: ") + text);
        break;
    }
    default: break;
    }
    host().logf(TODD_COMMS_LOG_WARN, "%s: %s: %s",
                consumer ? "consumer" : "producer", rd_kafka_err2name(e),
                why.c_str());
}

void KafkaTransport::on_log(int level, const char *facility, const char *text)
{
    // syslog levels. librdkafka logs every failed connection attempt of
    // every handle at 3 (FAIL); what matters of those reaches the operator
    // once, through on_error and the service thread's probe.
    int32_t ours = level <= 2   ? TODD_COMMS_LOG_ERROR
                   : level <= 6 ? TODD_COMMS_LOG_DEBUG
                                : TODD_COMMS_LOG_TRACE;
    if (host().log_enabled(ours))
        host().logf(ours, "librdkafka %s: %s", facility, text);
}

} // namespace todd_kafka

TODD_COMMS_PLUGIN(todd_kafka::KafkaTransport, "kafka", "0.1.0", "Apache-2.0",
                  "Apache Kafka via librdkafka: fixed topics, a consumer "
                  "group per destination",
                  TODD_COMMS_CAP_ACK | TODD_COMMS_CAP_TTL |
                      TODD_COMMS_CAP_CONFIRMS | TODD_COMMS_CAP_DURABLE |
                      TODD_COMMS_CAP_REMOTE | TODD_COMMS_CAP_TLS |
                      TODD_COMMS_CAP_BATCH,
                  todd_kafka::kKeys)
