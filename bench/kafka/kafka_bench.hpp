// SPDX-License-Identifier: Apache-2.0
// What bench-kafka and bench-kafka-fleet share: the broker to run on, the
// Kafka plugin's instances, raw librdkafka handles configured as the plugin
// configures its own, admin calls, and the plugin's destination mapping
// (docs/kafka.md) so that a raw loop uses the same topic and partition.
// Every call that waits is bounded; failures throw std::runtime_error
// naming what failed.
#pragma once

#include <todd/core/plugin_registry.hpp>
#include <todd/core/transport.hpp>

#include <librdkafka/rdkafka.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace kbench {

using Clock = std::chrono::steady_clock;

/** Seconds since an arbitrary epoch (steady clock). */
double now_s();

// ---------------------------------------------------------------------------
// The plugin's mapping and settings.

/** The plugin's defaults that decide where a destination lives. */
constexpr int kTopics = 8, kPartitions = 4;

/** FNV-1a 32, the plugin's destination hash: written down in docs/kafka.md
 *  for every peer, and repeated here because the plugin exports nothing
 *  but its descriptor. */
uint32_t destination_hash(const std::string &destination);
/** `<prefix>messages.<n>` holding destination's records. */
std::string topic_of(const std::string &prefix, const std::string &dest);
/** The partition a destination without subscribers uses (its home). */
int32_t home_of(const std::string &dest);
/** `<prefix>dest.<destination>`: the destination's consumer group. */
std::string group_of(const std::string &prefix, const std::string &dest);

/**
 * librdkafka properties of a raw handle: what the plugin's make_conf sets
 * for plaintext with the values plugin_options() passes (linger 1 ms,
 * idempotence so acks=all, auto-commit of stored offsets every 500 ms, the
 * plugin's fetch queue bounds). group may be empty (a producer or an
 * admin handle).
 */
std::map<std::string, std::string>
raw_properties(const std::string &bootstrap, bool consumer,
               const std::string &group = "");

/** TODD_BENCH_KAFKA_DEBUG: librdkafka debug contexts for every handle
 *  (raw ones log to stderr, the plugin's at trace level), or "". */
std::string debug_contexts();

/** The plugin's options for the same settings as raw_properties. */
todd::core::Options plugin_options(const std::string &bootstrap,
                                   const std::string &prefix);

/** libtodd-comms-kafka.so of this build tree, loaded once. */
std::shared_ptr<const todd::core::Plugin> kafka_plugin();

/**
 * A started plugin instance that has reported `connected` (its topics
 * exist), within limit; throws when the limit passes. A `failed` state
 * before it connects is counted (false_failures), not thrown: the plugin
 * reports one when a topic it has just created is not in the metadata yet,
 * and connects a moment later.
 */
/** `failed` states started_transport saw before `connected`: the first
 *  reason of each instance, and how many. */
std::map<std::string, int> false_failures();

std::unique_ptr<todd::core::Transport>
started_transport(const todd::core::Options &options,
                  std::chrono::milliseconds limit = std::chrono::seconds(30));

// ---------------------------------------------------------------------------
// Raw librdkafka.

struct HandleDeleter {
    void operator()(rd_kafka_t *rk) const;
};
/** A handle; a consumer is closed (its group left) before it is destroyed. */
using Handle = std::unique_ptr<rd_kafka_t, HandleDeleter>;

/** Delivery reports a raw producer has served. */
struct Reports {
    uint64_t ok = 0, failed = 0;
};

/**
 * A handle of type with props (raw_properties) and, for a producer given
 * reports, a delivery report callback that counts into it. Throws naming
 * the property librdkafka refused.
 */
Handle make_handle(rd_kafka_type_t type,
                   const std::map<std::string, std::string> &props,
                   Reports *reports = nullptr);

/** A raw idempotent producer that counts its delivery reports. */
struct RawProducer {
    explicit RawProducer(const std::string &bootstrap);
    RawProducer(const RawProducer &) = delete;
    RawProducer &operator=(const RawProducer &) = delete;
    /** Queue one record as the plugin writes a text/plain one without a
     *  time-to-live (key = destination, no headers), so that both loops
     *  send the same bytes.
     *  Waits for room when librdkafka's queue is full. */
    void produce(const std::string &topic, int32_t partition,
                 const std::string &dest, const std::string &body);
    /** Serve reports until upto of them are in (bounded: 30 s). Throws
     *  when one failed or the bound passed. */
    void wait(uint64_t upto);
    Reports reports;
    uint64_t sent = 0;
    Handle rk;
};

/** A raw consumer in group, subscribed to topic. */
Handle raw_consumer(const std::string &bootstrap, const std::string &group,
                    const std::string &topic);

/** Stores offset+1 of each message of one topic, as the plugin settles
 *  a message: one partition list reused, no allocation per message. */
class OffsetStore {
  public:
    OffsetStore(rd_kafka_t *rk, const std::string &topic);
    ~OffsetStore();
    OffsetStore(const OffsetStore &) = delete;
    OffsetStore &operator=(const OffsetStore &) = delete;
    void operator()(const rd_kafka_message_t *m);

  private:
    rd_kafka_t *rk_;
    rd_kafka_topic_partition_list_t *list_;
};

// ---------------------------------------------------------------------------
// Admin.

/** An admin-capable handle (a producer that sends nothing). */
Handle admin_handle(const std::string &bootstrap);
/** Create topics (partitions each, the broker's replication); existing ones
 *  are fine. */
void create_topics(rd_kafka_t *rk, const std::vector<std::string> &names,
                   int partitions);
/** Delete topics; missing ones are fine. */
void delete_topics(rd_kafka_t *rk, const std::vector<std::string> &names);
/** Delete (empty) consumer groups; missing ones are fine. */
void delete_groups(rd_kafka_t *rk, const std::vector<std::string> &groups);
/** The consumer groups the broker knows. */
std::vector<std::string> list_groups(rd_kafka_t *rk);
/** The topics the broker holds (internal ones included). */
std::vector<std::string> list_topics(rd_kafka_t *rk);
/** The plugin's message topics for prefix. */
std::vector<std::string> plugin_topics(const std::string &prefix);
/** High watermark (end offset) of each partition of topic. */
std::vector<int64_t> end_offsets(rd_kafka_t *rk, const std::string &topic,
                                 int partitions);
/** The offset group committed on topic/partition (RD_KAFKA_OFFSET_INVALID
 *  when none), read with a handle whose group.id is group. */
int64_t committed(rd_kafka_t *group_handle, const std::string &topic,
                  int32_t partition);

// ---------------------------------------------------------------------------
// The broker.

/** Where the broker is and, when this program started it, its owner. */
struct Broker {
    std::string bootstrap; ///< 127.0.0.1:P
    int port = 0;
    pid_t pid = 0;               ///< its JVM when started here, else 0
    std::shared_ptr<void> owned; ///< the private broker, when started here
};

/**
 * TODD_BENCH_KAFKA_BOOTSTRAP=host:port when set, else a private broker from
 * tests/common/kafka_broker.hpp (started here, removed when the last copy
 * of Broker goes). nullopt, with why, when no private broker can run here;
 * throws when the variable is not host:port or the broker fails to start.
 */
std::optional<Broker> open_broker(std::string &why);

/**
 * The broker a benchmark main() runs on (open_broker), with core's log
 * level set (trace under TODD_BENCH_KAFKA_DEBUG, else warn). Without one,
 * nullopt with the reason printed as program's and status set to return:
 * 77 (skipped), or 2 when it failed to start or TODD_REQUIRE_KAFKA is set.
 */
std::optional<Broker> broker_for(const char *program, int &status);

/** /proc/loadavg's three averages, "1.0 2.0 3.0". */
std::string loadavg();

/** TODD_REQUIRE_KAFKA is set to something other than "" or "0" (CI): no
 *  broker is then a failure, not a skip. */
bool kafka_required();

/** A topic prefix no earlier run used: `<tag><pid>-<n>.` */
std::string fresh_prefix(const std::string &tag);

} // namespace kbench
