// SPDX-License-Identifier: Apache-2.0
// A small HTTP endpoint on its own I/O thread, for programs that have no
// HTTP server of their own (todd-agent's /metrics, /healthz and /readyz).
#pragma once

#include <todd/service/http.hpp>

#include <memory>
#include <string>
#include <thread>

namespace todd::service {

class Endpoint {
  public:
    /** Bind host:port now (0 = a free port); throws as http::listen_on.
     *  The handler runs on the endpoint's own thread, one request at a
     *  time, so it must only read state that is safe to read from there. */
    Endpoint(const std::string &host, uint16_t port, http::Handler handler,
             std::string name, http::Limits limits = {});
    ~Endpoint(); // stop()
    Endpoint(const Endpoint &) = delete;
    Endpoint &operator=(const Endpoint &) = delete;

    /** Start serving on the endpoint's thread. */
    void start();
    /** Close the listener and every connection and join the thread; no
     *  handler runs after it returns. Idempotent. */
    void stop();
    uint16_t port() const { return port_; }

  private:
    http::asio::io_context ioc_;
    std::shared_ptr<http::Connections> conns_;
    std::shared_ptr<http::Listener> listener_;
    std::thread thread_;
    uint16_t port_ = 0;
    bool started_ = false, stopped_ = false;
};

} // namespace todd::service
