// SPDX-License-Identifier: Apache-2.0
// The real todd-server binary as a child process (tests/signals/program.hpp)
// and what it tells the world: the ports it bound, read from its start line,
// its exit status, plain HTTP to it.
#pragma once

#include "../signals/program.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <thread>

namespace todd::test::program {

using sigtest::Program;
using namespace std::chrono_literals;

/** What todd-server's start line says it bound. */
struct Started {
    int api = 0, stream = 0, assets = 0;
    std::string store; // the SQLite file it opened
};

/** Waits for the start line ("Serving ToDD Server API at: H:P (status
 *  stream S, assets H:A, store F)"); nullopt if the program ends first. */
inline std::optional<Started>
wait_started(Program &p, std::chrono::milliseconds limit = 20s)
{
    const std::string mark = "Serving ToDD Server API at: ";
    if (!p.wait_output(mark, limit))
        return std::nullopt;
    auto at = p.output().find(mark);
    if (!p.wait_output(")\n", limit, at))
        return std::nullopt;
    std::string line = p.output().substr(at, p.output().find(")\n", at) - at);
    auto after = [&](const std::string &key) {
        auto k = line.find(key);
        return k == std::string::npos ? std::string()
                                      : line.substr(k + key.size());
    };
    Started s;
    std::string api = after(mark);
    s.api = std::atoi(api.c_str() + api.find(':') + 1);
    s.stream = std::atoi(after("(status stream ").c_str());
    std::string assets = after(", assets ");
    s.assets = std::atoi(assets.c_str() + assets.find(':') + 1);
    s.store = after(", store ");
    if (s.api <= 0 || s.stream <= 0 || s.assets <= 0)
        return std::nullopt;
    return s;
}

/** The exit of a program that is to end by itself: "exit N" / "signal N",
 *  or "still running ..." if it has not ended within `limit` (it is then
 *  sent SIGTERM, which may end it). */
inline std::string wait_exit(Program &p, std::chrono::milliseconds limit = 20s)
{
    auto end = sigtest::Clock::now() + limit;
    p.wait_output(std::string("\x01 end of output \x01"), limit); // EOF
    bool ended = sigtest::Clock::now() < end;
    std::chrono::milliseconds took{};
    std::string status = p.terminate(5s, &took);
    return ended ? status : "still running after the limit (" + status + ")";
}

/** A server.cfg that binds every port to 0 on 127.0.0.1 and keeps its
 *  assets and store under `opt_dir`, then `extra` (more sections). */
inline std::string server_cfg(const std::string &opt_dir,
                              const std::string &extra = "")
{
    return "[API]\nHost = 127.0.0.1\nPort = 0\nStreamPort = 0\n"
           "[Assets]\nIP = 127.0.0.1\nPort = 0\n"
           "[LocalResources]\nIPAddrOverride = 127.0.0.1\nOptDir = " +
           opt_dir + "\n" + extra;
}

inline void write_text(const std::string &path, const std::string &text)
{
    std::ofstream(path, std::ios::binary) << text;
}

/** A todd-agent's UUID, once it has written <state_dir>/agent-uuid; ""
 *  if it has not within `limit`. */
inline std::string wait_agent_uuid(const std::string &state_dir,
                                   std::chrono::milliseconds limit = 20s)
{
    auto end = sigtest::Clock::now() + limit;
    do {
        std::ifstream f(state_dir + "/agent-uuid");
        std::string id;
        f >> id;
        if (id.size() == 64)
            return id;
        std::this_thread::sleep_for(20ms);
    } while (sigtest::Clock::now() < end);
    return {};
}

struct Reply {
    int status = 0; // 0: no HTTP answer
    std::string body;
};

/** GET `target` sent as these very bytes (no normalisation) to
 *  127.0.0.1:port; the connection is closed by the request. */
inline Reply http_get(int port, const std::string &target)
{
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    timeval tv{20, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    Reply r;
    if (::connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) {
        ::close(fd);
        return r;
    }
    std::string req =
        "GET " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    (void)!::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    std::string raw;
    char buf[65536];
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0)
        raw.append(buf, static_cast<size_t>(n));
    ::close(fd);
    if (raw.rfind("HTTP/1.1 ", 0) == 0)
        r.status = std::atoi(raw.c_str() + 9);
    if (auto h = raw.find("\r\n\r\n"); h != std::string::npos)
        r.body = raw.substr(h + 4);
    return r;
}

} // namespace todd::test::program
