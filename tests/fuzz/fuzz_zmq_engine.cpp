// SPDX-License-Identifier: Apache-2.0
// The ZeroMQ engine's command decoding (Engine::handle in
// plugins/zeromq/engine.cpp): the multipart commands any peer that can reach
// the server's ROUTER may send. The input is cut into messages:
//
//   byte b, b & 0x80:  advance the clock by (b & 0x7f) * 50 ms and run the
//                      engine's timer work (heartbeat timeouts, TTLs)
//   byte b otherwise:  a message from peer (b >> 3) & 3 -- 0 the server's
//                      own client, 1 and 2 connected DEALERs, 3 a peer that
//                      is gone -- of (b & 7) + 1 frames after the routing
//                      id, each a 2-byte little-endian length and its bytes
//
// After every message the engine's bookkeeping must still add up.
#include "fuzz_common.hpp"

#include "../../plugins/zeromq/engine.hpp"

#include <algorithm>
#include <string>
#include <vector>

namespace todd_zmq {

struct EngineFuzz {
    static void handle(Engine &e, const Msgv &m, int64_t now)
    {
        e.handle(m, now);
        e.flush_confirms();
        e.reap_dead();
    }
    static void tick(Engine &e, int64_t now)
    {
        e.sweep(now);
        e.reap_dead();
    }
    /** Every queue's unacked count, every consumer's inflight count and
     *  the consumer lists agree with the peers' deliveries. */
    static void check(const Engine &e)
    {
        using todd::fuzz::check;
        for (const auto &[name, q] : e.queues_) {
            size_t pending = 0;
            for (const auto &pe : e.peers_)
                for (const auto &u : pe.second->unacked)
                    pending += u.second.queue == q.get();
            check(q->unacked == pending,
                  "a queue's unacked count differs from the deliveries");
            for (const Engine::Consumer *c : q->consumers) {
                check(c->queue == q.get(), "a consumer in a foreign queue");
                auto pe = std::find_if(
                    e.peers_.begin(), e.peers_.end(),
                    [c](const auto &kv) { return kv.second.get() == c->peer; });
                check(pe != e.peers_.end(), "a consumer of a dropped peer");
            }
        }
        for (const auto &pe : e.peers_) {
            const Engine::Peer &p = *pe.second;
            for (const auto &[id, c] : p.consumers) {
                const auto &cs = c->queue->consumers;
                check(std::count(cs.begin(), cs.end(), c.get()) == 1,
                      "a peer's consumer is not listed once in its queue");
                size_t mine = 0;
                for (const auto &u : p.unacked)
                    mine += u.second.sub_id == id;
                check(c->inflight == mine,
                      "a consumer's inflight count differs from its "
                      "deliveries");
            }
            for (const auto &u : p.unacked) {
                bool live = std::any_of(
                    e.queues_.begin(), e.queues_.end(), [&](const auto &kv) {
                        return kv.second.get() == u.second.queue;
                    });
                check(live, "a delivery refers to a deleted queue");
            }
        }
    }
};

} // namespace todd_zmq

namespace {

using namespace todd_zmq;

class NullClient : public LocalClient {
  public:
    void on_engine_message(const Msgv &) override {}
};

const todd_comms_host_api host_api = {sizeof(todd_comms_host_api),
                                      TODD_COMMS_ABI_MINOR,
                                      nullptr,
                                      nullptr,
                                      nullptr,
                                      nullptr};

void *context()
{
    static void *ctx = zmq_ctx_new();
    return ctx;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned long round = 0;
    EngineSettings s;
    s.endpoint = "inproc://todd-fuzz-" + std::to_string(++round);
    s.max_held = 64; // reach the "destination full" refusal
    NullClient local;
    Engine engine(context(), s, todd::comms::sdk::Host(&host_api, nullptr),
                  &local);
    engine.bind();
    const std::string rids[4] = {"", "peer-1", "peer-2", "peer-gone"};
    void *dealers[2];
    for (int i = 0; i < 2; ++i) {
        dealers[i] = zmq_socket(context(), ZMQ_DEALER);
        const std::string &id = rids[i + 1];
        zmq_setsockopt(dealers[i], ZMQ_ROUTING_ID, id.data(), id.size());
        int zero = 0;
        zmq_setsockopt(dealers[i], ZMQ_LINGER, &zero, sizeof zero);
        zmq_connect(dealers[i], s.endpoint.c_str());
    }
    int64_t now = 1000000;
    size_t pos = 0;
    std::vector<std::string> frames;
    std::string_view views[Frames::kMax + 1];
    while (pos < size) {
        const uint8_t b = data[pos++];
        if (b & 0x80) {
            now += (b & 0x7f) * 50;
            EngineFuzz::tick(engine, now);
            EngineFuzz::check(engine);
            continue;
        }
        const size_t n = (b & 7) + 1;
        frames.assign(1, rids[(b >> 3) & 3]);
        for (size_t i = 0; i < n && pos < size; ++i) {
            size_t len = data[pos++];
            if (pos < size)
                len |= static_cast<size_t>(data[pos++]) << 8;
            len = std::min(len, size - pos);
            frames.emplace_back(reinterpret_cast<const char *>(data + pos),
                                len);
            pos += len;
        }
        for (size_t i = 0; i < frames.size(); ++i)
            views[i] = frames[i];
        EngineFuzz::handle(engine, Msgv{views, frames.size()}, now);
        EngineFuzz::check(engine);
    }
    engine.stop();
    for (void *d : dealers)
        zmq_close(d);
    return 0;
}
