// SPDX-License-Identifier: Apache-2.0
// The benchmark's shared part: see nats_bench.hpp.
#include "nats_bench.hpp"

#if __has_include(<nats_server.hpp>)
#include <nats_server.hpp>
#define NBENCH_PRIVATE_SERVER 1
#endif

#include <todd/core/log.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>
#include <unistd.h>

namespace nbench {

using namespace std::chrono_literals;

namespace {

[[noreturn]] void fail(const std::string &what)
{
    throw std::runtime_error(what);
}

std::string text(natsStatus st)
{
    std::string t = natsStatus_GetText(st);
    natsStatus last = NATS_OK;
    const char *detail = nats_GetLastError(&last);
    if (detail != nullptr && *detail != '\0' && t != detail)
        t += std::string(": ") + detail;
    return t;
}

void must(natsStatus st, const std::string &what)
{
    if (st != NATS_OK)
        fail(what + ": " + text(st));
}

struct MsgDeleter {
    void operator()(natsMsg *m) const { natsMsg_Destroy(m); }
};
using MsgPtr = std::unique_ptr<natsMsg, MsgDeleter>;

MsgPtr make_msg(const std::string &subject, const std::string &body)
{
    natsMsg *m = nullptr;
    must(natsMsg_Create(&m, subject.c_str(), nullptr, body.data(),
                        int(body.size())),
         "natsMsg_Create");
    return MsgPtr(m);
}

int64_t wall_ms()
{
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

} // namespace

double now_s()
{
    return std::chrono::duration<double>(Clock::now().time_since_epoch())
        .count();
}

std::string encode(const std::string &destination)
{
    static const char hex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : destination) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9') || c == '-') {
            out += char(c);
        } else {
            out += '_';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out.empty() ? "_" : out;
}

std::string subject_of(const std::string &prefix, const std::string &dest)
{
    return prefix + "." + encode(dest);
}

std::string consumer_of(const std::string &dest)
{
    std::string e = encode(dest);
    if (e.size() > 160)
        fail("consumer_of: the benchmark's destinations are short");
    return e;
}

std::string deliver_subject_of(const std::string &stream,
                               const std::string &dest)
{
    return "_TODD." + stream + "." + consumer_of(dest);
}

todd::core::Options plugin_options(const std::string &url,
                                   const std::string &stream,
                                   const std::string &prefix)
{
    return {{"servers", url},
            {"stream", stream},
            {"subject_prefix", prefix},
            {"max_ack_pending", std::to_string(kMaxAckPending)},
            {"ack_wait_ms", std::to_string(kAckWaitMs)},
            {"publish_timeout_ms", std::to_string(kPublishTimeoutMs)},
            {"retention_ms", std::to_string(kRetentionMs)},
            {"duplicate_window_ms", std::to_string(kDuplicateWindowMs)}};
}

std::shared_ptr<const todd::core::Plugin> nats_plugin()
{
    static auto plugin =
        todd::core::PluginRegistry({NATS_PLUGIN_DIR}).load("nats");
    return plugin;
}

std::unique_ptr<todd::core::Transport>
started_transport(const todd::core::Options &options,
                  std::chrono::milliseconds limit)
{
    using todd::core::LinkState;
    struct Wait {
        std::mutex m;
        std::condition_variable cv;
        LinkState state = LinkState::idle;
        std::string detail;
    };
    auto w = std::make_shared<Wait>();
    auto t = todd::core::Transport::create(nats_plugin(), options);
    t->on_state([w](LinkState s, int32_t, const std::string &detail) {
        std::lock_guard g(w->m);
        w->state = s;
        w->detail = detail;
        w->cv.notify_all();
    });
    t->start();
    std::unique_lock lk(w->m);
    if (!w->cv.wait_for(lk, limit,
                        [&] { return w->state == LinkState::connected; }))
        fail("the plugin did not connect within " +
             std::to_string(limit.count()) + " ms (" +
             std::string(todd::core::to_string(w->state)) + ": " + w->detail +
             ")");
    return t;
}

// ---------------------------------------------------------------------------

Raw::Raw(const std::string &url)
{
    // plugins/nats/settings.cpp's make_options with the key defaults.
    natsOptions *o = nullptr;
    must(natsOptions_Create(&o), "natsOptions_Create");
    std::unique_ptr<natsOptions, void (*)(natsOptions *)> opts(
        o, natsOptions_Destroy);
    const char *urls[] = {url.c_str()};
    must(natsOptions_SetServers(o, urls, 1), "servers " + url);
    must(natsOptions_SetName(o, "todd"), "name");
    must(natsOptions_SetTimeout(o, 5000), "timeout");
    must(natsOptions_SetReconnectWait(o, 1000), "reconnect wait");
    must(natsOptions_SetMaxReconnect(o, -1), "max reconnect");
    must(natsOptions_SetPingInterval(o, 5000), "ping interval");
    must(natsOptions_SetMaxPingsOut(o, 2), "max pings out");
    must(natsConnection_Connect(&nc_, o), "connect to " + url);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = kPublishTimeoutMs;
    if (natsStatus st = natsConnection_JetStream(&js_, nc_, &jo);
        st != NATS_OK) {
        natsConnection_Destroy(nc_);
        fail("JetStream context: " + text(st));
    }
    std::random_device rd;
    char buf[24];
    std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
    id_ = buf;
}

Raw::~Raw()
{
    jsCtx_Destroy(js_);
    natsConnection_Close(nc_);
    natsConnection_Destroy(nc_);
}

void Raw::add_stream(const std::string &stream, const std::string &prefix)
{
    // plugins/nats/nats.cpp's ensure_stream with the key defaults.
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    const std::string subjects = prefix + ".>";
    const char *subj[] = {subjects.c_str()};
    cfg.Name = stream.c_str();
    cfg.Description = "ToDD comms: the messages of every destination";
    cfg.Subjects = subj;
    cfg.SubjectsLen = 1;
    cfg.Retention = js_WorkQueuePolicy;
    cfg.Storage = js_FileStorage;
    cfg.Replicas = 1;
    cfg.MaxAge = kRetentionMs * 1000000LL;
    cfg.Duplicates = kDuplicateWindowMs * 1000000LL;
    jsErrCode jerr = jsErrCode(0);
    must(js_AddStream(nullptr, js_, &cfg, nullptr, &jerr),
         "add stream " + stream + " (JetStream error " +
             std::to_string(int(jerr)) + ")");
}

void Raw::delete_stream(const std::string &stream)
{
    jsErrCode jerr = jsErrCode(0);
    natsStatus st = js_DeleteStream(js_, stream.c_str(), nullptr, &jerr);
    if (st != NATS_OK && st != NATS_NOT_FOUND)
        fail("delete stream " + stream + ": " + text(st));
}

uint64_t Raw::stream_msgs(const std::string &stream)
{
    jsStreamInfo *si = nullptr;
    jsErrCode jerr = jsErrCode(0);
    must(js_GetStreamInfo(&si, js_, stream.c_str(), nullptr, &jerr),
         "stream info of " + stream);
    const uint64_t n = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return n;
}

void Raw::wait_msgs(const std::string &stream, uint64_t want,
                    std::chrono::milliseconds limit)
{
    const auto until = Clock::now() + limit;
    for (;;) {
        const uint64_t n = stream_msgs(stream);
        if (n == want)
            return;
        if (Clock::now() > until)
            fail("stream " + stream + " holds " + std::to_string(n) +
                 " messages, not " + std::to_string(want) + ", after " +
                 std::to_string(limit.count()) + " ms");
        std::this_thread::sleep_for(1ms);
    }
}

void Raw::publish(const std::string &stream, const std::string &subject,
                  const std::string &body)
{
    // plugins/nats/publish.cpp's send, first attempt, default options.
    const auto deadline =
        Clock::now() + std::chrono::milliseconds(kPublishTimeoutMs);
    const std::string id = id_ + "-" + std::to_string(next_++);
    MsgPtr m = make_msg(subject, body);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = std::max<int64_t>(
        1, std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                 Clock::now())
               .count());
    po.MsgId = id.c_str();
    po.ExpectStream = stream.c_str();
    jsPubAck *ack = nullptr;
    jsErrCode jerr = jsErrCode(0);
    must(js_PublishMsg(&ack, js_, m.get(), &po, &jerr), "raw publish");
    jsPubAck_Destroy(ack);
}

void Raw::publish_async(const std::string &stream, const std::string &subject,
                        const std::string &body, int n)
{
    for (int i = 0; i < n; ++i) {
        const std::string id = id_ + "-" + std::to_string(next_++);
        natsMsg *m = make_msg(subject, body).release();
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = id.c_str();
        po.ExpectStream = stream.c_str();
        if (natsStatus st = js_PublishMsgAsync(js_, &m, &po); st != NATS_OK) {
            natsMsg_Destroy(m);
            fail("raw async publish: " + text(st));
        }
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 60000;
    must(js_PublishAsyncComplete(js_, &po), "raw async publishes' acks");
    natsMsgList pending{};
    if (js_PublishAsyncGetPendingList(&pending, js_) == NATS_OK) {
        const int left = pending.Count;
        natsMsgList_Destroy(&pending);
        if (left != 0)
            fail(std::to_string(left) + " async publishes not acknowledged");
    }
}

natsSubscription *Raw::subscribe(const std::string &stream,
                                 const std::string &prefix,
                                 const std::string &dest)
{
    // plugins/nats/consumer.cpp's bind (a consumer not made before).
    const std::string consumer = consumer_of(dest),
                      deliver = deliver_subject_of(stream, dest),
                      subject = subject_of(prefix, dest);
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = consumer.c_str();
    cc.Description = dest.c_str();
    cc.DeliverSubject = deliver.c_str();
    cc.DeliverGroup = consumer.c_str();
    cc.FilterSubject = subject.c_str();
    cc.DeliverPolicy = js_DeliverAll;
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = kAckWaitMs * 1000000LL;
    cc.MaxAckPending = kMaxAckPending;
    jsErrCode jerr = jsErrCode(0);
    must(js_AddConsumer(nullptr, js_, stream.c_str(), &cc, nullptr, &jerr),
         "add consumer " + consumer);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream.c_str();
    so.Consumer = consumer.c_str();
    so.Queue = consumer.c_str();
    so.ManualAck = true;
    natsSubscription *sub = nullptr;
    must(js_SubscribeSync(&sub, js_, subject.c_str(), nullptr, &so, &jerr),
         "subscribe to consumer " + consumer);
    natsSubscription_SetPendingLimits(sub, -1, -1);
    return sub;
}

bool read_like_plugin(natsMsg *m)
{
    // plugins/nats/consumer.cpp's handle, up to the delivery.
    jsMsgMetaData *md = nullptr;
    if (natsMsg_GetMetaData(&md, m) != NATS_OK)
        return false;
    const bool redelivered = md->NumDelivered > 1;
    const int64_t stored_ms = md->Timestamp / 1000000;
    jsMsgMetaData_Destroy(md);
    const char *ttl = nullptr;
    if (natsMsgHeader_Get(m, "todd-ttl-ms", &ttl) == NATS_OK &&
        ttl != nullptr) {
        long long t = std::atoll(ttl);
        if (t > 0 && stored_ms > 0 && wall_ms() >= stored_ms + t)
            return false;
    }
    const char *ct = nullptr;
    if (natsMsgHeader_Get(m, "content-type", &ct) != NATS_OK || ct == nullptr)
        ct = "text/plain";
    (void)redelivered; // read as the plugin reads it; nothing to deliver
    return true;
}

natsMsg *next_msg(natsSubscription *sub, std::chrono::milliseconds limit,
                  const char *what)
{
    natsMsg *m = nullptr;
    natsStatus st = natsSubscription_NextMsg(&m, sub, limit.count());
    if (st != NATS_OK)
        fail(std::string(what) + ": no message within " +
             std::to_string(limit.count()) + " ms: " + text(st));
    return m;
}

// ---------------------------------------------------------------------------

namespace {

bool nats_required()
{
    const char *v = std::getenv("TODD_REQUIRE_NATS");
    return v != nullptr && *v != '\0' && std::string(v) != "0";
}

std::optional<Server> open_server(std::string &why)
{
    if (const char *u = std::getenv("TODD_BENCH_NATS_URL");
        u != nullptr && *u != '\0') {
        std::string s = u;
        auto colon = s.rfind(':');
        int port = s.rfind("nats://", 0) != 0 || colon == std::string::npos
                       ? 0
                       : std::atoi(s.c_str() + colon + 1);
        if (port <= 0 || port > 65535)
            fail("TODD_BENCH_NATS_URL='" + s +
                 "' is not nats://host:port (e.g. nats://127.0.0.1:4222)");
        return Server{s, nullptr};
    }
#ifdef NBENCH_PRIVATE_SERVER
    if (auto w = todd::test::NatsServer::unavailable()) {
        why = *w;
        return std::nullopt;
    }
    auto server = std::make_shared<todd::test::NatsServer>();
    return Server{server->url(), server};
#else
    why = "no private server in this tree (tests/common/nats_server.hpp): "
          "set TODD_BENCH_NATS_URL=nats://host:port";
    return std::nullopt;
#endif
}

} // namespace

std::optional<Server> server_for(const char *program, int &status)
{
    todd::log::set_level(todd::log::Level::warn);
    std::string why;
    std::optional<Server> server;
    try {
        server = open_server(why);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "%s: the server: %s\n", program, e.what());
        status = 2;
        return std::nullopt;
    }
    if (!server) {
        const bool required = nats_required();
        std::fprintf(stderr, "%s: %s: %s\n", program,
                     required ? "no server (TODD_REQUIRE_NATS is set)"
                              : "skipped",
                     why.c_str());
        status = required ? 2 : 77;
    }
    return server;
}

std::string loadavg()
{
    std::ifstream f("/proc/loadavg");
    std::string a, b, c;
    f >> a >> b >> c;
    return a + " " + b + " " + c;
}

std::string fresh_name(const std::string &tag)
{
    static std::atomic<int> n{0};
    return tag + std::to_string(::getpid()) + "-" + std::to_string(n++);
}

} // namespace nbench
