// SPDX-License-Identifier: Apache-2.0
// Subscriptions: each binds to its destination's durable push consumer (made
// if missing; the subscribers of one destination share it as a queue group)
// and has a thread that waits for the pushed messages, drops expired ones,
// delivers the rest one at a time and settles each after the host's verdict.
// Each time the connection comes back ready, the thread checks that the
// consumer still exists (a server that lost it: memory storage, an operator)
// and makes it again.
#include "transport.hpp"

#include <cstdlib>
#include <ctime>

namespace todd_nats {

using todd::comms::sdk::Error;

namespace {

int64_t wall_ms()
{
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// How long a waiting subscription thread sleeps in nats.c at most: the
// bound on unsubscribe's and stop's wait for it (nothing goes to the server).
constexpr int64_t wake_ms = 100;

} // namespace

void NatsTransport::subscribe(const char *destination, uint64_t cookie,
                              const todd_comms_subscribe_opts *opts)
{
    std::lock_guard<std::mutex> g(control_mu_);
    if (stopped_)
        throw Error(TODD_COMMS_E_STATE, "subscribe after stop");
    if (subs_.count(cookie) != 0)
        throw Error(TODD_COMMS_E_INVAL,
                    "cookie " + std::to_string(cookie) + " is in use");
    auto s = std::make_unique<Sub>();
    s->destination = destination;
    s->subject = s_.subject_of(destination);
    s->consumer = s_.consumer_of(destination);
    s->deliver = s_.deliver_subject_of(destination);
    s->cookie = cookie;
    const uint32_t prefetch = todd::comms::sdk::prefetch(opts);
    s->max_ack_pending = prefetch != 0
                             ? int(std::min<uint32_t>(prefetch, 100000))
                             : s_.max_ack_pending;
    Sub &sub = *s;
    subs_.emplace(cookie, std::move(s));
    if (started_)
        launch(sub);
}

void NatsTransport::unsubscribe(uint64_t cookie)
{
    std::lock_guard<std::mutex> g(control_mu_);
    auto it = subs_.find(cookie);
    if (it == subs_.end())
        throw Error(TODD_COMMS_E_INVAL,
                    "no subscription with cookie " + std::to_string(cookie));
    finish(*it->second);
    subs_.erase(it);
}

void NatsTransport::launch(Sub &s)
{
    s.thread = std::thread([this, &s] { consume(s); });
}

void NatsTransport::finish(Sub &s)
{
    s.stop = true;
    {
        std::lock_guard<std::mutex> g(svc_mu_);
        svc_cv_.notify_all();
    }
    if (s.thread.joinable())
        s.thread.join();
    release(s);
}

bool NatsTransport::bind(Sub &s)
{
    jsOptions jo = api_options(s_);
    if (s.sub != nullptr) {
        // Bound before: the consumer outlives reconnects unless the
        // server lost it.
        jsConsumerInfo *ci = nullptr;
        natsStatus rc = js_GetConsumerInfo(&ci, js_, s_.stream.c_str(),
                                           s.consumer.c_str(), &jo, nullptr);
        if (rc == NATS_OK) {
            jsConsumerInfo_Destroy(ci);
            return true;
        }
        if (rc != NATS_NOT_FOUND)
            return false; // unknown yet: look again at the next wake
        host().logf(TODD_COMMS_LOG_WARN,
                    "'%s': the server lost consumer %s; making it again",
                    s.destination.c_str(), s.consumer.c_str());
        natsSubscription_Unsubscribe(s.sub);
        natsSubscription_Destroy(s.sub);
        s.sub = nullptr;
    }
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = s.consumer.c_str();
    cc.Description = s.destination.c_str();
    cc.DeliverSubject = s.deliver.c_str();
    cc.DeliverGroup = s.consumer.c_str();
    cc.FilterSubject = s.subject.c_str();
    cc.DeliverPolicy = js_DeliverAll;
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = s_.ack_wait.count() * 1000000LL;
    cc.MaxAckPending = s.max_ack_pending;
    jsErrCode jerr = jsErrCode(0);
    natsStatus rc =
        js_AddConsumer(nullptr, js_, s_.stream.c_str(), &cc, &jo, &jerr);
    // Made by a competing subscriber with other settings: use theirs.
    if (rc != NATS_OK && jerr != JSConsumerNameExistErr &&
        jerr != JSConsumerExistingActiveErr) {
        host().logf(TODD_COMMS_LOG_WARN, "'%s': cannot make consumer %s: %s",
                    s.destination.c_str(), s.consumer.c_str(),
                    nats_error(rc).c_str());
        return false;
    }
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = s_.stream.c_str();
    so.Consumer = s.consumer.c_str();
    so.Queue = s.consumer.c_str();
    so.ManualAck = true;
    rc = js_SubscribeSync(&s.sub, js_, s.subject.c_str(), &jo, &so, &jerr);
    if (rc != NATS_OK) {
        s.sub = nullptr;
        host().logf(
            TODD_COMMS_LOG_WARN, "'%s': cannot subscribe to consumer %s: %s",
            s.destination.c_str(), s.consumer.c_str(), nats_error(rc).c_str());
        return false;
    }
    // Pushed messages wait in nats.c for this thread: never more than the
    // consumer lets out unacknowledged.
    natsSubscription_SetPendingLimits(s.sub, -1, -1);
    return true;
}

void NatsTransport::consume(Sub &s)
{
    while (!s.stop) {
        bool ready;
        uint64_t epoch;
        {
            std::lock_guard<std::mutex> g(svc_mu_);
            ready = ready_;
            epoch = ready_epoch_;
        }
        // (Re)bind once per time the connection became ready; what was
        // pushed before a disconnect is still delivered meanwhile.
        if (ready && (s.sub == nullptr || epoch != s.epoch)) {
            if (bind(s))
                s.epoch = epoch;
        }
        if (s.sub == nullptr) {
            std::unique_lock<std::mutex> lk(svc_mu_);
            svc_cv_.wait_for(
                lk, std::chrono::milliseconds(ready ? 250 : wake_ms),
                [&] { return s.stop || stopping_ || (!ready && ready_); });
            continue;
        }
        natsMsg *m = nullptr;
        natsStatus rc = natsSubscription_NextMsg(&m, s.sub, wake_ms);
        if (rc == NATS_OK) {
            handle(s, m);
            natsMsg_Destroy(m);
        } else if (rc != NATS_TIMEOUT) {
            // Slow consumer, missed heartbeat, a closed subscription:
            // none loses a message (unacked ones come again).
            host().logf(TODD_COMMS_LOG_DEBUG, "'%s': %s", s.destination.c_str(),
                        nats_error(rc).c_str());
            if (rc == NATS_INVALID_SUBSCRIPTION ||
                rc == NATS_CONNECTION_CLOSED) {
                natsSubscription_Destroy(s.sub);
                s.sub = nullptr;
            }
        }
    }
}

void NatsTransport::handle(Sub &s, natsMsg *m)
{
    jsMsgMetaData *md = nullptr;
    if (natsMsg_GetMetaData(&md, m) != NATS_OK) {
        host().logf(TODD_COMMS_LOG_WARN,
                    "'%s': a message without JetStream metadata; dropped",
                    s.destination.c_str());
        return;
    }
    const bool redelivered = md->NumDelivered > 1;
    const int64_t stored_ms = md->Timestamp / 1000000;
    jsMsgMetaData_Destroy(md);
    const char *ttl = nullptr;
    if (natsMsgHeader_Get(m, "todd-ttl-ms", &ttl) == NATS_OK &&
        ttl != nullptr) {
        long long t = std::atoll(ttl);
        const int64_t now = wall_ms();
        if (t > 0 && stored_ms > 0 && now >= stored_ms + t) {
            host().logf(TODD_COMMS_LOG_DEBUG,
                        "'%s': dropped a message that expired %lld ms ago",
                        s.destination.c_str(),
                        (long long)(now - stored_ms - t));
            natsMsg_Term(m, nullptr);
            return;
        }
    }
    const char *ct = nullptr;
    if (natsMsgHeader_Get(m, "content-type", &ct) != NATS_OK || ct == nullptr)
        ct = default_content_type;
    todd_comms_message msg{};
    msg.struct_size = sizeof msg;
    msg.flags = redelivered ? TODD_COMMS_MSG_REDELIVERED : 0u;
    msg.destination = s.destination.c_str();
    msg.payload = reinterpret_cast<const uint8_t *>(natsMsg_GetData(m));
    msg.payload_len = uint64_t(natsMsg_GetDataLength(m));
    msg.content_type = ct;
    const int32_t verdict = host().deliver(s.cookie, msg);
    // Settled without waiting for the server: a settle lost with the
    // connection leaves the message unacknowledged, so it comes again
    // after ack_wait_ms (at-least-once).
    natsStatus rc = verdict == TODD_COMMS_VERDICT_ACK ? natsMsg_Ack(m, nullptr)
                    : verdict == TODD_COMMS_VERDICT_REQUEUE
                        ? natsMsg_Nak(m, nullptr)
                        : natsMsg_Term(m, nullptr);
    if (rc != NATS_OK)
        host().logf(TODD_COMMS_LOG_DEBUG, "'%s': settling a message: %s",
                    s.destination.c_str(), nats_error(rc).c_str());
}

void NatsTransport::release(Sub &s)
{
    if (s.sub == nullptr)
        return;
    // Stop the pushes, then hand back what was pushed but not delivered
    // (a nak: the other subscribers get it now, not after ack_wait_ms).
    // Bounded: the consumer lets out at most max_ack_pending.
    const bool drained = natsSubscription_Drain(s.sub) == NATS_OK;
    const auto until = Clock::now() + std::chrono::seconds(1);
    int handed_back = 0;
    while (drained && Clock::now() < until) {
        natsMsg *m = nullptr;
        if (natsSubscription_NextMsg(&m, s.sub, 20) != NATS_OK)
            break;
        natsMsg_Nak(m, nullptr);
        natsMsg_Destroy(m);
        ++handed_back;
    }
    if (handed_back > 0)
        host().logf(TODD_COMMS_LOG_DEBUG, "'%s': handed back %d messages",
                    s.destination.c_str(), handed_back);
    natsSubscription_Unsubscribe(s.sub);
    natsSubscription_Destroy(s.sub);
    s.sub = nullptr;
}

} // namespace todd_nats
