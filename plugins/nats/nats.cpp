// SPDX-License-Identifier: Apache-2.0
//
// ToDD comms transport over NATS JetStream (nats.c 3.4), built only against
// the public plugin SDK. The mapping is transport.hpp's summary and
// docs/nats.md.
//
// Threads of one instance:
//  - nats.c's own: a reader and a flusher per connection, reconnects, and
//    one callback thread (shared by the process) for connection events;
//  - a service thread that connects, and makes or checks the stream each
//    time the connection comes (back) before it reports CONNECTED;
//  - one thread per subscription, which waits for its pushed messages,
//    delivers them to the host and settles each after the verdict.

#include "keys.hpp"
#include "transport.hpp"

#include <cstring>
#include <random>

namespace todd_nats {

using namespace todd::comms::sdk;

namespace {

template <void (NatsTransport::*F)()>
void link_cb(natsConnection *, void *closure)
{
    auto *l = static_cast<NatsTransport::Link *>(closure);
    std::lock_guard<std::mutex> g(l->mu);
    if (l->owner != nullptr)
        (l->owner->*F)();
}

void closed_cb(natsConnection *, void *closure)
{
    auto *l = static_cast<NatsTransport::Link *>(closure);
    {
        std::lock_guard<std::mutex> g(l->mu);
        l->closed = true;
        if (l->owner != nullptr)
            l->owner->on_closed();
    }
    NatsTransport::Link::release(l); // the connection's hold
}

void error_cb(natsConnection *, natsSubscription *, natsStatus st,
              void *closure)
{
    auto *l = static_cast<NatsTransport::Link *>(closure);
    std::lock_guard<std::mutex> g(l->mu);
    if (l->owner != nullptr)
        l->owner->on_async_error(st);
}

std::string random_id()
{
    std::random_device rd;
    char buf[24];
    std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
    return buf;
}

} // namespace

NatsTransport::NatsTransport(const Host &host, const Config &config)
    : Transport(host, config), s_(parse_settings(config)),
      instance_id_(random_id())
{
    make_options(s_); // refuses files nats.c cannot load, now
    std::string servers;
    for (const auto &u : s_.servers)
        servers += (servers.empty() ? "" : ",") + u;
    host.logf(TODD_COMMS_LOG_DEBUG, "servers %s%s, stream %s on %s.>",
              servers.c_str(), s_.tls ? " (TLS)" : "", s_.stream.c_str(),
              s_.subject_prefix.c_str());
}

void NatsTransport::start()
{
    std::lock_guard<std::mutex> g(control_mu_);
    if (started_)
        throw Error(TODD_COMMS_E_STATE,
                    stopped_ ? "start after stop" : "already started");
    link_ = new Link;
    link_->owner = this;
    started_ = true;
    report(TODD_COMMS_STATE_CONNECTING, TODD_COMMS_OK, "");
    service_thread_ = std::thread([this] { service_loop(); });
    for (auto &[cookie, sub] : subs_)
        launch(*sub);
}

void NatsTransport::stop()
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
    {
        std::lock_guard<std::mutex> s(svc_mu_);
        stopping_ = true;
        svc_cv_.notify_all();
    }
    // Every subscription thread leaves at once, then each is joined.
    for (auto &[cookie, sub] : subs_)
        sub->stop = true;
    for (auto &[cookie, sub] : subs_)
        finish(*sub);
    subs_.clear();
    // The service thread may be inside its first connection attempt:
    // bounded by connect_timeout_ms per server.
    if (service_thread_.joinable())
        service_thread_.join();
    bool closed = nc_ == nullptr;
    if (nc_ != nullptr) {
        // Close fails the publishes still waiting for an ack (they return
        // E_STATE); the closed callback is nats.c's last one.
        natsConnection_Close(nc_);
        std::unique_lock<std::mutex> lk(link_->mu);
        for (int i = 0; i < 300 && !link_->closed; ++i) {
            lk.unlock();
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
            lk.lock();
        }
        closed = link_->closed;
    }
    {
        std::unique_lock<std::mutex> s(svc_mu_);
        svc_cv_.wait(s, [&] { return publishers_ == 0; });
    }
    {
        std::lock_guard<std::mutex> l(link_->mu);
        link_->owner = nullptr;
    }
    if (!closed)
        host().logf(TODD_COMMS_LOG_WARN, "nats.c did not confirm the close "
                                         "within 3 s; going on");
    Link::release(link_);
    link_ = nullptr;
    if (js_ != nullptr)
        jsCtx_Destroy(js_);
    if (jsa_ != nullptr)
        jsCtx_Destroy(jsa_);
    if (nc_ != nullptr)
        natsConnection_Destroy(nc_);
    js_ = jsa_ = nullptr;
    nc_ = nullptr;
    report(TODD_COMMS_STATE_STOPPED, TODD_COMMS_OK, "");
}

OptionsPtr NatsTransport::connection_options()
{
    OptionsPtr o = make_options(s_);
    auto must = [](natsStatus st) {
        if (st != NATS_OK)
            throw Error(TODD_COMMS_E_INTERNAL,
                        "nats.c callbacks: " + nats_error(st));
    };
    must(natsOptions_SetReconnectedCB(
        o.get(), &link_cb<&NatsTransport::on_connected>, link_));
    must(natsOptions_SetDisconnectedCB(
        o.get(), &link_cb<&NatsTransport::on_disconnected>, link_));
    must(natsOptions_SetClosedCB(o.get(), &closed_cb, link_));
    must(natsOptions_SetErrorHandler(o.get(), &error_cb, link_));
    return o;
}

void NatsTransport::report(int32_t state, todd_comms_status st,
                           const std::string &why)
{
    std::lock_guard<std::mutex> g(state_mu_);
    // The same state for the same reason is said once, not at every retry.
    if (state_ == TODD_COMMS_STATE_STOPPED ||
        (state == state_ && (why.empty() || why == state_why_)))
        return;
    state_ = state;
    state_why_ = why;
    host().state(state, st, why);
}

void NatsTransport::on_connected()
{
    std::lock_guard<std::mutex> g(svc_mu_);
    linked_ = true;
    recheck_ = true;
    svc_cv_.notify_all();
}

void NatsTransport::on_disconnected()
{
    {
        std::lock_guard<std::mutex> g(svc_mu_);
        linked_ = false;
        ready_ = false;
        if (stopping_)
            return;
    }
    report(TODD_COMMS_STATE_RECONNECTING, TODD_COMMS_E_UNAVAILABLE,
           "connection to the NATS server lost");
}

void NatsTransport::on_closed()
{
    std::lock_guard<std::mutex> g(svc_mu_);
    linked_ = false;
    ready_ = false;
    svc_cv_.notify_all();
}

void NatsTransport::on_async_error(natsStatus st)
{
    host().logf(TODD_COMMS_LOG_WARN, "NATS: %s", natsStatus_GetText(st));
}

std::string NatsTransport::last_error() const
{
    const char *text = nullptr;
    if (nc_ == nullptr || natsConnection_GetLastError(nc_, &text) == NATS_OK ||
        text == nullptr)
        return "";
    return text;
}

bool NatsTransport::pause(Clock::duration d)
{
    std::unique_lock<std::mutex> lk(svc_mu_);
    return svc_cv_.wait_for(lk, d, [&] { return stopping_.load(); });
}

namespace {

// A failure no reconnect fixes (credentials, certificates): FAILED with
// this status; nats.c keeps trying, in case an operator fixes the server.
todd_comms_status permanent(const std::string &why)
{
    auto has = [&](const char *w) { return why.find(w) != std::string::npos; };
    if (has("Authorization") || has("authorization") || has("Authentication") ||
        has("credentials") || has("User Auth"))
        return TODD_COMMS_E_AUTH;
    // A server that drops the connection in the handshake (a client
    // certificate it wants and did not get) leaves nats.c a protocol error.
    if (has("SSL") || has("TLS") || has("certificate") || has("handshake") ||
        has("Protocol Error"))
        return TODD_COMMS_E_PROTOCOL;
    return TODD_COMMS_OK;
}

} // namespace

/**
 * Until the first connection, the plugin retries natsConnection_Connect
 * itself (every reconnect_wait_ms): nats.c's own retry of a failed first
 * connect reports only "no server available", never why (credentials or
 * certificate refused). After it, nats.c reconnects by itself.
 *
 * A connection attempt blocks its caller for up to
 * connect_timeout_ms per server (a server that accepts and never answers),
 * and cannot be interrupted. So it runs on a thread of its own, which stop
 * does not wait for: a connector that stop abandoned closes the connection
 * it got itself (the callbacks' link, whose owner stop cut, outlives it).
 */
struct NatsTransport::Connector {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false, abandoned = false;
    natsConnection *nc = nullptr;
    natsStatus status = NATS_OK;
    std::string error; // nats.c's last error text is per thread
    OptionsPtr opts;
    Link *link = nullptr;

    static void run(std::shared_ptr<Connector> c)
    {
        natsConnection *nc = nullptr;
        natsStatus st = natsConnection_Connect(&nc, c->opts.get());
        std::string error = st == NATS_OK ? "" : nats_error(st);
        if (nc != nullptr)
            c->link->hold(); // released by its closed callback
        std::unique_lock<std::mutex> lk(c->mu);
        if (!c->abandoned) {
            c->nc = nc;
            c->status = st;
            c->error = std::move(error);
            c->done = true;
            c->cv.notify_all();
        } else if (nc != nullptr) {
            lk.unlock();
            natsConnection_Close(nc);
            natsConnection_Destroy(nc);
        }
        Link::release(c->link); // this thread's hold
    }
};

bool NatsTransport::connect()
{
    while (!stopping_) {
        auto c = std::make_shared<Connector>();
        c->opts = connection_options();
        link_->hold();
        c->link = link_;
        std::thread(&Connector::run, c).detach();
        natsConnection *nc = nullptr;
        natsStatus st = NATS_OK;
        std::string why;
        {
            std::unique_lock<std::mutex> lk(c->mu);
            while (!c->done && !stopping_)
                c->cv.wait_for(lk, std::chrono::milliseconds(20));
            if (!c->done) {
                c->abandoned = true;
                return false;
            }
            nc = c->nc;
            st = c->status;
            why = c->error;
        }
        if (st == NATS_OK) {
            jsOptions jo;
            jsOptions_Init(&jo);
            jo.Wait = s_.publish_timeout.count();
            jsCtx *js = nullptr, *jsa = nullptr;
            natsStatus e = natsConnection_JetStream(&js, nc, &jo);
            // publish_batch's: its acks come to batch_ack (publish.cpp).
            jo.PublishAsync.AckHandler = &NatsTransport::batch_ack;
            jo.PublishAsync.AckHandlerClosure = this;
            jo.PublishAsync.MaxPending = 4096;
            if (e == NATS_OK)
                e = natsConnection_JetStream(&jsa, nc, &jo);
            if (e != NATS_OK) {
                jsCtx_Destroy(js);
                natsConnection_Close(nc);
                natsConnection_Destroy(nc);
                throw Error(TODD_COMMS_E_INTERNAL,
                            "JetStream context: " + nats_error(e));
            }
            std::lock_guard<std::mutex> g(svc_mu_);
            nc_ = nc;
            js_ = js;
            jsa_ = jsa;
            linked_ = true;
            recheck_ = true;
            return true;
        }
        if (nc != nullptr) {
            natsConnection_Close(nc);
            natsConnection_Destroy(nc);
        }
        todd_comms_status p = permanent(why);
        report(p != TODD_COMMS_OK ? TODD_COMMS_STATE_FAILED
                                  : TODD_COMMS_STATE_RECONNECTING,
               p != TODD_COMMS_OK ? p : TODD_COMMS_E_UNAVAILABLE, why);
        if (pause(s_.reconnect_wait))
            break;
    }
    return false;
}

void NatsTransport::service_loop()
{
    try {
        if (!connect())
            return;
    } catch (const std::exception &e) {
        report(TODD_COMMS_STATE_FAILED, TODD_COMMS_E_INTERNAL, e.what());
        return;
    }
    std::string reported; // the last reason given while unreachable
    for (;;) {
        {
            std::unique_lock<std::mutex> lk(svc_mu_);
            svc_cv_.wait_for(lk, std::chrono::seconds(1),
                             [&] { return stopping_ || recheck_; });
            if (stopping_)
                return;
            if (!recheck_) {
                if (linked_ || ready_)
                    continue;
                lk.unlock();
                // Still unreachable: say why once per reason, and make a
                // refused login or certificate FAILED.
                std::string why = last_error();
                if (!why.empty() && why != reported) {
                    reported = why;
                    todd_comms_status p = permanent(why);
                    report(p != TODD_COMMS_OK ? TODD_COMMS_STATE_FAILED
                                              : TODD_COMMS_STATE_RECONNECTING,
                           p != TODD_COMMS_OK ? p : TODD_COMMS_E_UNAVAILABLE,
                           why);
                }
                continue;
            }
            recheck_ = false;
        }
        std::string why;
        todd_comms_status st = TODD_COMMS_OK;
        if (ensure_stream(why, st)) {
            {
                std::lock_guard<std::mutex> g(svc_mu_);
                if (!linked_)
                    continue; // lost again meanwhile
                ready_ = true;
                ++ready_epoch_;
                svc_cv_.notify_all();
            }
            reported.clear();
            char url[256] = "";
            natsConnection_GetConnectedUrl(nc_, url, sizeof url);
            report(TODD_COMMS_STATE_CONNECTED, TODD_COMMS_OK,
                   std::string("connected to ") + url);
            continue;
        }
        // JetStream not usable (yet: a restarted server recovers its
        // streams, a cluster elects leaders): try again shortly.
        report(st == TODD_COMMS_E_CONFIG ? TODD_COMMS_STATE_FAILED
                                         : TODD_COMMS_STATE_RECONNECTING,
               st, why);
        if (pause(std::chrono::milliseconds(250)))
            return;
        std::lock_guard<std::mutex> g(svc_mu_);
        if (linked_)
            recheck_ = true;
    }
}

bool NatsTransport::ensure_stream(std::string &why, todd_comms_status &st)
{
    jsStreamInfo *si = nullptr;
    jsErrCode jerr = jsErrCode(0);
    jsOptions jo = api_options(s_);
    natsStatus rc = js_GetStreamInfo(&si, js_, s_.stream.c_str(), &jo, &jerr);
    if (rc == NATS_OK) {
        // Made by someone else: it must take our subjects and drop what
        // was acknowledged, or messages would pile up or go astray.
        const jsStreamConfig *c = si->Config;
        const std::string want = s_.subject_prefix + ".>";
        bool covers = false;
        for (int i = 0; c != nullptr && i < c->SubjectsLen; ++i)
            covers = covers || want == c->Subjects[i];
        const bool wq = c != nullptr && c->Retention == js_WorkQueuePolicy;
        jsStreamInfo_Destroy(si);
        if (covers && wq)
            return true;
        st = TODD_COMMS_E_CONFIG;
        why = "stream '" + s_.stream + "' exists but " +
              (covers ? "does not have work-queue retention"
                      : "does not take the subjects " + want) +
              " (see docs/nats.md: stream)";
        return false;
    }
    if (rc != NATS_NOT_FOUND) {
        st = rc == NATS_TIMEOUT || rc == NATS_NO_RESPONDERS
                 ? TODD_COMMS_E_UNAVAILABLE
                 : TODD_COMMS_E_PROTOCOL;
        why = "stream '" + s_.stream + "': " + nats_error(rc) +
              (rc == NATS_NO_RESPONDERS ? " (is JetStream enabled?)" : "");
        return false;
    }
    if (!s_.create_stream) {
        st = TODD_COMMS_E_CONFIG;
        why = "stream '" + s_.stream +
              "' does not exist and create_stream is off";
        return false;
    }
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    const std::string subjects = s_.subject_prefix + ".>";
    const char *subj[] = {subjects.c_str()};
    cfg.Name = s_.stream.c_str();
    cfg.Description = "ToDD comms: the messages of every destination";
    cfg.Subjects = subj;
    cfg.SubjectsLen = 1;
    cfg.Retention = js_WorkQueuePolicy;
    cfg.Storage = s_.storage == "memory" ? js_MemoryStorage : js_FileStorage;
    cfg.Replicas = s_.replicas;
    cfg.MaxAge = s_.retention.count() * 1000000LL;
    cfg.Duplicates = s_.duplicate_window.count() * 1000000LL;
    rc = js_AddStream(nullptr, js_, &cfg, &jo, &jerr);
    if (rc == NATS_OK)
        return true;
    // Made by a peer meanwhile: check it like any existing one.
    if (jerr == JSStreamNameExistErr)
        return ensure_stream(why, st);
    st = rc == NATS_TIMEOUT || rc == NATS_NO_RESPONDERS
             ? TODD_COMMS_E_UNAVAILABLE
             : TODD_COMMS_E_PROTOCOL;
    why = "cannot create stream '" + s_.stream + "': " + nats_error(rc);
    if (jerr == JSStreamReplicasNotSupportedErr ||
        jerr == JSInsufficientResourcesErr)
        why += " (replicas = " + std::to_string(s_.replicas) +
               " needs that many JetStream servers)";
    return false;
}

bool NatsTransport::wait_ready(Clock::time_point deadline)
{
    std::unique_lock<std::mutex> lk(svc_mu_);
    return svc_cv_.wait_until(lk, deadline, [&] {
        return ready_ || stopping_;
    }) && !stopping_;
}

} // namespace todd_nats

TODD_COMMS_PLUGIN(todd_nats::NatsTransport, "nats", "0.1.0", "Apache-2.0",
                  "NATS JetStream via nats.c: one work-queue stream, a "
                  "durable consumer per destination",
                  TODD_COMMS_CAP_ACK | TODD_COMMS_CAP_TTL |
                      TODD_COMMS_CAP_CONFIRMS | TODD_COMMS_CAP_DURABLE |
                      TODD_COMMS_CAP_REMOTE | TODD_COMMS_CAP_TLS |
                      TODD_COMMS_CAP_BATCH,
                  todd_nats::kKeys)
