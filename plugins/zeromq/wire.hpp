// SPDX-License-Identifier: Apache-2.0
// The command vocabulary between an instance's DEALER and the engine's
// ROUTER. Every command is one ZeroMQ multipart message whose first frame is
// the command name; integers are little-endian inside fixed-size frames.
// docs/zeromq.md lists the frames of each command.
#ifndef TODD_ZEROMQ_WIRE_HPP
#define TODD_ZEROMQ_WIRE_HPP

#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace todd_zmq {

// Instance -> engine
inline constexpr std::string_view kHello = "HELLO";  // [session u64]
inline constexpr std::string_view kHeartbeat = "HB"; // []
inline constexpr std::string_view kBye = "BYE";      // []
inline constexpr std::string_view kPub =
    "PUB"; // [seq u64|ttl_ms i64] [dest] [ctype] [payload]
inline constexpr std::string_view kSub =
    "SUB"; // [sub_id u64|prefetch u32] [dest]
inline constexpr std::string_view kUnsub = "UNSUB"; // [sub_id u64]
inline constexpr std::string_view kAck = "ACK"; // [n x (tag u64|verdict u8)]
// Engine -> instance
inline constexpr std::string_view kWelcome =
    "WELCOME";                                       // [epoch u64|session u64]
inline constexpr std::string_view kConfirm = "CONF"; // [n x seq u64]
inline constexpr std::string_view kNack = "NACK"; // [seq u64|status i32] [text]
inline constexpr std::string_view kDeliver =
    "DLV"; // [sub_id u64|tag u64|flags u32] [ctype] [payload]
inline constexpr std::string_view kWho = "WHO"; // [] "HELLO first"

inline void put_u64(char *p, uint64_t v)
{
    for (int i = 0; i < 8; ++i)
        p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
inline uint64_t get_u64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i)
        v |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
    return v;
}
inline void put_u32(char *p, uint32_t v)
{
    for (int i = 0; i < 4; ++i)
        p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
inline uint32_t get_u32(const char *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i)
        v |= static_cast<uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
    return v;
}

/** Monotonic milliseconds. */
inline int64_t now_ms()
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

/**
 * Up to kMax frames of one received multipart message, reused between
 * receives. Frames beyond kMax are read and dropped (count() then exceeds
 * kMax and the message is refused as malformed).
 */
class Frames {
  public:
    static constexpr size_t kMax = 8;
    Frames()
    {
        for (auto &m : msgs_)
            zmq_msg_init(&m);
        zmq_msg_init(&spare_);
    }
    ~Frames()
    {
        for (auto &m : msgs_)
            zmq_msg_close(&m);
        zmq_msg_close(&spare_);
    }
    Frames(const Frames &) = delete;
    Frames &operator=(const Frames &) = delete;

    /** Receive one whole message; false on EAGAIN (or another error, with
     *  errno set) before the first frame. */
    bool recv(void *sock, int flags)
    {
        n_ = 0;
        for (;;) {
            zmq_msg_t *m = n_ < kMax ? &msgs_[n_] : &spare_;
            if (n_ >= kMax) {
                zmq_msg_close(&spare_);
                zmq_msg_init(&spare_);
            }
            if (zmq_msg_recv(m, sock, n_ == 0 ? flags : 0) < 0) {
                if (n_ != 0 && errno == EINTR)
                    continue; // later parts are already here
                return false;
            }
            ++n_;
            if (!zmq_msg_more(m))
                return true;
        }
    }
    size_t count() const { return n_; }
    std::string_view view(size_t i) const
    {
        auto *m = const_cast<zmq_msg_t *>(&msgs_[i]);
        return {static_cast<const char *>(zmq_msg_data(m)), zmq_msg_size(m)};
    }
    size_t size(size_t i) const
    {
        return zmq_msg_size(const_cast<zmq_msg_t *>(&msgs_[i]));
    }

  private:
    zmq_msg_t msgs_[kMax];
    zmq_msg_t spare_{};
    size_t n_ = 0;
};

/** A message as frame views (received, or handed over in-process). */
struct Msgv {
    const std::string_view *f = nullptr;
    size_t n = 0;
    size_t count() const { return n; }
    std::string_view view(size_t i) const { return f[i]; }
    size_t size(size_t i) const { return f[i].size(); }
};

/** Views of the frames of a received message (valid until the next recv). */
inline Msgv views(const Frames &in, std::string_view (&buf)[Frames::kMax])
{
    size_t n = in.count() > Frames::kMax ? 0 : in.count();
    for (size_t i = 0; i < n; ++i)
        buf[i] = in.view(i);
    return Msgv{buf, n};
}

/**
 * Bound every frame a peer may send (ZMQ_MAXMSGSIZE). libzmq checks the
 * announced size before allocating and drops a connection that exceeds it,
 * so one unauthenticated peer cannot make this process reserve gigabytes.
 */
inline void set_max_message(void *sock, long long bytes)
{
    if (bytes <= 0)
        return; // parse() refuses that; nothing to bound here
    int64_t v = bytes;
    zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &v, sizeof v);
}

/** Wake whoever polls an eventfd. */
inline void eventfd_kick(int fd)
{
    uint64_t one = 1;
    ssize_t w = ::write(fd, &one, sizeof one);
    (void)w;
}

/** Reset an eventfd (or take a timerfd's expirations). */
inline void eventfd_drain(int fd)
{
    uint64_t v;
    ssize_t r = ::read(fd, &v, sizeof v);
    (void)r;
}

inline void close_fd(int &fd)
{
    if (fd >= 0) {
        ::close(fd);
        fd = -1;
    }
}

/**
 * The socket's ZMQ_EVENTS, 0 when it cannot tell. Asking also makes libzmq
 * take the commands behind ZMQ_FD, whose readability it may thereby reset.
 */
inline int socket_events(void *sock)
{
    int ev = 0;
    size_t len = sizeof ev;
    return zmq_getsockopt(sock, ZMQ_EVENTS, &ev, &len) == 0 ? ev : 0;
}

/**
 * Receive and handle messages without blocking, at most `limit` so that
 * others waiting for the socket's lock get a turn. handle(Msgv, Frames&)
 * sees no frames (n == 0) for a message with too many. True when the limit
 * stopped it: more may be waiting.
 */
template <typename F>
bool drain(void *sock, Frames &in, F &&handle, int limit = 4096)
{
    std::string_view buf[Frames::kMax];
    for (int i = 0; i < limit; ++i) {
        if (!in.recv(sock, ZMQ_DONTWAIT))
            return false;
        handle(views(in, buf), in);
    }
    return true;
}

/**
 * Send a message made of n frames without blocking. Returns 0, or the errno
 * of the first frame (EAGAIN when the peer's queue is full or, with
 * ZMQ_IMMEDIATE, when no connection is up). After the first frame is
 * accepted ZeroMQ accepts the rest.
 */
inline int send_frames(void *sock, const std::string_view *frames, size_t n)
{
    for (size_t i = 0; i < n; ++i) {
        int flags = ZMQ_DONTWAIT | (i + 1 < n ? ZMQ_SNDMORE : 0);
        if (zmq_send(sock, frames[i].data(), frames[i].size(), flags) < 0) {
            if (i == 0 || errno != EINTR)
                return errno;
            --i; // later parts are never refused for lack of room
        }
    }
    return 0;
}

} // namespace todd_zmq

#endif
