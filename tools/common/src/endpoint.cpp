// SPDX-License-Identifier: Apache-2.0
#include <todd/service/endpoint.hpp>

#include <todd/core/log.hpp>

#include <future>

namespace todd::service {

Endpoint::Endpoint(const std::string &host, uint16_t port,
                   http::Handler handler, std::string name, http::Limits limits)
    : conns_(std::make_shared<http::Connections>(limits.max_connections))
{
    listener_ = std::make_shared<http::Listener>(
        ioc_, host, port, std::move(handler), std::move(name), limits, conns_);
    port_ = listener_->port();
}

Endpoint::~Endpoint()
{
    stop();
}

void Endpoint::start()
{
    if (started_)
        return;
    started_ = true;
    listener_->start();
    thread_ = std::thread([this] {
        for (;;) {
            try {
                ioc_.run();
                return;
            } catch (const std::exception &e) {
                log::error("http", std::string("handler failed: ") + e.what());
            }
        }
    });
}

void Endpoint::stop()
{
    if (stopped_)
        return;
    stopped_ = true;
    if (started_) {
        std::promise<void> done;
        http::asio::post(ioc_, [this, &done] {
            listener_->stop();
            done.set_value();
        });
        done.get_future().wait();
    }
    ioc_.stop();
    if (thread_.joinable())
        thread_.join();
}

} // namespace todd::service
