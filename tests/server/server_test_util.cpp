// SPDX-License-Identifier: Apache-2.0
#include "server_test_util.hpp"

#include "files.hpp"

#include <todd/core/comms.hpp>
#include <todd/core/plugin_registry.hpp>
#include <todd_build_config.h>

#include <optional>
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace todd::test {

namespace fs = std::filesystem;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;

HttpReply http(uint16_t port, const std::string &method,
               const std::string &target, const std::string &body)
{
    asio::io_context ioc;
    beast::tcp_stream stream(ioc);
    stream.expires_after(30s);
    stream.connect({asio::ip::make_address("127.0.0.1"), port});
    bhttp::request<bhttp::string_body> req{bhttp::string_to_verb(method),
                                           target, 11};
    req.set(bhttp::field::host, "localhost:" + std::to_string(port));
    req.set(bhttp::field::user_agent, "Go-http-client/1.1");
    if (!body.empty() || method == "POST") {
        req.set(bhttp::field::content_type, "application/json");
        req.body() = body;
        req.prepare_payload();
    }
    bhttp::write(stream, req);
    beast::flat_buffer buf;
    bhttp::response<bhttp::string_body> res;
    bhttp::read(stream, buf, res);
    HttpReply r;
    r.status = static_cast<int>(res.result_int());
    r.reason = std::string(res.reason());
    for (const auto &f : res) {
        std::string name(f.name_string());
        for (auto &c : name)
            c = static_cast<char>(std::tolower(c));
        r.headers[name] = std::string(f.value());
    }
    r.body = res.body();
    beast::error_code ec;
    stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
    return r;
}

StreamClient::StreamClient(uint16_t port)
{
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr *>(&sa), sizeof sa) != 0) {
        close(fd_);
        throw std::runtime_error("cannot connect to the status stream");
    }
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

StreamClient::~StreamClient()
{
    if (fd_ >= 0)
        close(fd_);
}

std::optional<std::string>
StreamClient::read_line(std::chrono::milliseconds timeout)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto nl = buf_.find('\n');
        if (nl != std::string::npos) {
            std::string line = buf_.substr(0, nl);
            buf_.erase(0, nl + 1);
            return line;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0)
            return std::nullopt;
        pollfd p{fd_, POLLIN, 0};
        if (poll(&p, 1, static_cast<int>(left.count())) <= 0)
            return std::nullopt;
        char tmp[4096];
        ssize_t n = recv(fd_, tmp, sizeof tmp, 0);
        if (n <= 0)
            return std::nullopt;
        buf_.append(tmp, static_cast<size_t>(n));
    }
}

void StreamClient::ack()
{
    static const char a[] = "ack\n";
    (void)!send(fd_, a, 4, MSG_NOSIGNAL);
}

bool StreamClient::closed_by_server(std::chrono::milliseconds timeout)
{
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(timeout.count())) <= 0)
        return false;
    char c;
    return recv(fd_, &c, 1, MSG_PEEK) == 0;
}

bool wait_until(const std::function<bool()> &pred,
                std::chrono::milliseconds timeout)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > deadline)
            return false;
        std::this_thread::sleep_for(5ms);
    }
    return true;
}

TransportFactory plugin_factory(const std::string &dir, const std::string &name,
                                core::Options opts)
{
    auto plugin = std::make_shared<std::shared_ptr<const core::Plugin>>(
        core::PluginRegistry({dir}).load(name));
    return [plugin, opts] { return core::Transport::create(*plugin, opts); };
}

TransportFactory loopback_factory()
{
    static TransportFactory f = plugin_factory(
        std::string(TODD_BUILD_ROOT) + "/plugins/loopback", "loopback", {});
    return f;
}

server::ServerConfig test_server_config(const std::string &root)
{
    server::ServerConfig c;
    c.api_host = "127.0.0.1";
    c.api_port = 0;
    c.stream_port = 0;
    c.assets_host = "127.0.0.1";
    c.assets_port = 0;
    c.opt_dir = root + "/server";
    c.db_path = root + "/server/todd.db";
    fs::create_directories(c.opt_dir + "/assets/testlets");
    fs::create_directories(c.opt_dir + "/assets/factcollectors");
    return c;
}

void install_server_testlet(const std::string &opt_dir, const std::string &name)
{
    fs::copy_file(std::string(TODD_SOURCE_ROOT) + "/share/testlets/" + name,
                  opt_dir + "/assets/testlets/" + name,
                  fs::copy_options::overwrite_existing);
}

void write_script(const std::string &path, const std::string &text)
{
    write_executable(path, text);
}

std::unique_ptr<agent::Agent> make_agent(const TransportFactory &tf,
                                         const std::string &root, int n,
                                         agent::AgentConfig *tweak,
                                         const std::string &hostname)
{
    agent::AgentConfig c = tweak ? *tweak : agent::AgentConfig{};
    std::string dir = root + "/agent-" + std::to_string(n);
    c.state_dir = dir + "/state";
    c.opt_dir = dir + "/opt";
    c.default_addr = "127.0.0.1";
    // The source tree's directory also holds meson.build: copy only the
    // collectors, as an installation would have them.
    c.builtin_factcollector_dir = dir + "/builtin-factcollectors";
    fs::create_directories(c.builtin_factcollector_dir);
    for (const char *fc : {"get_hostname", "get_addresses"})
        fs::copy_file(std::string(TODD_SOURCE_ROOT) + "/share/factcollectors/" +
                          fc,
                      c.builtin_factcollector_dir + "/" + fc,
                      fs::copy_options::overwrite_existing);
    if (!hostname.empty())
        write_script(c.builtin_factcollector_dir + "/get_hostname",
                     "#!/bin/sh\necho '{\"Hostname\":[\"" + hostname +
                         "\"]}'\n");
    c.search_path_for_toddping = false;
    fs::create_directories(c.state_dir);
    fs::create_directories(c.opt_dir);
    return std::make_unique<agent::Agent>(c,
                                          std::make_unique<core::Comms>(tf()));
}

std::string group_json(const std::string &label, const std::string &subnet)
{
    return "{\"label\":\"" + label + "\",\"type\":\"group\",\"spec\":{" +
           "\"group\":\"" + label + "\",\"matches\":[{\"within_subnet\":\"" +
           subnet + "\"}]}}";
}

std::string ping_testrun_json(const std::string &label,
                              const std::string &group, const std::string &app,
                              const std::string &args)
{
    return "{\"label\":\"" + label +
           "\",\"type\":\"testrun\",\"spec\":{\"targettype\":\"uncontrolled\","
           "\"source\":{\"app\":\"" +
           app + "\",\"args\":\"" + args + "\",\"name\":\"" + group +
           "\"},\"target\":[\"127.0.0.1\"]}}";
}

std::string run_request_json(const std::string &name)
{
    return "{\"testRunName\":\"" + name +
           "\",\"sourceGroup\":\"\",\"sourceApp\":\"\",\"sourceArgs\":\"\"}\n";
}

RunOutcome run_and_follow(uint16_t api_port, uint16_t stream_port,
                          const std::string &name)
{
    RunOutcome out;
    auto r = http(api_port, "POST", "/v1/testrun/run", run_request_json(name));
    if (r.status != 200 || r.body.size() != 64) {
        out.uuid = r.body;
        return out;
    }
    out.uuid = r.body;
    {
        StreamClient s(stream_port);
        size_t n = 0;
        bool first = true;
        while (auto line = s.read_line()) {
            out.lines.push_back(*line);
            size_t entries = 0, finished = 0;
            for (size_t p = 0;
                 (p = line->find("\":\"", p)) != std::string::npos; ++p)
                ++entries;
            for (size_t p = 0;
                 (p = line->find("\"finished\"", p)) != std::string::npos; ++p)
                ++finished;
            if (first)
                n = entries;
            first = false;
            if (line->find("\"fail\"") != std::string::npos)
                break; // the CLI stops here ("Invalid status received.")
            if (finished == n)
                break;
            s.ack();
        }
    }
    // As the CLI: poll the result until it is there (bounded).
    wait_until(
        [&] {
            auto d = http(api_port, "GET", "/v1/testdata?testUuid=" + out.uuid);
            out.result_status = d.status;
            out.result = d.body;
            return d.status < 300;
        },
        60s);
    return out;
}

void write_gated_testlet(const std::string &path, const std::string &gate)
{
    std::ofstream(gate).put('x');
    write_script(path, "#!/bin/sh\n[ \"$1\" = check ] && { echo 'Check mode "
                       "PASSED'; exit 0; }\nwhile [ -e '" +
                           gate +
                           "' ]; do sleep 0.02; done\necho '{\"ok\":1}'\n");
}

bool agents_have_testlet(
    const std::vector<std::unique_ptr<agent::Agent>> &agents,
    const std::string &name, std::chrono::milliseconds limit)
{
    return wait_until(
        [&] {
            for (const auto &a : agents)
                if (!std::filesystem::exists(a->config().opt_dir +
                                             "/assets/testlets/" + name)) {
                    a->advertise_now();
                    return false;
                }
            return true;
        },
        limit);
}

std::optional<std::string> metric_line(const std::string &text,
                                       const std::string &series)
{
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        if (line.rfind(series + " ", 0) == 0)
            return line;
    return std::nullopt;
}

double metric_value(const std::string &text, const std::string &series)
{
    auto l = metric_line(text, series);
    if (!l)
        return std::nan("");
    std::istringstream in(l->substr(series.size() + 1));
    double v = std::nan("");
    in >> v;
    return v;
}

} // namespace todd::test
