// SPDX-License-Identifier: Apache-2.0
// What bench-nats needs besides its measurements: the server to run on, the
// NATS plugin's instances, raw nats.c connections configured as the plugin
// configures its own, and the plugin's mapping (plugins/nats: settings.hpp,
// publish.cpp, consumer.cpp, nats.cpp) repeated here so that a raw loop
// uses the same stream, subject, consumer and message headers. Every call
// that waits is bounded; failures throw std::runtime_error naming what
// failed.
#pragma once

#include <todd/core/plugin_registry.hpp>
#include <todd/core/transport.hpp>

#include <nats/nats.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace nbench {

using Clock = std::chrono::steady_clock;

/** Seconds since an arbitrary epoch (steady clock). */
double now_s();

// ---------------------------------------------------------------------------
// The plugin's mapping and settings (its defaults, keys.hpp).

/** The plugin's defaults that the raw side repeats. */
constexpr int kMaxAckPending = 64;
constexpr int64_t kAckWaitMs = 60000, kPublishTimeoutMs = 10000,
                  kRetentionMs = 86400000, kDuplicateWindowMs = 120000;

/** Settings::encode: [A-Za-z0-9-] stay, every other byte becomes _XX. */
std::string encode(const std::string &destination);
/** `<prefix>.<encoded destination>`: its messages' subject. */
std::string subject_of(const std::string &prefix, const std::string &dest);
/** The durable consumer (and deliver group) of a destination (names of
 *  up to 160 encoded bytes: the benchmark's are short). */
std::string consumer_of(const std::string &dest);
/** `_TODD.<stream>.<consumer>`: where that consumer pushes. */
std::string deliver_subject_of(const std::string &stream,
                               const std::string &dest);

/** The plugin's options for a measurement's fresh names. */
todd::core::Options plugin_options(const std::string &url,
                                   const std::string &stream,
                                   const std::string &prefix);

/** libtodd-comms-nats.so of this build tree, loaded once. */
std::shared_ptr<const todd::core::Plugin> nats_plugin();

/** A started plugin instance that has reported `connected` (its stream
 *  exists), within limit; throws when the limit passes. */
std::unique_ptr<todd::core::Transport>
started_transport(const todd::core::Options &options,
                  std::chrono::milliseconds limit = std::chrono::seconds(30));

// ---------------------------------------------------------------------------
// Raw nats.c.

/** A raw connection with a JetStream context, made with the options the
 *  plugin's make_options sets for a plain server (name, timeouts, pings,
 *  endless reconnects) and its JetStream wait (publish_timeout_ms). */
class Raw {
  public:
    explicit Raw(const std::string &url);
    ~Raw();
    Raw(const Raw &) = delete;
    Raw &operator=(const Raw &) = delete;
    natsConnection *nc() const { return nc_; }
    jsCtx *js() const { return js_; }

    /** The plugin's stream: work-queue retention on `<prefix>.>`, file
     *  storage, one replica, its MaxAge and duplicate window. */
    void add_stream(const std::string &stream, const std::string &prefix);
    /** Delete a stream (its consumers with it); a missing one is fine. */
    void delete_stream(const std::string &stream);
    /** Messages the stream holds (js_GetStreamInfo State.Msgs). */
    uint64_t stream_msgs(const std::string &stream);
    /** Wait, polling every ~1 ms, until the stream holds `want` messages;
     *  throws naming what it holds when limit passes. */
    void wait_msgs(const std::string &stream, uint64_t want,
                   std::chrono::milliseconds limit);

    /** One message as the plugin's send writes a text/plain one without a
     *  time-to-live (no header of its own), under the id it would give
     *  (`<16 hex>-<n>`, Nats-Msg-Id) and expecting the stream
     *  (Nats-Expected-Stream); returns on JetStream's ack. */
    void publish(const std::string &stream, const std::string &subject,
                 const std::string &body);
    /** n such messages published asynchronously (fills a stream fast);
     *  returns when every one is acknowledged. */
    void publish_async(const std::string &stream, const std::string &subject,
                       const std::string &body, int n);

    /** The plugin's bind: its durable push consumer for dest (deliver
     *  group, explicit ack, AckWait, MaxAckPending, the filter) and a
     *  js_SubscribeSync to it, pending limits off. */
    natsSubscription *subscribe(const std::string &stream,
                                const std::string &prefix,
                                const std::string &dest);

  private:
    natsConnection *nc_ = nullptr;
    jsCtx *js_ = nullptr;
    std::string id_;    // message ids: <id>-<n>, as the plugin's
    uint64_t next_ = 1; // the next message id's n
};

/** What the plugin's handle reads of a delivered message besides its body:
 *  the JetStream metadata (delivery count, stored time) and the two
 *  headers (todd-ttl-ms, content-type). False when there is no metadata. */
bool read_like_plugin(natsMsg *m);

/** The next message of sub within limit (throws naming what when none). */
natsMsg *next_msg(natsSubscription *sub, std::chrono::milliseconds limit,
                  const char *what);

// ---------------------------------------------------------------------------
// The server.

/** Where the server is and, when this program started it, its owner. */
struct Server {
    std::string url;             ///< nats://host:port
    std::shared_ptr<void> owned; ///< the private server, when started here
};

/**
 * The server a benchmark main() runs on: TODD_BENCH_NATS_URL=nats://host:port
 * when set, else a private `nats-server -js` (tests/common/nats_server.hpp).
 * Sets core's log level (warn). Without one, nullopt with the reason printed
 * as program's and status set to return: 77 (skipped), or 2 when it failed
 * to start, the variable is not a URL, or TODD_REQUIRE_NATS is set.
 */
std::optional<Server> server_for(const char *program, int &status);

/** /proc/loadavg's three averages, "1.0 2.0 3.0". */
std::string loadavg();

/** A name no earlier measurement used: `<tag><pid>-<n>` (letters, digits
 *  and '-': fit for a stream name and for a subject token). */
std::string fresh_name(const std::string &tag);

} // namespace nbench
