// SPDX-License-Identifier: Apache-2.0
// An owned file descriptor, closed when it goes out of scope.
#pragma once

#include <unistd.h>

#include <utility>

namespace todd::core {

/** Owns one file descriptor (or none: -1). Move-only; never throws. */
class UniqueFd {
  public:
    /** Take ownership of fd; -1 (a failed open) owns nothing. */
    explicit UniqueFd(int fd = -1) noexcept : fd_(fd) {}
    /** Closes the descriptor, if any. */
    ~UniqueFd() { reset(); }
    UniqueFd(const UniqueFd &) = delete;
    UniqueFd &operator=(const UniqueFd &) = delete;
    /** Take o's descriptor; o owns none after. */
    UniqueFd(UniqueFd &&o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    /** Close ours, then take o's. */
    UniqueFd &operator=(UniqueFd &&o) noexcept
    {
        if (this != &o)
            reset(std::exchange(o.fd_, -1));
        return *this;
    }

    /** The descriptor, or -1. */
    int get() const noexcept { return fd_; }
    /** True when a descriptor is owned. */
    explicit operator bool() const noexcept { return fd_ >= 0; }
    /** Close the descriptor owned (if any) and own fd instead. */
    void reset(int fd = -1) noexcept
    {
        if (fd_ >= 0)
            ::close(fd_);
        fd_ = fd;
    }
    /** Give the descriptor up without closing it. */
    int release() noexcept { return std::exchange(fd_, -1); }

  private:
    int fd_;
};

} // namespace todd::core
