// SPDX-License-Identifier: Apache-2.0
// Starting and stopping the server, and the public Server class. The parts
// are in registry.cpp, runs.cpp, rest.cpp and stream.cpp (server_impl.hpp).
#include "server_impl.hpp"

#include <filesystem>

namespace todd::server {

void Server::Impl::start()
{
    if (started)
        throw std::logic_error("server already started");
    if (cfg.db_path.empty())
        cfg.db_path = cfg.opt_dir + "/todd-server.db";
    store = std::make_unique<Store>(cfg.db_path);
    reload_groups();
    reschedule();
    std::string root = cfg.opt_dir + "/assets";
    std::error_code ec;
    if (!std::filesystem::is_directory(root, ec))
        log::warn(C, "asset directory " + root +
                         " does not exist; no assets are served");
    assets = std::make_unique<AssetWatcher>(
        root, [this] { asio::post(ioc, [this] { downloads.clear(); }); });
    assets->start();
    http::Limits limits{cfg.max_body_bytes, cfg.max_header_bytes,
                        cfg.max_connections, cfg.idle_timeout};
    conns = std::make_shared<http::Connections>(cfg.max_connections);
    api = std::make_shared<http::Listener>(
        ioc, cfg.api_host, cfg.api_port,
        [this](const http::Request &r) { return rest(r); }, "api", limits,
        conns);
    stream_acceptor = std::make_unique<tcp::acceptor>(ioc);
    http::listen_on(ioc, *stream_acceptor, cfg.api_host, cfg.stream_port,
                    "stream");
    stream_port = stream_acceptor->local_endpoint().port();
    asset_http = std::make_shared<http::Listener>(
        ioc, cfg.assets_host, cfg.assets_port,
        [this](const http::Request &r) { return serve_asset(r); }, "assets",
        limits, conns);
    url_host = cfg.advertised_addr;
    if (url_host.empty()) {
        if (cfg.assets_host != "0.0.0.0" && cfg.assets_host != "::" &&
            !cfg.assets_host.empty()) {
            url_host = cfg.assets_host;
        } else {
            url_host = "127.0.0.1";
            log::warn(C, "no [LocalResources] DefaultInterface or "
                         "IPAddrOverride: asset URLs use 127.0.0.1, "
                         "reachable by local agents only");
        }
    }
    if (url_host.find(':') != std::string::npos && url_host[0] != '[')
        url_host = "[" + url_host + "]";
    api->start();
    asset_http->start();
    accept_stream();
    sender = std::make_unique<Sender>(*comms, metrics);
    work.emplace(ioc.get_executor());
    io_thread = std::thread([this] {
        // A handler that throws must cost its request, not the server:
        // log it and go on running the others.
        for (;;) {
            try {
                ioc.run();
                return;
            } catch (const std::exception &e) {
                log::error(C, std::string("I/O handler failed: ") + e.what());
            } catch (...) {
                log::error(C, "I/O handler failed");
            }
        }
    });
    started = true;
    comms->start();
    advert_sub = comms->listen_for_agent([this](const msg::AgentAdvert &a) {
        asio::post(ioc, [this, a] { on_advert(a); });
        return core::Verdict::ack;
    });
    response_sub = comms->listen_for_responses([this](const msg::Response &r) {
        asio::post(ioc, [this, r] { on_response(r); });
        return core::Verdict::ack;
    });
    log::info(C, "Serving ToDD Server API at: " + cfg.api_host + ":" +
                     std::to_string(api->port()) + " (status stream " +
                     std::to_string(stream_port) + ", assets " +
                     cfg.assets_host + ":" +
                     std::to_string(asset_http->port()) + ", store " +
                     cfg.db_path + ")");
}

void Server::Impl::stop()
{
    if (!started || stopped)
        return;
    advert_sub.reset();
    response_sub.reset();
    // A send retrying against a dead broker would hold up the join.
    comms->cancel_sends();
    if (sender)
        sender->stop();
    comms->stop();
    std::promise<void> closed;
    asio::post(ioc, [this, &closed] {
        api->stop();
        asset_http->stop();
        boost::system::error_code ec;
        if (stream_loop)
            stream_loop->stop();
        stream_acceptor->close(ec);
        for (auto &[id, a] : agents)
            a.timer->cancel();
        for (auto &[label, sc] : schedules)
            sc.timer->cancel();
        for (auto &[id, r] : runs) {
            r->timer.cancel();
            r->waiters.clear(); // they hold sessions that hold the run
        }
        closed.set_value();
    });
    closed.get_future().wait();
    work.reset();
    ioc.stop();
    if (io_thread.joinable())
        io_thread.join();
    stopped = true;
    if (assets)
        assets->stop();
    runs.clear();
    agents.clear();
    log::info(C, "server stopped");
}

Server::Server(ServerConfig cfg, std::unique_ptr<core::Transport> transport)
    : impl_(std::make_unique<Impl>(std::move(cfg), std::move(transport)))
{
}

Server::~Server()
{
    stop();
}

void Server::set_observer(ServerObserver obs)
{
    impl_->obs = std::move(obs);
}
void Server::start()
{
    impl_->start();
}
void Server::stop()
{
    impl_->stop();
}
uint16_t Server::api_port() const
{
    return impl_->api ? impl_->api->port() : 0;
}
uint16_t Server::stream_port() const
{
    return impl_->stream_port;
}
uint16_t Server::assets_port() const
{
    return impl_->asset_http ? impl_->asset_http->port() : 0;
}
const ServerConfig &Server::config() const
{
    return impl_->cfg;
}

std::map<std::string, std::string> Server::groups() const
{
    return impl_->sync([this] {
        std::map<std::string, std::string> m;
        for (const auto &[id, a] : impl_->agents)
            if (!a.group.empty())
                m[id] = a.group;
        return m;
    });
}

std::vector<std::string> Server::agents() const
{
    return impl_->sync([this] {
        std::vector<std::string> v;
        for (const auto &[id, a] : impl_->agents)
            v.push_back(id);
        return v;
    });
}

} // namespace todd::server
