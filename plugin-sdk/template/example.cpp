// SPDX-License-Identifier: Apache-2.0
//
// libtodd-comms-example.so: a template ToDD comms transport.
//
// It moves messages between named destinations through in-process queues, so
// it works as it is (server and agents in one process) and passes
// `todd-comms check`. To write a real transport, keep the structure and
// replace the Broker with your messaging library: publish() hands bytes to
// the library, a thread of yours receives and calls host().deliver(), and
// the verdict it returns decides ack / requeue / reject.
//
// Rules this file keeps (docs/writing-a-plugin.md explains each):
//  - never hold your own lock while calling the host (deliver may publish);
//  - deliveries of one subscription one at a time, in order;
//  - unsubscribe returns only when no deliver for that cookie is running;
//  - stop returns only when every thread of yours has finished;
//  - copy whatever you keep: the host's arguments are borrowed for the call;
//  - throw todd::comms::sdk::Error(status, text) to fail a call: the SDK's
//    trampolines turn it into a status code and a log line.
#include <todd/comms/sdk.hpp>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace sdk = todd::comms::sdk;
using Clock = std::chrono::steady_clock;

/** A message waiting in a queue (owned copy of the borrowed bytes). */
struct Held {
    std::vector<uint8_t> payload;
    std::string content_type;
    bool has_ttl = false;
    Clock::time_point expires{};
    bool redelivered = false;
};

/** Stand-in for a real broker: named queues shared by every instance in the
 *  process. Created on first use (no global constructors in plugins) and
 *  never destroyed (no destructor at exit while a thread might run). */
struct Broker {
    std::mutex mu;
    std::condition_variable cv;
    std::map<std::string, std::deque<Held>> queues;
};
Broker &broker()
{
    static Broker *b = new Broker;
    return *b;
}

/** Configuration keys. The host validates types and fills defaults before
 *  create; `todd-agent --comms example --comms-opt max_held=10` sets one. */
const todd_comms_config_key example_keys[] = {
    {"max_held", TODD_COMMS_CFG_INT, 0, "10000",
     "messages held per destination before publish fails with E_FULL"},
};

class ExampleTransport : public sdk::Transport {
  public:
    /** create: read the configuration; do not connect yet. */
    ExampleTransport(const sdk::Host &host, const sdk::Config &cfg)
        : Transport(host, cfg), max_held_(cfg.integer("max_held", 10000))
    {
        if (max_held_ <= 0)
            throw sdk::Error(TODD_COMMS_E_CONFIG,
                             "configuration key 'max_held' must be positive");
    }

    /** destroy without stop is allowed: stop first. */
    ~ExampleTransport() override { halt(); }

    /** Start in the background; report the link state via host().state(). */
    void start() override
    {
        {
            std::lock_guard l(broker().mu);
            if (state_ != State::idle)
                throw sdk::Error(TODD_COMMS_E_STATE,
                                 state_ == State::running
                                     ? "already started"
                                     : "stopped: create a new instance");
            state_ = State::running;
        }
        thread_ = std::thread([this] { run(); });
        host().state(TODD_COMMS_STATE_CONNECTED);
    }

    /** Final: quiescent on return (threads joined, no callback after). */
    void stop() override { halt(); }

    /** Data class: called from any thread, also from inside deliver. */
    void publish(const char *dest, const uint8_t *payload, uint64_t len,
                 const todd_comms_publish_opts *opts) override
    {
        Held h;
        h.payload.assign(payload, payload + len);
        h.content_type = sdk::content_type(opts);
        if (int64_t ttl = sdk::ttl_ms(opts); ttl > 0) {
            h.has_ttl = true;
            h.expires = Clock::now() + std::chrono::milliseconds(ttl);
        }
        Broker &b = broker();
        std::lock_guard l(b.mu);
        auto &q = b.queues[dest]; // held until a subscriber arrives
        if (static_cast<long long>(q.size()) >= max_held_)
            throw sdk::Error(TODD_COMMS_E_FULL,
                             std::string("destination '") + dest +
                                 "' already holds max_held messages");
        q.push_back(std::move(h));
        b.cv.notify_all();
    }

    /** The host picks the cookie; deliver passes it back. */
    void subscribe(const char *dest, uint64_t cookie,
                   const todd_comms_subscribe_opts *) override
    {
        std::lock_guard l(broker().mu);
        if (subs_.count(cookie) != 0)
            throw sdk::Error(TODD_COMMS_E_INVAL, "cookie already subscribed");
        subs_[cookie] = dest;
        broker().cv.notify_all();
    }

    /** Quiescent for the cookie on return. */
    void unsubscribe(uint64_t cookie) override
    {
        Broker &b = broker();
        std::unique_lock l(b.mu);
        auto it = subs_.find(cookie);
        if (it == subs_.end())
            throw sdk::Error(TODD_COMMS_E_INVAL, "unknown cookie");
        subs_.erase(it);
        b.cv.wait(l, [&] { return !delivering_ || current_ != cookie; });
    }

  private:
    enum class State { idle, running, stopped };

    void halt()
    {
        {
            std::lock_guard l(broker().mu);
            stopping_ = true;
            state_ = State::stopped;
            broker().cv.notify_all();
        }
        if (thread_.joinable())
            thread_.join();
    }

    static void drop_expired(std::deque<Held> &q)
    {
        auto now = Clock::now();
        for (auto it = q.begin(); it != q.end();)
            it = (it->has_ttl && it->expires <= now) ? q.erase(it) : it + 1;
    }

    /** The delivery thread: one per instance, so deliveries of a
     *  subscription are serialised. The lock is released around deliver. */
    void run()
    {
        Broker &b = broker();
        std::unique_lock l(b.mu);
        while (!stopping_) {
            bool delivered = false;
            for (auto &[cookie, dest] : subs_) {
                auto qi = b.queues.find(dest);
                if (qi == b.queues.end())
                    continue;
                drop_expired(qi->second);
                if (qi->second.empty())
                    continue;
                Held m = std::move(qi->second.front());
                qi->second.pop_front();
                const std::string d = dest; // subs_ may change while unlocked
                const uint64_t c = cookie;
                current_ = c;
                delivering_ = true;
                l.unlock();

                todd_comms_message msg{};
                msg.struct_size = sizeof msg;
                msg.flags = m.redelivered ? TODD_COMMS_MSG_REDELIVERED : 0;
                msg.destination = d.c_str();
                msg.payload = m.payload.data();
                msg.payload_len = m.payload.size();
                msg.content_type = m.content_type.c_str();
                const int32_t verdict = host().deliver(c, msg);

                l.lock();
                delivering_ = false;
                if (verdict == TODD_COMMS_VERDICT_REQUEUE) {
                    m.redelivered = true;
                    b.queues[d].push_front(std::move(m));
                } // ACK and REJECT: the message is gone
                b.cv.notify_all();
                delivered = true;
                break; // subs_ may have changed: scan again
            }
            if (!delivered) // woken by publish/subscribe; the timeout
                            // drops expired messages eventually
                b.cv.wait_for(l, std::chrono::milliseconds(100));
        }
    }

    const long long max_held_;
    State state_ = State::idle; // guarded by broker().mu, like the rest
    bool stopping_ = false;
    std::thread thread_;
    std::map<uint64_t, std::string> subs_; // cookie -> destination
    bool delivering_ = false;
    uint64_t current_ = 0;
};

} // namespace

// The exported entry, the static descriptor and the noexcept trampolines.
// The name must equal <name> of libtodd-comms-<name>.so.
TODD_COMMS_PLUGIN(ExampleTransport, "example", "0.1.0", "Apache-2.0",
                  "Template transport: in-process named queues",
                  TODD_COMMS_CAP_ACK | TODD_COMMS_CAP_TTL |
                      TODD_COMMS_CAP_BATCH,
                  example_keys)
