// SPDX-License-Identifier: Apache-2.0
// Opening and closing AMQP connections so that stop() can always cut them
// short: the TCP connect is our own non-blocking one that also waits on the
// transport's stop eventfd, and every socket of an attempt or a connection
// is watched by a SocketGuard that stop() can shut down from its thread, so
// a TLS handshake, a login or an RPC blocked on a dead broker ends at once.
#pragma once

#include "settings.hpp"

#include <amqp.h>

#include <mutex>
#include <random>
#include <string>
#include <sys/time.h>

namespace todd_rabbitmq {

constexpr amqp_channel_t pub_channel = 1;  // publishes and confirms
constexpr amqp_channel_t decl_channel = 2; // publisher's declarations
constexpr int frame_max = 131072;

std::string bytes_str(amqp_bytes_t b);
timeval to_timeval(milliseconds ms);

// Result of an operation on a link: a status plus the words for the log.
struct Outcome {
    todd_comms_status status = TODD_COMMS_OK;
    std::string detail;
    bool ok() const { return status == TODD_COMMS_OK; }
};

// A failed RPC: channel.close is local to the channel (e.g. 406), anything
// else means the connection is gone.
struct RpcFailure {
    bool channel_closed = false;
    uint16_t code = 0;
    std::string text;
    Outcome outcome;
};

RpcFailure describe_rpc(amqp_rpc_reply_t r, const std::string &what);
bool rpc_ok(amqp_connection_state_t c);
void close_ok_channel(amqp_connection_state_t c, amqp_channel_t ch);

// An eventfd to wake a thread blocked in poll().
class Waker {
  public:
    Waker();
    ~Waker();
    Waker(const Waker &) = delete;
    Waker &operator=(const Waker &) = delete;
    void wake();
    void drain();
    int fd() const { return fd_; }

  private:
    int fd_;
};

// The socket of one link as stop() sees it. It holds its own duplicate of
// the descriptor, so the number it shuts down is never one that was closed
// and reused meanwhile. cut(false) ends an attempt that is not yet up,
// cut(true) any connection; both are sticky until reset().
class SocketGuard {
  public:
    ~SocketGuard() { release(); }
    /** Watch fd (duplicated); shut down at once when already cut. */
    void watch(int fd);
    /** The connection is up: only cut(true) ends it from now on. */
    void established();
    /** Forget the socket (after the connection is destroyed). */
    void release();
    void cut(bool hard);
    /** After stop (a new start is not allowed, but keep it tidy). */
    void reset();

  private:
    void shut_locked();
    std::mutex mu_;
    int fd_ = -1;
    bool up_ = false, cut_soft_ = false, cut_hard_ = false;
};

// What an attempt may be interrupted by.
struct Interrupt {
    int stop_fd = -1; // readable once stop() has begun (never drained)
    SocketGuard *guard = nullptr;
};

/**
 * Open one AMQP connection, trying every broker in turn starting at *next.
 * On success channel 1 is open and the socket is watched by intr.guard
 * (not yet marked established). Returns nullptr with *out set otherwise;
 * E_CANCELLED when stop() cut it short. Never logs the password.
 */
amqp_connection_state_t open_connection(const Settings &s, size_t *next,
                                        const char *role, const Interrupt &intr,
                                        Outcome *out, std::string *where);

void close_connection(amqp_connection_state_t c, bool graceful);

// Exponential backoff with jitter, capped.
class Backoff {
  public:
    explicit Backoff(milliseconds cap) : cap_(cap) {}
    milliseconds next();
    void reset() { cur_ = milliseconds(100); }

  private:
    milliseconds cap_;
    milliseconds cur_{100};
    std::mt19937_64 rng_{std::random_device{}()};
};

} // namespace todd_rabbitmq
