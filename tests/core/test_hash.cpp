// SPDX-License-Identifier: Apache-2.0
// core/hash.hpp: SHA-256 of files (FIPS 180-2 vectors) and of directories
// with the agent's and the server's options, on real files.
#include "temp_dir.hpp"

#include <todd/core/hash.hpp>

#include <gtest/gtest.h>

#include <cerrno>
#include <filesystem>
#include <system_error>

using namespace todd::core;
using todd::test::TempDir;
namespace fs = std::filesystem;

namespace {

const std::string sha_empty =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const std::string sha_abc =
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
// One million 'a': larger than one read, so the digest spans many updates.
const std::string sha_million_a =
    "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";

} // namespace

TEST(Sha256File, KnownVectors)
{
    TempDir d;
    EXPECT_EQ(sha256_file(d.write("empty", "")), sha_empty);
    EXPECT_EQ(sha256_file(d.write("abc", "abc")), sha_abc);
    EXPECT_EQ(sha256_file(d.write("big", std::string(1000000, 'a'))),
              sha_million_a);
}

TEST(Sha256File, MissingFileThrowsSystemErrorNamingIt)
{
    TempDir d;
    std::string path = d.path() + "/absent";
    try {
        sha256_file(path);
        FAIL() << "no exception";
    } catch (const std::system_error &e) {
        EXPECT_EQ(e.code().value(), ENOENT);
        EXPECT_NE(std::string(e.what()).find(path), std::string::npos)
            << e.what();
    }
}

TEST(Sha256File, DirectoryIsAReadError)
{
    TempDir d;
    try {
        sha256_file(d.path());
        FAIL() << "no exception";
    } catch (const std::system_error &e) {
        EXPECT_EQ(e.code().value(), EISDIR);
        EXPECT_NE(std::string(e.what()).find("cannot read " + d.path()),
                  std::string::npos)
            << e.what();
    }
}

TEST(HashDirectory, TopLevelByDefault)
{
    TempDir d;
    d.write("a", "abc");
    d.write("b", "");
    d.write("sub/c", "abc");
    DirHashes r = hash_directory(d.path());
    EXPECT_EQ(r.hashes, (std::map<std::string, std::string>{{"a", sha_abc},
                                                            {"b", sha_empty}}));
    EXPECT_TRUE(r.problems.empty());
}

TEST(HashDirectory, RecursiveKeysByBaseName)
{
    TempDir d;
    d.write("a", "");
    d.write("sub/deeper/c", "abc");
    HashDirOptions o;
    o.recursive = true;
    DirHashes r = hash_directory(d.path(), o);
    EXPECT_EQ(r.hashes, (std::map<std::string, std::string>{{"a", sha_empty},
                                                            {"c", sha_abc}}));
}

TEST(HashDirectory, SkipPredicateSeesBaseNames)
{
    TempDir d;
    d.write("keep", "abc");
    d.write(".hidden", "abc");
    d.write("sub/.tmp-x", "abc");
    HashDirOptions o;
    o.recursive = true;
    o.skip = [](const std::string &name) { return name[0] == '.'; };
    DirHashes r = hash_directory(d.path(), o);
    EXPECT_EQ(r.hashes,
              (std::map<std::string, std::string>{{"keep", sha_abc}}));
}

TEST(HashDirectory, SymlinksFollowedUnlessRefused)
{
    TempDir d;
    std::string target = d.write("real/file", "abc");
    fs::create_directories(d.path() + "/dir");
    fs::create_symlink(target, d.path() + "/dir/link");
    d.write("dir/plain", "");
    fs::create_directory_symlink(d.path() + "/dir", d.path() + "/dirlink");

    DirHashes followed = hash_directory(d.path() + "/dir");
    EXPECT_EQ(followed.hashes, (std::map<std::string, std::string>{
                                   {"link", sha_abc}, {"plain", sha_empty}}));

    HashDirOptions o;
    o.no_symlinks = true;
    DirHashes refused = hash_directory(d.path() + "/dir", o);
    EXPECT_EQ(refused.hashes,
              (std::map<std::string, std::string>{{"plain", sha_empty}}));

    DirHashes via_link = hash_directory(d.path() + "/dirlink", o);
    EXPECT_TRUE(via_link.hashes.empty());
    ASSERT_EQ(via_link.problems.size(), 1u);
    EXPECT_NE(via_link.problems[0].find(d.path() + "/dirlink is a symlink"),
              std::string::npos)
        << via_link.problems[0];
}

TEST(HashDirectory, MissingDirectoryIsEmptyWithoutProblem)
{
    TempDir d;
    DirHashes r = hash_directory(d.path() + "/absent");
    EXPECT_TRUE(r.hashes.empty());
    EXPECT_TRUE(r.problems.empty());
}

TEST(HashDirectory, UnreadableFileIsAProblemNotAnAbort)
{
    TempDir d;
    d.write("ok", "abc");
    // A regular file that opens but cannot be read, even by root: this
    // process's memory at address 0 (EIO), reached through a link.
    std::string bad = d.path() + "/mem";
    fs::create_symlink("/proc/self/mem", bad);
    DirHashes r = hash_directory(d.path());
    EXPECT_EQ(r.hashes, (std::map<std::string, std::string>{{"ok", sha_abc}}));
    ASSERT_EQ(r.problems.size(), 1u);
    EXPECT_NE(r.problems[0].find("cannot read " + bad), std::string::npos)
        << r.problems[0];
}
