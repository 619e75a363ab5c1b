// SPDX-License-Identifier: Apache-2.0
// The asset server's path guard (docs/server.md, Assets) against the real
// todd-server over real HTTP: every way of spelling a name outside
// <OptDir>/assets — encoded "..", double encoding, absolute paths, dotfiles,
// NUL, symlinks out, names longer than a file name can be — is refused with
// the documented status, and nothing but the asset files is ever served.
// (test_server_sockets.cpp holds the first cases, over zeromq.)
#include "server_program.hpp"

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <filesystem>

namespace fs = std::filesystem;
using namespace todd::test::program;

namespace {

// Markers that must never come back: they are only in files outside the
// asset directories, or in files the guard must not serve.
const std::string secret = "SECRET-OUTSIDE-ASSETS";
const std::string hidden = "HIDDEN-DOTFILE";

class AssetGuard : public ::testing::Test {
  protected:
    void SetUp() override
    {
        opt_ = dir_.path() + "/opt";
        fs::path t = fs::path(opt_) / "assets" / "testlets";
        fs::create_directories(t);
        fs::create_directories(fs::path(opt_) / "assets" / "factcollectors");
        write_text(t / "ping", "#!/bin/sh\necho ping\n");
        write_text(t / ".hidden", hidden + "\n");
        // Outside the asset directory, one and two levels up.
        write_text(fs::path(opt_) / "assets" / "secret", secret + "\n");
        write_text(fs::path(opt_) / "secret", secret + "\n");
        write_text(fs::path(dir_.path()) / "secret", secret + "\n");
        fs::create_symlink(fs::path(opt_) / "secret", t / "outlink");
        fs::create_symlink("../secret", t / "uplink");
        fs::create_directory(t / "subdir");
        write_text(t / "subdir" / "inner", secret + "\n");
        ASSERT_EQ(::mkfifo((t / "fifo").c_str(), 0644), 0);
        // A file named as the first decoding of a double-encoded "..".
        write_text(t / "%2e%2e", "literal name\n");
        write_text(dir_.path() + "/server.cfg", server_cfg(opt_));
        server_ = std::make_unique<Program>(std::vector<std::string>{
            TODD_SERVER_EXE, "--config", dir_.path() + "/server.cfg", "--db",
            dir_.path() + "/server.db", "--comms", "loopback", "--plugin-dir",
            TODD_LOOPBACK_DIR});
        auto s = wait_started(*server_);
        ASSERT_TRUE(s) << server_->output();
        port_ = s->assets;
    }

    sigtest::TempDir dir_;
    std::string opt_;
    std::unique_ptr<Program> server_;
    int port_ = 0;
};

struct Case {
    std::string target;
    int status;
};

void expect_refused(int port, const std::vector<Case> &cases)
{
    for (const auto &c : cases) {
        Reply r = http_get(port, c.target);
        EXPECT_EQ(r.status, c.status) << c.target << ": " << r.body;
        EXPECT_EQ(r.body.find(secret), std::string::npos) << c.target;
        EXPECT_EQ(r.body.find(hidden), std::string::npos) << c.target;
    }
}

TEST_F(AssetGuard, AnAssetIsServedWhole)
{
    Reply r = http_get(port_, "/testlets/ping");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "#!/bin/sh\necho ping\n");
    // Escapes of ordinary characters decode to the same name.
    EXPECT_EQ(http_get(port_, "/testlets/p%69ng").body, r.body);
    EXPECT_EQ(http_get(port_, "/testlets/p%69%6E%67").body, r.body);
    // The query string is not part of the name.
    EXPECT_EQ(http_get(port_, "/testlets/ping?../../secret").body, r.body);
}

TEST_F(AssetGuard, EncodedDotDotIsABadName)
{
    expect_refused(port_, {
                              {"/testlets/..", 400},
                              {"/testlets/../secret", 400},
                              {"/testlets/%2e%2e", 400},
                              {"/testlets/%2E%2E", 400},
                              {"/testlets/%2E%2e%2fsecret", 400},
                              {"/testlets/%2e%2E%2F%2e%2e%2Fsecret", 400},
                              {"/testlets/.%2e/secret", 400},
                              {"/testlets/%2e./secret", 400},
                              {"/testlets/..%2fsecret", 400},
                              {"/testlets/..%5csecret", 400}, // backslash
                              {"/testlets/%2e", 400},         // "."
                              {"/testlets/.", 400},
                              {"/testlets/./ping", 400},
                              {"/testlets/ping/..", 400},
                              {"/testlets/a..b", 400}, // any "..": refused
                          });
}

TEST_F(AssetGuard, DoubleEncodingIsDecodedOnce)
{
    // %252e%252e is the name "%2e%2e", not "..": an ordinary file name.
    Reply r = http_get(port_, "/testlets/%252e%252e");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "literal name\n");
    EXPECT_EQ(http_get(port_, "/testlets/%25%32%65%25%32%65").body, r.body);
    expect_refused(port_, {{"/testlets/%252e%252e%252fsecret", 404},
                           {"/testlets/%252e%252e/secret", 400}});
}

TEST_F(AssetGuard, AbsolutePathsAreRefused)
{
    const std::string abs_secret = opt_ + "/secret";
    expect_refused(port_, {
                              {"/testlets/" + abs_secret, 400},
                              {"/testlets//etc/passwd", 400},
                              {"/testlets/%2fetc%2fpasswd", 400},
                              {"/testlets/%2F" + abs_secret.substr(1), 400},
                              {"//etc/passwd", 404}, // no asset type
                              {abs_secret, 404},     // not an asset type
                              {"/etc/passwd", 404},
                              {"/secret", 404},
                              {"/assets/secret", 404},
                              {"/testlets", 404}, // no name
                          });
    // A target that is not origin-form names no asset directory either.
    Reply r = http_get(port_, "http://127.0.0.1/testlets/ping");
    EXPECT_EQ(r.status, 400) << r.body;
}

TEST_F(AssetGuard, NulAndControlCharactersAreBadNames)
{
    expect_refused(port_, {
                              {"/testlets/ping%00", 400},
                              {"/testlets/%00ping", 400},
                              {"/testlets/ping%00/../../secret", 400},
                              {"/testlets/ping%0a", 400},
                              {"/testlets/ping%7f", 400},
                              {"/testlets/ping%", 400}, // cut escape
                              {"/testlets/ping%2", 400},
                              {"/testlets/ping%g0", 400},
                          });
}

TEST_F(AssetGuard, DotfilesSymlinksAndNonFilesAreNotServed)
{
    expect_refused(port_, {
                              {"/testlets/.hidden", 404},
                              {"/testlets/%2ehidden", 404},
                              {"/testlets/%2Ehidden", 404},
                              {"/testlets/outlink", 404}, // symlink out
                              {"/testlets/uplink", 404},  // relative link
                              {"/testlets/subdir", 404},  // a directory
                              {"/testlets/subdir/inner", 400},
                              {"/testlets/fifo", 404}, // must not block
                              {"/TESTLETS/ping", 404},
                          });
    // The FIFO was not opened for reading in a way that holds the server:
    // it still answers.
    EXPECT_EQ(http_get(port_, "/testlets/ping").status, 200);
}

TEST_F(AssetGuard, VeryLongNamesAreRefusedWithoutHarm)
{
    // Longer than NAME_MAX: no such file can exist.
    expect_refused(port_, {
                              {"/testlets/" + std::string(256, 'a'), 404},
                              {"/testlets/" + std::string(4000, 'a'), 404},
                              {"/testlets/" + std::string(200, '%'), 400},
                          });
    // Above MaxHeaderBytes (8192): the head is refused as too large.
    Reply r = http_get(port_, "/testlets/" + std::string(9000, 'a'));
    EXPECT_EQ(r.status, 431);
    // Many encoded ".." in one long name.
    std::string climb;
    for (int i = 0; i < 500; ++i)
        climb += "%2e%2e%2f";
    r = http_get(port_, "/testlets/" + climb + "secret");
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(r.body.find(secret), std::string::npos);
    EXPECT_EQ(http_get(port_, "/testlets/ping").status, 200);
}

} // namespace
