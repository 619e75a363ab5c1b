// SPDX-License-Identifier: Apache-2.0
// The loopback plugin's in-process broker: named queues with RabbitMQ-like
// semantics (held messages, time-to-live, competing consumers served round
// robin, prefetch, ack/requeue/reject, a length bound). One Broker is shared
// by every instance in the process, so a server and agents in one process
// talk to each other. Plain C++17; knows nothing of the plugin ABI except the
// status and verdict numbers.
#pragma once

#include <todd/comms/plugin.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace loopback {

using Clock = std::chrono::steady_clock;

/** A message as a queue holds it. */
struct Message {
    std::string destination;
    std::string content_type;
    std::vector<uint8_t> payload;
    Clock::time_point expires = Clock::time_point::max();
    bool redelivered = false;
};

/** Called on the consumer's thread; returns a TODD_COMMS_VERDICT_*. */
using DeliverFn = std::function<int32_t(const Message &)>;

class Broker;
struct Queue;

/** One subscription: a thread delivering a queue's messages in order. */
class Consumer {
  public:
    ~Consumer(); // cancels
    Consumer(const Consumer &) = delete;
    Consumer &operator=(const Consumer &) = delete;
    /** Stop consuming; when it returns no delivery is running or will run.
     *  Must not be called from this consumer's own delivery. */
    void cancel();

  private:
    friend class Broker;
    Consumer(Broker &b, Queue &q, uint32_t prefetch, DeliverFn fn);
    void run();

    Broker &broker_;
    Queue &queue_;
    const uint32_t prefetch_;
    DeliverFn deliver_;
    std::deque<Message> buffer_; // assigned to us, not yet delivered
    bool in_flight_ = false;
    bool cancelled_ = false;
    std::condition_variable wake_;
    std::thread thread_;
    friend struct Queue;
};

/** A named queue: ready messages and the consumers competing for them. */
struct Queue {
    std::deque<Message> ready;
    std::vector<Consumer *> consumers;
    size_t next = 0; // round-robin position

    /** Hand ready messages to consumers with room; drops expired ones.
     *  Caller holds the broker mutex. */
    void pump();
    /** Drop every expired ready message. Caller holds the broker mutex. */
    void purge(Clock::time_point now);
};

class Broker {
  public:
    /** The process-wide broker (never destroyed). */
    static Broker &shared();

    /**
     * Queue a copy of the message. ttl_ms > 0 expires it unconsumed after
     * that long. Returns TODD_COMMS_E_FULL when max_ready (0 = unbounded)
     * ready messages are already waiting.
     */
    todd_comms_status publish(const char *destination, const uint8_t *payload,
                              uint64_t len, const char *content_type,
                              int64_t ttl_ms, uint64_t max_ready);

    /** Start a consumer of destination with room for prefetch (>= 1)
     *  unsettled messages. */
    std::unique_ptr<Consumer> consume(const std::string &destination,
                                      uint32_t prefetch, DeliverFn fn);

    /** Ready messages waiting in a queue (for tests and tools). */
    size_t ready_count(const std::string &destination);
    /** Drop every ready message of a queue (for benchmarks). */
    void drop_ready(const std::string &destination);

  private:
    friend class Consumer;
    Queue &queue(const std::string &name); // caller holds mutex_

    std::mutex mutex_;
    std::map<std::string, std::unique_ptr<Queue>, std::less<>> queues_;
};

} // namespace loopback
