// SPDX-License-Identifier: Apache-2.0
// The main of every GoogleTest binary (instead of gtest_main): skips reach
// meson. A binary that skipped any case (or ran none) and failed none exits
// 77, meson's SKIP, even if other cases passed: meson has no per-case skip.
// So that the count is real, each skipped case is also written, with its
// reason, to $TODD_TEST_REPORT_DIR/skips-<pid>.tsv, which
// share/scripts/run-tests sums.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

constexpr int kMesonSkip = 77;

struct Skipped {
    std::string name, reason;
};

// The reason given to GTEST_SKIP (first line), or "" if none.
std::string skip_reason(const ::testing::TestResult &r)
{
    for (int i = 0; i < r.total_part_count(); ++i) {
        const auto &p = r.GetTestPartResult(i);
        if (p.type() != ::testing::TestPartResult::kSkip)
            continue;
        std::string m = p.message();
        if (auto nl = m.find('\n'); nl != std::string::npos)
            m.resize(nl);
        return m;
    }
    return "";
}

std::vector<Skipped> skipped_tests(const ::testing::UnitTest &u)
{
    std::vector<Skipped> out;
    // A skip in a global environment's SetUp skips every test.
    std::string global = skip_reason(u.ad_hoc_test_result());
    for (int s = 0; s < u.total_test_suite_count(); ++s) {
        const auto *suite = u.GetTestSuite(s);
        for (int t = 0; t < suite->total_test_count(); ++t) {
            const auto *info = suite->GetTestInfo(t);
            if (!info->should_run() || !info->result()->Skipped())
                continue;
            std::string why = skip_reason(*info->result());
            out.push_back({std::string(suite->name()) + "." + info->name(),
                           why.empty() ? global : why});
        }
    }
    return out;
}

void report(const char *argv0, const std::vector<Skipped> &skipped)
{
    for (const auto &s : skipped)
        std::printf("SKIPPED %s: %s\n", s.name.c_str(),
                    s.reason.empty() ? "(no reason given)" : s.reason.c_str());
    const char *dir = std::getenv("TODD_TEST_REPORT_DIR");
    if (dir == nullptr || *dir == '\0' || skipped.empty())
        return;
    std::string path =
        std::string(dir) + "/skips-" + std::to_string(::getpid()) + ".tsv";
    std::ofstream f(path);
    for (const auto &s : skipped)
        f << argv0 << '\t' << s.name << '\t' << s.reason << '\n';
    if (!f)
        std::fprintf(stderr, "cannot write %s\n", path.c_str());
}

} // namespace

int main(int argc, char **argv)
{
    ::testing::InitGoogleTest(&argc, argv);
    int rc = RUN_ALL_TESTS();
    const auto &u = *::testing::UnitTest::GetInstance();
    if (GTEST_FLAG_GET(list_tests))
        return rc;
    auto skipped = skipped_tests(u);
    report(argc > 0 ? argv[0] : "?", skipped);
    if (rc != 0 || u.failed_test_count() > 0)
        return rc != 0 ? rc : 1;
    if (!skipped.empty() || u.successful_test_count() == 0) {
        std::printf("SKIP: %d of %d test cases skipped, %d passed\n",
                    u.skipped_test_count(), u.test_to_run_count(),
                    u.successful_test_count());
        return kMesonSkip;
    }
    return 0;
}
