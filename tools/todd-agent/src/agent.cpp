// SPDX-License-Identifier: Apache-2.0
#include <todd/agent/agent.hpp>
#include <todd/agent/assets.hpp>
#include <todd/agent/download.hpp>
#include <todd/agent/identity.hpp>
#include <todd/core/dir_watch.hpp>
#include <todd/core/log.hpp>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <sstream>
#include <stdexcept>
#include <sys/stat.h>
#include <unistd.h>

namespace fs = std::filesystem;

namespace todd::agent {

namespace {
constexpr const char *log_component = "agent";

template <class... Ts> struct overloaded : Ts... {
    using Ts::operator()...;
};
template <class... Ts> overloaded(Ts...) -> overloaded<Ts...>;

bool is_executable_file(const std::string &path)
{
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
           ::access(path.c_str(), X_OK) == 0;
}

std::optional<std::string> find_in_path(const std::string &name)
{
    const char *path = std::getenv("PATH");
    if (path == nullptr)
        return std::nullopt;
    std::stringstream ss(path);
    std::string dir;
    while (std::getline(ss, dir, ':')) {
        if (dir.empty())
            continue;
        std::string candidate = dir + "/" + name;
        if (is_executable_file(candidate))
            return candidate;
    }
    return std::nullopt;
}

// A testlet name must be a plain file name: it is joined to directories.
bool plain_name(const std::string &name)
{
    return !name.empty() && name != "." && name != ".." &&
           name.find('/') == std::string::npos &&
           name.find('\0') == std::string::npos;
}
} // namespace

// -- Agent -----------------------------------------------------------------

struct Agent::TestRunState {
    msg::TestRun run;
    std::string testlet_path;
    bool executing = false;
    EventLoop::Clock::time_point installed{};
    std::optional<std::string> data; // TestData JSON, until deleted
    EventLoop::TimerId resend_timer = 0;
    std::chrono::milliseconds backoff{0};
    EventLoop::Clock::time_point data_since{};
};

struct Agent::Watcher {
    core::DirWatcher dirs;
};

Agent::Agent(AgentConfig config, std::unique_ptr<core::Comms> comms)
    : config_(std::move(config)), comms_(std::move(comms))
{
    if (!comms_)
        throw std::invalid_argument("Agent needs a Comms");
    if (config_.uuid.empty()) {
        if (config_.state_dir.empty())
            throw std::invalid_argument(
                "Agent needs a UUID or a state directory to keep one in");
        config_.uuid = load_or_create_uuid(config_.state_dir);
    }
}

Agent::~Agent()
{
    try {
        stop();
    } catch (const std::exception &e) {
        log::error(log_component, std::string("stop failed: ") + e.what());
    }
}

void Agent::start()
{
    if (started_)
        return;
    started_ = true;
    for (const char *kind : {"factcollectors", "testlets"}) {
        std::error_code ec;
        fs::path dir = fs::path(config_.opt_dir) / "assets" / kind;
        fs::create_directories(dir, ec);
        if (ec)
            log::warn(log_component,
                      "cannot create " + dir.string() + ": " + ec.message());
    }
    log::info(log_component, "agent " + config_.uuid + " starting (address " +
                                 config_.default_addr + ", assets in " +
                                 config_.opt_dir + "/assets)");
    // Listen first: a server answers the first advert with tasks.
    comms_->start();
    task_sub_ =
        comms_->listen_for_tasks(config_.uuid, [this](const msg::Task &t) {
            return on_task(t, "own queue");
        });
    comms_->watch_for_group(
        [this](const msg::Task &t) { return on_task(t, "group queue"); });
    watcher_ = std::make_unique<Watcher>();
    try {
        core::DirWatcher::Options o;
        o.ignore = is_download_temp; // their rename is the change
        for (const auto &d : watcher_->dirs.start(
                 {config_.opt_dir + "/assets/factcollectors",
                  config_.opt_dir + "/assets/testlets"},
                 [this](const auto &) { schedule_refresh(); }, o))
            log::warn(log_component, "cannot watch " + d +
                                         " (changes seen only after "
                                         "downloads)");
    } catch (const std::exception &e) {
        log::warn(log_component,
                  std::string("asset directories not watched: ") + e.what());
    }
    loop_thread_ = std::thread([this] { loop_.run(); });
    // Hash and collect facts before the first advert, on the control thread.
    loop_.post([this] {
        refresh_assets();
        advertise();
        schedule_advert();
    });
}

void Agent::stop()
{
    if (!started_ || stopped_)
        return;
    stopped_ = true;
    stopping_ = true;
    log::info(log_component, "agent " + config_.uuid + " stopping");
    task_sub_.reset();
    processes_.kill_all_and_close();
    cancel_downloads_ = true;
    loop_.stop();
    if (watcher_)
        watcher_->dirs.stop();
    // Ends the group subscription and makes pending sends give up.
    comms_->stop();
    if (loop_thread_.joinable())
        loop_thread_.join();
    std::list<Worker> workers;
    {
        std::lock_guard lk(workers_mu_);
        workers.swap(workers_);
    }
    for (auto &w : workers)
        if (w.thread.joinable())
            w.thread.join();
    log::info(log_component, "agent " + config_.uuid + " stopped");
}

std::optional<std::string> Agent::key_value(const std::string &key) const
{
    std::lock_guard lk(mu_);
    auto it = kv_.find(key);
    if (it == kv_.end())
        return std::nullopt;
    return it->second;
}

std::string Agent::group() const
{
    return comms_->group();
}

bool Agent::has_test_run(const std::string &test_uuid) const
{
    std::lock_guard lk(mu_);
    return runs_.count(test_uuid) != 0;
}

msg::AgentAdvert Agent::advert() const
{
    msg::AgentAdvert a;
    a.uuid = config_.uuid;
    a.default_addr = config_.default_addr;
    a.expires_ns = 0;
    a.local_time = std::chrono::time_point_cast<std::chrono::nanoseconds>(
        std::chrono::system_clock::now());
    std::lock_guard lk(mu_);
    a.facts = facts_;
    a.fact_collectors = fact_collector_hashes_;
    a.testlets = testlet_hashes_;
    return a;
}

void Agent::advertise_now()
{
    loop_.post([this] { advertise(); });
}

void Agent::advertise()
{
    if (stopping_)
        return;
    try {
        comms_->advertise_agent(advert());
        metrics_.advert(true);
        log::debug(log_component, "advert sent");
    } catch (const std::exception &e) {
        metrics_.advert(false);
        log::warn(log_component, std::string("advert not sent: ") + e.what());
    }
}

void Agent::schedule_advert()
{
    loop_.post_after(config_.advert_interval, [this] {
        advertise();
        schedule_advert();
    });
}

// Called from the watcher thread: coalesce a burst of events into one
// refresh shortly after.
void Agent::schedule_refresh()
{
    {
        std::lock_guard lk(mu_);
        if (refresh_pending_)
            return;
        refresh_pending_ = true;
    }
    loop_.post_after(config_.asset_settle, [this] {
        {
            std::lock_guard lk(mu_);
            refresh_pending_ = false;
        }
        refresh_assets();
        advertise();
    });
}

// On the control thread: re-hash the asset directories, re-run the fact
// collectors.
void Agent::refresh_assets()
{
    std::string fc_dir = config_.opt_dir + "/assets/factcollectors";
    auto fc = asset_hashes(fc_dir);
    auto tl = asset_hashes(config_.opt_dir + "/assets/testlets");
    auto facts = collect_facts(
        fact_collector_paths(config_.builtin_factcollector_dir, fc_dir),
        config_.fact_timeout, &processes_);
    std::lock_guard lk(mu_);
    fact_collector_hashes_ = std::move(fc);
    testlet_hashes_ = std::move(tl);
    facts_ = std::move(facts);
}

// -- Tasks -------------------------------------------------------------------

core::Verdict Agent::on_task(const msg::Task &task, const char *source)
{
    if (stopping_)
        return core::Verdict::requeue; // left for the next run of the agent
    metrics_.task(msg::type_name(task));
    log::debug(log_component, std::string("task ") +
                                  std::string(msg::type_name(task)) + " from " +
                                  source);
    return std::visit(
        overloaded{
            [&](const msg::KeyValueTask &t) {
                std::lock_guard lk(mu_);
                kv_[t.key] = t.value;
                log::info(log_component,
                          "KeyValue stored: " + t.key + " = " + t.value);
                return core::Verdict::ack;
            },
            [&](const msg::SetGroupTask &t) {
                std::string g = t.group_name;
                loop_.post([this, g] { on_set_group(g); });
                return core::Verdict::ack;
            },
            [&](const msg::DownloadAssetTask &t) {
                if (t.assets.empty()) {
                    log::warn(log_component,
                              "DownloadAsset without URLs rejected");
                    return core::Verdict::reject;
                }
                spawn("download", [this, t] { on_download(t); });
                return core::Verdict::ack;
            },
            [&](const msg::InstallTestRunTask &t) {
                if (t.test_run.uuid.empty()) {
                    log::warn(log_component,
                              "InstallTestRun without a test run uuid "
                              "rejected");
                    return core::Verdict::reject;
                }
                run_in_order(t.test_run.uuid, [this, t] { on_install(t); });
                return core::Verdict::ack;
            },
            [&](const msg::ExecuteTestRunTask &t) {
                if (t.test_uuid.empty()) {
                    log::warn(log_component,
                              "ExecuteTestRun without test_uuid rejected");
                    return core::Verdict::reject;
                }
                run_in_order(t.test_uuid, [this, t] { on_execute(t); });
                return core::Verdict::ack;
            },
            [&](const msg::DeleteTestDataTask &t) {
                std::string id = t.test_uuid;
                loop_.post([this, id] { on_delete(id); });
                return core::Verdict::ack;
            },
        },
        task);
}

void Agent::on_set_group(const std::string &group)
{
    if (stopping_ || comms_->group() == group)
        return;
    log::info(log_component,
              "group set to " + (group.empty() ? "(none)" : "'" + group + "'"));
    try {
        comms_->set_group(group);
    } catch (const std::exception &e) {
        log::error(log_component,
                   "cannot listen on group '" + group + "': " + e.what());
    }
}

std::optional<std::string> Agent::resolve_testlet(const std::string &name) const
{
    if (!plain_name(name))
        return std::nullopt;
    std::string downloaded = config_.opt_dir + "/assets/testlets/" + name;
    if (is_executable_file(downloaded))
        return downloaded;
    if (!config_.builtin_testlet_dir.empty()) {
        std::string builtin = config_.builtin_testlet_dir + "/" + name;
        if (is_executable_file(builtin))
            return builtin;
    }
    if (name == "ping" && config_.search_path_for_toddping)
        return find_in_path("toddping");
    return std::nullopt;
}

void Agent::send_status(const std::string &test_uuid, std::string_view status)
{
    msg::AgentStatusResponse r;
    r.agent_uuid = config_.uuid;
    r.test_uuid = test_uuid;
    r.status = std::string(status);
    try {
        comms_->send_response(r);
        metrics_.response("AgentStatus", r.status, true);
        log::info(log_component, "test run " + test_uuid + ": " + r.status);
    } catch (const std::exception &e) {
        metrics_.response("AgentStatus", r.status, false);
        log::error(log_component, "status '" + r.status + "' of test run " +
                                      test_uuid + " not sent: " + e.what());
    }
}

void Agent::on_install(msg::InstallTestRunTask t)
{
    const auto &run = t.test_run;
    auto fail = [&](const std::string &why) {
        log::error(log_component,
                   "InstallTestRun " + run.uuid + " failed: " + why);
        send_status(run.uuid, msg::status_fail);
    };
    if (run.testlet.empty())
        return fail("no testlet named");
    auto path = resolve_testlet(run.testlet);
    if (!path)
        return fail("testlet '" + run.testlet + "' not found in " +
                    config_.opt_dir + "/assets/testlets" +
                    (config_.builtin_testlet_dir.empty()
                         ? std::string()
                         : " nor " + config_.builtin_testlet_dir) +
                    (run.testlet == "ping" ? " nor as toddping in PATH" : ""));
    ProcessSpec spec;
    spec.argv = {*path, "check"};
    spec.timeout = config_.check_timeout;
    spec.log_component = "testlet:" + run.testlet;
    spec.groups = &processes_;
    ProcessResult r = run_process(spec);
    if (r.cancelled || stopping_)
        return; // the agent stops; the server will see no answer
    if (!r.exited_ok())
        return fail("'" + *path + " check' " + r.describe());
    if (r.out.find("Check mode PASSED") == std::string::npos)
        return fail("'" + *path +
                    " check' did not print \"Check mode "
                    "PASSED\"");
    {
        std::lock_guard lk(mu_);
        if (!runs_.count(run.uuid) && runs_.size() >= config_.max_test_runs) {
            // Installed but never executed: the server gave up on it.
            auto idle = runs_.end();
            for (auto it = runs_.begin(); it != runs_.end(); ++it)
                if (!it->second->executing && !it->second->data &&
                    (idle == runs_.end() ||
                     it->second->installed < idle->second->installed))
                    idle = it;
            if (idle == runs_.end()) {
                log::error(log_component,
                           "InstallTestRun " + run.uuid +
                               " failed: " + std::to_string(runs_.size()) +
                               " test runs are kept, the bound "
                               "(max_test_runs), and none is idle");
                send_status(run.uuid, msg::status_fail);
                return;
            }
            log::warn(log_component,
                      "test run " + idle->first +
                          " dropped: installed but not executed, and " +
                          std::to_string(config_.max_test_runs) +
                          " test runs are kept (max_test_runs)");
            runs_.erase(idle);
        }
        auto &st = runs_[run.uuid];
        if (!st)
            st = std::make_shared<TestRunState>();
        st->installed = EventLoop::Clock::now();
        if (st->executing) {
            log::warn(log_component, "InstallTestRun " + run.uuid +
                                         " while it executes; ignored");
            return;
        }
        st->run = run;
        st->testlet_path = *path;
    }
    send_status(run.uuid, msg::status_ready);
}

// One process per target, each killed at the time limit; as Go, all at
// once, up to max_parallel_testlets (the rest start as others end).
std::vector<ProcessResult> Agent::run_targets(const std::string &testlet_path,
                                              const msg::TestRun &run,
                                              int64_t time_limit)
{
    std::vector<ProcessResult> results(run.targets.size());
    std::atomic<size_t> next{0};
    auto worker = [&] {
        for (size_t i; (i = next++) < run.targets.size() && !stopping_;) {
            ProcessSpec spec;
            // args travels as ONE argument, even when empty (as Go).
            spec.argv = {testlet_path, run.targets[i], run.args};
            // Clamped to a week: the deadline must not overflow.
            spec.timeout = std::chrono::seconds(
                std::clamp<int64_t>(time_limit, 0, 7 * 86400));
            spec.log_component = "testlet:" + run.testlet;
            spec.groups = &processes_;
            results[i] = run_process(spec);
        }
    };
    std::vector<std::thread> threads;
    const size_t n = std::min(
        run.targets.size(), std::max<size_t>(config_.max_parallel_testlets, 1));
    for (size_t k = 0; k < n; ++k)
        threads.emplace_back(worker);
    for (auto &th : threads)
        th.join();
    return results;
}

// Why a run's test data cannot be kept and sent, or "": it must fit the
// response bound and, with the data already waiting, max_kept_data_bytes.
std::string Agent::data_refusal(const std::string &test_uuid,
                                const std::string &data) const
{
    // The response around it adds the UUIDs and the quoting of the data.
    const size_t bound = comms_->limits().max_response_bytes;
    if (msg::encode(
            msg::Response{msg::TestDataResponse{config_.uuid, test_uuid, data}})
            .size() > bound)
        return "test data of " + std::to_string(data.size()) +
               " bytes does not fit the response bound of " +
               std::to_string(bound) + " bytes (max_response_bytes)";
    std::lock_guard lk(mu_);
    size_t kept = 0;
    for (const auto &[id, other] : runs_)
        if (other->data)
            kept += other->data->size();
    if (kept + data.size() > config_.max_kept_data_bytes)
        return "its " + std::to_string(data.size()) +
               " bytes of test data do not fit: " + std::to_string(kept) +
               " bytes already wait for DeleteTestData (bound " +
               std::to_string(config_.max_kept_data_bytes) +
               ", max_kept_data_bytes)";
    return {};
}

void Agent::on_execute(msg::ExecuteTestRunTask t)
{
    send_status(t.test_uuid, msg::status_testing);
    std::shared_ptr<TestRunState> st;
    {
        std::lock_guard lk(mu_);
        auto it = runs_.find(t.test_uuid);
        if (it != runs_.end() && !it->second->testlet_path.empty())
            st = it->second;
        if (st && st->executing) {
            log::warn(log_component, "ExecuteTestRun " + t.test_uuid +
                                         " already executing; ignored");
            return;
        }
        if (st)
            st->executing = true;
    }
    auto fail = [&](const std::string &why) {
        log::error(log_component,
                   "ExecuteTestRun " + t.test_uuid + " failed: " + why);
        if (st) {
            std::lock_guard lk(mu_);
            st->executing = false;
        }
        send_status(t.test_uuid, msg::status_fail);
    };
    if (!st)
        return fail("test run not installed (no InstallTestRun seen)");
    const msg::TestRun run = st->run;
    if (!is_executable_file(st->testlet_path))
        return fail("testlet " + st->testlet_path + " is gone");

    // The target list comes from the server: bound it, and the processes.
    if (run.targets.size() > config_.max_targets)
        return fail(std::to_string(run.targets.size()) +
                    " targets, more than the bound of " +
                    std::to_string(config_.max_targets));
    std::vector<ProcessResult> results =
        run_targets(st->testlet_path, run, t.time_limit);
    if (stopping_)
        return;
    TargetOutputs sorted = sort_results(t, run.targets, results);
    if (!sorted.problems.empty()) {
        std::string why;
        for (const auto &p : sorted.problems)
            why += (why.empty() ? "" : "; ") + p;
        return fail(why);
    }
    std::string data = encode_test_data(sorted.outputs);
    if (std::string why = data_refusal(t.test_uuid, data); !why.empty())
        return fail(why);
    {
        std::lock_guard lk(mu_);
        st->executing = false;
        auto it = runs_.find(t.test_uuid);
        if (it == runs_.end() || it->second != st) {
            log::info(log_component, "test run " + t.test_uuid +
                                         " deleted while it ran; data dropped");
            return;
        }
        st->data = data;
        st->backoff = config_.resend_initial;
        st->data_since = EventLoop::Clock::now();
    }
    std::string id = t.test_uuid;
    loop_.post([this, id] { send_data(id); });
}

// On the control thread: send (or re-send) a run's data and schedule the
// next attempt; DeleteTestData ends it.
void Agent::send_data(const std::string &test_uuid)
{
    std::shared_ptr<TestRunState> st;
    msg::TestDataResponse r;
    {
        std::lock_guard lk(mu_);
        auto it = runs_.find(test_uuid);
        if (it == runs_.end() || !it->second->data)
            return;
        st = it->second;
        r.agent_uuid = config_.uuid;
        r.test_uuid = test_uuid;
        r.test_data = *st->data;
    }
    try {
        comms_->send_response(r);
        metrics_.response("TestData", "", true);
        log::info(log_component, "test run " + test_uuid + ": data sent");
    } catch (const std::exception &e) {
        metrics_.response("TestData", "", false);
        log::warn(log_component, "data of test run " + test_uuid +
                                     " not sent (will retry): " + e.what());
    }
    std::lock_guard lk(mu_);
    if (runs_.count(test_uuid) == 0 || runs_[test_uuid] != st)
        return;
    if (EventLoop::Clock::now() - st->data_since > config_.resend_give_up) {
        // The server's test run has expired by now (Go keeps it 3000 s).
        log::warn(log_component,
                  "test run " + test_uuid + ": no DeleteTestData after " +
                      std::to_string(config_.resend_give_up.count() / 1000) +
                      " s; data dropped");
        runs_.erase(test_uuid);
        return;
    }
    auto delay = st->backoff;
    st->backoff = std::min(st->backoff * 2, config_.resend_max);
    st->resend_timer =
        loop_.post_after(delay, [this, test_uuid] { send_data(test_uuid); });
}

void Agent::on_delete(const std::string &test_uuid)
{
    std::lock_guard lk(mu_);
    auto it = runs_.find(test_uuid);
    if (it == runs_.end()) {
        log::debug(log_component,
                   "DeleteTestData for unknown test run " + test_uuid);
        return;
    }
    if (it->second->resend_timer != 0)
        loop_.cancel(it->second->resend_timer);
    runs_.erase(it);
    log::info(log_component, "test run " + test_uuid + " deleted");
}

void Agent::on_download(msg::DownloadAssetTask t)
{
    auto results =
        download_assets(t.assets, config_.opt_dir, cancel_downloads_);
    size_t ok = 0;
    for (const auto &r : results) {
        ok += r.ok ? 1 : 0;
        metrics_.asset(r.ok);
    }
    log::info(log_component, "DownloadAsset: " + std::to_string(ok) + " of " +
                                 std::to_string(t.assets.size()) +
                                 " assets fetched");
    if (ok > 0 && !stopping_)
        loop_.post([this] {
            refresh_assets();
            advertise();
        });
}

std::string Agent::metrics_text()
{
    size_t kept;
    {
        std::lock_guard lk(mu_);
        kept = runs_.size();
    }
    const std::string grp = group();
    auto state = std::make_shared<service::FunctionCollector>([&] {
        using prometheus::MetricType;
        std::vector<service::MetricFamily> out;
        auto info = service::family("todd_agent_info",
                                    "The agent's identity and group (value 1).",
                                    MetricType::Gauge);
        service::sample(info, {{"uuid", config_.uuid}, {"group", grp}}, 1);
        out.push_back(std::move(info));
        auto runs = service::family(
            "todd_agent_test_runs",
            "Test runs the agent holds (installed, running or with data not "
            "yet deleted by the server).",
            MetricType::Gauge);
        service::sample(runs, {}, static_cast<double>(kept));
        out.push_back(std::move(runs));
        auto p = service::process_families();
        auto c = service::comms_families(*comms_);
        std::move(p.begin(), p.end(), std::back_inserter(out));
        std::move(c.begin(), c.end(), std::back_inserter(out));
        return out;
    });
    return service::exposition({metrics_.registry(), state});
}

std::vector<service::Check> Agent::readiness() const
{
    std::vector<service::Check> checks;
    const bool running = !stopping_; // the endpoint starts after start()
    checks.push_back({"agent", running, running ? config_.uuid : "stopped"});
    auto st = comms_->transport().state();
    checks.push_back({"transport", st == core::LinkState::connected,
                      comms_->transport().plugin().name + " " +
                          std::string(core::to_string(st))});
    return checks;
}

void Agent::spawn(std::string name, std::function<void()> fn)
{
    reap_workers();
    auto done = std::make_shared<std::atomic<bool>>(false);
    std::lock_guard lk(workers_mu_);
    if (stopping_)
        return;
    workers_.push_back(
        Worker{std::thread([fn = std::move(fn), done, name = std::move(name)] {
                   try {
                       fn();
                   } catch (const std::exception &e) {
                       log::error(log_component, name + " failed: " + e.what());
                   }
                   *done = true;
               }),
               done});
}

// Tasks of one test run run in arrival order (an ExecuteTestRun right
// behind its InstallTestRun waits for the check); different runs run in
// parallel.
void Agent::run_in_order(const std::string &test_uuid, std::function<void()> fn)
{
    {
        std::lock_guard lk(mu_);
        auto &q = strands_[test_uuid];
        q.push_back(std::move(fn));
        if (q.size() > 1)
            return; // the strand's worker will get to it
    }
    spawn("test run " + test_uuid, [this, test_uuid] {
        for (;;) {
            std::function<void()> next;
            {
                std::lock_guard lk(mu_);
                auto &q = strands_[test_uuid];
                next = std::move(q.front());
            }
            try {
                next();
            } catch (const std::exception &e) {
                log::error(log_component, "test run " + test_uuid +
                                              ": task failed: " + e.what());
            }
            std::lock_guard lk(mu_);
            auto &q = strands_[test_uuid];
            q.pop_front();
            if (q.empty() || stopping_) {
                strands_.erase(test_uuid);
                return;
            }
        }
    });
}

void Agent::reap_workers()
{
    std::list<Worker> finished;
    {
        std::lock_guard lk(workers_mu_);
        for (auto it = workers_.begin(); it != workers_.end();) {
            if (it->done->load()) {
                finished.splice(finished.end(), workers_, it++);
            } else {
                ++it;
            }
        }
    }
    for (auto &w : finished)
        w.thread.join();
}

} // namespace todd::agent
