// SPDX-License-Identifier: Apache-2.0
// DownloadAsset URLs whose last element is no plain file name (a NUL, a
// dotfile, percent-encoded traversal) are refused before anything is
// fetched or written; a plain name still downloads.
#include "http_server.hpp"

#include <todd/agent/download.hpp>

#include "temp_dir.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>

namespace fs = std::filesystem;

TEST(DownloadNames, OnlyPlainFileNamesAreWritten)
{
    todd::test::TempDir tmp("todd-download-names");
    fs::path dir = tmp.path();
    todd::test::HttpServer srv(
        std::map<std::string, std::string>{{"/testlets/ok", "#!/bin/sh\n"},
                                           {"/testlets/.hidden", "x"},
                                           {"/testlets/..%2f..%2fescaped", "x"},
                                           {"/testlets/ping", "x"},
                                           {"/testlets/%2e%2e", "x"}});
    std::string base = "http://127.0.0.1:" + std::to_string(srv.port());
    std::vector<std::string> bad = {
        base + "/testlets/.hidden",
        base + "/testlets/..%2f..%2fescaped",
        base + "/testlets/%2e%2e",
        base + std::string("/testlets/ping\0evil", 19),
        base + "/testlets/a\tb",
    };
    std::atomic<bool> cancel{false};
    auto results = todd::agent::download_assets(bad, dir.string(), cancel);
    ASSERT_EQ(results.size(), bad.size());
    for (const auto &r : results) {
        EXPECT_FALSE(r.ok) << r.url << " -> " << r.path;
        EXPECT_NE(r.error.find("no usable file name"), std::string::npos)
            << r.url << ": " << r.error;
    }
    auto good = todd::agent::download_assets({base + "/testlets/ok"},
                                             dir.string(), cancel);
    ASSERT_EQ(good.size(), 1u);
    EXPECT_TRUE(good[0].ok) << good[0].error;
    std::vector<std::string> files;
    for (auto &e : fs::recursive_directory_iterator(dir))
        if (!e.is_directory())
            files.push_back(fs::relative(e.path(), dir).string());
    EXPECT_EQ(files, std::vector<std::string>{"assets/testlets/ok"});
}
