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

#include "keys.hpp"
#include "transport.hpp"

#include <algorithm>
#include <cstring>

namespace todd_rabbitmq {

using namespace todd::comms::sdk;

RabbitTransport::RabbitTransport(const Host &host, const Config &config)
    : Transport(host, config), s_(parse_settings(config)),
      pub_backoff_(s_.reconnect_max), con_backoff_(s_.reconnect_max)
{
    std::string where;
    for (const auto &b : s_.brokers)
        where +=
            (where.empty() ? "" : ",") + b.host + ":" + std::to_string(b.port);
    host.logf(
        TODD_COMMS_LOG_DEBUG,
        "brokers %s, user '%s', vhost '%s', tls %s, "
        "confirms %s, durable %s, dead letters %s",
        where.c_str(), s_.user.c_str(), s_.vhost.c_str(), s_.tls ? "on" : "off",
        s_.confirms ? "on" : "off", s_.durable ? "on" : "off",
        s_.dead_letter_exchange.empty() ? "dropped"
                                        : s_.dead_letter_exchange.c_str());
}

void RabbitTransport::start()
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

void RabbitTransport::stop()
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

void RabbitTransport::thread_done()
{
    std::lock_guard<std::mutex> g(exit_mu_);
    ++threads_done_;
    exit_cv_.notify_all();
}

void RabbitTransport::report(Link link, int32_t state, todd_comms_status st,
                             const std::string &detail)
{
    std::lock_guard<std::mutex> g(state_mu_);
    link_state_[static_cast<int>(link)] = state;
    int32_t a = link_state_[0], b = link_state_[1];
    int32_t agg;
    if (a == TODD_COMMS_STATE_FAILED || b == TODD_COMMS_STATE_FAILED)
        agg = TODD_COMMS_STATE_FAILED;
    else if (a == TODD_COMMS_STATE_CONNECTED && b == TODD_COMMS_STATE_CONNECTED)
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
        host().logf(TODD_COMMS_LOG_ERROR, "%s (%s); retrying", detail.c_str(),
                    todd_comms_status_str(st));
    else
        host().logf(TODD_COMMS_LOG_INFO, "%s%s%s",
                    agg == TODD_COMMS_STATE_CONNECTED      ? "connected"
                    : agg == TODD_COMMS_STATE_RECONNECTING ? "reconnecting"
                                                           : "connecting",
                    detail.empty() ? "" : ": ", detail.c_str());
    host().state(agg, st, detail);
}

void RabbitTransport::report_failure(Link link, bool was_up, const Outcome &o)
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

void RabbitTransport::check_destination(const char *d)
{
    size_t n = std::strlen(d);
    if (n == 0 || n > 255)
        throw Error(TODD_COMMS_E_INVAL,
                    "destination must be 1-255 bytes, got " +
                        std::to_string(n));
}

bool RabbitTransport::backoff_wait(std::mutex &mu, std::condition_variable &cv,
                                   Backoff &bo)
{
    std::unique_lock<std::mutex> lk(mu);
    return cv.wait_for(lk, bo.next(), [&] { return stopping_.load(); });
}

Outcome RabbitTransport::declare_topology(amqp_connection_state_t c,
                                          amqp_channel_t ch,
                                          const std::string &queue,
                                          bool publisher)
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
        amqp_exchange_declare(c, ch, amqp_cstring_bytes(s_.exchange.c_str()),
                              amqp_cstring_bytes("direct"), 0, durable, 0, 0,
                              amqp_empty_table);
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
        return declare_failed(c, ch, publisher, "queue.declare '" + queue + "'",
                              queue);
    amqp_queue_bind(c, ch, q, amqp_cstring_bytes(s_.exchange.c_str()), q,
                    amqp_empty_table);
    if (!rpc_ok(c))
        return declare_failed(c, ch, publisher, "queue.bind '" + queue + "'",
                              queue);
    return {};
}

Outcome RabbitTransport::declare_failed(amqp_connection_state_t c,
                                        amqp_channel_t ch, bool publisher,
                                        const std::string &what,
                                        const std::string &queue)
{
    RpcFailure f = describe_rpc(amqp_get_rpc_reply(c), what);
    if (f.channel_closed) {
        close_ok_channel(c, ch);
        if (publisher)
            decl_open_ = false;
        Outcome o = f.outcome;
        if (f.code == 406)
            o.detail =
                "queue '" + queue + "': " + what +
                " refused by the broker (406 PRECONDITION_FAILED: " + f.text +
                "); it exists with other flags or arguments";
        return o;
    }
    if (publisher)
        pub_link_lost(f.outcome.detail);
    return {TODD_COMMS_E_UNAVAILABLE, f.outcome.detail};
}

} // namespace todd_rabbitmq

TODD_COMMS_PLUGIN(todd_rabbitmq::RabbitTransport, "rabbitmq", "0.1.0",
                  "Apache-2.0",
                  "RabbitMQ (AMQP 0-9-1) via rabbitmq-c, wire-compatible with "
                  "ToDD",
                  TODD_COMMS_CAP_ACK | TODD_COMMS_CAP_TTL |
                      TODD_COMMS_CAP_CONFIRMS | TODD_COMMS_CAP_DURABLE |
                      TODD_COMMS_CAP_REMOTE | TODD_COMMS_CAP_TLS |
                      TODD_COMMS_CAP_BATCH,
                  todd_rabbitmq::kKeys)
