// SPDX-License-Identifier: Apache-2.0
// What handlers receive on plugin threads, collected for the test thread:
// every wait is bounded and wakes on arrival (no polling), and absence is
// proven by ordering (a marker sent behind what must not arrive), never by
// a sleep.
//
//   DeliveryInbox in;
//   auto sub = transport->subscribe(q, in.handler());
//   transport->publish(q, "x");
//   ASSERT_TRUE(in.wait_for(1));
//   transport->publish(q, "marker");
//   EXPECT_TRUE(in.none_until(payload_is("late"), payload_is("marker")));
#pragma once

#include <todd/core/transport.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace todd::test {

/** How long a wait for something that should arrive gives it: generous,
 *  since only a failing test ever waits this long. */
inline constexpr std::chrono::milliseconds default_wait{30000};

/** A thread-safe list of received values with bounded waits. */
template <class T> class Inbox {
  public:
    /** Add a value (from any thread) and wake the waiters; returns its
     *  index in arrival order. */
    size_t push(T v)
    {
        std::lock_guard lk(mu_);
        items_.push_back(std::move(v));
        cv_.notify_all();
        return items_.size() - 1;
    }

    /** Wait until pred(all values so far) holds; false after limit. */
    template <class P>
    requires std::predicate < P &, const std::vector<T>
    & > bool wait_until(P pred, std::chrono::milliseconds limit = default_wait)
    {
        std::unique_lock lk(mu_);
        return cv_.wait_for(lk, limit, [&] { return pred(items_); });
    }

    /** Wait until at least n values arrived; false after limit. */
    bool wait_for(size_t n, std::chrono::milliseconds limit = default_wait)
    {
        return wait_until(
            [n](const std::vector<T> &v) { return v.size() >= n; }, limit);
    }

    /** Wait until a value matching pred arrived; returns the first such
     *  value, or nullopt after limit. */
    template <class P>
    requires std::predicate<P &, const T &> std::optional<T>
    wait_for(P pred, std::chrono::milliseconds limit = default_wait)
    {
        std::optional<T> hit;
        wait_until(
            [&](const std::vector<T> &v) {
                auto it = std::find_if(v.begin(), v.end(), pred);
                if (it != v.end())
                    hit = *it;
                return hit.has_value();
            },
            limit);
        return hit;
    }

    /** Wait until a value equal to v arrived; false after limit. */
    bool wait_has(const T &v, std::chrono::milliseconds limit = default_wait)
    {
        return wait_for([&](const T &x) { return x == v; }, limit).has_value();
    }

    /**
     * Absence proven by ordering. Call after sending a marker behind the
     * values that must not arrive, on a route that keeps order: waits
     * (bounded) for a value matching is_marker, then fails if any value
     * matching unwanted arrived before it or with it.
     */
    template <class U, class M>
    requires(std::predicate<U &, const T &>
                 &&std::predicate<M &, const T &>)::testing::AssertionResult
        none_until(U unwanted, M is_marker,
                   std::chrono::milliseconds limit = default_wait)
    {
        if (!wait_for(is_marker, limit))
            return ::testing::AssertionFailure()
                   << "the marker did not arrive within " << limit.count()
                   << " ms, so absence is not proven";
        const size_t n = count(unwanted);
        if (n != 0)
            return ::testing::AssertionFailure()
                   << n << " unwanted value(s) arrived before the marker";
        return ::testing::AssertionSuccess();
    }

    /** Values matching pred so far. */
    template <class P>
    requires std::predicate<P &, const T &> size_t count(P pred)
    {
        std::lock_guard lk(mu_);
        return static_cast<size_t>(
            std::count_if(items_.begin(), items_.end(), pred));
    }
    /** True when a value equal to v arrived. */
    bool has(const T &v)
    {
        return count([&](const T &x) { return x == v; }) != 0;
    }
    /** A copy of every value so far, in arrival order. */
    std::vector<T> all()
    {
        std::lock_guard lk(mu_);
        return items_;
    }
    size_t size()
    {
        std::lock_guard lk(mu_);
        return items_.size();
    }

  private:
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<T> items_;
};

/** A delivery as the handler saw it (the views copied). */
struct Received {
    std::string destination, payload, content_type;
    bool redelivered = false;
    bool operator==(const Received &) const = default;
};

/** Matches a Received (or a raw payload) by its payload. */
inline auto payload_is(std::string p)
{
    return [p = std::move(p)](const auto &r) {
        if constexpr (std::is_same_v<std::decay_t<decltype(r)>, Received>)
            return r.payload == p;
        else
            return r == p;
    };
}

/** Collects the deliveries of a transport subscription. */
class DeliveryInbox : public Inbox<Received> {
  public:
    /** Decides each delivery (its index in arrival order given); ack when
     *  empty. Set before subscribing. May throw: that counts as requeue. */
    std::function<core::Verdict(const Received &, size_t index)> verdict;

    core::Verdict operator()(const core::Delivery &d)
    {
        Received r{std::string(d.destination), std::string(d.payload),
                   std::string(d.content_type), d.redelivered};
        const size_t index = push(r);
        return verdict ? verdict(r, index) : core::Verdict::ack;
    }
    /** A handler for Transport::subscribe; the inbox must outlive it. */
    core::DeliveryHandler handler()
    {
        return [this](const core::Delivery &d) { return (*this)(d); };
    }
};

/** Collects only the payloads of a subscription (acks each one). */
class PayloadInbox : public Inbox<std::string> {
  public:
    core::Verdict operator()(const core::Delivery &d)
    {
        push(std::string(d.payload));
        return core::Verdict::ack;
    }
    /** A handler for Transport::subscribe; the inbox must outlive it. */
    core::DeliveryHandler handler()
    {
        return [this](const core::Delivery &d) { return (*this)(d); };
    }
};

} // namespace todd::test
