// SPDX-License-Identifier: Apache-2.0
// The conformance checker's rules ABI-6..11 (docs/plugin-abi.md): verdicts,
// time-to-live, quiescence after unsubscribe, stop and destroy, thread-safe
// publish, no escaped exceptions and E_INVAL for invalid arguments, the
// statuses of publish_batch.
#include "check_internal.hpp"

#include <algorithm>
#include <cstdio>
#include <set>
#include <thread>

namespace todd_check {

void rule_abi6(Env &env)
{
    set_rule("ABI-6");
    if (!(g_d->capabilities & TODD_COMMS_CAP_ACK)) {
        report("ABI-6", "SKIP", "no TODD_COMMS_CAP_ACK");
        return;
    }
    Outcome o;
    std::string d = new_dest("abi6-verdicts");
    std::atomic<int> requeue_seen{0};
    auto handler = [&](const Msg &m) -> int32_t {
        if (m.payload == "requeue-me")
            return ++requeue_seen == 1 ? TODD_COMMS_VERDICT_REQUEUE
                                       : TODD_COMMS_VERDICT_ACK;
        if (m.payload == "reject-me")
            return TODD_COMMS_VERDICT_REJECT;
        return TODD_COMMS_VERDICT_ACK;
    };
    int32_t st;
    auto s = do_subscribe(env.main, d, handler, &st);
    if (!s) {
        o.fail("subscribe returned " + status_name(st));
        o.send("ABI-6", "");
        return;
    }
    for (const char *p : {"requeue-me", "reject-me", "ack-me"})
        if ((st = do_publish(env.main, d, p, nullptr)) != TODD_COMMS_OK)
            o.fail("publish returned " + status_name(st));
    auto count = [&](const std::vector<Msg> &got, const std::string &p) {
        return std::count_if(got.begin(), got.end(),
                             [&](auto &g) { return g.payload == p; });
    };
    wait_for(
        [&] {
            return count(s->got, "requeue-me") >= 2 &&
                   count(s->got, "reject-me") >= 1 &&
                   count(s->got, "ack-me") >= 1;
        },
        g_timeout_ms);
    // A sentinel behind them, then time for anything wrongly redelivered.
    do_publish(env.main, d, "sentinel", nullptr);
    wait_for([&] { return count(s->got, "sentinel") >= 1; }, g_timeout_ms);
    quiet_period();
    auto got = got_copy(*s);
    auto rq = count(got, "requeue-me");
    if (rq < 2)
        o.fail("a message answered REQUEUE was not delivered again within " +
               std::to_string(g_timeout_ms) + " ms");
    else if (rq > 2)
        o.fail("a requeued message acknowledged on redelivery came back " +
               std::to_string(rq - 2) + " more time(s)");
    if (rq >= 2) {
        int n = 0;
        for (auto &g : got)
            if (g.payload == "requeue-me" && ++n == 2 &&
                !(g.flags & TODD_COMMS_MSG_REDELIVERED))
                o.fail("the redelivered message lacks "
                       "TODD_COMMS_MSG_REDELIVERED");
    }
    auto rj = count(got, "reject-me");
    if (rj == 0)
        o.fail("message 'reject-me' was never delivered");
    else if (rj > 1)
        o.fail("a message answered REJECT was delivered again (" +
               std::to_string(rj) + " times)");
    auto ak = count(got, "ack-me");
    if (ak != 1)
        o.fail("a message answered ACK was delivered " + std::to_string(ak) +
               " times");
    do_unsubscribe(env.main, *s);
    o.send("ABI-6", "ACK gone, REQUEUE redelivered once with REDELIVERED, "
                    "REJECT never redelivered");
}

void rule_abi7(Env &env)
{
    set_rule("ABI-7");
    if (!(g_d->capabilities & TODD_COMMS_CAP_TTL)) {
        report("ABI-7", "SKIP", "no TODD_COMMS_CAP_TTL");
        return;
    }
    Outcome o;
    std::string d = new_dest("abi7-ttl");
    const int64_t ttl = 100;
    auto short_ttl = popts("text/plain", ttl);
    auto long_ttl = popts("text/plain", 600000);
    int32_t st;
    if ((st = do_publish(env.main, d, "expires", &short_ttl)) != TODD_COMMS_OK)
        o.fail("publish with ttl_ms " + std::to_string(ttl) + " returned " +
               status_name(st));
    if ((st = do_publish(env.main, d, "outlives", &long_ttl)) != TODD_COMMS_OK)
        o.fail("publish with ttl_ms 600000 returned " + status_name(st));
    // Time has to pass for a time-to-live to end.
    std::this_thread::sleep_for(milliseconds(ttl + g_quiet_ms));
    auto s = do_subscribe(env.main, d, nullptr, &st);
    if (!s) {
        o.fail("subscribe returned " + status_name(st));
        o.send("ABI-7", "");
        return;
    }
    do_publish(env.main, d, "sentinel", nullptr);
    auto has = [&](const std::string &p) {
        return std::any_of(s->got.begin(), s->got.end(),
                           [&](auto &g) { return g.payload == p; });
    };
    wait_for([&] { return has("sentinel") && has("outlives"); }, g_timeout_ms);
    quiet_period();
    {
        std::lock_guard l(g_mu);
        if (has("expires"))
            o.fail("a message with ttl_ms " + std::to_string(ttl) +
                   " was delivered after " + std::to_string(ttl + g_quiet_ms) +
                   " ms unconsumed");
        if (!has("outlives"))
            o.fail("a message with ttl_ms 600000 was not delivered");
        if (!has("sentinel"))
            o.fail("a message without ttl was not delivered");
    }
    do_unsubscribe(env.main, *s);
    o.send("ABI-7", "ttl_ms " + std::to_string(ttl) +
                        " expired unconsumed, a long ttl was delivered");
}

void rule_abi9(Env &env)
{
    set_rule("ABI-9");
    Outcome o;
    // Concurrent publishers.
    std::string d = new_dest("abi9-threads");
    int32_t st;
    auto s = do_subscribe(env.main, d, nullptr, &st);
    if (!s) {
        o.fail("subscribe returned " + status_name(st));
        o.send("ABI-9", "");
        return;
    }
    const int threads = 4, per = 25;
    std::atomic<int> failed{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t)
        ts.emplace_back([&, t] {
            for (int i = 0; i < per; ++i)
                if (do_publish(env.main, d,
                               "t" + std::to_string(t) + "-" +
                                   std::to_string(i),
                               nullptr) != TODD_COMMS_OK)
                    failed++;
        });
    for (auto &t : ts)
        t.join();
    if (failed)
        o.fail(std::to_string(failed.load()) +
               " concurrent publishes returned an error");
    wait_for([&] { return s->got.size() >= threads * per; }, g_timeout_ms);
    {
        std::set<std::string> seen;
        for (auto &g : got_copy(*s))
            seen.insert(g.payload);
        if (seen.size() != threads * per)
            o.fail(std::to_string(seen.size()) + " of " +
                   std::to_string(threads * per) +
                   " concurrently published messages delivered within " +
                   std::to_string(g_timeout_ms) + " ms");
    }
    do_unsubscribe(env.main, *s);

    // Publish from inside deliver.
    std::string ping = new_dest("abi9-ping"), pong = new_dest("abi9-pong");
    auto sp = do_subscribe(env.main, pong, nullptr, &st);
    std::atomic<int> inner_fail{0};
    auto si = do_subscribe(
        env.main, ping,
        [&](const Msg &m) {
            if (do_publish(env.main, pong, "re:" + m.payload, nullptr) !=
                TODD_COMMS_OK)
                inner_fail++;
            return TODD_COMMS_VERDICT_ACK;
        },
        &st);
    if (!sp || !si) {
        o.fail("subscribe returned " + status_name(st));
    } else {
        const int n = 5;
        for (int i = 0; i < n; ++i)
            do_publish(env.main, ping, "ping-" + std::to_string(i), nullptr);
        wait_for([&] { return sp->got.size() >= n; }, g_timeout_ms);
        if (inner_fail)
            o.fail("publish from inside deliver failed " +
                   std::to_string(inner_fail.load()) + " time(s)");
        if (got_count(*sp) < n)
            o.fail(std::to_string(got_count(*sp)) + " of " + std::to_string(n) +
                   " messages published from inside deliver arrived");
    }
    if (si)
        do_unsubscribe(env.main, *si);
    if (sp)
        do_unsubscribe(env.main, *sp);
    o.send("ABI-9", std::to_string(threads * per) + " messages from " +
                        std::to_string(threads) +
                        " threads and publish from inside deliver all "
                        "delivered");
}

void rule_abi10(Env &env)
{
    set_rule("ABI-10");
    Outcome o;
    auto expect_inval = [&](const std::string &what, int32_t st) {
        if (st != TODD_COMMS_E_INVAL)
            o.fail(what + " returned " + status_name(st) +
                   ", expected E_INVAL");
    };
    const uint8_t x[] = {'x'};
    expect_inval("publish with a NULL destination", guarded("publish", [&] {
                     return g_d->publish(env.main.self, nullptr, x, 1, nullptr);
                 }));
    std::string d = new_dest("abi10");
    expect_inval(
        "publish with a NULL payload of length 5", guarded("publish", [&] {
            return g_d->publish(env.main.self, d.c_str(), nullptr, 5, nullptr);
        }));
    expect_inval("subscribe with a NULL destination",
                 do_control(env.main, "subscribe", [&] {
                     return g_d->subscribe(env.main.self, nullptr, ++g_cookie,
                                           nullptr);
                 }));
    expect_inval("unsubscribe of an unknown cookie",
                 do_control(env.main, "unsubscribe", [&] {
                     return g_d->unsubscribe(env.main.self,
                                             0x7e57c0de00000000ull + g_cookie);
                 }));
    int32_t st;
    auto s = do_subscribe(env.main, d, nullptr, &st);
    if (!s) {
        o.fail("subscribe returned " + status_name(st));
    } else {
        std::string d2 = new_dest("abi10-dup");
        expect_inval("subscribe with a cookie already in use",
                     do_control(env.main, "subscribe", [&] {
                         return g_d->subscribe(env.main.self, d2.c_str(),
                                               s->cookie, nullptr);
                     }));
        do_unsubscribe(env.main, *s);
    }
    {
        std::lock_guard l(g_mu);
        for (auto &e : g_escaped)
            o.fail(e);
    }
    o.send("ABI-10", "invalid arguments returned E_INVAL, no exception "
                     "escaped any call");
}

void rule_abi11(Env &env)
{
    set_rule("ABI-11");
    if (g_d->publish_batch == nullptr) {
        report("ABI-11", "SKIP",
               "publish_batch not implemented (the host publishes one by one)");
        return;
    }
    Outcome o;
    std::string d = new_dest("abi11-batch");
    int32_t st;
    auto s = do_subscribe(env.main, d, nullptr, &st);
    if (!s) {
        o.fail("subscribe returned " + status_name(st));
        o.send("ABI-11", "");
        return;
    }
    auto json = popts("application/json");
    const std::string p[3] = {"batch-0", "{\"batch\":1}", "batch-2"};
    todd_comms_outgoing msgs[3] = {
        {d.c_str(), reinterpret_cast<const uint8_t *>(p[0].data()), p[0].size(),
         nullptr},
        {d.c_str(), reinterpret_cast<const uint8_t *>(p[1].data()), p[1].size(),
         &json},
        {d.c_str(), reinterpret_cast<const uint8_t *>(p[2].data()), p[2].size(),
         nullptr},
    };
    const todd_comms_status sentinel = 0x5eed;
    todd_comms_status statuses[3] = {sentinel, sentinel, sentinel};
    st = guarded("publish_batch", [&] {
        return g_d->publish_batch(env.main.self, msgs, 3, statuses);
    });
    if (st != TODD_COMMS_OK)
        o.fail("publish_batch of 3 valid messages returned " + status_name(st));
    for (int i = 0; i < 3; ++i)
        if (statuses[i] == sentinel)
            o.fail("statuses[" + std::to_string(i) + "] was not written");
        else if (statuses[i] != TODD_COMMS_OK)
            o.fail("statuses[" + std::to_string(i) + "] is " +
                   status_name(statuses[i]));
    st = guarded("publish_batch", [&] {
        return g_d->publish_batch(env.main.self, msgs, 0, statuses);
    });
    if (st != TODD_COMMS_OK)
        o.fail("publish_batch of 0 messages returned " + status_name(st));
    wait_for([&] { return s->got.size() >= 3; }, g_timeout_ms);
    auto got = got_copy(*s);
    for (auto &payload : p)
        if (std::none_of(got.begin(), got.end(),
                         [&](auto &g) { return g.payload == payload; }))
            o.fail("batched message '" + payload + "' was not delivered");
    do_unsubscribe(env.main, *s);
    o.send("ABI-11", "3 statuses written and OK, all delivered; an empty "
                     "batch is OK");
}

void rule_abi8(Env &env)
{
    set_rule("ABI-8");
    Outcome o;
    // unsubscribe while a deliver is running for the cookie.
    std::string d = new_dest("abi8-unsub");
    std::atomic<bool> in_deliver{false};
    int32_t st;
    auto s = do_subscribe(
        env.main, d,
        [&](const Msg &) {
            if (!in_deliver.exchange(true)) {
                g_cv.notify_all();
                std::this_thread::sleep_for(milliseconds(100));
            }
            return TODD_COMMS_VERDICT_ACK;
        },
        &st);
    if (!s) {
        o.fail("subscribe returned " + status_name(st));
    } else {
        for (int i = 0; i < 10; ++i)
            do_publish(env.main, d, "before-" + std::to_string(i), nullptr);
        wait_for([&] { return in_deliver.load(); }, g_timeout_ms);
        std::string nq;
        st = do_unsubscribe(env.main, *s, &nq);
        if (st != TODD_COMMS_OK)
            o.fail("unsubscribe returned " + status_name(st));
        if (!nq.empty())
            o.fail(nq);
        for (int i = 0; i < 5; ++i)
            do_publish(env.main, d, "after-" + std::to_string(i), nullptr);
        quiet_period();
    }

    // stop while deliveries are flowing, then destroy.
    std::string d2 = new_dest("abi8-stop");
    std::atomic<bool> delivering{false};
    auto s2 = do_subscribe(
        env.main, d2,
        [&](const Msg &) {
            delivering = true;
            g_cv.notify_all();
            std::this_thread::sleep_for(milliseconds(5));
            return TODD_COMMS_VERDICT_ACK;
        },
        &st);
    if (s2) {
        for (int i = 0; i < 20; ++i)
            do_publish(env.main, d2, "flow-" + std::to_string(i), nullptr);
        wait_for([&] { return delivering.load(); }, g_timeout_ms);
    }
    std::vector<Inst *> all{&env.main};
    if (env.second)
        all.push_back(&*env.second);
    for (Inst *in : all) {
        std::string nq;
        st = do_stop(*in, &nq);
        if (st != TODD_COMMS_OK)
            o.fail(in->h->label + ": stop returned " + status_name(st));
        if (!nq.empty())
            o.fail(nq);
    }
    quiet_period();
    for (Inst *in : all)
        do_destroy(*in);
    quiet_period();
    {
        std::lock_guard l(g_mu);
        for (auto &v : g_abi8_violations)
            o.fail(v);
    }
    o.send("ABI-8", "no deliver after unsubscribe returned, no callback "
                    "after stop or destroy returned");
}

/** Map a loader refusal to its LOAD-* rule. */
} // namespace todd_check
