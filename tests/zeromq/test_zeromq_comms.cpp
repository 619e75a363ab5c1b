// SPDX-License-Identifier: Apache-2.0
// ToDD's comms operations (core's Comms facade) over the zeromq plugin, the
// way todd-server and todd-agent open it: a selection naming the plugin and
// the role, an endpoint on a free loopback port, no broker.
#include <todd/core/comms.hpp>
#include <todd/core/config.hpp>

#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

using namespace todd::core;
using namespace todd;
using namespace std::chrono_literals;

namespace {

int free_port()
{
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0)
        throw std::runtime_error("bind to a free port failed");
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

template <class T> class Inbox {
  public:
    void push(const T &v)
    {
        std::lock_guard lk(mu_);
        items_.push_back(v);
        cv_.notify_all();
    }
    bool wait_has(const T &v, std::chrono::milliseconds limit = 20s)
    {
        std::unique_lock lk(mu_);
        return cv_.wait_for(lk, limit, [&] {
            return std::find(items_.begin(), items_.end(), v) != items_.end();
        });
    }
    std::vector<T> all()
    {
        std::lock_guard lk(mu_);
        return items_;
    }
    bool wait_for(size_t n, std::chrono::milliseconds limit = 20s)
    {
        std::unique_lock lk(mu_);
        return cv_.wait_for(lk, limit, [&] { return items_.size() >= n; });
    }

  private:
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<T> items_;
};

class ZeroMqComms : public ::testing::Test {
  protected:
    void SetUp() override
    {
        endpoint_ = "tcp://127.0.0.1:" + std::to_string(free_port());
        server_ = open("server");
        server_->start();
        agent_ = open("agent");
        agent_->start();
    }
    /** As the programs do: [Comms] names the plugin, role filled in. */
    std::unique_ptr<Comms> open(const std::string &role)
    {
        const auto ini =
            parse_ini("[Comms]\nPlugin = zeromq\nendpoint = " + endpoint_ +
                          "\nheartbeat_ms = 100\n"
                          "heartbeat_timeout_ms = 1000\n",
                      role + ".cfg");
        boost::program_options::variables_map vm;
        CommsSelection sel = resolve_comms(vm, &ini);
        sel.plugin_dirs = {ZEROMQ_DIR};
        sel.role = role;
        return std::make_unique<Comms>(open_transport(sel));
    }
    std::string endpoint_;
    std::unique_ptr<Comms> server_, agent_;
};

TEST_F(ZeroMqComms, AdvertTasksAndResponsesFlow)
{
    Inbox<msg::AgentAdvert> adverts;
    auto ls = server_->listen_for_agent([&](const msg::AgentAdvert &a) {
        adverts.push(a);
        return Verdict::ack;
    });
    msg::AgentAdvert a;
    a.uuid = "agent-zmq-1";
    a.default_addr = "127.0.0.1";
    a.local_time = std::chrono::time_point_cast<std::chrono::nanoseconds>(
        std::chrono::system_clock::now());
    a.facts = msg::Facts{{"Hostname", {"vm"}}};
    agent_->advertise_agent(a);
    ASSERT_TRUE(adverts.wait_has(a));

    // Tasks sent before the agent listens are held for it.
    const std::vector<msg::Task> tasks = {
        msg::KeyValueTask{"k", "v"},
        msg::InstallTestRunTask{{"t1", {"127.0.0.1"}, "ping", "-c 3"}},
        msg::ExecuteTestRunTask{"t1", 30},
    };
    for (const auto &t : tasks)
        server_->send_task(a.uuid, t);
    Inbox<msg::Task> got;
    auto lt = agent_->listen_for_tasks(a.uuid, [&](const msg::Task &t) {
        got.push(t);
        return Verdict::ack;
    });
    ASSERT_TRUE(got.wait_for(tasks.size()));
    EXPECT_EQ(got.all(), tasks);

    Inbox<msg::Response> responses;
    auto lr = server_->listen_for_responses([&](const msg::Response &r) {
        responses.push(r);
        return Verdict::ack;
    });
    const msg::Response r =
        msg::TestDataResponse{a.uuid, "t1", "{\"127.0.0.1\":{\"loss\":0}}"};
    agent_->send_response(r);
    ASSERT_TRUE(responses.wait_has(r));
}

TEST_F(ZeroMqComms, GroupTasksReachTheWatchingAgent)
{
    Inbox<msg::Task> got;
    agent_->set_group("red");
    agent_->watch_for_group([&](const msg::Task &t) {
        got.push(t);
        return Verdict::ack;
    });
    const msg::Task t = msg::KeyValueTask{"group", "red"};
    server_->send_task("red", t);
    ASSERT_TRUE(got.wait_has(t));
}

TEST_F(ZeroMqComms, ResponseSentWhileTheServerRestartsArrives)
{
    // Connected first (a state condition, bounded), then the server goes.
    for (int i = 0;
         i < 2000 && agent_->transport().state() != LinkState::connected; ++i)
        std::this_thread::sleep_for(10ms);
    ASSERT_EQ(agent_->transport().state(), LinkState::connected);
    server_.reset();
    std::atomic<bool> sent{false};
    const msg::Response r =
        msg::AgentStatusResponse{"agent-zmq-2", "t1", "ready"};
    // The facade retries E_UNAVAILABLE; the plugin resends on reconnect.
    std::thread sender([&] {
        agent_->send_response(r);
        sent = true;
    });
    server_ = open("server");
    Inbox<msg::Response> got;
    auto lr = server_->listen_for_responses([&](const msg::Response &x) {
        got.push(x);
        return Verdict::ack;
    });
    server_->start();
    sender.join();
    EXPECT_TRUE(sent);
    ASSERT_TRUE(got.wait_has(r));
}

} // namespace
