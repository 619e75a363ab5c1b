// SPDX-License-Identifier: Apache-2.0
// core/dir_watch.hpp on a real directory with real inotify events. Every
// wait is bounded and waits on the reported state; a negative check ("this
// was never reported") waits for a later event instead, since inotify
// reports events in order.
#include "temp_dir.hpp"

#include <todd/core/dir_watch.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <set>

using namespace todd::core;
using todd::test::TempDir;
namespace fs = std::filesystem;

namespace {

constexpr auto bound = std::chrono::seconds(10);

/** What the watcher reported, for the test thread to wait on. */
class Seen {
  public:
    DirWatcher::OnChange callback()
    {
        return [this](const std::vector<std::string> &paths) {
            std::lock_guard lk(mu_);
            ++batches_;
            for (const auto &p : paths)
                paths_.insert(p);
            cv_.notify_all();
        };
    }
    /** Wait (bounded) until path was reported; false on time-out. */
    bool wait_for(const std::string &path)
    {
        std::unique_lock lk(mu_);
        return cv_.wait_for(lk, bound, [&] { return paths_.count(path) > 0; });
    }
    bool saw(const std::string &path)
    {
        std::lock_guard lk(mu_);
        return paths_.count(path) > 0;
    }
    /** Forget what was reported so far. */
    void clear()
    {
        std::lock_guard lk(mu_);
        paths_.clear();
    }
    int batches()
    {
        std::lock_guard lk(mu_);
        return batches_;
    }

  private:
    std::mutex mu_;
    std::condition_variable cv_;
    std::set<std::string> paths_;
    int batches_ = 0;
};

/** Let every event so far be reported, then forget them: events come in
 *  order, so once a marker written now is seen, all before it were. */
void drain_with_marker(Seen &seen, TempDir &d, const std::string &name)
{
    d.write(name, "");
    ASSERT_TRUE(seen.wait_for(d.path() + "/" + name)) << name;
    seen.clear();
}

} // namespace

class DirWatch : public ::testing::TestWithParam<int> {
  protected:
    DirWatcher::Options options() const
    {
        DirWatcher::Options o;
        o.settle = std::chrono::milliseconds(GetParam());
        return o;
    }
};

TEST_P(DirWatch, ReportsCreateRenameDeleteAndChmod)
{
    TempDir d;
    Seen seen;
    DirWatcher w;
    ASSERT_TRUE(w.start({d.path()}, seen.callback(), options()).empty());
    d.write("a", "x");
    ASSERT_TRUE(seen.wait_for(d.path() + "/a")) << "creating a";
    drain_with_marker(seen, d, "m1");
    fs::rename(d.path() + "/a", d.path() + "/b");
    ASSERT_TRUE(seen.wait_for(d.path() + "/b")) << "renaming a to b";
    EXPECT_TRUE(seen.wait_for(d.path() + "/a")) << "a moved away";
    drain_with_marker(seen, d, "m2");
    fs::remove(d.path() + "/b");
    ASSERT_TRUE(seen.wait_for(d.path() + "/b")) << "deleting b";
    drain_with_marker(seen, d, "m3");
    fs::permissions(d.path() + "/m1", fs::perms::owner_read);
    ASSERT_TRUE(seen.wait_for(d.path() + "/m1")) << "chmod m1";
}

TEST_P(DirWatch, IgnoredNamesAreNeverReported)
{
    TempDir d;
    Seen seen;
    DirWatcher w;
    DirWatcher::Options o = options();
    o.ignore = [](const std::string &name) {
        return name.rfind(".tmp-", 0) == 0;
    };
    ASSERT_TRUE(w.start({d.path()}, seen.callback(), o).empty());
    d.write(".tmp-partial", "x");
    d.write("marker", "x");
    ASSERT_TRUE(seen.wait_for(d.path() + "/marker"));
    // The temporary's events came before the marker's: already filtered.
    EXPECT_FALSE(seen.saw(d.path() + "/.tmp-partial"));
    // Its rename into place is reported under the new name.
    fs::rename(d.path() + "/.tmp-partial", d.path() + "/final");
    ASSERT_TRUE(seen.wait_for(d.path() + "/final"));
    EXPECT_FALSE(seen.saw(d.path() + "/.tmp-partial"));
}

TEST_P(DirWatch, RecreatedDirectoryIsWatchedAgain)
{
    TempDir d;
    std::string child = d.path() + "/child";
    fs::create_directory(child);
    Seen seen;
    DirWatcher w;
    ASSERT_TRUE(w.start({d.path(), child}, seen.callback(), options()).empty());
    fs::remove(child);
    ASSERT_TRUE(seen.wait_for(child)) << "removing the child";
    drain_with_marker(seen, d, "marker");
    fs::create_directory(child);
    // Reported only after the watches were renewed.
    ASSERT_TRUE(seen.wait_for(child)) << "creating the child again";
    d.write("child/file", "x");
    EXPECT_TRUE(seen.wait_for(child + "/file"))
        << "a file in the recreated directory";
}

TEST_P(DirWatch, MissingDirectoryIsNamedAndWatchedOnceItAppears)
{
    TempDir d;
    std::string later = d.path() + "/later";
    Seen seen;
    DirWatcher w;
    auto unwatched = w.start({d.path(), later}, seen.callback(), options());
    ASSERT_EQ(unwatched.size(), 1u);
    EXPECT_EQ(unwatched[0].rfind(later + ": ", 0), 0u) << unwatched[0];
    fs::create_directory(later);
    ASSERT_TRUE(seen.wait_for(later));
    d.write("later/file", "x");
    EXPECT_TRUE(seen.wait_for(later + "/file"));
}

TEST_P(DirWatch, NothingIsReportedAfterStop)
{
    TempDir d;
    Seen seen;
    DirWatcher w;
    w.start({d.path()}, seen.callback(), options());
    d.write("before", "x");
    ASSERT_TRUE(seen.wait_for(d.path() + "/before"));
    w.stop();
    int batches = seen.batches();
    d.write("after", "x");
    w.stop(); // idempotent
    // The thread is joined: nothing can call back any more.
    EXPECT_EQ(seen.batches(), batches);
    EXPECT_FALSE(seen.saw(d.path() + "/after"));
}

TEST(DirWatchStart, StartingTwiceIsRefused)
{
    TempDir d;
    Seen seen;
    DirWatcher w;
    w.start({d.path()}, seen.callback());
    EXPECT_THROW(w.start({d.path()}, seen.callback()), std::logic_error);
}

// 0: each read reported; 50 ms: bursts settled, as the server watches.
INSTANTIATE_TEST_SUITE_P(Settle, DirWatch, ::testing::Values(0, 50));
