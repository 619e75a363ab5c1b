// SPDX-License-Identifier: Apache-2.0
// The real todd-server program (over the zeromq transport on an ipc://
// endpoint) against hostile sockets: asset paths with NUL, traversal,
// dotfiles and symlinks; HTTP bodies and heads above the bounds; a ZeroMQ
// peer announcing a 4 GB frame; descriptors exhausted by idle connections.
#include "files.hpp"
#include "process.hpp"
#include "temp_dir.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using todd::test::Process;
using todd::test::read_file;
using todd::test::read_file_if_exists;
using todd::test::SpawnOptions;
using todd::test::write_file;
using steady = std::chrono::steady_clock;

namespace {

int connect_tcp(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/** Read until the peer closes, the timeout passes, or `enough` says so. */
std::string read_all(int fd, std::chrono::milliseconds timeout)
{
    std::string out;
    auto deadline = steady::now() + timeout;
    while (steady::now() < deadline) {
        pollfd p{fd, POLLIN, 0};
        int ms = static_cast<int>(
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                  steady::now())
                .count());
        if (poll(&p, 1, std::max(ms, 1)) <= 0)
            break;
        char buf[65536];
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
            break;
        out.append(buf, static_cast<size_t>(n));
    }
    return out;
}

struct Reply {
    int status = 0; // 0: no answer
    std::string body;
};

Reply parse_reply(const std::string &raw)
{
    Reply r;
    if (raw.rfind("HTTP/1.1 ", 0) == 0)
        r.status = std::atoi(raw.c_str() + 9);
    auto h = raw.find("\r\n\r\n");
    if (h != std::string::npos)
        r.body = raw.substr(h + 4);
    return r;
}

/** Send raw request bytes (Connection: close expected) and read it all. */
Reply raw_request(int port, const std::string &bytes,
                  std::chrono::milliseconds timeout = 10s)
{
    int fd = connect_tcp(port);
    if (fd < 0)
        return {};
    send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    Reply r = parse_reply(read_all(fd, timeout));
    close(fd);
    return r;
}

Reply get(int port, const std::string &target,
          std::chrono::milliseconds timeout = 10s)
{
    return raw_request(port,
                       "GET " + target +
                           " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                       timeout);
}

/** utime + stime of a process, in seconds. */
double cpu_seconds(pid_t pid)
{
    std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    auto paren = stat.rfind(')');
    std::istringstream in(stat.substr(paren + 2));
    std::string field;
    unsigned long long utime = 0, stime = 0;
    for (int i = 3; in >> field; ++i) {
        if (i == 14)
            utime = std::stoull(field);
        if (i == 15) {
            stime = std::stoull(field);
            break;
        }
    }
    return static_cast<double>(utime + stime) /
           static_cast<double>(sysconf(_SC_CLK_TCK));
}

/** A /proc/<pid>/status field in kB (VmRSS, VmSize). */
long status_kb(pid_t pid, const std::string &key)
{
    std::istringstream in(
        read_file("/proc/" + std::to_string(pid) + "/status"));
    std::string line;
    while (std::getline(in, line))
        if (line.rfind(key + ":", 0) == 0)
            return std::atol(line.c_str() + key.size() + 1);
    return -1;
}

size_t open_fds(pid_t pid)
{
    size_t n = 0;
    for ([[maybe_unused]] auto &e :
         fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd"))
        ++n;
    return n;
}

/** A real todd-server process with its own directory. */
class ServerProcess {
  public:
    explicit ServerProcess(const std::string &extra_api_cfg = "")
    {
        dir = tmp.path();
        assets = dir / "server" / "assets";
        fs::create_directories(assets / "testlets");
        fs::create_directories(assets / "factcollectors");
        fs::copy_file(fs::path(TODD_SHARE_DIR) / "testlets" / "ping",
                      assets / "testlets" / "ping");
        endpoint = "ipc://" + (dir / "zmq.sock").string();
        write_file(dir / "server.cfg",
                   "[API]\nHost = 127.0.0.1\nPort = 0\nStreamPort = 0\n" +
                       extra_api_cfg +
                       "[Assets]\nIP = 127.0.0.1\nPort = 0\n"
                       "[LocalResources]\nOptDir = " +
                       (dir / "server").string() + "\n");
    }
    ~ServerProcess()
    {
        for (auto &p : agents)
            p->stop();
        if (proc)
            proc->stop();
        if (getenv("TODD_TEST_KEEP"))
            fs::rename(dir, dir.string() + "-kept");
    }

    /** Start and read the bound ports from the log; false if it exits. */
    bool start()
    {
        proc = std::make_unique<Process>(
            std::vector<std::string>{TODD_SERVER_EXE, "--config",
                                     (dir / "server.cfg").string(), "--db",
                                     (dir / "server.db").string(), "--comms",
                                     "zeromq", "--plugin-dir", TODD_PLUGIN_DIR,
                                     "--comms-opt", "endpoint=" + endpoint},
            SpawnOptions{{},
                         "/dev/null",
                         (dir / "server.out").string(),
                         (dir / "server.err").string()});
        pid = proc->pid();
        auto deadline = steady::now() + 20s;
        while (steady::now() < deadline) {
            std::string log = read_file_if_exists(dir / "server.err");
            auto a = log.find("Serving ToDD Server API at: 127.0.0.1:");
            if (a != std::string::npos) {
                api = std::atoi(log.c_str() + a + 38);
                stream = std::atoi(log.c_str() +
                                   log.find(" (status stream ", a) + 16);
                assets_port = std::atoi(
                    log.c_str() + log.find(", assets 127.0.0.1:", a) + 19);
                return api > 0 && stream > 0 && assets_port > 0;
            }
            if (auto st = proc->poll(); !st.running()) {
                exit_status = st.code();
                return false;
            }
            std::this_thread::sleep_for(20ms);
        }
        return false;
    }

    std::string log() const { return read_file_if_exists(dir / "server.err"); }

    /** For a failed expectation: alive or how it ended, its descriptors,
     *  and its log (a server killed by a sanitizer says why there). */
    std::string post_mortem()
    {
        std::ostringstream o;
        todd::test::ExitStatus st = proc->poll();
        if (st.running())
            o << "server running with " << open_fds(pid) << " descriptors\n";
        else
            o << "server gone: " << st.text() << "\n";
        o << log().substr(0, 6000);
        return o.str();
    }

    /** A real todd-agent on the same endpoint; its UUID ("" if none). */
    std::string start_agent(int i)
    {
        fs::path a = dir / ("agent" + std::to_string(i));
        fs::create_directories(a / "state");
        fs::create_directories(dir / "empty");
        agents.push_back(std::make_unique<Process>(
            std::vector<std::string>{
                TODD_AGENT_EXE, "--opt-dir", a.string(), "--state-dir",
                (a / "state").string(), "--testlet-dir",
                (dir / "empty").string(), "--factcollector-dir",
                (dir / "empty").string(), "--ip-addr-override", "127.0.0.1",
                "--advert-interval", "0.2", "--comms", "zeromq", "--plugin-dir",
                TODD_PLUGIN_DIR, "--comms-opt", "endpoint=" + endpoint},
            SpawnOptions{
                {}, "/dev/null", (a / "out").string(), (a / "err").string()}));
        std::string id;
        todd::test::eventually(
            [&] {
                id = todd::test::read_trimmed(a / "state" / "agent-uuid");
                return id.size() == 64;
            },
            20s);
        return id.size() == 64 ? id : std::string();
    }

    todd::test::TempDir tmp{"todd-server-sockets"};
    fs::path dir, assets;
    std::string endpoint;
    std::unique_ptr<Process> proc;
    pid_t pid = -1;
    int exit_status = -1; // when start() saw it exit
    int api = 0, stream = 0, assets_port = 0;
    std::vector<std::unique_ptr<Process>> agents;
};

// ---- class 9: asset paths ------------------------------------------------

TEST(ServerSockets, AssetPathsStayInsideTheAssetDirectory)
{
    ServerProcess s;
    fs::path t = s.assets / "testlets";
    write_file(t / ".hidden", "secret\n");
    write_file(s.dir / "outside" / "secret", "outside\n");
    fs::create_symlink("/etc/passwd", t / "passwd");
    fs::create_symlink("ping", t / "inlink");
    // A type directory that is a symlink out of the root.
    fs::remove(s.assets / "factcollectors");
    fs::create_directory_symlink(s.dir / "outside",
                                 s.assets / "factcollectors");
    ASSERT_TRUE(s.start()) << s.log();
    int p = s.assets_port;

    Reply ok = get(p, "/testlets/ping");
    EXPECT_EQ(ok.status, 200);
    EXPECT_EQ(ok.body, read_file(t / "ping"));

    struct Case {
        const char *target;
        int status;
    } cases[] = {
        {"/testlets/ping%00", 400},     // NUL: was served as "ping"
        {"/testlets/ping%00.txt", 400}, // NUL
        {"/testlets/%00", 400},
        {"/testlets/..%2f..%2f..%2fetc%2fpasswd", 400},
        {"/testlets/%2e%2e/%2e%2e/etc/passwd", 400},
        {"/testlets/%2e%2e", 400},
        {"/testlets/..", 400},
        {"/testlets/pi%zzng", 400}, // bad escape
        {"/testlets/passwd", 404},  // symlink out of the root
        {"/testlets/inlink", 404},  // symlinks are not served at all
        {"/testlets/.hidden", 404},
        {"/testlets/%2ehidden", 404},
        {"/factcollectors/secret", 404}, // type directory is a symlink
        {"/testlets/missing", 404},
        {"/other/ping", 404},
    };
    for (const auto &c : cases) {
        Reply r = get(p, c.target);
        EXPECT_EQ(r.status, c.status) << c.target << ": " << r.body;
        EXPECT_EQ(r.body.find("root:"), std::string::npos) << c.target;
        EXPECT_EQ(r.body.find("outside"), std::string::npos) << c.target;
    }
    // A raw NUL in the request line is malformed HTTP.
    Reply raw = raw_request(p, std::string("GET /testlets/ping\0x HTTP/1.1\r\n"
                                           "Host: x\r\n\r\n",
                                           40));
    EXPECT_EQ(raw.status, 400);
}

// ---- class 6: HTTP bounds ------------------------------------------------

TEST(ServerSockets, HttpBodyAndHeaderBoundsComeFromTheConfig)
{
    ServerProcess s("MaxBodyBytes = 1000\nMaxHeaderBytes = 2048\n");
    ASSERT_TRUE(s.start()) << s.log();
    int fd = connect_tcp(s.api);
    ASSERT_GE(fd, 0);
    // 10 GB announced, none sent: refused from the header, unread.
    std::string head = "POST /v1/object/create HTTP/1.1\r\nHost: x\r\n"
                       "Content-Type: application/json\r\n"
                       "Content-Length: 10737418240\r\n\r\n";
    send(fd, head.data(), head.size(), MSG_NOSIGNAL);
    Reply r = parse_reply(read_all(fd, 10s));
    close(fd);
    EXPECT_EQ(r.status, 413) << r.body;

    // Just above the configured body bound, sent whole.
    std::string body(1001, ' ');
    r = raw_request(s.api, "POST /v1/object/create HTTP/1.1\r\nHost: x\r\n"
                           "Connection: close\r\nContent-Length: 1001\r\n\r\n" +
                               body);
    EXPECT_EQ(r.status, 413) << r.body;

    r = raw_request(s.api, "GET /v1/agent HTTP/1.1\r\nHost: x\r\nX-Big: " +
                               std::string(4000, 'a') +
                               "\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(r.status, 431) << r.body;

    r = get(s.api, "/v1/agent");
    EXPECT_EQ(r.status, 200) << r.body;
}

// ---- class 6: ZeroMQ frame bound -----------------------------------------

TEST(ServerSockets, ZeroMqPeerAnnouncingFourGigabytesIsDropped)
{
    ServerProcess s;
    ASSERT_TRUE(s.start()) << s.log();
    std::string before_agent = s.start_agent(0);
    ASSERT_EQ(before_agent.size(), 64u);
    long rss0 = status_kb(s.pid, "VmRSS");
    long vm0 = status_kb(s.pid, "VmSize");

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::string path = s.endpoint.substr(6);
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a), 0);
    // ZMTP 3.0 greeting (NULL mechanism), READY for a DEALER, then one
    // long frame announcing 4 GiB.
    std::string z;
    z += '\xff';
    z += std::string(8, '\0');
    z += '\x7f';
    z += '\x03';
    z += '\x00';
    std::string mech = "NULL";
    mech.resize(20, '\0');
    z += mech;
    z += '\0';
    z += std::string(31, '\0');
    std::string ready = std::string("\x05READY", 6) + "\x0bSocket-Type" +
                        std::string("\0\0\0\x06", 4) + "DEALER";
    z += '\x04';
    z += static_cast<char>(ready.size());
    z += ready;
    z += '\x02'; // long message frame, last
    uint64_t big = 4ull << 30;
    for (int i = 7; i >= 0; --i)
        z += static_cast<char>((big >> (8 * i)) & 0xff);
    ASSERT_EQ(send(fd, z.data(), z.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(z.size()));
    // Then stream up to 256 MiB of it: without a bound the server keeps it.
    std::string chunk(1 << 20, 'x');
    size_t sent = 0;
    bool dropped = false;
    long rss_max = rss0, vm_max = vm0;
    auto deadline = steady::now() + 30s;
    while (sent < (256u << 20) && steady::now() < deadline) {
        pollfd p{fd, POLLOUT, 0};
        if (poll(&p, 1, 100) > 0 && (p.revents & (POLLERR | POLLHUP))) {
            dropped = true;
            break;
        }
        ssize_t n =
            send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            dropped = true;
            break;
        }
        if (n > 0)
            sent += static_cast<size_t>(n);
        rss_max = std::max(rss_max, status_kb(s.pid, "VmRSS"));
        vm_max = std::max(vm_max, status_kb(s.pid, "VmSize"));
    }
    if (!dropped) {
        // Everything was taken: the peer was kept.
        pollfd p{fd, POLLIN, 0};
        char c;
        dropped = poll(&p, 1, 2000) > 0 && recv(fd, &c, 1, MSG_DONTWAIT) == 0;
    }
    close(fd);
    EXPECT_TRUE(dropped) << "the server took " << (sent >> 20)
                         << " MiB of the frame";
    EXPECT_LT(rss_max - rss0, 64 * 1024)
        << "VmRSS grew from " << rss0 << " kB to " << rss_max << " kB";
    EXPECT_LT(vm_max - vm0, 1024 * 1024)
        << "VmSize grew from " << vm0 << " kB to " << vm_max << " kB";
    ASSERT_TRUE(s.proc->poll().running()) << s.log();

    // Agents keep working: a new one registers, the old one is still there.
    std::string after_agent = s.start_agent(1);
    ASSERT_EQ(after_agent.size(), 64u);
    bool both = false;
    auto until = steady::now() + 20s;
    while (!both && steady::now() < until) {
        Reply r = get(s.api, "/v1/agent");
        both = r.status == 200 &&
               r.body.find(before_agent) != std::string::npos &&
               r.body.find(after_agent) != std::string::npos;
        if (!both)
            std::this_thread::sleep_for(50ms);
    }
    EXPECT_TRUE(both) << get(s.api, "/v1/agent").body;
}

// ---- class 8: descriptors exhausted --------------------------------------

/** Lower the server's descriptor limit to what it has open plus `spare`. */
bool limit_fds(pid_t pid, size_t spare)
{
    rlimit rl{};
    rl.rlim_cur = rl.rlim_max = open_fds(pid) + spare;
    return prlimit(pid, RLIMIT_NOFILE, &rl, nullptr) == 0;
}

/** CPU the server burns over `window` (wall clock, not a sleep as proof:
 *  the measure is the CPU counter, the window only bounds it). */
double cpu_over(pid_t pid, std::chrono::milliseconds window)
{
    double c0 = cpu_seconds(pid);
    std::this_thread::sleep_for(window);
    double used = cpu_seconds(pid) - c0;
    std::cout << "server CPU over " << window.count() << " ms: " << used
              << " s\n";
    return used;
}

TEST(ServerSockets, StreamConnectionsHoldingEveryFdNeitherSpinNorHang)
{
    ServerProcess s("StreamAckTimeout = 120\n");
    ASSERT_TRUE(s.start()) << s.log();
    ASSERT_TRUE(limit_fds(s.pid, 16)) << std::strerror(errno);
    // Stream clients are never idle (never shed): they hold every fd.
    std::vector<int> held;
    for (int i = 0; i < 100; ++i) {
        int fd = connect_tcp(s.stream);
        ASSERT_GE(fd, 0);
        held.push_back(fd);
    }
    double cpu = cpu_over(s.pid, 2s);
    EXPECT_LT(cpu, 0.5) << "server burnt " << cpu
                        << " s of CPU with no descriptors";
    // A REST client gets an answer (503 through the reserve descriptor,
    // or 200), not a hang.
    Reply r = get(s.api, "/v1/agent", 5s);
    EXPECT_TRUE(r.status == 503 || r.status == 200) << r.status << "\n"
                                                    << s.post_mortem();
    // Descriptors free again: the API answers.
    for (int fd : held)
        close(fd);
    held.clear();
    bool answered = false;
    auto until = steady::now() + 10s;
    while (!answered && steady::now() < until) {
        answered = get(s.api, "/v1/agent", 3s).status == 200;
        if (!answered)
            std::this_thread::sleep_for(50ms);
    }
    EXPECT_TRUE(answered);
    std::string log = s.log();
    size_t warns = 0;
    for (size_t at = 0;
         (at = log.find("accept failed", at)) != std::string::npos; ++at)
        ++warns;
    EXPECT_LE(warns, 4u) << "logged per attempt:\n" << log.substr(0, 4000);
}

TEST(ServerSockets, IdleConnectionsAreShedSoTheApiKeepsAnswering)
{
    ServerProcess s;
    ASSERT_TRUE(s.start()) << s.log();
    ASSERT_TRUE(limit_fds(s.pid, 16)) << std::strerror(errno);
    std::vector<int> held;
    for (int i = 0; i < 200; ++i) {
        int fd = connect_tcp(s.api);
        ASSERT_GE(fd, 0);
        held.push_back(fd);
    }
    double cpu = cpu_over(s.pid, 2s);
    EXPECT_LT(cpu, 0.5) << "server burnt " << cpu
                        << " s of CPU with no descriptors";
    // Idle connections still held by the client: the oldest make room.
    Reply r = get(s.api, "/v1/agent", 5s);
    EXPECT_EQ(r.status, 200) << s.post_mortem();
    for (int i = 0; i < 50; ++i)
        close(held[static_cast<size_t>(i)]);
    r = get(s.api, "/v1/agent", 5s);
    EXPECT_EQ(r.status, 200) << s.post_mortem();
    for (size_t i = 50; i < held.size(); ++i)
        close(held[i]);
}

TEST(ServerSockets, ConnectionBoundShedsTheLongestIdle)
{
    ServerProcess s("MaxConnections = 8\n");
    ASSERT_TRUE(s.start()) << s.log();
    std::vector<int> held;
    for (int i = 0; i < 8; ++i)
        held.push_back(connect_tcp(s.api));
    // The ninth (a real request) pushes out the first idle one.
    Reply r = get(s.api, "/v1/agent", 5s);
    EXPECT_EQ(r.status, 200);
    pollfd p{held[0], POLLIN, 0};
    char c;
    EXPECT_TRUE(poll(&p, 1, 5000) > 0 && recv(held[0], &c, 1, 0) == 0)
        << "the longest idle connection was not closed";
    for (int fd : held)
        close(fd);
}

} // namespace

namespace {

TEST(ServerSockets, BadBoundsAreRefusedAtStart)
{
    for (const std::string bad :
         {"MaxConnections = 0\n", "MaxBodyBytes = -1\n",
          "MaxHeaderBytes = lots\n", "IdleTimeout = 0\n"}) {
        ServerProcess s(bad);
        EXPECT_FALSE(s.start()) << bad;
        EXPECT_EQ(s.exit_status, 2) << bad;
        std::string key = bad.substr(0, bad.find(' '));
        for (auto &c : key)
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        EXPECT_NE(s.log().find("[api] " + key), std::string::npos)
            << bad << s.log();
    }
}

} // namespace
