// SPDX-License-Identifier: Apache-2.0
// The RabbitMQ transport's consuming link: owned by one thread that
// declares, consumes, delivers to the host, settles and reconnects. One
// channel per subscription, so a 406 or a cancel only ever affects that
// subscription.
#include "transport.hpp"

#include <algorithm>
#include <cstring>
#include <poll.h>

namespace todd_rabbitmq {

using namespace todd::comms::sdk;

void RabbitTransport::subscribe(const char *destination, uint64_t cookie,
                                const todd_comms_subscribe_opts *opts)
{
    check_destination(destination);
    std::unique_lock<std::mutex> lk(con_mu_);
    if (stopping_)
        throw Error(TODD_COMMS_E_STATE, "transport is stopped");
    if (subs_.count(cookie))
        throw Error(TODD_COMMS_E_INVAL,
                    "cookie " + std::to_string(cookie) + " already used");
    auto sub = std::make_shared<Sub>();
    sub->dest = destination;
    sub->cookie = cookie;
    uint32_t pf = prefetch(opts);
    sub->prefetch = pf != 0 ? pf : s_.prefetch;
    subs_[cookie] = sub;
    if (!started_)
        return; // consumed once connected
    con_wake_.wake();
    // Wait for the broker's answer so a refused declaration is an error
    // of this call, but not for a connection that is not up (only
    // while the first attempt may still succeed quickly): a control
    // call that waits for a dead broker keeps the host from stopping.
    auto deadline = Clock::now() + s_.connect_timeout + milliseconds(5000);
    auto grace_end =
        started_at_ + std::min(s_.connect_timeout, first_connect_grace);
    for (;;) {
        if (sub->phase != Sub::Phase::wanted || stopping_)
            break;
        auto now = Clock::now();
        if (now >= deadline ||
            (!con_up_ && (con_attempted_ || now >= grace_end)))
            break;
        con_cv_.wait_until(lk,
                           con_up_ ? deadline : std::min(deadline, grace_end));
    }
    if (sub->phase == Sub::Phase::failed) {
        subs_.erase(cookie);
        throw Error(sub->status, sub->error);
    }
}

void RabbitTransport::unsubscribe(uint64_t cookie)
{
    std::unique_lock<std::mutex> lk(con_mu_);
    auto it = subs_.find(cookie);
    if (it == subs_.end())
        throw Error(TODD_COMMS_E_INVAL,
                    "unknown subscription " + std::to_string(cookie));
    auto sub = it->second;
    if (!started_ || stopped_ || !con_thread_.joinable() || !con_up_) {
        // Not consuming at any broker, and the consumer thread looks
        // at subs_ only while connected: nothing to wait for.
        subs_.erase(it);
        return;
    }
    sub->removing = true;
    con_wake_.wake();
    // The consumer thread erases it between deliveries: after that no
    // deliver for this cookie can start.
    con_cv_.wait(lk, [&] { return subs_.count(cookie) == 0 || con_exited_; });
    subs_.erase(cookie);
}

void RabbitTransport::con_loop()
{
    amqp_connection_state_t conn = nullptr;
    bool was_up = false;
    std::string why;
    while (!stopping_) {
        if (conn == nullptr) {
            Outcome o;
            std::string where;
            conn = open_connection(s_, &con_next_broker_, "consumer",
                                   {stop_line_.fd(), &con_guard_}, &o, &where);
            if (conn == nullptr) {
                con_guard_.release();
                if (stopping_)
                    break;
                {
                    std::lock_guard<std::mutex> g(con_mu_);
                    con_attempted_ = true;
                    con_cv_.notify_all();
                }
                report_failure(Link::con, was_up, o);
                // Pending subscribe calls stop waiting.
                if (backoff_wait(con_mu_, con_cv_, con_backoff_))
                    break;
                continue;
            }
            con_backoff_.reset();
            con_guard_.established();
            used_channels_.clear();
            used_channels_.insert(pub_channel); // opened by connect
            next_channel_ = 2;
            {
                std::lock_guard<std::mutex> g(con_mu_);
                con_up_ = true;
                con_attempted_ = true;
                chan_subs_.clear();
                for (auto &kv : subs_) {
                    kv.second->phase = Sub::Phase::wanted;
                    kv.second->channel = 0;
                }
            }
            was_up = true;
            ever_up_ = true;
            report(Link::con, TODD_COMMS_STATE_CONNECTED, TODD_COMMS_OK, where);
        }
        bool alive = reconcile(conn, &why) && con_drain(conn, &why);
        if (alive && !amqp_frames_enqueued(conn) &&
            !amqp_data_in_buffer(conn)) {
            struct pollfd fds[2] = {{amqp_get_sockfd(conn), POLLIN, 0},
                                    {con_wake_.fd(), POLLIN, 0}};
            poll(fds, 2, 1000);
            if (fds[1].revents & POLLIN)
                con_wake_.drain();
            alive = con_drain(conn, &why);
        }
        if (!alive) {
            close_connection(conn, false);
            con_guard_.release();
            conn = nullptr;
            {
                std::lock_guard<std::mutex> g(con_mu_);
                con_up_ = false;
                for (auto it = subs_.begin(); it != subs_.end();) {
                    if (it->second->removing)
                        it = subs_.erase(it);
                    else
                        ++it;
                }
                con_cv_.notify_all();
            }
            if (stopping_)
                break;
            report(Link::con, TODD_COMMS_STATE_RECONNECTING,
                   TODD_COMMS_E_UNAVAILABLE, why);
            if (backoff_wait(con_mu_, con_cv_, con_backoff_))
                break;
        }
    }
    close_connection(conn, conn != nullptr);
    con_guard_.release();
    std::lock_guard<std::mutex> g(con_mu_);
    con_up_ = false;
    con_exited_ = true;
    con_cv_.notify_all();
}

bool RabbitTransport::reconcile(amqp_connection_state_t c, std::string *why)
{
    for (;;) {
        std::shared_ptr<Sub> work;
        {
            std::lock_guard<std::mutex> g(con_mu_);
            for (auto &kv : subs_) {
                auto &s = kv.second;
                if (s->removing ||
                    (s->phase == Sub::Phase::wanted && !stopping_)) {
                    work = s;
                    break;
                }
            }
            if (!work)
                return true;
        }
        if (work->removing) {
            if (work->phase == Sub::Phase::consuming) {
                // Closing the channel cancels the consumer; the broker
                // requeues its unacked deliveries.
                amqp_channel_close(c, work->channel, AMQP_REPLY_SUCCESS);
                free_channel(work->channel);
            }
            std::lock_guard<std::mutex> g(con_mu_);
            chan_subs_.erase(work->channel);
            subs_.erase(work->cookie);
            con_cv_.notify_all();
            continue;
        }
        Outcome o = start_consumer(c, *work);
        std::lock_guard<std::mutex> g(con_mu_);
        if (o.status == TODD_COMMS_E_UNAVAILABLE) {
            *why = o.detail;
            return false;
        }
        if (o.ok()) {
            work->phase = Sub::Phase::consuming;
        } else {
            work->phase = Sub::Phase::failed;
            work->status = o.status;
            work->error = o.detail;
            host().logf(TODD_COMMS_LOG_ERROR, "subscribe: %s",
                        o.detail.c_str());
        }
        con_cv_.notify_all();
    }
}

amqp_channel_t RabbitTransport::alloc_channel()
{
    if (next_channel_ > 2000)
        next_channel_ = 2;
    while (used_channels_.count(next_channel_))
        ++next_channel_;
    used_channels_.insert(next_channel_);
    return next_channel_++;
}

Outcome RabbitTransport::start_consumer(amqp_connection_state_t c, Sub &sub)
{
    amqp_channel_t ch = alloc_channel();
    amqp_channel_open(c, ch);
    if (!rpc_ok(c)) {
        free_channel(ch);
        return {
            TODD_COMMS_E_UNAVAILABLE,
            describe_rpc(amqp_get_rpc_reply(c), "channel.open").outcome.detail};
    }
    Outcome o = declare_topology(c, ch, sub.dest, false);
    if (o.ok() && sub.prefetch > 0) {
        amqp_basic_qos(c, ch, 0, static_cast<uint16_t>(sub.prefetch), 0);
        if (!rpc_ok(c))
            o = declare_failed(c, ch, false, "basic.qos", sub.dest);
    }
    if (o.ok()) {
        amqp_basic_consume(c, ch, amqp_cstring_bytes(sub.dest.c_str()),
                           amqp_cstring_bytes(sub.dest.c_str()), 0,
                           0 /* manual ack */, 0, amqp_empty_table);
        if (!rpc_ok(c))
            o = declare_failed(c, ch, false, "basic.consume '" + sub.dest + "'",
                               sub.dest);
    }
    if (!o.ok()) {
        free_channel(ch);
        return o;
    }
    sub.channel = ch;
    std::lock_guard<std::mutex> g(con_mu_);
    chan_subs_[ch] = sub.cookie;
    return {};
}

bool RabbitTransport::con_drain(amqp_connection_state_t c, std::string *why)
{
    for (int budget = 0; budget < 1000 && !stopping_; ++budget) {
        if (dirty())
            return true; // reconcile first (unsubscribe waits)
        if (!amqp_frames_enqueued(c))
            amqp_maybe_release_buffers(c);
        amqp_envelope_t env;
        timeval zero{0, 0};
        amqp_rpc_reply_t r = amqp_consume_message(c, &env, &zero, 0);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
            handle_delivery(c, env);
            amqp_destroy_envelope(&env);
            continue;
        }
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_TIMEOUT)
            return true;
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            amqp_frame_t f;
            if (amqp_simple_wait_frame(c, &f) != AMQP_STATUS_OK) {
                *why = "connection lost";
                return false;
            }
            if (!handle_con_frame(c, f, why))
                return false;
            continue;
        }
        *why = r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION
                   ? std::string("connection lost: ") +
                         amqp_error_string2(r.library_error)
                   : std::string("connection lost");
        return false;
    }
    return true;
}

bool RabbitTransport::dirty()
{
    std::lock_guard<std::mutex> g(con_mu_);
    for (auto &kv : subs_)
        if (kv.second->removing || kv.second->phase == Sub::Phase::wanted)
            return true;
    return false;
}

bool RabbitTransport::handle_con_frame(amqp_connection_state_t c,
                                       const amqp_frame_t &f, std::string *why)
{
    if (f.frame_type != AMQP_FRAME_METHOD)
        return true;
    switch (f.payload.method.id) {
    case AMQP_CONNECTION_CLOSE_METHOD: {
        auto *m =
            static_cast<amqp_connection_close_t *>(f.payload.method.decoded);
        *why = "broker closed the connection (" +
               std::to_string(m->reply_code) + " " + bytes_str(m->reply_text) +
               ")";
        amqp_connection_close_ok_t ok{};
        amqp_send_method(c, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        return false;
    }
    case AMQP_CHANNEL_CLOSE_METHOD:
    case AMQP_BASIC_CANCEL_METHOD: {
        // The queue went away (deleted) or the channel failed: consume
        // again, which redeclares the queue.
        bool closed = f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD;
        if (closed)
            close_ok_channel(c, f.channel);
        else
            amqp_channel_close(c, f.channel, AMQP_REPLY_SUCCESS);
        free_channel(f.channel);
        std::lock_guard<std::mutex> g(con_mu_);
        auto it = chan_subs_.find(f.channel);
        if (it != chan_subs_.end()) {
            auto s = subs_.find(it->second);
            if (s != subs_.end() && !s->second->removing) {
                host().logf(TODD_COMMS_LOG_WARN,
                            "consumer of '%s' cancelled by the "
                            "broker; subscribing again",
                            s->second->dest.c_str());
                s->second->phase = Sub::Phase::wanted;
            }
            chan_subs_.erase(it);
        }
        return true;
    }
    default: return true;
    }
}

void RabbitTransport::handle_delivery(amqp_connection_state_t c,
                                      amqp_envelope_t &env)
{
    std::shared_ptr<Sub> sub;
    {
        std::lock_guard<std::mutex> g(con_mu_);
        auto ch = chan_subs_.find(env.channel);
        if (ch != chan_subs_.end()) {
            auto s = subs_.find(ch->second);
            if (s != subs_.end() && !s->second->removing &&
                s->second->phase == Sub::Phase::consuming)
                sub = s->second;
        }
    }
    if (!sub)
        return; // its channel is closed: the broker requeued it

    std::string ctype;
    bool has_ctype =
        env.message.properties._flags & AMQP_BASIC_CONTENT_TYPE_FLAG;
    if (has_ctype)
        ctype = bytes_str(env.message.properties.content_type);
    todd_comms_message m;
    m.struct_size = sizeof m;
    m.flags = env.redelivered ? TODD_COMMS_MSG_REDELIVERED : 0;
    m.destination = sub->dest.c_str();
    m.payload = static_cast<const uint8_t *>(env.message.body.bytes);
    m.payload_len = env.message.body.len;
    m.content_type = has_ctype ? ctype.c_str() : nullptr;
    int32_t v = host().deliver(sub->cookie, m);
    switch (v) {
    case TODD_COMMS_VERDICT_ACK:
        amqp_basic_ack(c, env.channel, env.delivery_tag, 0);
        break;
    case TODD_COMMS_VERDICT_REQUEUE:
        amqp_basic_nack(c, env.channel, env.delivery_tag, 0, 1);
        break;
    default: // REJECT or unknown: never redeliver (dead-lettered
             // when dead_letter_exchange is set, else dropped)
        amqp_basic_reject(c, env.channel, env.delivery_tag, 0);
        break;
    }
}

} // namespace todd_rabbitmq
