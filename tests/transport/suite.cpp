// SPDX-License-Identifier: Apache-2.0
#include "suite.hpp"

#include <map>
#include <mutex>

#include <unistd.h>

namespace todd::test::transport {

using core::Options;

namespace {

// Each plugin lives in plugins/<name> of the build tree.
std::shared_ptr<const core::Plugin> load(const std::string &name)
{
    static std::mutex m;
    static std::map<std::string, std::shared_ptr<const core::Plugin>> loaded;
    std::lock_guard g(m);
    auto &p = loaded[name];
    if (!p)
        p = core::PluginRegistry(
                {std::string(TODD_PLUGIN_BUILD_DIR) + "/" + name})
                .load(name);
    return p;
}

} // namespace

void TransportSuite::SetUp()
{
    logs_ = std::make_unique<LogCapture>();
    backend_ = backend_for(GetParam());
    if (auto why = backend_->begin()) {
        if (backend_->required())
            FAIL() << *why << " (required: TODD_REQUIRE_RABBITMQ is set)";
        GTEST_SKIP() << *why;
    }
    server_ = open_comms("server");
}

void TransportSuite::TearDown()
{
    server_.reset();
    if (!logs_)
        return;
    // What core's Transport logs when it masks a plugin's breach: a late
    // callback after stop (ABI-8) or a delivery for a subscription that
    // has ended.
    for (const auto &l : logs_->lines())
        if (l.find("plugin broke ABI-") != std::string::npos ||
            l.find("deliver for unknown subscription") != std::string::npos)
            ADD_FAILURE() << "the host caught the plugin: " << l;
}

std::shared_ptr<const core::Plugin> TransportSuite::plugin() const
{
    return load(GetParam());
}

bool TransportSuite::declares(uint64_t cap) const
{
    return (plugin()->info().capabilities & cap) == cap;
}

std::unique_ptr<core::Transport> TransportSuite::open(const std::string &role,
                                                      bool start, Options extra)
{
    core::CommsSelection sel;
    sel.plugin_name = GetParam();
    sel.plugin_dirs = {std::string(TODD_PLUGIN_BUILD_DIR) + "/" + GetParam()};
    sel.options = backend_->options(role);
    for (auto &kv : extra)
        sel.options[kv.first] = kv.second;
    sel.role = role;
    auto t = core::open_transport(sel);
    auto log = std::make_unique<StateLog>();
    log->attach(*t);
    StateLog &states = *log;
    states_.emplace_back(t.get(), std::move(log));
    if (start) {
        t->start();
        backend_->started(role, states);
    }
    return t;
}

std::unique_ptr<core::Comms> TransportSuite::open_comms(const std::string &role,
                                                        core::SendPolicy policy,
                                                        bool start)
{
    auto c = std::make_unique<core::Comms>(open(role, false), policy);
    if (start) {
        c->start();
        backend_->started(role, states(c->transport()));
    }
    return c;
}

StateLog &TransportSuite::states(core::Transport &t)
{
    // The newest entry for t: an address may be reused after a destroy.
    for (auto it = states_.rbegin(); it != states_.rend(); ++it)
        if (it->first == &t)
            return *it->second;
    throw std::logic_error("states: not an instance of this test");
}

void TransportSuite::restart_server()
{
    server_.reset();
    server_ = open_comms("server");
}

std::string TransportSuite::unique(const std::string &base)
{
    static std::atomic<int> n{0};
    return base + "-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
}

} // namespace todd::test::transport
