// SPDX-License-Identifier: Apache-2.0
#include "rabbitmq_broker.hpp"

#include "process.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <random>
#include <sstream>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char **environ;

namespace todd::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// The Debian package's real scripts; /usr/sbin/* are wrappers that `su` to
// the rabbitmq user, which puts the node in a session we cannot signal.
// TODD_RABBITMQ_BIN_DIR names another directory (an empty one shows what a
// machine without RabbitMQ reports).
std::string rabbitmq_bin(const char *name)
{
    const char *dir = std::getenv("TODD_RABBITMQ_BIN_DIR");
    return std::string(dir != nullptr ? dir : "/usr/lib/rabbitmq/bin") + "/" +
           name;
}
const std::string server_bin = rabbitmq_bin("rabbitmq-server");
const std::string ctl_bin = rabbitmq_bin("rabbitmqctl");
const char *const epmd_bin = "/usr/bin/epmd";
// How many times a fresh node is started on newly picked ports when one of
// them was taken meanwhile (see pick_ports()).
constexpr int kPortAttempts = 5;

struct Account {
    uid_t uid;
    gid_t gid;
};

// The rabbitmq account, when we run as root and must drop to it.
std::optional<Account> rabbitmq_account()
{
    if (geteuid() != 0)
        return std::nullopt;
    struct passwd *pw = getpwnam("rabbitmq");
    if (pw == nullptr)
        return std::nullopt;
    return Account{pw->pw_uid, pw->pw_gid};
}

std::string random_suffix()
{
    std::random_device rd;
    std::ostringstream s;
    s << getpid() << '-' << std::hex << (rd() & 0xffffff);
    return s.str();
}

// fork + exec with optional privilege drop; stdout/stderr to out_fd.
// Everything the child needs is prepared before fork (no allocation after).
pid_t spawn(std::vector<std::string> argv, std::vector<std::string> env,
            int out_fd, bool new_session, std::optional<Account> as)
{
    auto cargv = c_strings(argv);
    auto cenv = c_strings(env);
    std::string path = argv[0];
    pid_t pid = fork();
    if (pid < 0)
        throw std::runtime_error(std::string("fork: ") + strerror(errno));
    if (pid == 0) {
        if (new_session)
            setsid();
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        if (out_fd >= 0) {
            dup2(out_fd, 1);
            dup2(out_fd, 2);
        }
        if (as) {
            if (setgroups(0, nullptr) != 0 || setgid(as->gid) != 0 ||
                setuid(as->uid) != 0)
                _exit(126);
        }
        if (path.find('/') != std::string::npos)
            execve(path.c_str(), cargv.data(), cenv.data());
        else
            execvpe(path.c_str(), cargv.data(), cenv.data());
        _exit(127);
    }
    return pid;
}

RunResult run_impl(const std::vector<std::string> &argv,
                   std::chrono::milliseconds timeout,
                   const std::vector<std::string> &extra_env,
                   std::optional<Account> as)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        throw std::runtime_error(std::string("pipe: ") + strerror(errno));
    pid_t pid = spawn(argv, environment_with(extra_env), fds[1], true, as);
    close(fds[1]);
    RunResult r;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    char buf[4096];
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left <= 0ms) {
            r.timed_out = true;
            ::kill(-pid, SIGKILL);
            break;
        }
        struct pollfd p = {fds[0], POLLIN, 0};
        int n = poll(&p, 1, static_cast<int>(left.count()));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            continue;
        ssize_t got = read(fds[0], buf, sizeof buf);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        r.output.append(buf, static_cast<size_t>(got));
    }
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!r.timed_out && WIFEXITED(status))
        r.exit_code = WEXITSTATUS(status);
    return r;
}

std::string join(const std::vector<std::string> &v)
{
    std::string s;
    for (const auto &a : v)
        s += (s.empty() ? "" : " ") + a;
    return s;
}

void write_file(const std::string &path, const std::string &text)
{
    std::ofstream f(path, std::ios::trunc);
    f << text;
    if (!f)
        throw std::runtime_error("cannot write " + path);
}

std::string read_tail(const std::string &path, size_t max_bytes)
{
    std::ifstream f(path, std::ios::binary);
    if (!f)
        return {};
    std::string s((std::istreambuf_iterator<char>(f)),
                  std::istreambuf_iterator<char>());
    if (s.size() > max_bytes)
        s = s.substr(s.size() - max_bytes);
    return s;
}

void chown_tree(const std::string &dir, std::optional<Account> as)
{
    if (!as)
        return;
    if (chown(dir.c_str(), as->uid, as->gid) != 0)
        throw std::runtime_error("chown " + dir + ": " + strerror(errno));
    for (auto &e : fs::recursive_directory_iterator(dir))
        if (lchown(e.path().c_str(), as->uid, as->gid) != 0)
            throw std::runtime_error("chown " + e.path().string() + ": " +
                                     strerror(errno));
}

} // namespace

int free_tcp_port()
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        throw std::runtime_error(std::string("socket: ") + strerror(errno));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    if (bind(s, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 ||
        getsockname(s, reinterpret_cast<sockaddr *>(&a), &len) != 0) {
        int e = errno;
        close(s);
        throw std::runtime_error(std::string("bind: ") + strerror(e));
    }
    close(s);
    return ntohs(a.sin_port);
}

RunResult run_capture(const std::vector<std::string> &argv,
                      std::chrono::milliseconds timeout,
                      const std::vector<std::string> &extra_env)
{
    return run_impl(argv, timeout, extra_env, std::nullopt);
}

TestPki make_test_pki(const std::string &dir)
{
    fs::create_directories(dir);
    TestPki p;
    p.dir = dir;
    p.ca_cert = dir + "/ca.pem";
    p.server_cert = dir + "/server.pem";
    p.server_key = dir + "/server.key";
    p.client_cert = dir + "/client.pem";
    p.client_key = dir + "/client.key";
    p.other_ca_cert = dir + "/other-ca.pem";
    write_file(dir + "/server.ext",
               "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
               "extendedKeyUsage=serverAuth\n");
    write_file(dir + "/client.ext", "extendedKeyUsage=clientAuth\n");
    auto run = [](const std::vector<std::string> &argv) {
        RunResult r = run_capture(argv, 60s);
        if (r.exit_code != 0)
            throw std::runtime_error("make_test_pki: '" + join(argv) +
                                     "' failed: " + r.output);
    };
    auto make_ca = [&](const std::string &name, const std::string &cn) {
        run({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
             "-days", "2", "-subj", "/CN=" + cn, "-keyout",
             dir + "/" + name + ".key", "-out", dir + "/" + name + ".pem"});
    };
    auto make_leaf = [&](const std::string &name, const std::string &cn) {
        run({"openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj",
             "/CN=" + cn, "-keyout", dir + "/" + name + ".key", "-out",
             dir + "/" + name + ".csr"});
        run({"openssl", "x509", "-req", "-in", dir + "/" + name + ".csr", "-CA",
             dir + "/ca.pem", "-CAkey", dir + "/ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", dir + "/" + name + ".ext", "-out",
             dir + "/" + name + ".pem"});
    };
    make_ca("ca", "todd-test-ca");
    make_ca("other-ca", "todd-test-other-ca");
    make_leaf("server", "localhost");
    make_leaf("client", "todd-test-client");
    for (auto &e : fs::directory_iterator(dir))
        fs::permissions(e.path(),
                        fs::perms::owner_read | fs::perms::owner_write |
                            fs::perms::group_read | fs::perms::others_read);
    return p;
}

std::optional<std::string> RabbitmqBroker::unavailable()
{
    for (const std::string &bin : {server_bin, ctl_bin})
        if (access(bin.c_str(), X_OK) != 0)
            return std::string("RabbitMQ is not installed (") + bin +
                   " missing): install the Debian package rabbitmq-server "
                   "to run the RabbitMQ tests";
    if (geteuid() == 0 && !rabbitmq_account())
        return std::string("running as root but there is no 'rabbitmq' "
                           "account to run rabbitmq-server as");
    return std::nullopt;
}

RabbitmqBroker::RabbitmqBroker() : RabbitmqBroker(Options{}) {}

RabbitmqBroker::RabbitmqBroker(Options opts) : opts_(std::move(opts))
{
    if (auto why = unavailable())
        throw std::runtime_error(*why);
    auto as = rabbitmq_account();
    as_root_ = as.has_value();
    char tmpl[] = "/tmp/todd-rabbitmq-XXXXXX";
    if (mkdtemp(tmpl) == nullptr)
        throw std::runtime_error(std::string("mkdtemp: ") + strerror(errno));
    dir_ = tmpl;
    // rabbitmq (not root) must traverse and write it.
    chmod(dir_.c_str(), 0755);
    node_ = opts_.name_prefix + "-" + random_suffix() + "@localhost";
    pick_ports();
    try {
        fs::create_directories(dir_ + "/home");
        fs::create_directories(dir_ + "/log");
        fs::create_directories(dir_ + "/mnesia");
        // A private Erlang cookie: the node and our rabbitmqctl share it.
        std::random_device rd;
        std::string cookie;
        for (int i = 0; i < 20; ++i)
            cookie += static_cast<char>('A' + rd() % 26);
        write_file(dir_ + "/home/.erlang.cookie", cookie);
        chmod((dir_ + "/home/.erlang.cookie").c_str(), 0400);
        write_file(dir_ + "/enabled_plugins", "[].\n");
        write_file(dir_ + "/rabbitmq-env.conf", "");
        write_config();
        chown_tree(dir_, as);
        for (int attempt = 1; opts_.start; ++attempt) {
            try {
                start();
                break;
            } catch (const std::runtime_error &e) {
                // Another process took a port between pick and start.
                if (attempt == kPortAttempts ||
                    std::string(e.what()).find("eaddrinuse") ==
                        std::string::npos)
                    throw;
                stop();
                stop_epmd();
                pick_ports();
                write_config();
                chown_tree(dir_, as);
            }
        }
    } catch (...) {
        std::error_code ec;
        stop();
        fs::remove_all(dir_, ec);
        throw;
    }
}

RabbitmqBroker::~RabbitmqBroker()
{
    try {
        stop();
    } catch (...) {
    }
    stop_epmd();
    std::error_code ec;
    fs::remove_all(dir_, ec);
}

void RabbitmqBroker::stop_epmd() noexcept
{
    try {
        // epmd outlives the node that started it: stop our private one.
        run_impl({epmd_bin, "-port", std::to_string(epmd_port_), "-kill"}, 10s,
                 env(), rabbitmq_account());
    } catch (...) {
    }
}

void RabbitmqBroker::pick_ports()
{
    // The node must bind its ports itself (we cannot hand it a socket), so
    // they are picked free here and the start retried if one is taken.
    std::vector<int> taken;
    auto pick = [&taken] {
        int p = free_tcp_port();
        while (std::find(taken.begin(), taken.end(), p) != taken.end())
            p = free_tcp_port();
        taken.push_back(p);
        return p;
    };
    port_ = pick();
    dist_port_ = pick();
    epmd_port_ = pick();
    tls_port_ = opts_.tls ? pick() : 0;
}

void RabbitmqBroker::write_config()
{
    std::ostringstream c;
    c << "listeners.tcp.default = 127.0.0.1:" << port_ << "\n";
    // Shared, busy test machines: never block publishers on disk/memory.
    c << "disk_free_limit.absolute = 1MB\n";
    c << "vm_memory_high_watermark.relative = 0.9\n";
    c << "loopback_users = none\n";
    if (opts_.tls) {
        const auto &t = *opts_.tls;
        fs::copy_file(t.ca_cert, dir_ + "/tls-ca.pem",
                      fs::copy_options::overwrite_existing);
        fs::copy_file(t.server_cert, dir_ + "/tls-cert.pem",
                      fs::copy_options::overwrite_existing);
        fs::copy_file(t.server_key, dir_ + "/tls-key.pem",
                      fs::copy_options::overwrite_existing);
        c << "listeners.ssl.default = 127.0.0.1:" << tls_port_ << "\n";
        c << "ssl_options.cacertfile = " << dir_ << "/tls-ca.pem\n";
        c << "ssl_options.certfile = " << dir_ << "/tls-cert.pem\n";
        c << "ssl_options.keyfile = " << dir_ << "/tls-key.pem\n";
        c << "ssl_options.verify = "
          << (t.verify_peer ? "verify_peer" : "verify_none") << "\n";
        c << "ssl_options.fail_if_no_peer_cert = "
          << (t.fail_if_no_peer_cert ? "true" : "false") << "\n";
    }
    for (const auto &l : opts_.extra_config)
        c << l << "\n";
    write_file(dir_ + "/rabbitmq.conf", c.str());
}

std::vector<std::string> RabbitmqBroker::env() const
{
    return {
        "HOME=" + dir_ + "/home",
        "RABBITMQ_NODENAME=" + node_,
        "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
        "RABBITMQ_NODE_PORT=" + std::to_string(port_),
        "RABBITMQ_DIST_PORT=" + std::to_string(dist_port_),
        "RABBITMQ_MNESIA_BASE=" + dir_ + "/mnesia",
        "RABBITMQ_LOG_BASE=" + dir_ + "/log",
        "RABBITMQ_CONFIG_FILE=" + dir_ + "/rabbitmq",
        "RABBITMQ_ENABLED_PLUGINS_FILE=" + dir_ + "/enabled_plugins",
        "RABBITMQ_CONF_ENV_FILE=" + dir_ + "/rabbitmq-env.conf",
        "RABBITMQ_PID_FILE=" + dir_ + "/node.pid",
        // The node starts its own epmd on a private port (not the shared
        // 4369), which the destructor can stop without touching anyone's.
        "ERL_EPMD_ADDRESS=127.0.0.1",
        "ERL_EPMD_PORT=" + std::to_string(epmd_port_),
        "ERL_EPMD_RELAXED_COMMAND_CHECK=1",
        "LANG=C.UTF-8",
        "LC_ALL=C.UTF-8",
    };
}

void RabbitmqBroker::start()
{
    if (pid_ > 0)
        return;
    std::string console = dir_ + "/console.log";
    int fd =
        open(console.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        throw std::runtime_error("cannot open " + console);
    pid_ = spawn({server_bin}, environment_with(env()), fd, true,
                 rabbitmq_account());
    close(fd);
    auto deadline = std::chrono::steady_clock::now() + opts_.start_timeout;
    for (;;) {
        int code = -1;
        rabbitmqctl({"status"}, &code);
        if (code == 0)
            break;
        int status = 0;
        if (waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = 0;
            throw std::runtime_error("rabbitmq-server " + node_ +
                                     " exited during start-up:\n" + log_tail());
        }
        if (std::chrono::steady_clock::now() > deadline) {
            kill();
            throw std::runtime_error(
                "rabbitmq-server " + node_ + " did not answer within " +
                std::to_string(opts_.start_timeout.count()) + " s:\n" +
                log_tail());
        }
        std::this_thread::sleep_for(200ms);
    }
    // `status` answers as soon as the VM runs; wait for the app itself.
    int code = -1;
    std::string out = rabbitmqctl({"await_startup", "--timeout",
                                   std::to_string(opts_.start_timeout.count())},
                                  &code);
    if (code != 0) {
        kill();
        throw std::runtime_error("rabbitmq " + node_ +
                                 " did not finish booting: " + out + "\n" +
                                 log_tail());
    }
}

bool RabbitmqBroker::wait_exit(std::chrono::milliseconds timeout)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (pid_ > 0) {
        int status = 0;
        pid_t r = waitpid(pid_, &status, WNOHANG);
        if (r == pid_ || (r < 0 && errno == ECHILD)) {
            // Leftover children of the node (erl_child_setup...).
            ::kill(-pid_, SIGKILL);
            pid_ = 0;
            return true;
        }
        if (std::chrono::steady_clock::now() > deadline)
            return false;
        std::this_thread::sleep_for(20ms);
    }
    return true;
}

void RabbitmqBroker::stop()
{
    if (pid_ <= 0)
        return;
    int code = -1;
    rabbitmqctl({"stop"}, &code);
    if (!wait_exit(30s))
        kill();
}

void RabbitmqBroker::kill()
{
    if (pid_ <= 0)
        return;
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);
    wait_exit(30s);
    pid_ = 0;
}

void RabbitmqBroker::restart()
{
    stop();
    start();
}

void RabbitmqBroker::stop_app()
{
    rabbitmqctl({"stop_app"});
}

void RabbitmqBroker::start_app()
{
    rabbitmqctl({"start_app"});
    rabbitmqctl({"await_startup"});
}

std::string RabbitmqBroker::rabbitmqctl(const std::vector<std::string> &args,
                                        int *exit_code) const
{
    std::vector<std::string> argv = {ctl_bin, "-q", "-n", node_};
    argv.insert(argv.end(), args.begin(), args.end());
    RunResult r = run_impl(argv, 120s, env(), rabbitmq_account());
    if (exit_code != nullptr) {
        *exit_code = r.exit_code;
        return r.output;
    }
    if (r.exit_code != 0)
        throw std::runtime_error("rabbitmqctl " + join(args) + " failed (" +
                                 (r.timed_out
                                      ? std::string("timed out")
                                      : "exit " + std::to_string(r.exit_code)) +
                                 "): " + r.output);
    return r.output;
}

void RabbitmqBroker::add_user(const std::string &user,
                              const std::string &password)
{
    rabbitmqctl({"add_user", user, password});
    rabbitmqctl({"set_permissions", "-p", "/", user, ".*", ".*", ".*"});
}

std::string RabbitmqBroker::log_tail(size_t max_bytes) const
{
    return "--- console ---\n" + read_tail(dir_ + "/console.log", max_bytes) +
           "\n--- log ---\n" +
           read_tail(dir_ + "/log/" + node_ + ".log", max_bytes);
}

} // namespace todd::test
