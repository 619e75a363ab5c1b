// SPDX-License-Identifier: Apache-2.0
// The RabbitMQ transport's publishing link: any thread publishes under
// pub_mu_; one I/O thread reads confirms, returns and heartbeats and
// reconnects. A publisher waiting for its confirm reads the socket itself.
#include "transport.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <poll.h>

namespace todd_rabbitmq {

using namespace todd::comms::sdk;

namespace {

uint64_t fnv1a(const void *data, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    auto *p = static_cast<const unsigned char *>(data);
    for (size_t i = 0; i < len; ++i)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

} // namespace

void RabbitTransport::publish(const char *destination, const uint8_t *payload,
                              uint64_t len, const todd_comms_publish_opts *opts)
{
    Item it(destination, payload, len, opts);
    publish_items(&it, 1);
    if (it.status != TODD_COMMS_OK)
        throw Error(it.status, it.error);
}

todd_comms_status
RabbitTransport::publish_batch(const todd_comms_outgoing *msgs, uint32_t count,
                               todd_comms_status *statuses)
{
    std::vector<Item> items;
    items.reserve(count);
    for (uint32_t i = 0; i < count; ++i)
        items.emplace_back(msgs[i].destination, msgs[i].payload,
                           msgs[i].payload_len, msgs[i].opts);
    publish_items(items.data(), items.size());
    todd_comms_status first = TODD_COMMS_OK;
    for (uint32_t i = 0; i < count; ++i) {
        statuses[i] = items[i].status;
        if (first == TODD_COMMS_OK && items[i].status != TODD_COMMS_OK) {
            first = items[i].status;
            host().logf(TODD_COMMS_LOG_ERROR, "publish_batch: %s",
                        items[i].error.c_str());
        }
    }
    return first;
}

void RabbitTransport::publish_items(Item *items, size_t n)
{
    for (size_t i = 0; i < n; ++i) {
        size_t dl = std::strlen(items[i].dest);
        if (dl == 0 || dl > 255) {
            items[i].status = TODD_COMMS_E_INVAL;
            items[i].error = "destination must be 1-255 bytes";
        }
    }
    auto deadline = Clock::now() + s_.publish_timeout;
    std::unique_lock<std::mutex> lk(pub_mu_);
    for (;;) {
        size_t todo = 0;
        for (size_t i = 0; i < n; ++i)
            if (items[i].status == pending)
                ++todo;
        if (todo == 0)
            return;
        if (!started_ || stopping_) {
            fail_pending(items, n,
                         stopping_ ? TODD_COMMS_E_STATE : TODD_COMMS_E_STATE,
                         stopping_ ? "transport is stopped"
                                   : "transport is not started");
            return;
        }
        if (!pub_up_) {
            bool up = pub_cv_.wait_until(
                lk, deadline, [&] { return pub_up_ || stopping_.load(); });
            if (!up) {
                fail_pending(items, n, TODD_COMMS_E_UNAVAILABLE,
                             "no connection to RabbitMQ within " +
                                 std::to_string(s_.publish_timeout.count()) +
                                 " ms (" + pub_last_error_ + ")");
                return;
            }
            continue;
        }
        uint64_t gen = pub_gen_;
        send_items(items, n);
        if (gen != pub_gen_ || !pub_up_)
            continue; // connection lost while sending: try again
        if (!s_.confirms) {
            kick_io_locked();
            continue; // done unless something is still pending
        }
        bool done = wait_confirms(lk, items, n, deadline);
        if (!done) {
            for (size_t i = 0; i < n; ++i)
                if (items[i].in_flight) {
                    inflight_.erase(items[i].seq);
                    items[i].in_flight = false;
                    items[i].status = TODD_COMMS_E_TIMEOUT;
                    items[i].error =
                        "no confirm from the broker within " +
                        std::to_string(s_.publish_timeout.count()) +
                        " ms for a message to '" + items[i].dest + "'";
                }
            return;
        }
        // Lost with the connection: resend while time remains.
        bool any_lost = false;
        for (size_t i = 0; i < n; ++i)
            if (items[i].lost) {
                items[i].lost = false;
                items[i].status = pending;
                any_lost = true;
            }
        if (any_lost && Clock::now() >= deadline) {
            fail_pending(items, n, TODD_COMMS_E_UNAVAILABLE,
                         "connection to RabbitMQ lost before the broker "
                         "confirmed the message");
            return;
        }
    }
}

bool RabbitTransport::wait_confirms(std::unique_lock<std::mutex> &lk,
                                    Item *items, size_t n,
                                    Clock::time_point deadline)
{
    auto settled = [&] {
        for (size_t i = 0; i < n; ++i)
            if (items[i].in_flight)
                return false;
        return true;
    };
    while (!settled()) {
        auto now = Clock::now();
        if (now >= deadline)
            return false;
        auto slice =
            std::min<Clock::duration>(deadline - now, milliseconds(100));
        if (reader_active_ || !pub_up_) {
            pub_cv_.wait_for(lk, slice);
            continue;
        }
        reader_active_ = true;
        pub_drain();
        if (!settled() && pub_up_ && !amqp_frames_enqueued(pub_conn_) &&
            !amqp_data_in_buffer(pub_conn_)) {
            uint64_t gen = pub_gen_;
            // reader_wake_: the I/O thread settled ours meanwhile.
            struct pollfd pfd[2] = {{amqp_get_sockfd(pub_conn_), POLLIN, 0},
                                    {reader_wake_.fd(), POLLIN, 0}};
            lk.unlock();
            poll(pfd, 2,
                 static_cast<int>(
                     std::chrono::duration_cast<milliseconds>(slice).count()) +
                     1);
            lk.lock();
            if (pfd[1].revents & POLLIN)
                reader_wake_.drain();
            if (pub_up_ && gen == pub_gen_)
                pub_drain();
        }
        reader_active_ = false;
        pub_cv_.notify_all();
    }
    return true;
}

void RabbitTransport::fail_pending(Item *items, size_t n, todd_comms_status st,
                                   const std::string &why)
{
    for (size_t i = 0; i < n; ++i)
        if (items[i].status == pending) {
            items[i].status = st;
            items[i].error =
                why + " (destination '" + std::string(items[i].dest) + "')";
        }
}

void RabbitTransport::send_items(Item *items, size_t n)
{
    for (size_t i = 0; i < n && pub_up_; ++i) {
        Item &it = items[i];
        if (it.status != pending)
            continue;
        Outcome d = declare_for_publish(it.dest);
        if (!pub_up_)
            return;
        if (!d.ok()) {
            it.status = d.status;
            it.error = d.detail;
            continue;
        }
        amqp_basic_properties_t props;
        props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG;
        props.content_type = amqp_cstring_bytes(content_type(it.opts));
        char exp[32];
        int64_t ttl = ttl_ms(it.opts);
        if (ttl > 0) {
            std::snprintf(exp, sizeof exp, "%lld", static_cast<long long>(ttl));
            props._flags |= AMQP_BASIC_EXPIRATION_FLAG;
            props.expiration = amqp_cstring_bytes(exp);
        }
        if (s_.durable) {
            props._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
            props.delivery_mode = 2;
        }
        amqp_bytes_t body;
        body.len = it.len;
        body.bytes = const_cast<uint8_t *>(it.payload);
        if (s_.confirms) {
            it.seq = ++pub_seq_;
            it.hash = fnv1a(it.payload, it.len);
            it.returned = it.lost = false;
            it.in_flight = true;
            inflight_[it.seq] = &it;
        }
        int rc = amqp_basic_publish(
            pub_conn_, pub_channel, amqp_cstring_bytes(s_.exchange.c_str()),
            amqp_cstring_bytes(it.dest), 1 /* mandatory */, 0, &props, body);
        if (rc != AMQP_STATUS_OK) {
            if (s_.confirms) {
                inflight_.erase(it.seq);
                it.in_flight = false;
            }
            pub_link_lost(std::string("publish: ") + amqp_error_string2(rc));
            return;
        }
        if (!s_.confirms)
            it.status = TODD_COMMS_OK; // handed to the broker
    }
}

Outcome RabbitTransport::declare_for_publish(const char *dest)
{
    if (declared_.find(std::string_view(dest)) != declared_.end())
        return {};
    Outcome o = declare_topology(pub_conn_, decl_channel, dest, true);
    if (o.ok())
        declared_.insert(dest);
    return o;
}

void RabbitTransport::pub_link_lost(const std::string &why)
{
    if (!pub_up_)
        return;
    pub_up_ = false;
    pub_down_reason_ = why;
    pub_last_error_ = why;
    ++pub_gen_;
    for (auto &kv : inflight_) {
        kv.second->in_flight = false;
        kv.second->lost = true;
    }
    inflight_.clear();
    pub_cv_.notify_all();
    pub_wake_.wake();
    reader_wake_.wake();
}

void RabbitTransport::kick_io_locked()
{
    if (pub_conn_ != nullptr &&
        (amqp_frames_enqueued(pub_conn_) || amqp_data_in_buffer(pub_conn_)))
        pub_wake_.wake();
}

void RabbitTransport::pub_loop()
{
    amqp_connection_state_t conn = nullptr;
    bool was_up = false;
    while (!stopping_) {
        if (conn == nullptr) {
            Outcome o;
            std::string where;
            conn = open_connection(s_, &pub_next_broker_, "publisher",
                                   {stop_line_.fd(), &pub_guard_}, &o, &where);
            if (conn != nullptr && s_.confirms) {
                amqp_confirm_select(conn, pub_channel);
                if (!rpc_ok(conn)) {
                    o = describe_rpc(amqp_get_rpc_reply(conn), "confirm.select")
                            .outcome;
                    close_connection(conn, false);
                    conn = nullptr;
                }
            }
            if (conn == nullptr) {
                pub_guard_.release();
                if (stopping_)
                    break;
                {
                    std::lock_guard<std::mutex> g(pub_mu_);
                    pub_last_error_ = o.detail;
                }
                report_failure(Link::pub, was_up, o);
                if (backoff_wait(pub_mu_, pub_cv_, pub_backoff_))
                    break;
                continue;
            }
            pub_backoff_.reset();
            pub_guard_.established();
            {
                std::lock_guard<std::mutex> g(pub_mu_);
                pub_conn_ = conn;
                pub_up_ = true;
                pub_seq_ = 0;
                declared_.clear();
                exchange_declared_ = false;
                decl_open_ = false;
                pub_cv_.notify_all();
            }
            was_up = true;
            ever_up_ = true;
            report(Link::pub, TODD_COMMS_STATE_CONNECTED, TODD_COMMS_OK, where);
        }
        struct pollfd fds[2] = {{pub_wake_.fd(), POLLIN, 0},
                                {amqp_get_sockfd(conn), POLLIN, 0}};
        bool buffered, readers;
        {
            std::lock_guard<std::mutex> g(pub_mu_);
            buffered = amqp_frames_enqueued(conn) || amqp_data_in_buffer(conn);
            // Publishers waiting for confirms read the socket
            // themselves; stay out of their way (no lock ping-pong).
            readers = !inflight_.empty();
        }
        if (!buffered || readers)
            poll(fds, readers ? 1 : 2, readers ? 100 : 1000);
        if (fds[0].revents & POLLIN)
            pub_wake_.drain();
        std::unique_lock<std::mutex> lk(pub_mu_);
        if (pub_up_ && inflight_.empty())
            pub_drain();
        if (!pub_up_) {
            // Lost: close it here (publishers no longer touch it).
            std::string why = pub_down_reason_;
            pub_conn_ = nullptr;
            lk.unlock();
            close_connection(conn, false);
            pub_guard_.release();
            conn = nullptr;
            if (!stopping_)
                report(Link::pub, TODD_COMMS_STATE_RECONNECTING,
                       TODD_COMMS_E_UNAVAILABLE, why);
            if (!stopping_ && backoff_wait(pub_mu_, pub_cv_, pub_backoff_))
                break;
        }
    }
    std::unique_lock<std::mutex> lk(pub_mu_);
    pub_link_lost("transport stopped");
    pub_conn_ = nullptr;
    lk.unlock();
    close_connection(conn, true);
    pub_guard_.release();
}

void RabbitTransport::pub_drain()
{
    for (int budget = 0; budget < 100000 && pub_up_; ++budget) {
        amqp_frame_t f;
        timeval zero{0, 0};
        int rc = amqp_simple_wait_frame_noblock(pub_conn_, &f, &zero);
        if (rc == AMQP_STATUS_TIMEOUT)
            break;
        if (rc != AMQP_STATUS_OK) {
            pub_link_lost(std::string("connection lost: ") +
                          amqp_error_string2(rc));
            return;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        switch (f.payload.method.id) {
        case AMQP_BASIC_ACK_METHOD: {
            auto *a = static_cast<amqp_basic_ack_t *>(f.payload.method.decoded);
            settle(a->delivery_tag, a->multiple != 0, true);
            break;
        }
        case AMQP_BASIC_NACK_METHOD: {
            auto *a =
                static_cast<amqp_basic_nack_t *>(f.payload.method.decoded);
            settle(a->delivery_tag, a->multiple != 0, false);
            break;
        }
        case AMQP_BASIC_RETURN_METHOD: on_return(f); break;
        case AMQP_CHANNEL_CLOSE_METHOD: {
            auto *m =
                static_cast<amqp_channel_close_t *>(f.payload.method.decoded);
            std::string why = "broker closed channel " +
                              std::to_string(f.channel) + " (" +
                              std::to_string(m->reply_code) + " " +
                              bytes_str(m->reply_text) + ")";
            host().logf(TODD_COMMS_LOG_WARN, "%s", why.c_str());
            // Simplest correct recovery: a fresh connection.
            pub_link_lost(why);
            return;
        }
        case AMQP_CONNECTION_CLOSE_METHOD: {
            auto *m = static_cast<amqp_connection_close_t *>(
                f.payload.method.decoded);
            amqp_connection_close_ok_t ok{};
            amqp_send_method(pub_conn_, 0, AMQP_CONNECTION_CLOSE_OK_METHOD,
                             &ok);
            pub_link_lost("broker closed the connection (" +
                          std::to_string(m->reply_code) + " " +
                          bytes_str(m->reply_text) + ")");
            return;
        }
        case AMQP_CONNECTION_BLOCKED_METHOD:
            host().log(TODD_COMMS_LOG_WARN,
                       "broker blocked publishing (resource "
                       "alarm); publishes wait");
            break;
        case AMQP_CONNECTION_UNBLOCKED_METHOD:
            host().log(TODD_COMMS_LOG_INFO, "broker unblocked publishing");
            break;
        default: break;
        }
    }
    if (!amqp_frames_enqueued(pub_conn_))
        amqp_maybe_release_buffers(pub_conn_);
}

void RabbitTransport::settle(uint64_t tag, bool multiple, bool ack)
{
    auto end = multiple ? inflight_.upper_bound(tag) : inflight_.find(tag);
    auto begin = multiple ? inflight_.begin() : end;
    if (!multiple) {
        if (end == inflight_.end())
            return;
        ++end;
    }
    for (auto it = begin; it != end; ++it) {
        Item &m = *it->second;
        m.in_flight = false;
        if (!ack) {
            m.status = TODD_COMMS_E_PROTOCOL;
            m.error = "broker refused (nack) a message to '" +
                      std::string(m.dest) + "'";
        } else if (m.returned) {
            m.status = TODD_COMMS_E_NOROUTE;
            m.error = "message to '" + std::string(m.dest) +
                      "' was unroutable (no queue bound with that key on "
                      "exchange '" +
                      s_.exchange + "')";
        } else {
            m.status = TODD_COMMS_OK;
        }
    }
    inflight_.erase(begin, end);
    pub_cv_.notify_all();
    if (reader_active_)
        reader_wake_.wake();
}

void RabbitTransport::on_return(const amqp_frame_t &f)
{
    auto *r = static_cast<amqp_basic_return_t *>(f.payload.method.decoded);
    std::string key = bytes_str(r->routing_key);
    std::string text = bytes_str(r->reply_text);
    uint16_t code = r->reply_code;
    amqp_message_t msg;
    amqp_rpc_reply_t rr = amqp_read_message(pub_conn_, f.channel, &msg, 0);
    if (rr.reply_type != AMQP_RESPONSE_NORMAL) {
        pub_link_lost("reading a returned message failed");
        return;
    }
    uint64_t h = fnv1a(msg.body.bytes, msg.body.len);
    size_t len = msg.body.len;
    amqp_destroy_message(&msg);
    declared_.erase(key); // redeclare before the next publish
    for (auto &kv : inflight_) {
        Item &m = *kv.second;
        if (!m.returned && m.hash == h && m.len == len && key == m.dest) {
            m.returned = true;
            return;
        }
    }
    host().logf(TODD_COMMS_LOG_WARN,
                "a message to '%s' was unroutable (%u %s) and "
                "dropped",
                key.c_str(), code, text.c_str());
}

} // namespace todd_rabbitmq
