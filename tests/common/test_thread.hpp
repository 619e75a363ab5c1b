// SPDX-License-Identifier: Apache-2.0
// A std::thread for test code: an exception thrown in it fails the test
// (at join) instead of calling std::terminate and aborting the binary.
#pragma once

#include <gtest/gtest.h>

#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <utility>

namespace todd::test {

/** Runs fn on a new thread. join() (or the destructor) adds a gtest
 *  failure naming the exception the thread threw, if it threw one. */
class TestThread {
  public:
    TestThread() = default;
    template <class Fn>
    explicit TestThread(Fn &&fn)
        : thread_([this, fn = std::forward<Fn>(fn)]() mutable {
              try {
                  fn();
              } catch (const std::exception &e) {
                  error_ = std::string("test thread threw: ") + e.what();
              } catch (...) {
                  error_ = "test thread threw a non-std exception";
              }
          })
    {
    }
    TestThread(TestThread &&) = delete; // the thread holds `this`
    TestThread &operator=(TestThread &&) = delete;
    ~TestThread() { join(); }

    bool joinable() const { return thread_.joinable(); }
    /** Wait for the thread; fail the running test if it threw. */
    void join()
    {
        if (!thread_.joinable())
            return;
        thread_.join();
        if (!error_.empty())
            ADD_FAILURE() << error_;
        error_.clear();
    }

  private:
    std::string error_;
    std::thread thread_; // last: started once error_ exists
};

} // namespace todd::test
