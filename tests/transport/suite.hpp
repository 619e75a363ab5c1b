// SPDX-License-Identifier: Apache-2.0
// The transport suite: one parameterised fixture, run once per plugin the
// build has (the parameter is the plugin name). Each test states one
// behaviour every transport must show through core's Transport or Comms;
// a behaviour tied to a capability runs only when the plugin's descriptor
// declares it, and otherwise reports SKIP naming the missing flag.
#pragma once

#include "backend.hpp"
#include "inbox.hpp"
#include "log_capture.hpp"

#include <todd/core/comms.hpp>
#include <todd/core/config.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace todd::test::transport {

using namespace std::chrono_literals;

class TransportSuite : public ::testing::TestWithParam<std::string> {
  protected:
    void SetUp() override;
    /** Fails the test when the host caught the plugin breaking the
     *  contract (core logs each case it guards against). */
    void TearDown() override;

    /** The plugin under test, loaded once per binary. */
    std::shared_ptr<const core::Plugin> plugin() const;
    /** True when the plugin declares TODD_COMMS_CAP_* flag cap. */
    bool declares(uint64_t cap) const;

    /** A new instance as the programs open one (role filled in), with
     *  its states recorded in states(t); started unless told not to. */
    std::unique_ptr<core::Transport>
    open(const std::string &role, bool start = true, core::Options extra = {});
    /** The same wrapped in the Comms facade. */
    std::unique_ptr<core::Comms> open_comms(const std::string &role,
                                            core::SendPolicy policy = {},
                                            bool start = true);
    /** The states of an instance made by open or open_comms. */
    StateLog &states(core::Transport &t);

    /** The server-side Comms of this test, started in SetUp: the instance
     *  that hosts the service when the plugin has one (zeromq's engine). */
    core::Comms &server() { return *server_; }
    /** Stop and destroy the server, then open and start a new one in its
     *  place (same endpoint): the server program restarting. */
    void restart_server();
    /** Destroy the server without opening another. */
    void drop_server() { server_.reset(); }

    /** A destination name no other test of the binary uses (rabbitmq's
     *  broker and loopback's are shared by the whole binary). */
    static std::string unique(const std::string &base);

  private:
    // Installed first: it sees every line the instances log.
    std::unique_ptr<LogCapture> logs_;
    std::unique_ptr<Backend> backend_;
    // Outlive every instance: plugins report states until stopped.
    std::deque<std::pair<core::Transport *, std::unique_ptr<StateLog>>> states_;
    std::unique_ptr<core::Comms> server_;
};

/** Run fn(0) .. fn(n-1) on n threads and join them; an exception in one
 *  fails the test with its message instead of ending the binary. */
inline void on_threads(int n, const std::function<void(int)> &fn)
{
    std::mutex m;
    std::vector<std::string> errors;
    std::vector<std::thread> ts;
    for (int k = 0; k < n; ++k)
        ts.emplace_back([&, k] {
            try {
                fn(k);
            } catch (const std::exception &e) {
                std::lock_guard g(m);
                errors.push_back(e.what());
            }
        });
    for (auto &t : ts)
        t.join();
    for (auto &e : errors)
        ADD_FAILURE() << "a test thread threw: " << e;
}

/** In a TEST_P: skip, saying why, unless the plugin declares cap. */
#define REQUIRE_CAPABILITY(cap)                                                \
    do {                                                                       \
        if (!declares(cap))                                                    \
            GTEST_SKIP() << GetParam() << " does not declare " #cap;           \
    } while (0)

} // namespace todd::test::transport
