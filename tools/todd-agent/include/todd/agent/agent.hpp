// SPDX-License-Identifier: Apache-2.0
// The ToDD agent: advertises itself, runs the server's tasks, reports
// results, over any comms plugin. The program todd-agent is a thin main()
// around this class; tests and the server's tests run it in-process.
#pragma once

#include <todd/agent/event_loop.hpp>
#include <todd/agent/metrics.hpp>
#include <todd/agent/process.hpp>
#include <todd/core/comms.hpp>
#include <todd/service/metrics.hpp>

#include <atomic>
#include <chrono>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace todd::agent {

/** Everything the agent needs besides its transport. */
struct AgentConfig {
    /** 64-hex identity; when empty it is kept in state_dir/agent-uuid. */
    std::string uuid;
    std::string state_dir;
    /** ToDD's OptDir: holds assets/{factcollectors,testlets}. */
    std::string opt_dir = "/opt/todd/agent";
    /** Advertised address (see derive_default_addr). */
    std::string default_addr = "127.0.0.1";
    /** Testlets and fact collectors that ship with the agent. */
    std::string builtin_testlet_dir;
    std::string builtin_factcollector_dir;
    /** For testlet "ping", also look for `toddping` in $PATH (as Go). */
    bool search_path_for_toddping = true;

    std::chrono::milliseconds advert_interval{10000};
    /** `<testlet> check` must pass within this. */
    std::chrono::milliseconds check_timeout{10000};
    /** Each fact collector must finish within this. */
    std::chrono::milliseconds fact_timeout{10000};
    /** TestData re-send backoff: first delay, doubling up to the cap. */
    std::chrono::milliseconds resend_initial{1000};
    std::chrono::milliseconds resend_max{30000};
    /** Drop undeleted test data after this long (the Go server keeps a
     *  test run 3000 s). */
    std::chrono::milliseconds resend_give_up{3600 * 1000};
    /** Coalesce bursts of asset-directory events this long. */
    std::chrono::milliseconds asset_settle{100};
    /** Test runs kept at once (installed, running or with unsent data); a
     *  new install evicts the oldest idle one, else fails. */
    size_t max_test_runs = 256;
    /** Test data kept waiting for DeleteTestData, all runs together; a run
     *  whose data would not fit fails instead. */
    size_t max_kept_data_bytes = size_t{64} << 20;
    /** Targets of one test run; a run with more fails. */
    size_t max_targets = 4096;
    /** Testlet processes of one run at once; further targets wait. */
    size_t max_parallel_testlets = 64;
};

/**
 * One agent. start() subscribes and begins advertising; the delivery
 * handlers only hand work to the agent's own control thread and worker
 * threads, so tasks of different test runs never wait for each other.
 */
class Agent {
  public:
    /** Takes a Comms over a created (not yet started) transport. Resolves
     *  the UUID (may throw std::runtime_error for an unusable state dir). */
    Agent(AgentConfig config, std::unique_ptr<core::Comms> comms);
    ~Agent(); // stop()

    Agent(const Agent &) = delete;
    Agent &operator=(const Agent &) = delete;

    /** Start the transport, listen on <uuid> and the group queue, create the
     *  asset directories, watch them and send the first advert. */
    void start();
    /**
     * Stop: unsubscribe, kill running testlets, abort downloads, stop the
     * transport (no callbacks after) and join every thread. Idempotent.
     */
    void stop();

    const std::string &uuid() const { return config_.uuid; }
    const AgentConfig &config() const { return config_; }
    /** A KeyValue task's stored value. */
    std::optional<std::string> key_value(const std::string &key) const;
    /** The group whose queue the agent listens on ("" = none). */
    std::string group() const;
    /** The advert as it would be sent now (hashes and facts as cached). */
    msg::AgentAdvert advert() const;
    /** Ask for an advert now (asynchronous). */
    void advertise_now();
    /** True while a test run is known (installed, running or unsent). */
    bool has_test_run(const std::string &test_uuid) const;
    core::Comms &comms() { return *comms_; }

    /** The agent's metrics in the Prometheus text format: its counters,
     *  todd_agent_info, the transport's and the process's. Thread-safe. */
    std::string metrics_text();
    /** /readyz's checks: started and not stopping, transport connected.
     *  Thread-safe. */
    std::vector<service::Check> readiness() const;

  private:
    struct TestRunState;
    core::Verdict on_task(const msg::Task &task, const char *source);
    void on_install(msg::InstallTestRunTask t);
    void on_execute(msg::ExecuteTestRunTask t);
    std::vector<ProcessResult> run_targets(const std::string &testlet_path,
                                           const msg::TestRun &run,
                                           int64_t time_limit);
    std::string data_refusal(const std::string &test_uuid,
                             const std::string &data) const;
    void on_download(msg::DownloadAssetTask t);
    void on_delete(const std::string &test_uuid);
    void on_set_group(const std::string &group);
    std::optional<std::string> resolve_testlet(const std::string &name) const;
    void send_status(const std::string &test_uuid, std::string_view status);
    void send_data(const std::string &test_uuid);
    void refresh_assets();
    void schedule_refresh();
    void advertise();
    void schedule_advert();
    void spawn(std::string name, std::function<void()> fn);
    void run_in_order(const std::string &test_uuid, std::function<void()> fn);
    void reap_workers();

    AgentConfig config_;
    std::unique_ptr<core::Comms> comms_;
    AgentMetrics metrics_;
    EventLoop loop_;
    std::thread loop_thread_;
    ProcessGroups processes_;
    std::atomic<bool> stopping_{false};
    std::atomic<bool> cancel_downloads_{false};
    bool started_ = false;
    bool stopped_ = false;
    core::Subscription task_sub_;

    mutable std::mutex mu_; // guards everything below
    std::map<std::string, std::string> kv_;
    std::map<std::string, std::shared_ptr<TestRunState>> runs_;
    msg::Facts facts_;
    msg::Hashes fact_collector_hashes_, testlet_hashes_;
    bool refresh_pending_ = false;
    /** Per test run: tasks waiting, the front one running. */
    std::map<std::string, std::deque<std::function<void()>>> strands_;

    struct Worker {
        std::thread thread;
        std::shared_ptr<std::atomic<bool>> done;
    };
    std::mutex workers_mu_;
    std::list<Worker> workers_;

    struct Watcher;
    std::unique_ptr<Watcher> watcher_;
};

/** Each target's JSON output, and why targets failed the run. */
struct TargetOutputs {
    std::map<std::string, std::string> outputs;
    std::vector<std::string> problems;
};

/**
 * Sort a run's results (results[i] is targets[i]'s) as docs/agent.md says
 * a testlet's outcome counts: a JSON object is kept (a non-zero exit
 * logged); a kill at the time limit or an empty output after exit 0 gives
 * no data (logged); anything else is a problem that fails the run.
 */
TargetOutputs sort_results(const msg::ExecuteTestRunTask &t,
                           const std::vector<std::string> &targets,
                           const std::vector<ProcessResult> &results);

/** Test data as ToDD sends it: {target: output} with keys sorted, each
 *  output compacted as Go's json.RawMessage encoder does. */
std::string encode_test_data(const std::map<std::string, std::string> &outputs);

/**
 * Check that a testlet's stdout is one JSON object and return it compacted
 * the way Go re-encodes a json.RawMessage (whitespace outside strings
 * dropped, <, >, & and U+2028/9 escaped). Throws std::invalid_argument
 * naming the problem.
 */
std::string compact_testlet_output(std::string_view out);

} // namespace todd::agent
