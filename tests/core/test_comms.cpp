// SPDX-License-Identifier: Apache-2.0
// The Comms facade end to end: a "server" and an "agent", each with its own
// instance of the real loopback plugin (one in-process broker between them).
#include <todd/core/comms.hpp>
#include <todd/core/config.hpp>
#include <todd/core/log.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <unistd.h>

using namespace todd::core;
using namespace todd;
using namespace std::chrono_literals;

namespace {

std::shared_ptr<const Plugin> plugin(const std::string &dir,
                                     const std::string &name)
{
    return PluginRegistry({dir}).load(name);
}

std::unique_ptr<Comms> make_comms(const Options &o = {}, SendPolicy p = {})
{
    auto c = std::make_unique<Comms>(
        Transport::create(plugin(LOOPBACK_DIR, "loopback"), o), p);
    c->start();
    return c;
}

/** A name no other test uses: the loopback broker is process-wide. */
std::string unique(const std::string &base)
{
    static std::atomic<int> n{0};
    return base + "-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
}

bool contains(std::string_view hay, std::string_view needle)
{
    return hay.find(needle) != std::string_view::npos;
}

/** Collects values from handler threads; waits with a generous bound. */
template <class T> class Inbox {
  public:
    void push(const T &v)
    {
        std::lock_guard lk(mu_);
        items_.push_back(v);
        cv_.notify_all();
    }
    template <class Pred>
    bool wait_until(Pred pred, std::chrono::milliseconds limit = 10s)
    {
        std::unique_lock lk(mu_);
        return cv_.wait_for(lk, limit, [&] { return pred(items_); });
    }
    bool wait_for(size_t n)
    {
        return wait_until([&](auto &v) { return v.size() >= n; });
    }
    std::vector<T> all()
    {
        std::lock_guard lk(mu_);
        return items_;
    }
    bool has(const T &v)
    {
        std::lock_guard lk(mu_);
        return std::find(items_.begin(), items_.end(), v) != items_.end();
    }
    /** Wait until v has arrived. */
    bool wait_has(const T &v)
    {
        return wait_until([&](const std::vector<T> &items) {
            return std::find(items.begin(), items.end(), v) != items.end();
        });
    }

  private:
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<T> items_;
};

/** Captures log lines while alive. */
class LogCapture {
  public:
    LogCapture()
    {
        prev_ = log::set_sink(
            [this](log::Level, std::string_view c, std::string_view m) {
                lines_.push(std::string(c) + ": " + std::string(m));
            });
    }
    ~LogCapture() { log::set_sink(prev_); }
    size_t count(std::string_view needle)
    {
        size_t n = 0;
        for (const auto &l : lines_.all())
            n += contains(l, needle);
        return n;
    }
    bool wait_for(std::string_view needle)
    {
        return lines_.wait_until([&](const std::vector<std::string> &v) {
            return std::any_of(v.begin(), v.end(), [&](const std::string &l) {
                return contains(l, needle);
            });
        });
    }

  private:
    log::Sink prev_;
    Inbox<std::string> lines_;
};

msg::Time now_ns()
{
    return std::chrono::time_point_cast<std::chrono::nanoseconds>(
        std::chrono::system_clock::now());
}

} // namespace

TEST(Comms, AdvertGoesFromAgentToServer)
{
    auto server = make_comms();
    auto agent = make_comms();
    Inbox<msg::AgentAdvert> got;
    auto sub = server->listen_for_agent([&](const msg::AgentAdvert &a) {
        got.push(a);
        return Verdict::ack;
    });
    msg::AgentAdvert a;
    a.uuid = unique("agent");
    a.default_addr = "127.0.0.1";
    a.local_time = now_ns();
    a.facts = msg::Facts{{"Hostname", {"vm"}}};
    a.testlets = {{"http", "9bbb"}};
    agent->advertise_agent(a);
    ASSERT_TRUE(got.wait_has(a)) << "advert never arrived";
}

TEST(Comms, PublishesGoBytesAsTextPlain)
{
    auto server = make_comms();
    auto raw = Transport::create(plugin(LOOPBACK_DIR, "loopback"), {});
    raw->start();
    const std::string q = unique("agent");
    Inbox<std::pair<std::string, std::string>> got;
    auto sub = raw->subscribe(q, [&](const Delivery &d) {
        got.push({std::string(d.payload), std::string(d.content_type)});
        return Verdict::ack;
    });
    const msg::Task t = msg::ExecuteTestRunTask{"t1", 30};
    server->send_task(q, t);
    ASSERT_TRUE(got.wait_for(1));
    EXPECT_EQ(got.all()[0].first,
              "{\"type\":\"ExecuteTestRun\",\"test_uuid\":\"t1\","
              "\"time_limit\":30}");
    EXPECT_EQ(got.all()[0].second, "text/plain");
}

TEST(Comms, EveryTaskTypeReachesTheAgentInOrder)
{
    auto server = make_comms();
    auto agent = make_comms();
    const std::string uuid = unique("agent");
    const std::vector<msg::Task> tasks = {
        msg::DownloadAssetTask{{"http://127.0.0.1:8090/testlets/http"}},
        msg::KeyValueTask{"k", "v"},
        msg::SetGroupTask{"red", true},
        msg::SetGroupTask{"blue", false},
        msg::InstallTestRunTask{{"t1", {"127.0.0.1"}, "ping", "-c 3"}},
        msg::ExecuteTestRunTask{"t1", 30},
        msg::DeleteTestDataTask{"t1"},
    };
    // Sent before anyone listens: the queue holds them.
    for (const auto &t : tasks)
        server->send_task(uuid, t);
    Inbox<msg::Task> got;
    auto sub = agent->listen_for_tasks(uuid, [&](const msg::Task &t) {
        got.push(t);
        return Verdict::ack;
    });
    ASSERT_TRUE(got.wait_for(tasks.size()));
    EXPECT_EQ(got.all(), tasks);
}

TEST(Comms, ResponsesGoFromAgentToServer)
{
    auto server = make_comms();
    auto agent = make_comms();
    const std::string a = unique("agent");
    const std::vector<msg::Response> rs = {
        msg::AgentStatusResponse{a, "t1", std::string(msg::status_ready)},
        msg::TestDataResponse{a, "t1", "{\"127.0.0.1\":{\"loss\":0}}"},
    };
    Inbox<msg::Response> got;
    auto sub = server->listen_for_responses([&](const msg::Response &r) {
        got.push(r);
        return Verdict::ack;
    });
    for (const auto &r : rs)
        agent->send_response(r);
    ASSERT_TRUE(got.wait_has(rs[0]));
    ASSERT_TRUE(got.wait_has(rs[1]));
}

TEST(Comms, GroupSubscriptionMovesWithSetGroup)
{
    auto server = make_comms();
    auto agent = make_comms();
    Inbox<msg::Task> got;
    EXPECT_EQ(agent->group(), "");
    agent->watch_for_group([&](const msg::Task &t) {
        got.push(t);
        return Verdict::ack;
    });
    // No group yet: queue "null", as the Go agent.
    const msg::Task on_null = msg::KeyValueTask{unique("null"), "1"};
    server->send_task(queue_no_group, on_null);
    ASSERT_TRUE(got.wait_has(on_null));

    const std::string red = unique("red");
    agent->set_group(red);
    EXPECT_EQ(agent->group(), red);
    const msg::Task left_behind = msg::KeyValueTask{unique("late"), "2"};
    server->send_task(queue_no_group, left_behind);
    const msg::Task on_red = msg::KeyValueTask{unique("red"), "3"};
    server->send_task(red, on_red);
    ASSERT_TRUE(got.wait_has(on_red));
    EXPECT_FALSE(got.has(left_behind)) << "old group queue still subscribed";

    agent->set_group(red); // same group: nothing moves
    agent->set_group("");  // back to "null": the held message arrives
    EXPECT_EQ(agent->group(), "");
    ASSERT_TRUE(got.wait_has(left_behind));
}

TEST(Comms, SetGroupBeforeWatchSubscribesTheRightQueue)
{
    auto server = make_comms();
    auto agent = make_comms();
    const std::string g = unique("early");
    agent->set_group(g);
    Inbox<msg::Task> got;
    agent->watch_for_group([&](const msg::Task &t) {
        got.push(t);
        return Verdict::ack;
    });
    const msg::Task t = msg::SetGroupTask{g, false};
    server->send_task(g, t);
    ASSERT_TRUE(got.wait_has(t));
}

TEST(Comms, ControlCallsFromInsideAHandlerAreRefused)
{
    auto server = make_comms();
    auto agent = make_comms();
    const std::string uuid = unique("agent");
    Inbox<std::string> errors;
    agent->watch_for_group([](const msg::Task &) { return Verdict::ack; });
    auto sub = agent->listen_for_tasks(uuid, [&](const msg::Task &) {
        for (auto call : std::vector<std::function<void()>>{
                 [&] { agent->set_group("x"); },
                 [&] { agent->watch_for_group({}); },
                 [&] { (void)agent->listen_for_responses({}); },
                 [&] { agent->stop(); }}) {
            try {
                call();
                errors.push("no error");
            } catch (const CommsError &e) {
                errors.push(e.status() == TODD_COMMS_E_STATE ? e.what()
                                                             : "wrong status");
            }
        }
        // Publishing from a handler is fine (the Go agent responds there).
        agent->send_response(msg::AgentStatusResponse{"a", "t", "ready"});
        return Verdict::ack;
    });
    server->send_task(uuid, msg::KeyValueTask{"k", "v"});
    ASSERT_TRUE(errors.wait_for(4));
    for (const auto &e : errors.all())
        EXPECT_TRUE(contains(e, "called from inside a message handler")) << e;
    EXPECT_EQ(agent->group(), "");
}

TEST(Comms, UndecodableMessageIsLoggedRejectedAndNotRedelivered)
{
    LogCapture logs;
    auto server = make_comms();
    auto agent = make_comms();
    const std::string uuid = unique("agent");
    server->send_raw(uuid, "hello");
    server->send_raw(uuid, "{\"type\":\"Bogus\"}");
    const msg::Task good = msg::KeyValueTask{"k", "v"};
    server->send_task(uuid, good);
    Inbox<msg::Task> got;
    auto sub = agent->listen_for_tasks(uuid, [&](const msg::Task &t) {
        got.push(t);
        return Verdict::ack;
    });
    ASSERT_TRUE(got.wait_for(1));
    EXPECT_EQ(got.all(), std::vector<msg::Task>{good});
    const std::string prefix =
        "queue \"" + uuid + "\": rejecting an undecodable message";
    EXPECT_EQ(logs.count(prefix + " (5 bytes): task is not JSON"), 1u);
    EXPECT_EQ(logs.count(prefix + " (16 bytes): task: unknown type \"Bogus\""),
              1u);
    // Rejected means gone: a fresh listener finds only what comes next.
    sub.reset();
    const msg::Task next = msg::KeyValueTask{"k2", "v2"};
    server->send_task(uuid, next);
    Inbox<msg::Task> again;
    auto sub2 = agent->listen_for_tasks(uuid, [&](const msg::Task &t) {
        again.push(t);
        return Verdict::ack;
    });
    ASSERT_TRUE(again.wait_for(1));
    EXPECT_EQ(again.all(), std::vector<msg::Task>{next});
    EXPECT_EQ(logs.count(prefix), 2u);
}

TEST(Comms, RequeueAndExceptionsRedeliver)
{
    auto server = make_comms();
    auto agent = make_comms();
    const std::string uuid = unique("agent");
    std::atomic<int> calls{0};
    Inbox<msg::Task> acked;
    auto sub = agent->listen_for_tasks(uuid, [&](const msg::Task &t) {
        const int n = ++calls;
        if (n == 1)
            return Verdict::requeue;
        if (n == 2)
            throw std::runtime_error("handler failed"); // counts as requeue
        acked.push(t);
        return Verdict::ack;
    });
    const msg::Task t = msg::ExecuteTestRunTask{"t", 5};
    server->send_task(uuid, t);
    ASSERT_TRUE(acked.wait_for(1));
    EXPECT_EQ(acked.all()[0], t);
    EXPECT_EQ(calls.load(), 3);
}

TEST(Comms, HandlerRejectDropsTheMessage)
{
    auto server = make_comms();
    auto agent = make_comms();
    const std::string uuid = unique("agent");
    Inbox<msg::Task> got;
    auto sub = agent->listen_for_tasks(uuid, [&](const msg::Task &t) {
        got.push(t);
        return std::holds_alternative<msg::KeyValueTask>(t) ? Verdict::reject
                                                            : Verdict::ack;
    });
    server->send_task(uuid, msg::KeyValueTask{"poison", ""});
    server->send_task(uuid, msg::DeleteTestDataTask{"t"});
    ASSERT_TRUE(got.wait_for(2));
    EXPECT_EQ(got.all().size(), 2u); // the rejected one came once
}

TEST(Comms, BoundedQueueFailsAtOnceNamingTheQueue)
{
    SendPolicy forever;
    forever.retry_for = std::chrono::hours(1); // a retry would hang the test
    auto server = make_comms({{"max_queue_length", "1"}}, forever);
    const std::string uuid = unique("agent");
    server->send_task(uuid, msg::KeyValueTask{"k", "1"});
    try {
        server->send_task(uuid, msg::KeyValueTask{"k", "2"});
        FAIL() << "the bound was not hit";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_FULL);
        EXPECT_TRUE(contains(e.what(), "send to queue \"" + uuid + "\" failed"))
            << e.what();
        EXPECT_TRUE(contains(e.what(), "max_queue_length")) << e.what();
    }
    auto drain = server->listen_for_tasks(
        uuid, [](const msg::Task &) { return Verdict::ack; });
}

TEST(Comms, StoppedTransportFailsAtOnce)
{
    SendPolicy forever;
    forever.retry_for = std::chrono::hours(1);
    auto agent = make_comms({}, forever);
    agent->stop();
    try {
        agent->send_response(msg::AgentStatusResponse{"a", "t", "ready"});
        FAIL();
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_STATE);
        EXPECT_TRUE(
            contains(e.what(), "send to queue \"agentresponses\" failed"))
            << e.what();
    }
    agent->stop(); // idempotent
}

TEST(Comms, UnavailableIsRetriedThenGivesUpClearly)
{
    SendPolicy p;
    p.retry_for = 200ms;
    p.initial_backoff = 5ms;
    p.max_backoff = 20ms;
    Comms c(Transport::create(plugin(FIXTURE_DIR, "unreachable"),
                              {{"endpoint", "nowhere"}}),
            p);
    c.start();
    try {
        c.send_task("agent-x", msg::KeyValueTask{"k", "v"});
        FAIL();
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_UNAVAILABLE);
        const std::string w = e.what();
        EXPECT_TRUE(contains(w, "send to queue \"agent-x\" gave up after "))
            << w;
        EXPECT_TRUE(contains(w, "(retry limit 200 ms)")) << w;
        EXPECT_TRUE(contains(w, "cannot reach the service for 'agent-x'")) << w;
        EXPECT_FALSE(contains(w, "after 1 attempt(s)"))
            << "never retried: " << w;
    }
}

TEST(Comms, CancelSendsEndsARetryingSendAtOnce)
{
    SendPolicy forever;
    forever.retry_for = std::chrono::hours(1);
    forever.max_backoff = std::chrono::hours(1);
    forever.initial_backoff = std::chrono::hours(1);
    Comms c(Transport::create(plugin(FIXTURE_DIR, "unreachable"),
                              {{"endpoint", "nowhere"}}),
            forever);
    c.start();
    LogCapture logs;
    // The sender is in its first back-off (an hour) once it has logged it.
    auto send = std::async(std::launch::async, [&] {
        c.send_task("agent-x", msg::KeyValueTask{"k", "v"});
    });
    ASSERT_TRUE(logs.wait_for("failed, retrying for up to"));
    c.cancel_sends();
    // Bounded wait so that a regression fails instead of hanging the suite.
    ASSERT_EQ(send.wait_for(std::chrono::seconds(10)),
              std::future_status::ready);
    try {
        send.get();
        FAIL() << "a cancelled send returned normally";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_STATE);
        EXPECT_TRUE(contains(e.what(), "cancelled")) << e.what();
    }
    // Later sends fail at once too.
    EXPECT_THROW(c.send_task("agent-x", msg::KeyValueTask{"k", "v"}),
                 CommsError);
}

TEST(Comms, UnavailableThatRecoversSucceeds)
{
    LogCapture logs;
    SendPolicy p;
    p.initial_backoff = 1ms;
    p.max_backoff = 4ms;
    Comms c(
        Transport::create(plugin(FIXTURE_DIR, "unreachable"),
                          {{"endpoint", "x"},
                           {"fail_publishes", "3"},
                           {"status", std::to_string(TODD_COMMS_E_TIMEOUT)}}),
        p);
    c.start();
    c.advertise_agent(msg::AgentAdvert{});
    EXPECT_EQ(logs.count("sent to queue \"agentadvert\" after 4 attempts"), 1u);
}

TEST(Comms, OtherFailuresAreNotRetried)
{
    SendPolicy forever;
    forever.retry_for = std::chrono::hours(1);
    Comms c(
        Transport::create(plugin(FIXTURE_DIR, "unreachable"),
                          {{"endpoint", "x"},
                           {"status", std::to_string(TODD_COMMS_E_PROTOCOL)}}),
        forever);
    c.start();
    try {
        c.send_response(msg::TestDataResponse{"a", "t", "{}"});
        FAIL();
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_PROTOCOL);
        EXPECT_TRUE(
            contains(e.what(), "send to queue \"agentresponses\" failed"));
    }
}

TEST(Comms, ArgumentsAreChecked)
{
    EXPECT_THROW(Comms(nullptr), CommsError);
    auto c = make_comms();
    EXPECT_THROW(c->send_task("", msg::KeyValueTask{}), CommsError);
    EXPECT_THROW((void)c->listen_for_tasks("", {}), CommsError);
}

TEST(Comms, OpenedFromOptionsLikeAProgram)
{
    const auto ini =
        parse_ini("[Comms]\nPlugin = loopback\nprefetch = 4\n", "agent.cfg");
    namespace po = boost::program_options;
    po::variables_map vm;
    CommsSelection sel = resolve_comms(vm, &ini);
    sel.plugin_dirs = {LOOPBACK_DIR};
    sel.role = "agent";
    Comms server(open_transport(sel)), agent(open_transport(sel));
    server.start();
    agent.start();
    Inbox<msg::Response> got;
    auto sub = server.listen_for_responses([&](const msg::Response &r) {
        got.push(r);
        return Verdict::ack;
    });
    const msg::Response r =
        msg::AgentStatusResponse{unique("a"), "t", "testing"};
    agent.send_response(r);
    ASSERT_TRUE(got.wait_has(r));
}
