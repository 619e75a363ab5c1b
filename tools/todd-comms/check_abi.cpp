// SPDX-License-Identifier: Apache-2.0
// The conformance checker's rules ABI-1..5 (docs/plugin-abi.md): create and
// its configuration, the lifecycle, the round trip, held messages, competing
// subscribers.
#include "check_internal.hpp"

#include <algorithm>

namespace todd_check {
namespace {

Config config_for(const Env &env, const char *role)
{
    Config c = env.base;
    if (env.has_role) {
        bool given = false;
        for (auto &[k, v] : c.kv)
            if (k == "role")
                given = true;
        // The user's role is for the first instance only.
        if (!given || std::string(role) != "server") {
            c.kv.erase(
                std::remove_if(c.kv.begin(), c.kv.end(),
                               [](auto &kv) { return kv.first == "role"; }),
                c.kv.end());
            c.kv.emplace_back("role", role);
        }
    }
    return c;
}

Inst make_inst(const std::string &label)
{
    Inst in;
    in.h = new_host(label);
    return in;
}

std::string last_log(const HostCtx *h)
{
    std::lock_guard l(g_mu);
    return h->logs.empty() ? std::string("(no log line)") : h->logs.back();
}

struct Expect {
    std::string payload;
    const char *content_type; // NULL: default (NULL or text/plain)
};

struct Route {
    Inst *pub;
    Inst *sub;
    std::string dest;
    std::vector<Expect> msgs;
    std::shared_ptr<Sub> s;
};

/** ABI-3's destinations and what is published to each. */
std::vector<Route> abi3_routes(Env &env)
{
    std::string binary;
    for (int i = 0; i < 256; ++i)
        binary += static_cast<char>(i);
    binary += std::string("\0\0tail", 6);
    std::string big(65536, '\0');
    for (size_t i = 0; i < big.size(); ++i)
        big[i] = static_cast<char>((i * 131 + 7) & 0xff);

    std::vector<Route> routes;
    routes.push_back(
        {&env.main,
         &env.main,
         new_dest("abi3-binary"),
         {{binary, "application/octet-stream"}, {"hello", nullptr}},
         nullptr});
    routes.push_back(
        {&env.main,
         &env.main,
         new_dest("abi3-empty"),
         {{"", "application/x-empty"}, {big, "application/x-todd-check"}},
         nullptr});
    routes.push_back({&env.main,
                      &env.main,
                      new_dest("abi3-json"),
                      {{"{\"type\":\"check\",\"n\":1}", "application/json"}},
                      nullptr});
    if (env.second) {
        routes.push_back({&env.main,
                          &*env.second,
                          new_dest("abi3-to-second"),
                          {{"from the first instance", "text/plain"}},
                          nullptr});
        routes.push_back({&*env.second,
                          &env.main,
                          new_dest("abi3-from-second"),
                          {{binary, "application/octet-stream"}},
                          nullptr});
    }
    return routes;
}

/** ABI-3: each message of r arrived once, intact, and nothing else did. */
void abi3_check(Outcome &o, Route &r)
{
    auto got = got_copy(*r.s);
    for (auto &m : r.msgs) {
        int seen = 0;
        for (auto &g : got) {
            if (g.payload != m.payload)
                continue;
            ++seen;
            if (g.destination != r.dest)
                o.fail("message on '" + r.dest +
                       "' delivered with destination '" + g.destination + "'");
            if (m.content_type != nullptr &&
                g.content_type.value_or("(NULL)") != m.content_type)
                o.fail("content type '" + std::string(m.content_type) +
                       "' delivered as '" + g.content_type.value_or("(NULL)") +
                       "'");
            if (m.content_type == nullptr && g.content_type &&
                *g.content_type != "text/plain")
                o.fail("default content type delivered as '" + *g.content_type +
                       "', expected text/plain or NULL");
        }
        if (seen == 0)
            o.fail("payload " + printable(m.payload) + " on '" + r.dest +
                   "' not delivered intact within " +
                   std::to_string(g_timeout_ms) + " ms");
        else if (seen > 1)
            o.fail("payload " + printable(m.payload) + " delivered " +
                   std::to_string(seen) + " times");
    }
    for (auto &g : got) {
        bool known = false;
        for (auto &m : r.msgs)
            known = known || g.payload == m.payload;
        if (!known)
            o.fail("unexpected payload " + printable(g.payload) + " on '" +
                   r.dest + "' (corrupted?)");
    }
    do_unsubscribe(*r.sub, *r.s);
}

} // namespace

void rule_abi1(Env &env)
{
    set_rule("ABI-1");
    Outcome o;
    env.main =
        make_inst(env.has_role ? "instance 1 (role=server)" : "instance 1");
    std::string err;
    int32_t st = do_create(env.main, config_for(env, "server"), &err);
    if (st != TODD_COMMS_OK) {
        o.fail("create with a valid configuration returned " + status_name(st) +
               ": " + last_log(env.main.h));
        o.send("ABI-1", "");
        return;
    }
    if (!err.empty()) {
        o.fail(err);
        o.send("ABI-1", "");
        return;
    }
    env.main_ok = true;

    // Configurations the host would refuse, given straight to create: the
    // plugin may accept them (HOST-2: the host validates) or refuse them,
    // but only with E_CONFIG/E_INVAL and a log line naming the key.
    struct Bad {
        std::string key, value, what;
    };
    std::vector<Bad> bad = {{"todd_check_no_such_key", "1", "an unknown key"}};
    for (auto &k : env.info->keys) {
        if (k.type == TODD_COMMS_CFG_INT) {
            bad.push_back({k.name, "not-a-number",
                           "a non-integer value for int key '" + k.name + "'"});
            break;
        }
    }
    for (auto &k : env.info->keys) {
        if (k.type == TODD_COMMS_CFG_BOOL) {
            bad.push_back(
                {k.name, "maybe",
                 "a non-boolean value for bool key '" + k.name + "'"});
            break;
        }
    }
    int accepted = 0, refused = 0;
    for (auto &b : bad) {
        Config c = config_for(env, "agent");
        c.kv.erase(std::remove_if(c.kv.begin(), c.kv.end(),
                                  [&](auto &kv) { return kv.first == b.key; }),
                   c.kv.end());
        c.kv.emplace_back(b.key, b.value);
        Inst bi = make_inst("instance (" + b.what + ")");
        std::string e2;
        int32_t bst = do_create(bi, c, &e2);
        if (!e2.empty())
            o.fail(e2);
        if (bst == TODD_COMMS_OK) {
            ++accepted;
            do_destroy(bi);
            continue;
        }
        ++refused;
        if (bst != TODD_COMMS_E_CONFIG && bst != TODD_COMMS_E_INVAL) {
            o.fail("create with " + b.what + " returned " + status_name(bst) +
                   ", expected E_CONFIG or E_INVAL (" + last_log(bi.h) + ")");
            continue;
        }
        bool named = false;
        {
            std::lock_guard l(g_mu);
            for (auto &line : bi.h->logs)
                if (line.find(b.key) != std::string::npos)
                    named = true;
        }
        if (!named)
            o.fail("create with " + b.what + " returned " + status_name(bst) +
                   " but logged no line naming '" + b.key + "'");
    }
    o.send("ABI-1", "create with a valid configuration succeeded; " +
                        std::to_string(refused) +
                        " bad configuration(s) refused with E_CONFIG/E_INVAL "
                        "naming the key, " +
                        std::to_string(accepted) +
                        " accepted (left to the host's validation)");
}

void rule_abi2(Env &env)
{
    set_rule("ABI-2");
    Outcome o;
    // create, start, stop, start again (E_STATE), destroy.
    Inst a = make_inst("lifecycle instance");
    int32_t st = do_create(a, config_for(env, "agent"));
    if (st != TODD_COMMS_OK) {
        o.fail("create returned " + status_name(st));
    } else {
        if ((st = do_start(a)) != TODD_COMMS_OK)
            o.fail("start returned " + status_name(st) + ": " + last_log(a.h));
        std::string nq;
        if ((st = do_stop(a, &nq)) != TODD_COMMS_OK)
            o.fail("stop returned " + status_name(st));
        if (!nq.empty())
            o.fail(nq);
        st = do_control(a, "start", [&] { return g_d->start(a.self); });
        if (st != TODD_COMMS_E_STATE)
            o.fail("start after stop returned " + status_name(st) +
                   ", expected E_STATE");
        quiet_period();
        do_destroy(a);
        std::lock_guard l(g_mu);
        for (auto &v : a.h->violations)
            o.fail(v);
    }

    // destroy without stop, with a subscription and messages in flight.
    Inst b = make_inst("instance destroyed without stop");
    if ((st = do_create(b, config_for(env, "agent"))) != TODD_COMMS_OK) {
        o.fail("create returned " + status_name(st));
    } else {
        do_start(b);
        std::string d = new_dest("abi2");
        auto s = do_subscribe(b, d, nullptr);
        for (int i = 0; i < 3; ++i)
            do_publish(b, d, "lifecycle-" + std::to_string(i), nullptr);
        if (s)
            wait_for([&] { return s->got.size() >= 1; }, g_timeout_ms);
        do_destroy(b);
        quiet_period();
        std::lock_guard l(g_mu);
        for (auto &v : b.h->violations)
            o.fail(v);
    }

    // create then destroy, never started.
    Inst c = make_inst("instance never started");
    if ((st = do_create(c, config_for(env, "agent"))) != TODD_COMMS_OK)
        o.fail("create returned " + status_name(st));
    else
        do_destroy(c);

    o.send("ABI-2", "create/start/stop/destroy ok, start after stop is "
                    "E_STATE, destroy without stop and without start safe");
}

std::string start_instances(Env &env)
{
    int32_t st = do_start(env.main);
    if (st != TODD_COMMS_OK)
        return "start of the main instance returned " + status_name(st) + ": " +
               last_log(env.main.h);
    if (env.remote) {
        Inst s =
            make_inst(env.has_role ? "instance 2 (role=agent)" : "instance 2");
        st = do_create(s, config_for(env, "agent"));
        if (st != TODD_COMMS_OK)
            return "create of a second instance returned " + status_name(st) +
                   ": " + last_log(s.h);
        st = do_start(s);
        if (st != TODD_COMMS_OK)
            return "start of a second instance returned " + status_name(st) +
                   ": " + last_log(s.h);
        env.second = s;
    }
    return {};
}

void rule_abi3(Env &env)
{
    set_rule("ABI-3");
    Outcome o;
    std::vector<Route> routes = abi3_routes(env);
    size_t expected = 0;
    for (auto &r : routes) {
        int32_t st;
        r.s = do_subscribe(*r.sub, r.dest, nullptr, &st);
        if (!r.s)
            o.fail("subscribe '" + r.dest + "' returned " + status_name(st));
    }
    for (auto &r : routes) {
        for (auto &m : r.msgs) {
            auto opts = popts(m.content_type);
            int32_t st = do_publish(*r.pub, r.dest, m.payload,
                                    m.content_type ? &opts : nullptr);
            if (st != TODD_COMMS_OK)
                o.fail("publish to '" + r.dest + "' returned " +
                       status_name(st) + ": " + last_log(r.pub->h));
            else
                ++expected;
        }
    }
    wait_for(
        [&] {
            size_t n = 0;
            for (auto &r : routes)
                n += r.s ? r.s->got.size() : 0;
            return n >= expected;
        },
        g_timeout_ms);
    for (auto &r : routes)
        if (r.s)
            abi3_check(o, r);
    o.send("ABI-3", std::to_string(expected) + " messages on " +
                        std::to_string(routes.size()) +
                        " destinations round-tripped intact (binary, empty, "
                        "64 KiB), destination and content type preserved" +
                        (env.second ? ", across two instances" : ""));
}

void rule_abi4(Env &env)
{
    set_rule("ABI-4");
    Outcome o;
    std::string d = new_dest("abi4-held");
    const int n = 3;
    for (int i = 0; i < n; ++i) {
        int32_t st =
            do_publish(env.main, d, "held-" + std::to_string(i), nullptr);
        if (st != TODD_COMMS_OK)
            o.fail("publish before any subscriber returned " + status_name(st) +
                   ": " + last_log(env.main.h));
    }
    Inst &subscriber = env.second ? *env.second : env.main;
    int32_t st;
    auto s = do_subscribe(subscriber, d, nullptr, &st);
    if (!s) {
        o.fail("subscribe returned " + status_name(st));
    } else {
        wait_for([&] { return s->got.size() >= n; }, g_timeout_ms);
        auto got = got_copy(*s);
        for (int i = 0; i < n; ++i) {
            std::string p = "held-" + std::to_string(i);
            if (std::none_of(got.begin(), got.end(),
                             [&](auto &g) { return g.payload == p; }))
                o.fail("message '" + p +
                       "' published before the subscription was not "
                       "delivered within " +
                       std::to_string(g_timeout_ms) + " ms");
        }
        do_unsubscribe(subscriber, *s);
    }
    o.send("ABI-4", std::to_string(n) +
                        " messages published before subscribe were held and "
                        "delivered");
}

void rule_abi5(Env &env)
{
    set_rule("ABI-5");
    Outcome o;
    std::string d = new_dest("abi5-compete");
    int32_t st;
    auto s1 = do_subscribe(env.main, d, nullptr, &st);
    Inst &other = env.second ? *env.second : env.main;
    auto s2 = do_subscribe(other, d, nullptr, &st);
    if (!s1 || !s2) {
        o.fail("subscribe returned " + status_name(st));
        o.send("ABI-5", "");
        return;
    }
    const int n = 20;
    for (int i = 0; i < n; ++i)
        if ((st = do_publish(env.main, d, "compete-" + std::to_string(i),
                             nullptr)) != TODD_COMMS_OK)
            o.fail("publish returned " + status_name(st));
    wait_for([&] { return s1->got.size() + s2->got.size() >= n; },
             g_timeout_ms);
    quiet_period();
    std::map<std::string, int> count;
    for (auto *s : {s1.get(), s2.get()})
        for (auto &g : got_copy(*s))
            count[g.payload]++;
    int missing = 0, dup = 0;
    for (int i = 0; i < n; ++i) {
        int c = count["compete-" + std::to_string(i)];
        missing += c == 0;
        dup += c > 1;
    }
    if (missing)
        o.fail(std::to_string(missing) + " of " + std::to_string(n) +
               " messages reached no subscriber within " +
               std::to_string(g_timeout_ms) + " ms");
    if (dup)
        o.fail(std::to_string(dup) + " of " + std::to_string(n) +
               " messages reached more than one competing subscriber");
    size_t a = got_count(*s1), b = got_count(*s2);
    do_unsubscribe(env.main, *s1);
    do_unsubscribe(other, *s2);
    o.send("ABI-5", std::to_string(n) +
                        " messages to 2 competing subscribers, each delivered "
                        "exactly once (" +
                        std::to_string(a) + "/" + std::to_string(b) + ")");
}

} // namespace todd_check
