// SPDX-License-Identifier: Apache-2.0
//
// ToDD comms transport over RabbitMQ (AMQP 0-9-1, rabbitmq-c 0.11), built
// only against the public plugin SDK.
//
// Topology is exactly the Go ToDD's (docs/rabbitmq.md): direct exchange
// test_exchange, one plain queue per destination bound with key = queue name.
//
// rabbitmq-c connections are not thread-safe, so there are two long-lived
// connections (as RabbitMQ advises: publishers and consumers apart):
//  - the publishing link: any thread publishes under pub_mu_; one I/O thread
//    reads confirms, returns and heartbeats and reconnects;
//  - the consuming link: owned by one thread that declares, consumes,
//    delivers to the host, settles, and reconnects. One channel per
//    subscription, so a 406 or a cancel only ever affects that subscription.
// A publish thus makes progress while the consumer thread sits in deliver.

#include "connect.hpp"
#include "keys.hpp"
#include "settings.hpp"

#include <todd/comms/sdk.hpp>

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <poll.h>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <sys/eventfd.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using namespace todd::comms::sdk;
using namespace todd_rabbitmq;
using Clock = std::chrono::steady_clock;

uint64_t fnv1a(const void *data, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    auto *p = static_cast<const unsigned char *>(data);
    for (size_t i = 0; i < len; ++i)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

class RabbitTransport final : public Transport {
  public:
    RabbitTransport(const Host &host, const Config &config)
        : Transport(host, config), s_(parse_settings(config)),
          pub_backoff_(s_.reconnect_max), con_backoff_(s_.reconnect_max)
    {
        std::string where;
        for (const auto &b : s_.brokers)
            where += (where.empty() ? "" : ",") + b.host + ":" +
                     std::to_string(b.port);
        host.logf(TODD_COMMS_LOG_DEBUG,
                  "brokers %s, user '%s', vhost '%s', tls %s, "
                  "confirms %s, durable %s, dead letters %s",
                  where.c_str(), s_.user.c_str(), s_.vhost.c_str(),
                  s_.tls ? "on" : "off", s_.confirms ? "on" : "off",
                  s_.durable ? "on" : "off",
                  s_.dead_letter_exchange.empty()
                      ? "dropped"
                      : s_.dead_letter_exchange.c_str());
    }

    ~RabbitTransport() override { stop(); }

    void start() override
    {
        std::lock_guard<std::mutex> g(control_mu_);
        if (started_)
            throw Error(TODD_COMMS_E_STATE, "already started");
        started_ = true;
        started_at_ = Clock::now();
        report(Link::pub, TODD_COMMS_STATE_CONNECTING, TODD_COMMS_OK, "");
        pub_thread_ = std::thread([this] {
            pub_loop();
            thread_done();
        });
        con_thread_ = std::thread([this] {
            con_loop();
            thread_done();
        });
    }

    void stop() override
    {
        std::lock_guard<std::mutex> g(control_mu_);
        if (!started_ || stopped_)
            return;
        stopping_ = true;
        {
            std::lock_guard<std::mutex> p(pub_mu_);
            pub_cv_.notify_all();
        }
        {
            std::lock_guard<std::mutex> c(con_mu_);
            con_cv_.notify_all();
        }
        pub_wake_.wake();
        con_wake_.wake();
        // Attempts not yet up end now; a live connection gets a grace
        // time to close cleanly, then its socket is cut too, whatever RPC
        // the thread may be blocked in on a broker that stopped answering.
        stop_line_.wake();
        pub_guard_.cut(false);
        con_guard_.cut(false);
        {
            std::unique_lock<std::mutex> lk(exit_mu_);
            if (!exit_cv_.wait_for(lk, stop_grace,
                                   [&] { return threads_done_ == 2; })) {
                lk.unlock();
                pub_guard_.cut(true);
                con_guard_.cut(true);
            }
        }
        if (pub_thread_.joinable())
            pub_thread_.join();
        if (con_thread_.joinable())
            con_thread_.join();
        stopped_ = true;
        host().state(TODD_COMMS_STATE_STOPPED, TODD_COMMS_OK, "stopped");
    }

    // ------------------------------------------------------------------
    // Publishing

    void publish(const char *destination, const uint8_t *payload, uint64_t len,
                 const todd_comms_publish_opts *opts) override
    {
        Item it(destination, payload, len, opts);
        publish_items(&it, 1);
        if (it.status != TODD_COMMS_OK)
            throw Error(it.status, it.error);
    }

    todd_comms_status publish_batch(const todd_comms_outgoing *msgs,
                                    uint32_t count,
                                    todd_comms_status *statuses) override
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

    // ------------------------------------------------------------------
    // Subscribing

    void subscribe(const char *destination, uint64_t cookie,
                   const todd_comms_subscribe_opts *opts) override
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
            con_cv_.wait_until(lk, con_up_ ? deadline
                                           : std::min(deadline, grace_end));
        }
        if (sub->phase == Sub::Phase::failed) {
            subs_.erase(cookie);
            throw Error(sub->status, sub->error);
        }
    }

    void unsubscribe(uint64_t cookie) override
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
        con_cv_.wait(lk,
                     [&] { return subs_.count(cookie) == 0 || con_exited_; });
        subs_.erase(cookie);
    }

  private:
    // How long stop() lets a live connection close cleanly.
    static constexpr milliseconds stop_grace{1000};
    // How long subscribe waits for a first connection that is not up yet.
    static constexpr milliseconds first_connect_grace{1000};

    void thread_done()
    {
        std::lock_guard<std::mutex> g(exit_mu_);
        ++threads_done_;
        exit_cv_.notify_all();
    }

    // ------------------------------------------------------------------
    // State reporting: one state for the instance, from both links.

    enum class Link { pub = 0, con = 1 };

    void report(Link link, int32_t state, todd_comms_status st,
                const std::string &detail)
    {
        std::lock_guard<std::mutex> g(state_mu_);
        link_state_[static_cast<int>(link)] = state;
        int32_t a = link_state_[0], b = link_state_[1];
        int32_t agg;
        if (a == TODD_COMMS_STATE_FAILED || b == TODD_COMMS_STATE_FAILED)
            agg = TODD_COMMS_STATE_FAILED;
        else if (a == TODD_COMMS_STATE_CONNECTED &&
                 b == TODD_COMMS_STATE_CONNECTED)
            agg = TODD_COMMS_STATE_CONNECTED;
        else if (a == TODD_COMMS_STATE_RECONNECTING ||
                 b == TODD_COMMS_STATE_RECONNECTING)
            agg = TODD_COMMS_STATE_RECONNECTING;
        else
            agg = TODD_COMMS_STATE_CONNECTING;
        if (agg == reported_ && agg != TODD_COMMS_STATE_FAILED)
            return;
        if (agg == TODD_COMMS_STATE_FAILED && detail == last_failure_)
            return; // same failure again on retry: logged once
        reported_ = agg;
        if (agg == TODD_COMMS_STATE_FAILED)
            last_failure_ = detail;
        else
            last_failure_.clear();
        if (agg == TODD_COMMS_STATE_FAILED)
            host().logf(TODD_COMMS_LOG_ERROR, "%s (%s); retrying",
                        detail.c_str(), todd_comms_status_str(st));
        else
            host().logf(TODD_COMMS_LOG_INFO, "%s%s%s",
                        agg == TODD_COMMS_STATE_CONNECTED      ? "connected"
                        : agg == TODD_COMMS_STATE_RECONNECTING ? "reconnecting"
                                                               : "connecting",
                        detail.empty() ? "" : ": ", detail.c_str());
        host().state(agg, st, detail);
    }

    // A connect attempt failed on one link: FAILED for errors a retry will
    // not fix by itself (credentials, TLS), otherwise (re)connecting.
    void report_failure(Link link, bool was_up, const Outcome &o)
    {
        bool hard = o.status == TODD_COMMS_E_AUTH ||
                    o.status == TODD_COMMS_E_CONFIG ||
                    o.status == TODD_COMMS_E_PROTOCOL;
        if (hard)
            report(link, TODD_COMMS_STATE_FAILED, o.status, o.detail);
        else
            report(link,
                   was_up || ever_up_ ? TODD_COMMS_STATE_RECONNECTING
                                      : TODD_COMMS_STATE_CONNECTING,
                   o.status, o.detail);
    }

    void check_destination(const char *d)
    {
        size_t n = std::strlen(d);
        if (n == 0 || n > 255)
            throw Error(TODD_COMMS_E_INVAL,
                        "destination must be 1-255 bytes, got " +
                            std::to_string(n));
    }

    // Sleep for the backoff delay unless stopping; true when stopping.
    bool backoff_wait(std::mutex &mu, std::condition_variable &cv, Backoff &bo)
    {
        std::unique_lock<std::mutex> lk(mu);
        return cv.wait_for(lk, bo.next(), [&] { return stopping_.load(); });
    }

    // ------------------------------------------------------------------
    // Publishing link

    struct Item {
        Item(const char *d, const uint8_t *p, uint64_t l,
             const todd_comms_publish_opts *o)
            : dest(d), payload(p), len(l), opts(o)
        {
        }
        const char *dest;
        const uint8_t *payload;
        uint64_t len;
        const todd_comms_publish_opts *opts;
        todd_comms_status status = 1; // 1: not sent yet
        std::string error;
        // In flight (under pub_mu_):
        bool in_flight = false, returned = false, lost = false;
        uint64_t seq = 0, hash = 0;
    };

    static constexpr todd_comms_status pending = 1;

    void publish_items(Item *items, size_t n)
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
                             stopping_ ? TODD_COMMS_E_STATE
                                       : TODD_COMMS_E_STATE,
                             stopping_ ? "transport is stopped"
                                       : "transport is not started");
                return;
            }
            if (!pub_up_) {
                bool up = pub_cv_.wait_until(
                    lk, deadline, [&] { return pub_up_ || stopping_.load(); });
                if (!up) {
                    fail_pending(
                        items, n, TODD_COMMS_E_UNAVAILABLE,
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

    // Wait until none of items is in flight. One waiting publisher at a
    // time reads the socket itself (no hop through the I/O thread on the
    // latency path); the others sleep until it or the I/O thread settles.
    bool wait_confirms(std::unique_lock<std::mutex> &lk, Item *items, size_t n,
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
                         std::chrono::duration_cast<milliseconds>(slice)
                             .count()) +
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

    void fail_pending(Item *items, size_t n, todd_comms_status st,
                      const std::string &why)
    {
        for (size_t i = 0; i < n; ++i)
            if (items[i].status == pending) {
                items[i].status = st;
                items[i].error =
                    why + " (destination '" + std::string(items[i].dest) + "')";
            }
    }

    // Publish every pending item (pub_mu_ held, link up).
    void send_items(Item *items, size_t n)
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
                std::snprintf(exp, sizeof exp, "%lld",
                              static_cast<long long>(ttl));
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
            int rc = amqp_basic_publish(pub_conn_, pub_channel,
                                        amqp_cstring_bytes(s_.exchange.c_str()),
                                        amqp_cstring_bytes(it.dest),
                                        1 /* mandatory */, 0, &props, body);
            if (rc != AMQP_STATUS_OK) {
                if (s_.confirms) {
                    inflight_.erase(it.seq);
                    it.in_flight = false;
                }
                pub_link_lost(std::string("publish: ") +
                              amqp_error_string2(rc));
                return;
            }
            if (!s_.confirms)
                it.status = TODD_COMMS_OK; // handed to the broker
        }
    }

    // Declare exchange, queue and binding once per connection and
    // destination, on a separate channel so a refusal (406) cannot take
    // the publishing channel and its pending confirms with it.
    Outcome declare_for_publish(const char *dest)
    {
        if (declared_.find(std::string_view(dest)) != declared_.end())
            return {};
        Outcome o = declare_topology(pub_conn_, decl_channel, dest, true);
        if (o.ok())
            declared_.insert(dest);
        return o;
    }

    // exchange.declare + queue.declare + queue.bind on channel ch (opened
    // here if needed). Returns E_PROTOCOL naming the queue on a refusal;
    // E_UNAVAILABLE means the connection is gone (already torn down for
    // the publishing link).
    Outcome declare_topology(amqp_connection_state_t c, amqp_channel_t ch,
                             const std::string &queue, bool publisher)
    {
        bool &open = publisher ? decl_open_ : con_decl_dummy_;
        if (publisher && !open) {
            amqp_channel_open(c, ch);
            if (!rpc_ok(c))
                return declare_failed(c, ch, publisher, "channel.open", queue);
            open = true;
        }
        amqp_boolean_t durable = s_.durable ? 1 : 0;
        if (!publisher || !exchange_declared_) {
            amqp_exchange_declare(c, ch,
                                  amqp_cstring_bytes(s_.exchange.c_str()),
                                  amqp_cstring_bytes("direct"), 0, durable, 0,
                                  0, amqp_empty_table);
            if (!rpc_ok(c))
                return declare_failed(c, ch, publisher,
                                      "exchange.declare '" + s_.exchange + "'",
                                      queue);
            if (publisher)
                exchange_declared_ = true;
        }
        amqp_bytes_t q = amqp_cstring_bytes(queue.c_str());
        // Opt-in: a queue declared with other arguments is refused (406).
        amqp_table_entry_t dlx;
        amqp_table_t args = amqp_empty_table;
        if (!s_.dead_letter_exchange.empty()) {
            dlx.key = amqp_cstring_bytes("x-dead-letter-exchange");
            dlx.value.kind = AMQP_FIELD_KIND_UTF8;
            dlx.value.value.bytes =
                amqp_cstring_bytes(s_.dead_letter_exchange.c_str());
            args.num_entries = 1;
            args.entries = &dlx;
        }
        amqp_queue_declare(c, ch, q, 0, durable, 0, 0, args);
        if (!rpc_ok(c))
            return declare_failed(c, ch, publisher,
                                  "queue.declare '" + queue + "'", queue);
        amqp_queue_bind(c, ch, q, amqp_cstring_bytes(s_.exchange.c_str()), q,
                        amqp_empty_table);
        if (!rpc_ok(c))
            return declare_failed(c, ch, publisher,
                                  "queue.bind '" + queue + "'", queue);
        return {};
    }

    Outcome declare_failed(amqp_connection_state_t c, amqp_channel_t ch,
                           bool publisher, const std::string &what,
                           const std::string &queue)
    {
        RpcFailure f = describe_rpc(amqp_get_rpc_reply(c), what);
        if (f.channel_closed) {
            close_ok_channel(c, ch);
            if (publisher)
                decl_open_ = false;
            Outcome o = f.outcome;
            if (f.code == 406)
                o.detail = "queue '" + queue + "': " + what +
                           " refused by the broker (406 PRECONDITION_FAILED: " +
                           f.text +
                           "); it exists with other flags or arguments";
            return o;
        }
        if (publisher)
            pub_link_lost(f.outcome.detail);
        return {TODD_COMMS_E_UNAVAILABLE, f.outcome.detail};
    }

    // The publishing connection failed (pub_mu_ held): fail in-flight
    // messages as lost (their publishers resend) and let the I/O thread
    // reconnect.
    void pub_link_lost(const std::string &why)
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

    // Frames may have been buffered by a publish or an RPC: make sure the
    // I/O thread looks at them rather than sleeping in poll.
    void kick_io_locked()
    {
        if (pub_conn_ != nullptr &&
            (amqp_frames_enqueued(pub_conn_) || amqp_data_in_buffer(pub_conn_)))
            pub_wake_.wake();
    }

    void pub_loop()
    {
        amqp_connection_state_t conn = nullptr;
        bool was_up = false;
        while (!stopping_) {
            if (conn == nullptr) {
                Outcome o;
                std::string where;
                conn =
                    open_connection(s_, &pub_next_broker_, "publisher",
                                    {stop_line_.fd(), &pub_guard_}, &o, &where);
                if (conn != nullptr && s_.confirms) {
                    amqp_confirm_select(conn, pub_channel);
                    if (!rpc_ok(conn)) {
                        o = describe_rpc(amqp_get_rpc_reply(conn),
                                         "confirm.select")
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
                report(Link::pub, TODD_COMMS_STATE_CONNECTED, TODD_COMMS_OK,
                       where);
            }
            struct pollfd fds[2] = {{pub_wake_.fd(), POLLIN, 0},
                                    {amqp_get_sockfd(conn), POLLIN, 0}};
            bool buffered, readers;
            {
                std::lock_guard<std::mutex> g(pub_mu_);
                buffered =
                    amqp_frames_enqueued(conn) || amqp_data_in_buffer(conn);
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

    // Read every available frame of the publishing link (pub_mu_ held).
    void pub_drain()
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
                auto *a =
                    static_cast<amqp_basic_ack_t *>(f.payload.method.decoded);
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
                auto *m = static_cast<amqp_channel_close_t *>(
                    f.payload.method.decoded);
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

    void settle(uint64_t tag, bool multiple, bool ack)
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

    // basic.return: the broker could not route a mandatory message. Match
    // it to the oldest in-flight message with the same key and body.
    void on_return(const amqp_frame_t &f)
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

    // ------------------------------------------------------------------
    // Consuming link

    struct Sub {
        enum class Phase { wanted, consuming, failed };
        std::string dest;
        uint64_t cookie = 0;
        uint32_t prefetch = 0;
        Phase phase = Phase::wanted;
        bool removing = false;
        amqp_channel_t channel = 0;
        todd_comms_status status = TODD_COMMS_OK;
        std::string error;
    };

    void con_loop()
    {
        amqp_connection_state_t conn = nullptr;
        bool was_up = false;
        std::string why;
        while (!stopping_) {
            if (conn == nullptr) {
                Outcome o;
                std::string where;
                conn =
                    open_connection(s_, &con_next_broker_, "consumer",
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
                report(Link::con, TODD_COMMS_STATE_CONNECTED, TODD_COMMS_OK,
                       where);
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

    // Bring the broker in line with subs_: consume new subscriptions,
    // cancel removed ones. False when the connection died.
    bool reconcile(amqp_connection_state_t c, std::string *why)
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

    // Fresh numbers: frames of a closed channel may still be buffered and
    // must not be mistaken for the new one's (wraps only after 2000).
    amqp_channel_t alloc_channel()
    {
        if (next_channel_ > 2000)
            next_channel_ = 2;
        while (used_channels_.count(next_channel_))
            ++next_channel_;
        used_channels_.insert(next_channel_);
        return next_channel_++;
    }
    void free_channel(amqp_channel_t ch) { used_channels_.erase(ch); }

    Outcome start_consumer(amqp_connection_state_t c, Sub &sub)
    {
        amqp_channel_t ch = alloc_channel();
        amqp_channel_open(c, ch);
        if (!rpc_ok(c)) {
            free_channel(ch);
            return {TODD_COMMS_E_UNAVAILABLE,
                    describe_rpc(amqp_get_rpc_reply(c), "channel.open")
                        .outcome.detail};
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
                o = declare_failed(
                    c, ch, false, "basic.consume '" + sub.dest + "'", sub.dest);
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

    // Deliver everything that is readable now. False when the connection
    // died.
    bool con_drain(amqp_connection_state_t c, std::string *why)
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

    bool dirty()
    {
        std::lock_guard<std::mutex> g(con_mu_);
        for (auto &kv : subs_)
            if (kv.second->removing || kv.second->phase == Sub::Phase::wanted)
                return true;
        return false;
    }

    bool handle_con_frame(amqp_connection_state_t c, const amqp_frame_t &f,
                          std::string *why)
    {
        if (f.frame_type != AMQP_FRAME_METHOD)
            return true;
        switch (f.payload.method.id) {
        case AMQP_CONNECTION_CLOSE_METHOD: {
            auto *m = static_cast<amqp_connection_close_t *>(
                f.payload.method.decoded);
            *why = "broker closed the connection (" +
                   std::to_string(m->reply_code) + " " +
                   bytes_str(m->reply_text) + ")";
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

    void handle_delivery(amqp_connection_state_t c, amqp_envelope_t &env)
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

    // ------------------------------------------------------------------

    Settings s_;
    std::mutex control_mu_;
    std::atomic<bool> stopping_{false};
    std::atomic<bool> started_{false}, stopped_{false};
    std::atomic<bool> ever_up_{false};
    Clock::time_point started_at_;
    Waker stop_line_; // written once by stop(), never drained
    SocketGuard pub_guard_, con_guard_;
    std::mutex exit_mu_;
    std::condition_variable exit_cv_;
    int threads_done_ = 0;

    std::mutex state_mu_;
    int32_t link_state_[2] = {TODD_COMMS_STATE_CONNECTING,
                              TODD_COMMS_STATE_CONNECTING};
    int32_t reported_ = 0;
    std::string last_failure_;

    // Publishing link (all under pub_mu_ unless noted).
    std::mutex pub_mu_;
    std::condition_variable pub_cv_;
    Waker pub_wake_, reader_wake_;
    std::thread pub_thread_;
    Backoff pub_backoff_;        // pub thread only
    size_t pub_next_broker_ = 0; // pub thread only
    amqp_connection_state_t pub_conn_ = nullptr;
    bool pub_up_ = false;
    uint64_t pub_gen_ = 0, pub_seq_ = 0;
    std::string pub_down_reason_, pub_last_error_ = "not connected yet";
    std::map<uint64_t, Item *> inflight_;
    std::set<std::string, std::less<>> declared_;
    bool exchange_declared_ = false, decl_open_ = false;
    bool reader_active_ = false; // a publisher is reading confirms
    bool con_decl_dummy_ = true;

    // Consuming link: subs_ and flags under con_mu_; connection and
    // used_channels_ touched by the consumer thread only.
    std::mutex con_mu_;
    std::condition_variable con_cv_;
    Waker con_wake_;
    std::thread con_thread_;
    Backoff con_backoff_;
    size_t con_next_broker_ = 0;
    bool con_up_ = false, con_exited_ = false, con_attempted_ = false;
    std::map<uint64_t, std::shared_ptr<Sub>> subs_;
    std::map<amqp_channel_t, uint64_t> chan_subs_;
    std::set<amqp_channel_t> used_channels_;
    amqp_channel_t next_channel_ = 2;
};

} // namespace

TODD_COMMS_PLUGIN(RabbitTransport, "rabbitmq", "0.1.0", "Apache-2.0",
                  "RabbitMQ (AMQP 0-9-1) via rabbitmq-c, wire-compatible with "
                  "ToDD",
                  TODD_COMMS_CAP_ACK | TODD_COMMS_CAP_TTL |
                      TODD_COMMS_CAP_CONFIRMS | TODD_COMMS_CAP_DURABLE |
                      TODD_COMMS_CAP_REMOTE | TODD_COMMS_CAP_TLS |
                      TODD_COMMS_CAP_BATCH,
                  todd_rabbitmq::kKeys)
