// SPDX-License-Identifier: Apache-2.0
// Shared pieces of the RabbitMQ transport tests: one broker for the binary
// (global environment), the plugin loaded through core's registry, a raw
// rabbitmq-c peer to look at what is really on the broker, and an inbox
// that waits on conditions.
#pragma once

#include "inbox.hpp"
#include "log_capture.hpp"
#include "plugin_instance.hpp"
#include "rabbitmq_broker.hpp"
#include "state_log.hpp"

#include <todd/core/log.hpp>
#include <todd/core/plugin_registry.hpp>
#include <todd/core/transport.hpp>

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace rmqtest {

using namespace std::chrono_literals;
using todd::core::Options;
using todd::core::Transport;
using todd::core::Verdict;
using todd::test::RabbitmqBroker;

/** The broker shared by the tests of one binary, started once. */
struct SharedBroker : todd::test::SharedRabbitmqBroker {
    static RabbitmqBroker &get() { return *SharedRabbitmqBroker::get(); }
};

inline std::shared_ptr<const todd::core::Plugin> plugin()
{
    static auto p =
        todd::core::PluginRegistry({RABBITMQ_PLUGIN_DIR}).load("rabbitmq");
    return p;
}

/** Options for a broker on 127.0.0.1:port, fast reconnects. */
inline Options opts(int port, Options extra = {})
{
    Options o = {{"host", "127.0.0.1"},
                 {"port", std::to_string(port)},
                 {"reconnect_max", "1000"},
                 {"heartbeat", "5"}};
    return todd::test::with(std::move(o), extra);
}

inline std::unique_ptr<Transport> make(const Options &o, bool start = true)
{
    return todd::test::make_instance(plugin(), o, start);
}

/** A queue name no other test uses. */
inline std::string unique(const std::string &base)
{
    return todd::test::unique_name(base);
}

inline std::string read_file(const std::string &path)
{
    std::ifstream f(path, std::ios::binary);
    if (!f)
        throw std::runtime_error("cannot read " + path);
    return std::string((std::istreambuf_iterator<char>(f)),
                       std::istreambuf_iterator<char>());
}

/** Waits for conditions on state changes of a transport. */
using todd::test::StateLog;

/** Collects deliveries; its verdict function decides (ack by default). */
using Inbox = todd::test::DeliveryInbox;
using todd::test::Received;

/** A message as a raw rabbitmq-c peer sees it. */
struct RawMessage {
    std::string body;
    std::optional<std::string> content_type, expiration;
    bool has_delivery_mode = false;
    uint8_t delivery_mode = 0;
    bool has_other_properties = false;
};

/** A plain rabbitmq-c connection, as a Go-like peer would use it. */
class RawPeer {
  public:
    explicit RawPeer(int port)
    {
        c_ = amqp_new_connection();
        amqp_socket_t *s = amqp_tcp_socket_new(c_);
        if (amqp_socket_open(s, "127.0.0.1", port) != AMQP_STATUS_OK)
            throw std::runtime_error("raw peer: cannot connect");
        check(amqp_login(c_, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest",
                         "guest"),
              "login");
        amqp_channel_open(c_, 1);
        check(amqp_get_rpc_reply(c_), "channel.open");
    }
    ~RawPeer()
    {
        if (c_ == nullptr)
            return;
        amqp_channel_close(c_, 1, AMQP_REPLY_SUCCESS);
        amqp_connection_close(c_, AMQP_REPLY_SUCCESS);
        amqp_destroy_connection(c_);
    }
    RawPeer(const RawPeer &) = delete;
    RawPeer &operator=(const RawPeer &) = delete;

    /** queue.declare with the Go flags (or durable), plus bind. */
    void declare(const std::string &q, bool durable = false)
    {
        amqp_exchange_declare(c_, 1, amqp_cstring_bytes("test_exchange"),
                              amqp_cstring_bytes("direct"), 0, 0, 0, 0,
                              amqp_empty_table);
        check(amqp_get_rpc_reply(c_), "exchange.declare");
        amqp_queue_declare(c_, 1, amqp_cstring_bytes(q.c_str()), 0,
                           durable ? 1 : 0, 0, 0, amqp_empty_table);
        check(amqp_get_rpc_reply(c_), "queue.declare");
        amqp_queue_bind(c_, 1, amqp_cstring_bytes(q.c_str()),
                        amqp_cstring_bytes("test_exchange"),
                        amqp_cstring_bytes(q.c_str()), amqp_empty_table);
        check(amqp_get_rpc_reply(c_), "queue.bind");
    }

    /** A fanout exchange and a queue bound to it: where dead letters go. */
    void declare_dead_letter(const std::string &exchange, const std::string &q)
    {
        amqp_exchange_declare(c_, 1, amqp_cstring_bytes(exchange.c_str()),
                              amqp_cstring_bytes("fanout"), 0, 0, 0, 0,
                              amqp_empty_table);
        check(amqp_get_rpc_reply(c_), "exchange.declare");
        amqp_queue_declare(c_, 1, amqp_cstring_bytes(q.c_str()), 0, 0, 0, 0,
                           amqp_empty_table);
        check(amqp_get_rpc_reply(c_), "queue.declare");
        amqp_queue_bind(c_, 1, amqp_cstring_bytes(q.c_str()),
                        amqp_cstring_bytes(exchange.c_str()),
                        amqp_cstring_bytes(""), amqp_empty_table);
        check(amqp_get_rpc_reply(c_), "queue.bind");
    }

    /** Publish as the Go ToDD does: test_exchange, key = queue,
     *  content-type text/plain, optional expiration. */
    void publish(const std::string &q, const std::string &body,
                 const char *expiration = nullptr)
    {
        amqp_basic_properties_t p;
        p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG;
        p.content_type = amqp_cstring_bytes("text/plain");
        if (expiration != nullptr) {
            p._flags |= AMQP_BASIC_EXPIRATION_FLAG;
            p.expiration = amqp_cstring_bytes(expiration);
        }
        amqp_bytes_t b{body.size(), const_cast<char *>(body.data())};
        int rc = amqp_basic_publish(c_, 1, amqp_cstring_bytes("test_exchange"),
                                    amqp_cstring_bytes(q.c_str()), 0, 0, &p, b);
        if (rc != AMQP_STATUS_OK)
            throw std::runtime_error("raw publish failed");
        // A synchronous call so the broker has routed it before we return.
        amqp_queue_declare(c_, 1, amqp_cstring_bytes(q.c_str()), 1, 0, 0, 0,
                           amqp_empty_table);
        check(amqp_get_rpc_reply(c_), "queue.declare passive");
    }

    /** basic.get with auto-ack, polling up to `limit`. */
    std::optional<RawMessage> get(const std::string &q,
                                  std::chrono::milliseconds limit = 10s)
    {
        auto deadline = std::chrono::steady_clock::now() + limit;
        for (;;) {
            amqp_maybe_release_buffers(c_);
            amqp_rpc_reply_t r =
                amqp_basic_get(c_, 1, amqp_cstring_bytes(q.c_str()), 1);
            check(r, "basic.get");
            if (r.reply.id == AMQP_BASIC_GET_OK_METHOD) {
                amqp_message_t m;
                check(amqp_read_message(c_, 1, &m, 0), "read message");
                RawMessage out;
                out.body.assign(static_cast<char *>(m.body.bytes), m.body.len);
                auto &p = m.properties;
                auto str = [](amqp_bytes_t b) {
                    return std::string(static_cast<char *>(b.bytes), b.len);
                };
                if (p._flags & AMQP_BASIC_CONTENT_TYPE_FLAG)
                    out.content_type = str(p.content_type);
                if (p._flags & AMQP_BASIC_EXPIRATION_FLAG)
                    out.expiration = str(p.expiration);
                out.has_delivery_mode =
                    p._flags & AMQP_BASIC_DELIVERY_MODE_FLAG;
                out.delivery_mode = p.delivery_mode;
                out.has_other_properties =
                    (p._flags & ~(AMQP_BASIC_CONTENT_TYPE_FLAG |
                                  AMQP_BASIC_EXPIRATION_FLAG |
                                  AMQP_BASIC_DELIVERY_MODE_FLAG)) != 0;
                amqp_destroy_message(&m);
                return out;
            }
            if (std::chrono::steady_clock::now() > deadline)
                return std::nullopt;
            std::this_thread::sleep_for(20ms);
        }
    }

    /** Messages ready in a queue (passive declare). */
    uint32_t count(const std::string &q)
    {
        auto *ok = amqp_queue_declare(c_, 1, amqp_cstring_bytes(q.c_str()), 1,
                                      0, 0, 0, amqp_empty_table);
        check(amqp_get_rpc_reply(c_), "queue.declare passive");
        return ok->message_count;
    }

  private:
    static void check(amqp_rpc_reply_t r, const char *what)
    {
        if (r.reply_type != AMQP_RESPONSE_NORMAL)
            throw std::runtime_error(std::string("raw peer: ") + what +
                                     " failed");
    }
    amqp_connection_state_t c_ = nullptr;
};

/** Captures the core log (plugin lines included) while alive. */
using todd::test::LogCapture;

} // namespace rmqtest
