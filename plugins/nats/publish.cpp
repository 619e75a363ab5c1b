// SPDX-License-Identifier: Apache-2.0
// Publishing: one JetStream publish per message, returning on the stream's
// acknowledgement. A publish that meets no answer (a server restarting, a
// cluster electing a leader) is sent again until publish_timeout_ms, under
// the same message id, so the stream stores it once whichever attempt
// arrived (the stream's duplicate window).
#include "transport.hpp"

#include <algorithm>
#include <cstring>

namespace todd_nats {

using todd::comms::sdk::Error;

namespace {

struct MsgDeleter {
    void operator()(natsMsg *m) const { natsMsg_Destroy(m); }
};
using MsgPtr = std::unique_ptr<natsMsg, MsgDeleter>;

// Statuses after which the same publish may succeed if sent again.
bool transient(natsStatus st)
{
    return st == NATS_TIMEOUT || st == NATS_NO_RESPONDERS ||
           st == NATS_CONNECTION_DISCONNECTED || st == NATS_NO_SERVER;
}

} // namespace

void NatsTransport::publish(const char *destination, const uint8_t *payload,
                            uint64_t len, const todd_comms_publish_opts *opts)
{
    std::string error;
    todd_comms_status st = send(destination, payload, len, opts, error);
    if (st != TODD_COMMS_OK)
        throw Error(st, error);
}

todd_comms_status NatsTransport::send(const char *destination,
                                      const uint8_t *payload, uint64_t len,
                                      const todd_comms_publish_opts *opts,
                                      std::string &error)
{
    const auto deadline = Clock::now() + s_.publish_timeout;
    if (len > uint64_t(64) * 1024 * 1024) {
        error = "a message of " + std::to_string(len) +
                " bytes is over the 64 MiB NATS allows at most";
        return TODD_COMMS_E_FULL;
    }
    {
        std::lock_guard<std::mutex> g(svc_mu_);
        if (stopping_ || !started_) {
            error = started_ ? "publish during stop" : "publish before start";
            return TODD_COMMS_E_STATE;
        }
        ++publishers_;
    }
    struct Leave {
        NatsTransport *t;
        ~Leave()
        {
            std::lock_guard<std::mutex> g(t->svc_mu_);
            --t->publishers_;
            t->svc_cv_.notify_all();
        }
    } leave{this};

    const std::string subject = s_.subject_of(destination);
    const std::string id =
        instance_id_ + "-" + std::to_string(next_msg_.fetch_add(1));
    const int64_t ttl = todd::comms::sdk::ttl_ms(opts);
    const char *ct = todd::comms::sdk::content_type(opts);
    const std::string ttl_text = std::to_string(ttl);
    std::string why;
    for (int attempt = 0;; ++attempt) {
        if (!wait_ready(deadline)) {
            if (stopping_) {
                error = "stopped before JetStream acknowledged the message";
                return TODD_COMMS_E_STATE;
            }
            const std::string last = last_error();
            error = "no usable connection to NATS JetStream within " +
                    std::to_string(s_.publish_timeout.count()) + " ms" +
                    (why.empty() ? last.empty() ? "" : " (" + last + ")"
                                 : " (" + why + ")");
            return TODD_COMMS_E_UNAVAILABLE;
        }
        natsMsg *raw = nullptr;
        natsStatus rc =
            natsMsg_Create(&raw, subject.c_str(), nullptr,
                           reinterpret_cast<const char *>(payload), int(len));
        if (rc != NATS_OK) {
            error = "cannot make a NATS message: " + nats_error(rc);
            return TODD_COMMS_E_NOMEM;
        }
        MsgPtr m(raw);
        if (std::strcmp(ct, default_content_type) != 0)
            natsMsgHeader_Set(m.get(), "content-type", ct);
        if (ttl > 0)
            natsMsgHeader_Set(m.get(), "todd-ttl-ms", ttl_text.c_str());
        jsPubOptions po;
        jsPubOptions_Init(&po);
        const auto left =
            std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
        po.MaxWait = std::max<int64_t>(1, left.count());
        po.MsgId = id.c_str();
        po.ExpectStream = s_.stream.c_str();
        jsPubAck *ack = nullptr;
        jsErrCode jerr = jsErrCode(0);
        rc = js_PublishMsg(&ack, js_, m.get(), &po, &jerr);
        if (rc == NATS_OK) {
            jsPubAck_Destroy(ack);
            return TODD_COMMS_OK;
        }
        if (stopping_ || rc == NATS_CONNECTION_CLOSED) {
            error = "stopped before JetStream acknowledged the message";
            return TODD_COMMS_E_STATE;
        }
        why = nats_error(rc);
        if (jerr != 0 || !transient(rc)) {
            error = "JetStream refused a message to '" +
                    std::string(destination) + "': " + why;
            if (jerr != 0)
                error += " (JetStream error " + std::to_string(int(jerr)) + ")";
            return jerr == JSStreamStoreFailedErr ||
                           jerr == JSStreamMessageExceedsMaximumErr
                       ? TODD_COMMS_E_FULL
                       : TODD_COMMS_E_PROTOCOL;
        }
        if (Clock::now() >= deadline) {
            error = "JetStream did not acknowledge a message to '" +
                    std::string(destination) + "' within " +
                    std::to_string(s_.publish_timeout.count()) + " ms (" + why +
                    ")";
            return TODD_COMMS_E_TIMEOUT;
        }
        // No answer: a server restarting or a leader being elected. Back
        // off a little (up to 200 ms) and send it again, same id.
        if (pause(
                std::chrono::milliseconds(attempt < 5 ? 10 << attempt : 200))) {
            error = "stopped before JetStream acknowledged the message";
            return TODD_COMMS_E_STATE;
        }
    }
}

} // namespace todd_nats
