// SPDX-License-Identifier: Apache-2.0
// LOAD-2, who may own a plugin: the file and every directory up to / belong
// to root or the effective user; only directories above the holding one may
// be writable by others, and only with the sticky bit. Checked in process
// and with the real todd-comms. Changing owners needs root: those tests SKIP
// otherwise.
#include "loader_test_util.hpp"

#include <todd/core/plugin_registry.hpp>

#include <sys/stat.h>

using namespace todd::core;
using namespace loader_test;

namespace {

constexpr uid_t kOther = 65534; // nobody: an ordinary user, not us

/** base (0755) / up / plugins (0755) / libtodd-comms-good.so (0755). */
struct Tree {
    TempDir base{fs::perms(0755)};
    fs::path up = base.path() / "up";
    fs::path dir = up / "plugins";
    std::string file = (dir / "libtodd-comms-good.so").string();
    Tree()
    {
        fs::create_directory(up);
        fs::permissions(up, fs::perms(0755));
        fs::create_directory(dir);
        fs::permissions(dir, fs::perms(0755));
        fs::copy_file(std::string(FIXTURE_DIR) + "/libtodd-comms-good.so",
                      file);
        fs::permissions(file, fs::perms(0755));
    }
};

void chown_to(const fs::path &p, uid_t uid)
{
    if (::lchown(p.c_str(), uid, static_cast<gid_t>(-1)) != 0)
        throw std::runtime_error("chown " + p.string() + ": " +
                                 strerror(errno));
}

/** The refusal text, or "" (and a failure) when the file loads. */
std::string refusal(const std::string &path)
{
    try {
        PluginRegistry({}).load(path);
        ADD_FAILURE() << path << " was accepted";
    } catch (const PluginError &e) {
        return e.what();
    }
    return {};
}

std::string mode_of(const fs::path &p)
{
    struct stat st {};
    ::stat(p.c_str(), &st);
    char buf[8];
    std::snprintf(buf, sizeof buf, "%04o", unsigned(st.st_mode & 07777));
    return buf;
}

std::string owned_by_other(const std::string &what, const fs::path &p)
{
    return what + " " + p.string() + " is owned by uid " +
           std::to_string(kOther) + " (mode " + mode_of(p) +
           "); only root or the effective user (uid " +
           std::to_string(geteuid()) + ") may own plugin code";
}

#define NEED_ROOT()                                                            \
    if (geteuid() != 0)                                                        \
    GTEST_SKIP() << "changing a file's owner needs root"

TEST(LoaderTrust, FileOwnedByAnotherUserIsRefused)
{
    NEED_ROOT();
    Tree t;
    chown_to(t.file, kOther);
    EXPECT_HAS(refusal(t.file), t.file + ": refused (LOAD-2): " +
                                    owned_by_other("file", t.file));
}

TEST(LoaderTrust, HoldingDirectoryOwnedByAnotherUserIsRefused)
{
    NEED_ROOT();
    Tree t;
    chown_to(t.dir, kOther);
    EXPECT_HAS(refusal(t.file), t.file + ": refused (LOAD-2): " +
                                    owned_by_other("directory", t.dir));
}

TEST(LoaderTrust, DirectoryFurtherUpOwnedByAnotherUserIsRefused)
{
    NEED_ROOT();
    Tree t;
    chown_to(t.up, kOther);
    EXPECT_HAS(refusal(t.file), t.file + ": refused (LOAD-2): " +
                                    owned_by_other("directory", t.up));
}

TEST(LoaderTrust, GroupWritableDirectoryFurtherUpWithoutStickyIsRefused)
{
    Tree t;
    fs::permissions(t.up, fs::perms(0775));
    EXPECT_HAS(refusal(t.file),
               t.file + ": refused (LOAD-2): directory " + t.up.string() +
                   " is group/world-writable without the sticky bit (owner "
                   "uid " +
                   std::to_string(geteuid()) + ", mode 0775)");
}

TEST(LoaderTrust, WorldWritableStickyDirectoryFurtherUpIsAccepted)
{
    Tree t;
    fs::permissions(t.up, fs::perms(01777));
    EXPECT_EQ(PluginRegistry({}).load(t.file)->info().path, t.file);
}

TEST(LoaderTrust, WorldWritableStickyHoldingDirectoryIsRefused)
{
    // Others could plant plugin-named files (or hard links) there.
    Tree t;
    fs::permissions(t.dir, fs::perms(01777));
    EXPECT_HAS(refusal(t.file), t.file + ": refused (LOAD-2): directory " +
                                    t.dir.string() +
                                    " is group/world-writable (owner uid " +
                                    std::to_string(geteuid()) + ", mode 1777)");
}

TEST(LoaderTrust, SymlinkedDirectoryIsCheckedWhereItLeads)
{
    // The link's own directory may be anyone's: the walk checks the
    // canonical path, which is what gets opened.
    Tree t;
    TempDir links(fs::perms(0755));
    fs::permissions(links.path(), fs::perms(0777));
    fs::create_directory_symlink(t.dir, links.path() / "via");
    EXPECT_EQ(
        PluginRegistry({})
            .load((links.path() / "via" / "libtodd-comms-good.so").string())
            ->info()
            .path,
        t.file);
    fs::permissions(t.up, fs::perms(0777));
    EXPECT_HAS(
        refusal((links.path() / "via" / "libtodd-comms-good.so").string()),
        "(LOAD-2): directory " + t.up.string() +
            " is group/world-writable without the sticky bit");
}

TEST(LoaderTrust, OwnedByTheEffectiveUserIsAccepted)
{
    NEED_ROOT();
    // A child that is an ordinary user (kOther) loads a tree it owns, below
    // root-owned directories; a file of yet another user is refused.
    Tree t;
    for (const fs::path &p : {t.up, t.dir, fs::path(t.file)})
        chown_to(p, kOther);
    const std::string other = (t.dir / "libtodd-comms-stranger.so").string();
    fs::copy_file(t.file, other);
    fs::permissions(other, fs::perms(0755));
    chown_to(other, 4242);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        int rc = 0;
        if (::setgid(kOther) != 0 || ::setuid(kOther) != 0)
            ::_exit(10);
        try {
            if (PluginRegistry({}).load(t.file)->info().path != t.file)
                rc = 11;
        } catch (...) {
            rc = 12;
        }
        try {
            PluginRegistry({}).load(other);
            rc = 13;
        } catch (const PluginError &e) {
            if (std::string(e.what()).find("(LOAD-2): file " + other +
                                           " is owned by uid 4242") ==
                std::string::npos)
                rc = 14;
        }
        ::_exit(rc);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status)) << status;
    EXPECT_EQ(WEXITSTATUS(status), 0)
        << "10 setuid, 11/12 own tree refused, 13/14 stranger accepted";
}

TEST(LoaderTrust, ToddCommsRefusesOthersPluginsAndListsOurs)
{
    NEED_ROOT();
    Tree t;
    const std::string theirs = (t.dir / "libtodd-comms-theirs.so").string();
    fs::copy_file(t.file, theirs);
    fs::permissions(theirs, fs::perms(0755));
    chown_to(theirs, kOther);
    const Ran r = run({TODD_COMMS_EXE, "plugins", "--plugin-dir", t.dir});
    ASSERT_TRUE(r.exited) << r.how() << "\n" << r.output;
    EXPECT_EQ(r.code, 0) << r.output;
    EXPECT_HAS(r.output, t.file);
    EXPECT_HAS(r.output, theirs + ": refused (LOAD-2): " +
                             owned_by_other("file", theirs));

    const Ran info = run({TODD_COMMS_EXE, "info", theirs});
    ASSERT_TRUE(info.exited) << info.how();
    EXPECT_EQ(info.code, 1) << info.output;
    EXPECT_HAS(info.output, "(LOAD-2): file " + theirs + " is owned by uid");

    // Sticky and world-writable above: fine; group-writable without: not.
    fs::permissions(t.up, fs::perms(01777));
    const Ran ok = run({TODD_COMMS_EXE, "info", t.file});
    EXPECT_TRUE(ok.exited && ok.code == 0) << ok.how() << "\n" << ok.output;
    fs::permissions(t.up, fs::perms(0775));
    const Ran no = run({TODD_COMMS_EXE, "info", t.file});
    ASSERT_TRUE(no.exited) << no.how();
    EXPECT_EQ(no.code, 1) << no.output;
    EXPECT_HAS(no.output, "(LOAD-2): directory " + t.up.string() +
                              " is group/world-writable without the sticky");
}

} // namespace
