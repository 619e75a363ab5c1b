// SPDX-License-Identifier: Apache-2.0
// The Kafka transport's instance. How ToDD's destinations map onto Kafka is
// docs/kafka.md; in short:
//  - a destination lives in one of `topics` fixed message topics (chosen by
//    a hash of its name), each record keyed by its destination;
//    no topic is ever made per agent;
//  - the subscribers of a destination form its own consumer group, which
//    reads the whole topic and skips other destinations' records; its
//    committed offsets are what "held until a subscriber arrives" means;
//  - a publisher picks the partition: one per member of the destination's
//    group (read with DescribeConsumerGroups, cached), so competing
//    subscribers share the messages and each sees one publisher's messages
//    in order.
// The definitions are by job: kafka.cpp (lifecycle, state, callbacks, the
// descriptor), service.cpp (the service thread: connection probe, topics,
// routes), publish.cpp (publishing and delivery reports), consumer.cpp
// (subscriptions).
#pragma once

#include "settings.hpp"

#include <todd/comms/sdk.hpp>

#include <librdkafka/rdkafka.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace todd_kafka {

using Clock = std::chrono::steady_clock;
using todd::comms::sdk::Config;
using todd::comms::sdk::Host;

/** A record without a content-type header has this one. */
inline constexpr const char *default_content_type = "text/plain";

/** FNV-1a, 32 bits: which topic and which partition a destination gets.
 *  Written down in docs/kafka.md so that every peer agrees. */
uint32_t destination_hash(const std::string &destination);

class KafkaTransport final : public todd::comms::sdk::Transport {
  public:
    KafkaTransport(const Host &host, const Config &config);
    ~KafkaTransport() override { stop(); }

    void start() override;
    void stop() override;

    void publish(const char *destination, const uint8_t *payload, uint64_t len,
                 const todd_comms_publish_opts *opts) override;
    todd_comms_status publish_batch(const todd_comms_outgoing *msgs,
                                    uint32_t count,
                                    todd_comms_status *statuses) override;

    void subscribe(const char *destination, uint64_t cookie,
                   const todd_comms_subscribe_opts *opts) override;
    void unsubscribe(uint64_t cookie) override;

    // librdkafka's callbacks (opaque = this), on librdkafka's threads or
    // inside our poll calls.
    void on_delivery(const rd_kafka_message_t *m);
    void on_error(bool consumer, int err, const char *reason);
    void on_log(int level, const char *facility, const char *text);

  private:
    // --------------------------------------------------------------
    // State (kafka.cpp): one state for the instance, from the producer's
    // link and the service thread's probe.
    void report(int32_t state, todd_comms_status st, const std::string &why);
    rd_kafka_t *new_handle(rd_kafka_type_t type, ConfPtr conf);

    // --------------------------------------------------------------
    // The service thread (service.cpp)
    struct Topic {
        std::string name;
        int32_t partitions = 0;
    };
    /** Partitions a publisher uses for one destination. */
    struct Route {
        std::vector<int32_t> partitions;
        Clock::time_point fetched, used;
        uint32_t next = 0;
    };
    void service_loop();
    bool probe();          // metadata answered: the cluster is reachable
    bool prepare_topics(); // created if asked, partition counts read
    /** One DescribeConsumerGroups for the wanted destinations, or the
     *  result of the one under way (see service.cpp). */
    void refresh_routes();
    /** A destination whose route is being asked for. */
    struct Ask {
        std::string destination, group;
        int32_t partitions = 0, home = 0;
        std::vector<int32_t> found;
        bool rebalancing = false; // the answer is of a group mid-rebalance
    };
    /** Store the routes the answer (or its absence) gives the asks. */
    void apply_routes(std::vector<Ask> &asks, bool answered);
    int topic_index(const std::string &destination) const;
    /** The partition a destination's messages use without subscribers. */
    uint32_t home(const std::string &destination, const Topic &t) const;
    /** Wait (bounded by deadline) until the topics are known; false when
     *  stopping or past the deadline. */
    bool wait_ready(Clock::time_point deadline);
    /** The topic and partition of the next message to destination. */
    std::pair<const Topic *, int32_t> route(const std::string &destination,
                                            Clock::time_point deadline);

    // --------------------------------------------------------------
    // Publishing (publish.cpp)
    struct Pending {
        todd_comms_status status = 1; // 1: no delivery report yet
        std::string error;
    };
    static constexpr todd_comms_status not_yet = 1;
    /** Publish count messages and wait for their reports. */
    void send(const todd_comms_outgoing *msgs, uint32_t count,
              todd_comms_status *statuses, std::vector<std::string> &errors);
    /** Hand one message to librdkafka; returns the id of its Pending, or
     *  0 with status/error set when it was refused at once. */
    uint64_t produce(const todd_comms_outgoing &m, Clock::time_point deadline,
                     todd_comms_status &status, std::string &error);
    /** Wait until every id has its report; fills statuses. */
    void await(const std::vector<uint64_t> &ids, todd_comms_status *statuses,
               std::vector<std::string> &errors);
    void poll_loop();

    // --------------------------------------------------------------
    // Subscriptions (consumer.cpp)
  public:
    struct Sub {
        std::string destination, group, topic;
        uint64_t cookie = 0;
        rd_kafka_t *rk = nullptr;
        std::thread thread;
        std::atomic<bool> stop{false};
        bool live = false;             // has had an assignment (under svc_mu_)
        bool uncommitted = false;      // offsets stored since the last commit
        bool commit_in_flight = false; // its result not served yet
        // (partition, offset) of requeued messages: flagged when they
        // come again.
        std::set<std::pair<int32_t, int64_t>> requeued;
        // One entry of `topic`, reused for every offset stored: no
        // allocation per message (owned by consume()).
        rd_kafka_topic_partition_list_t *store = nullptr;
    };

  private:
    void launch(Sub &s);
    void consume(Sub &s);
    void handle(Sub &s, rd_kafka_message_t *m);
    void mark_live(Sub &s);
    void finish(Sub &s);

    Settings s_;

    std::mutex control_mu_; // control calls (HOST-1 serialises; belt)
    bool started_ = false, stopped_ = false;
    std::atomic<bool> stopping_{false};
    std::atomic<bool> running_{false}; // producer_ exists (start to stop)

    std::mutex state_mu_;
    int32_t state_ = 0;
    std::string last_error_;          // the producer's last transport error
    bool unreachable_logged_ = false; // service thread only
    std::atomic<bool> connected_{false};

    rd_kafka_t *producer_ = nullptr;
    std::thread poll_thread_, service_thread_;

    std::mutex pub_mu_;
    std::condition_variable pub_cv_;
    std::map<uint64_t, Pending> pending_;
    uint64_t next_id_ = 1;
    int publishers_ = 0;     // threads inside publish or publish_batch
    bool poll_done_ = false; // the poll thread may end

    // Service thread's state and what others wait on.
    std::mutex svc_mu_;
    std::condition_variable svc_cv_;
    bool ready_ = false;   // topics_ is filled
    bool reprobe_ = false; // a handle reported every broker down
    std::vector<Topic> topics_;
    std::map<std::string, Route> routes_;
    std::set<std::string> wanted_; // destinations whose route is asked for
    std::set<std::string> asked_;  // being described now
    // The DescribeConsumerGroups under way (service thread only): at most
    // one, kept until librdkafka answers it (service.cpp says why).
    rd_kafka_queue_t *describe_q_ = nullptr;
    std::vector<Ask> describing_;

    std::map<uint64_t, std::unique_ptr<Sub>> subs_;
};

} // namespace todd_kafka
