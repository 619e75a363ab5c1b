// SPDX-License-Identifier: Apache-2.0
// Publishing: a JetStream publish per message, returning on the stream's
// acknowledgement (publish_batch sends its messages asynchronously and
// waits for all their acknowledgements). A publish that meets no answer (a
// server restarting, a cluster electing a leader) is sent again until
// publish_timeout_ms, under the same message id, so the stream stores it
// once whichever attempt arrived (the stream's duplicate window).
#include "transport.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace todd_nats {

using todd::comms::sdk::Error;

namespace {

struct MsgDeleter {
    void operator()(natsMsg *m) const { natsMsg_Destroy(m); }
};
using MsgPtr = std::unique_ptr<natsMsg, MsgDeleter>;

// Answers after which the same publish may succeed if sent again: no
// answer, no responder (a stream whose leader is still being elected;
// nats.c reports it as JetStream error 10076, "not enabled"), a cluster
// that is not ready.
bool transient(natsStatus st, jsErrCode jerr = jsErrCode(0))
{
    if (jerr == JSClusterNotAvailErr || jerr == JSClusterNotLeaderErr)
        return true;
    return st == NATS_TIMEOUT || st == NATS_NO_RESPONDERS ||
           st == NATS_CONNECTION_DISCONNECTED || st == NATS_NO_SERVER;
}

constexpr uint64_t max_message = uint64_t(64) * 1024 * 1024;

const char *const stopped_text =
    "stopped before JetStream acknowledged the message";

// The status of a refusal JetStream gave (jerr) or nats.c met.
todd_comms_status refusal(jsErrCode jerr)
{
    return jerr == JSStreamStoreFailedErr ||
                   jerr == JSStreamMessageExceedsMaximumErr
               ? TODD_COMMS_E_FULL
               : TODD_COMMS_E_PROTOCOL;
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

bool NatsTransport::enter_publish(std::string &error)
{
    std::lock_guard<std::mutex> g(svc_mu_);
    if (stopping_ || !started_) {
        error = started_ ? "publish during stop" : "publish before start";
        return false;
    }
    ++publishers_;
    return true;
}

void NatsTransport::leave_publish()
{
    std::lock_guard<std::mutex> g(svc_mu_);
    --publishers_;
    svc_cv_.notify_all();
}

natsMsg *NatsTransport::make_msg(const std::string &subject,
                                 const uint8_t *payload, uint64_t len,
                                 const todd_comms_publish_opts *opts,
                                 std::string &error)
{
    natsMsg *m = nullptr;
    natsStatus rc =
        natsMsg_Create(&m, subject.c_str(), nullptr,
                       reinterpret_cast<const char *>(payload), int(len));
    if (rc != NATS_OK) {
        error = "cannot make a NATS message: " + nats_error(rc);
        return nullptr;
    }
    const char *ct = todd::comms::sdk::content_type(opts);
    if (std::strcmp(ct, default_content_type) != 0)
        natsMsgHeader_Set(m, "content-type", ct);
    if (const int64_t ttl = todd::comms::sdk::ttl_ms(opts); ttl > 0)
        natsMsgHeader_Set(m, "todd-ttl-ms", std::to_string(ttl).c_str());
    return m;
}

todd_comms_status NatsTransport::send(const char *destination,
                                      const uint8_t *payload, uint64_t len,
                                      const todd_comms_publish_opts *opts,
                                      std::string &error)
{
    const auto deadline = Clock::now() + s_.publish_timeout;
    if (len > max_message) {
        error = "a message of " + std::to_string(len) +
                " bytes is over the 64 MiB NATS allows at most";
        return TODD_COMMS_E_FULL;
    }
    if (!enter_publish(error))
        return TODD_COMMS_E_STATE;
    struct Leave {
        NatsTransport *t;
        ~Leave() { t->leave_publish(); }
    } leave{this};

    const std::string subject = s_.subject_of(destination);
    const std::string id =
        instance_id_ + "-" + std::to_string(next_msg_.fetch_add(1));
    std::string why;
    for (int attempt = 0;; ++attempt) {
        if (!wait_ready(deadline)) {
            if (stopping_) {
                error = stopped_text;
                return TODD_COMMS_E_STATE;
            }
            const std::string last = last_error();
            error = "no usable connection to NATS JetStream within " +
                    std::to_string(s_.publish_timeout.count()) + " ms" +
                    (why.empty() ? last.empty() ? "" : " (" + last + ")"
                                 : " (" + why + ")");
            return TODD_COMMS_E_UNAVAILABLE;
        }
        MsgPtr m(make_msg(subject, payload, len, opts, error));
        if (m == nullptr)
            return TODD_COMMS_E_NOMEM;
        jsPubOptions po;
        jsPubOptions_Init(&po);
        const auto left =
            std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
        po.MaxWait = std::max<int64_t>(1, left.count());
        po.MsgId = id.c_str();
        po.ExpectStream = s_.stream.c_str();
        jsPubAck *ack = nullptr;
        jsErrCode jerr = jsErrCode(0);
        natsStatus rc = js_PublishMsg(&ack, js_, m.get(), &po, &jerr);
        if (rc == NATS_OK) {
            jsPubAck_Destroy(ack);
            return TODD_COMMS_OK;
        }
        if (stopping_ || rc == NATS_CONNECTION_CLOSED) {
            error = stopped_text;
            return TODD_COMMS_E_STATE;
        }
        why = nats_error(rc);
        if (!transient(rc, jerr)) {
            error = "JetStream refused a message to '" +
                    std::string(destination) + "': " + why;
            if (jerr != 0)
                error += " (JetStream error " + std::to_string(int(jerr)) + ")";
            return refusal(jerr);
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
            error = stopped_text;
            return TODD_COMMS_E_STATE;
        }
    }
}

namespace {

// The sequence in a message id "<instance>-<sequence>", or 0.
uint64_t sequence_of(natsMsg *m)
{
    const char *id = nullptr;
    if (m == nullptr || natsMsgHeader_Get(m, "Nats-Msg-Id", &id) != NATS_OK ||
        id == nullptr)
        return 0;
    const char *dash = std::strrchr(id, '-');
    return dash != nullptr ? std::strtoull(dash + 1, nullptr, 10) : 0;
}

} // namespace

void NatsTransport::batch_ack(jsCtx *, natsMsg *msg, jsPubAck *pa,
                              jsPubAckErr *pae, void *closure)
{
    auto *t = static_cast<NatsTransport *>(closure);
    const uint64_t seq = sequence_of(msg);
    {
        std::lock_guard<std::mutex> g(t->batch_res_);
        Batch *b = t->batch_;
        if (b != nullptr && seq >= b->first &&
            seq - b->first < b->status.size()) {
            const size_t i = seq - b->first;
            if (pa != nullptr) {
                b->status[i] = TODD_COMMS_OK;
            } else if (pae != nullptr && transient(pae->Err, pae->ErrCode)) {
                b->resend[i] = true;
                b->error[i] = natsStatus_GetText(pae->Err);
            } else if (pae != nullptr) {
                b->status[i] = refusal(pae->ErrCode);
                b->error[i] =
                    std::string("JetStream refused it: ") +
                    (pae->ErrText != nullptr ? pae->ErrText
                                             : natsStatus_GetText(pae->Err));
            }
        }
    }
    natsMsg_Destroy(msg);
}

todd_comms_status NatsTransport::publish_batch(const todd_comms_outgoing *msgs,
                                               uint32_t count,
                                               todd_comms_status *statuses)
{
    constexpr todd_comms_status not_yet = 1;
    const auto deadline = Clock::now() + s_.publish_timeout;
    std::string error;
    std::vector<size_t> todo;
    for (uint32_t i = 0; i < count; ++i) {
        statuses[i] = not_yet;
        if (msgs[i].destination == nullptr ||
            (msgs[i].payload == nullptr && msgs[i].payload_len != 0))
            statuses[i] = TODD_COMMS_E_INVAL;
        else if (msgs[i].payload_len > max_message)
            statuses[i] = TODD_COMMS_E_FULL;
        else
            todo.push_back(i);
    }
    auto first_failure = [&] {
        for (uint32_t i = 0; i < count; ++i)
            if (statuses[i] != TODD_COMMS_OK)
                return statuses[i];
        return todd_comms_status(TODD_COMMS_OK);
    };
    if (todo.empty())
        return first_failure();
    if (!enter_publish(error)) {
        for (size_t i : todo)
            statuses[i] = TODD_COMMS_E_STATE;
        host().log(TODD_COMMS_LOG_ERROR, error.c_str());
        return first_failure();
    }
    std::lock_guard<std::mutex> one(batch_mu_);
    Batch b;
    b.first = next_msg_.fetch_add(count);
    b.status.assign(count, not_yet);
    b.error.assign(count, "");
    b.resend.assign(count, false);
    {
        std::lock_guard<std::mutex> g(batch_res_);
        batch_ = &b;
    }
    std::string last_why;
    for (int attempt = 0; !todo.empty(); ++attempt) {
        if (attempt > 0 &&
            pause(std::chrono::milliseconds(attempt < 5 ? 10 << attempt : 200)))
            break;
        if (!wait_ready(deadline))
            break;
        for (size_t i : todo) {
            const std::string subject = s_.subject_of(msgs[i].destination);
            natsMsg *m = make_msg(subject, msgs[i].payload, msgs[i].payload_len,
                                  msgs[i].opts, error);
            if (m == nullptr) {
                std::lock_guard<std::mutex> g(batch_res_);
                b.status[i] = TODD_COMMS_E_NOMEM;
                continue;
            }
            const std::string id =
                instance_id_ + "-" + std::to_string(b.first + i);
            jsPubOptions po;
            jsPubOptions_Init(&po);
            po.MsgId = id.c_str();
            po.ExpectStream = s_.stream.c_str();
            natsStatus rc = js_PublishMsgAsync(jsa_, &m, &po);
            if (m != nullptr) // not taken: not sent
                natsMsg_Destroy(m);
            if (rc != NATS_OK) {
                std::lock_guard<std::mutex> g(batch_res_);
                b.resend[i] = true;
                b.error[i] = nats_error(rc);
            }
        }
        jsPubOptions po;
        jsPubOptions_Init(&po);
        const auto left =
            std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
        po.MaxWait = std::max<int64_t>(1, left.count());
        natsStatus rc = js_PublishAsyncComplete(jsa_, &po);
        if (rc != NATS_OK) {
            // Unanswered: take them back; sent again while time is left.
            natsMsgList pending{};
            if (js_PublishAsyncGetPendingList(&pending, jsa_) == NATS_OK) {
                std::lock_guard<std::mutex> g(batch_res_);
                for (int k = 0; k < pending.Count; ++k) {
                    const uint64_t seq = sequence_of(pending.Msgs[k]);
                    if (seq >= b.first && seq - b.first < count) {
                        b.resend[seq - b.first] = true;
                        b.error[seq - b.first] = nats_error(rc);
                    }
                }
                natsMsgList_Destroy(&pending);
            }
        }
        std::lock_guard<std::mutex> g(batch_res_);
        std::vector<size_t> again;
        for (size_t i : todo) {
            if (b.resend[i] && b.status[i] == not_yet) {
                again.push_back(i);
                last_why = b.error[i];
            }
            b.resend[i] = false;
        }
        todo.swap(again);
        if (stopping_ || Clock::now() >= deadline)
            break;
    }
    bool ready;
    {
        std::lock_guard<std::mutex> g(svc_mu_);
        ready = ready_;
    }
    {
        std::lock_guard<std::mutex> g(batch_res_);
        batch_ = nullptr;
        for (uint32_t i = 0; i < count; ++i) {
            if (statuses[i] != not_yet)
                continue;
            statuses[i] = b.status[i];
            if (statuses[i] == not_yet)
                statuses[i] = stopping_ ? TODD_COMMS_E_STATE
                              : ready   ? TODD_COMMS_E_TIMEOUT
                                        : TODD_COMMS_E_UNAVAILABLE;
            if (statuses[i] != TODD_COMMS_OK && error.empty())
                error = b.error[i].empty() ? last_why : b.error[i];
        }
    }
    leave_publish();
    const todd_comms_status first = first_failure();
    if (first != TODD_COMMS_OK)
        host().logf(TODD_COMMS_LOG_ERROR,
                    "publish_batch: not every message was acknowledged "
                    "within %lld ms: %s",
                    (long long)s_.publish_timeout.count(),
                    error.empty() ? natsStatus_GetText(NATS_TIMEOUT)
                                  : error.c_str());
    return first;
}

} // namespace todd_nats
