// SPDX-License-Identifier: Apache-2.0
// What each transport plugin needs around it for the transport suite: the
// service its instances talk to (nothing for loopback, a server-role engine
// on a port it bound for zeromq, a private broker for rabbitmq and kafka) and
// the options that reach that service. A plugin with no entry here gets the
// service-less backend, so a transport that needs nothing around it is
// added by its one line in meson.build.
#pragma once

#include <todd/core/transport.hpp>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace todd::test::transport {

/** The state changes one transport reported, waited on with a bound. */
class StateLog {
  public:
    struct Entry {
        core::LinkState state;
        int32_t status;
        std::string detail;
    };
    /** Record every state of t from now on; must outlive t. */
    void attach(core::Transport &t);
    /** Wait until state s was reported at least n times; false after
     *  limit. */
    bool wait(core::LinkState s, size_t n = 1,
              std::chrono::milliseconds limit = std::chrono::seconds(30));
    /** How often s was reported so far. */
    size_t count(core::LinkState s);
    std::vector<Entry> all();

  private:
    std::mutex m_;
    std::condition_variable cv_;
    std::vector<Entry> log_;
};

class Backend {
  public:
    virtual ~Backend() = default;
    /**
     * Prepare the service for one test. Returns why it cannot run here
     * (e.g. no rabbitmq-server), or nullopt when it can.
     */
    virtual std::optional<std::string> begin() { return std::nullopt; }
    /** True when begin's reason must fail the test instead of skipping
     *  it (TODD_REQUIRE_RABBITMQ=1, TODD_REQUIRE_KAFKA=1 in CI). */
    virtual bool required() const { return false; }
    /** Plugin options for a new instance of role "server" or "agent" (the
     *  role itself is filled in as the programs do). */
    virtual core::Options options(const std::string &role) = 0;
    /** Called once an instance of role has started, with its states. */
    virtual void started(const std::string &role, StateLog &states)
    {
        (void)role;
        (void)states;
    }
};

/** The backend of the plugin with this name. */
std::unique_ptr<Backend> backend_for(const std::string &plugin);

} // namespace todd::test::transport
