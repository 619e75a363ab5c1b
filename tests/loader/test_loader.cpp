// SPDX-License-Identifier: Apache-2.0
// The registry against real broken .so files (fixtures/broken.c): each one
// is refused with one line naming the file and the rule it breaks.
#include <todd/core/log.hpp>
#include <todd/core/plugin_registry.hpp>
#include <todd/core/transport.hpp>

#include "temp_dir.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <unistd.h>

using namespace todd::core;
namespace fs = std::filesystem;

namespace {

std::string fixture(const std::string &name)
{
    return std::string(FIXTURE_DIR) + "/libtodd-comms-" + name + ".so";
}

/** The PluginError text of loading this path; fails the test if it loads. */
std::string refusal(const std::string &path)
{
    try {
        PluginRegistry({}).load(path);
    } catch (const PluginError &e) {
        return e.what();
    }
    ADD_FAILURE() << path << " was accepted";
    return {};
}

#define EXPECT_HAS(text, needle)                                               \
    EXPECT_NE(std::string(text).find(needle), std::string::npos)               \
        << "missing \"" << (needle) << "\" in: " << (text)

/** A fresh private directory (mode 0700), removed at the end of the test. */
class TempDir : public todd::test::TempDir {
  public:
    TempDir() : todd::test::TempDir("todd-loader"), path_(base_path()) {}
    const fs::path &path() const { return path_; }
    /** Copy a fixture in as libtodd-comms-<as>.so, mode 0755. */
    std::string add(const std::string &fixture_name,
                    const std::string &as) const
    {
        fs::path to = path_ / ("libtodd-comms-" + as + ".so");
        fs::copy_file(fixture(fixture_name), to);
        fs::permissions(to, fs::perms(0755));
        return to.string();
    }

  private:
    std::string base_path() const { return todd::test::TempDir::path(); }
    fs::path path_;
};

struct Case {
    const char *fixture, *rule, *detail;
};

TEST(Loader, EachBrokenFixtureIsRefusedNamingFileAndRule)
{
    const Case cases[] = {
        {"noentry", "LOAD-4", "no entry symbol todd_comms_plugin_entry_v1"},
        {"v2only", "LOAD-4", "exports only todd_comms_plugin_entry_v2"},
        {"null", "LOAD-5", "returned NULL"},
        {"major2", "LOAD-6", "ABI major 2, host speaks 1"},
        {"small", "LOAD-7", "smaller than the ABI 1.0 descriptor"},
        {"nofn", "LOAD-8", "mandatory function 'publish' is NULL"},
        {"newer", "LOAD-9", "needs host ABI minor 7, host is 1.0"},
        {"mismatch", "LOAD-10",
         "'someone-else' does not match the file name ('mismatch')"},
        {"badkey", "LOAD-11", "'Bad-Key' is not [a-z0-9_]+"},
        {"baddefault", "LOAD-11",
         "config key 'port': default 'many' is not a valid int"},
        {"nolicense", "LOAD-11", "descriptor field 'license' is NULL"},
        {"undef", "LOAD-3", "undefined symbol: todd_fixture_missing_symbol"},
    };
    for (const auto &c : cases) {
        SCOPED_TRACE(c.fixture);
        const std::string path = fs::canonical(fixture(c.fixture)).string();
        const std::string msg = refusal(path);
        EXPECT_EQ(msg.rfind(path + ": refused (" + c.rule + "): ", 0), 0u)
            << msg;
        EXPECT_HAS(msg, c.detail);
    }
}

TEST(Loader, ValidFixtureLoadsWithItsMetadata)
{
    auto p = PluginRegistry({FIXTURE_DIR}).load("good");
    EXPECT_EQ(p->info().name, "good");
    EXPECT_EQ(p->info().path, fs::canonical(fixture("good")).string());
    ASSERT_EQ(p->info().keys.size(), 1u);
    EXPECT_EQ(p->info().keys[0].name, "greeting");
    EXPECT_EQ(p->info().keys[0].default_value.value_or(""), "hello");
    // Loaded once per file: the same object comes back.
    EXPECT_EQ(PluginRegistry({FIXTURE_DIR}).load(fixture("good")).get(),
              p.get());
}

TEST(Loader, CreateThatThrowsIsContained)
{
    auto p = PluginRegistry({FIXTURE_DIR}).load("throws");
    std::mutex m;
    std::vector<std::string> lines;
    auto prev = todd::log::set_sink(
        [&](todd::log::Level, std::string_view c, std::string_view msg) {
            std::lock_guard lock(m);
            lines.push_back(std::string(c) + ": " + std::string(msg));
        });
    try {
        Transport::create(p, {});
        ADD_FAILURE() << "create succeeded";
    } catch (const CommsError &e) {
        EXPECT_EQ(e.status(), TODD_COMMS_E_INTERNAL);
        EXPECT_HAS(e.what(), "throws: create failed: internal error");
        EXPECT_HAS(e.what(), "constructor exploded on purpose");
    }
    todd::log::set_sink(prev);
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_HAS(lines[0], "throws: create: unexpected exception: constructor "
                         "exploded on purpose");
}

TEST(Loader, NotElfIsRefusedBeforeDlopen)
{
    TempDir d;
    fs::path f = d.path() / "libtodd-comms-notelf.so";
    std::ofstream(f) << std::string(4096, '#') << "\nnot a shared object\n";
    fs::permissions(f, fs::perms(0644));
    const std::string msg = refusal(f.string());
    EXPECT_HAS(msg, f.string() +
                        ": refused (LOAD-3): not a complete ELF shared object "
                        "for this host: no ELF magic number");
}

TEST(Loader, WorldWritableDirectoryIsRefused)
{
    TempDir d;
    const std::string f = d.add("good", "good");
    fs::permissions(d.path(), fs::perms(0777));
    const std::string msg = refusal(f);
    EXPECT_HAS(msg, f + ": refused (LOAD-2): directory " +
                        fs::canonical(d.path()).string() +
                        " is group/world-writable (owner uid " +
                        std::to_string(geteuid()) + ", mode 0777)");
}

TEST(Loader, GroupWritableFileIsRefused)
{
    TempDir d;
    const std::string f = d.add("good", "good");
    fs::permissions(f, fs::perms(0775));
    EXPECT_HAS(refusal(f), f + ": refused (LOAD-2): file " +
                               fs::canonical(f).string() +
                               " is group/world-writable (owner uid " +
                               std::to_string(geteuid()) + ", mode 0775)");
}

TEST(Loader, SymlinkIsRefused)
{
    TempDir d;
    fs::path link = d.path() / "libtodd-comms-good.so";
    fs::create_symlink(fs::canonical(fixture("good")), link);
    EXPECT_HAS(refusal(link.string()),
               link.string() + ": refused (LOAD-1): is a symbolic link");
    // Also when found by name.
    try {
        PluginRegistry({d.path().string()}).load("good");
        ADD_FAILURE() << "symlink accepted";
    } catch (const PluginError &e) {
        EXPECT_HAS(e.what(), "(LOAD-1)");
    }
}

TEST(Loader, BadFileNamesAreRefused)
{
    TempDir d;
    const std::string f = d.add("good", "Good");
    EXPECT_HAS(refusal(f),
               "(LOAD-1): file name must be libtodd-comms-<name>.so");
    EXPECT_HAS(refusal(fixture("good") + ".bak"), "(LOAD-1)");
    try {
        PluginRegistry({}).load("no such");
        ADD_FAILURE();
    } catch (const PluginError &e) {
        EXPECT_HAS(e.what(), "invalid plugin name 'no such'");
    }
}

TEST(Loader, NotFoundNamesTheSearchPath)
{
    TempDir d;
    try {
        PluginRegistry({d.path().string()}).load("absent");
        ADD_FAILURE();
    } catch (const PluginError &e) {
        EXPECT_HAS(e.what(),
                   "no plugin named 'absent' (libtodd-comms-absent.so)");
        EXPECT_HAS(e.what(), d.path().string());
    }
}

TEST(Loader, ScanListsPluginsAndRefusalsIgnoresOtherFiles)
{
    TempDir d;
    d.add("good", "good");
    d.add("major2", "major2");
    std::ofstream(d.path() / "README") << "not a plugin\n";
    std::ofstream(d.path() / "libtodd-comms-notelf.so") << "nope\n";
    fs::permissions(d.path() / "libtodd-comms-notelf.so", fs::perms(0644));
    fs::create_symlink(fs::canonical(fixture("good")),
                       d.path() / "libtodd-comms-link.so");
    ScanResult r = PluginRegistry({d.path().string()}).scan();
    ASSERT_EQ(r.plugins.size(), 1u);
    EXPECT_EQ(r.plugins[0].name, "good");
    ASSERT_EQ(r.refused.size(), 3u);
    // Sorted by file name: link, major2, notelf.
    EXPECT_EQ(r.refused[0].rule, "LOAD-1");
    EXPECT_EQ(r.refused[1].rule, "LOAD-6");
    EXPECT_EQ(r.refused[2].rule, "LOAD-3");
    for (const auto &f : r.refused)
        EXPECT_EQ(f.message.rfind(f.path + ": refused (" + f.rule + "): ", 0),
                  0u)
            << f.message;
}

TEST(Loader, FirstDirectoryInTheSearchPathWins)
{
    TempDir a, b;
    a.add("good", "good");
    b.add("good", "good");
    auto canon = [](const fs::path &p) { return fs::canonical(p).string(); };
    EXPECT_EQ(PluginRegistry({a.path().string(), b.path().string()})
                  .load("good")
                  ->info()
                  .path,
              canon(a.path()) + "/libtodd-comms-good.so");
    EXPECT_EQ(PluginRegistry({b.path().string(), a.path().string()})
                  .load("good")
                  ->info()
                  .path,
              canon(b.path()) + "/libtodd-comms-good.so");
    ScanResult r =
        PluginRegistry({b.path().string(), a.path().string()}).scan();
    ASSERT_EQ(r.plugins.size(), 1u);
    EXPECT_EQ(r.plugins[0].path, canon(b.path()) + "/libtodd-comms-good.so");
}

TEST(Loader, SearchPathOrderCliThenEnvironmentThenInstallDir)
{
    ::setenv("TODD_COMMS_PLUGIN_PATH", "/env/one::/env/two", 1);
    std::vector<std::string> expect = {"/cli/a", "/cli/b", "/env/one",
                                       "/env/two", default_plugin_dir()};
    EXPECT_EQ(plugin_search_path({"/cli/a", "/cli/b"}), expect);
    ::unsetenv("TODD_COMMS_PLUGIN_PATH");
    expect = {"/cli/a", default_plugin_dir()};
    EXPECT_EQ(plugin_search_path({"/cli/a"}), expect);
}

TEST(Loader, EnvironmentPathFindsPlugins)
{
    TempDir d;
    d.add("good", "good");
    ::setenv("TODD_COMMS_PLUGIN_PATH", d.path().c_str(), 1);
    auto p = PluginRegistry(plugin_search_path({})).load("good");
    ::unsetenv("TODD_COMMS_PLUGIN_PATH");
    EXPECT_EQ(p->info().path,
              fs::canonical(d.path()).string() + "/libtodd-comms-good.so");
}

TEST(Loader, TextForms)
{
    EXPECT_EQ(capabilities_string(0), "none");
    EXPECT_EQ(capabilities_string(TODD_COMMS_CAP_ACK | TODD_COMMS_CAP_BATCH |
                                  (1ull << 40)),
              "ack,batch,0x10000000000");
    EXPECT_EQ(config_type_name(TODD_COMMS_CFG_SECRET), "secret");
    EXPECT_EQ(config_type_name(99), "unknown(99)");
}

TEST(Loader, ValidateOptions)
{
    PluginInfo info;
    info.name = "p";
    info.keys = {
        {"host", TODD_COMMS_CFG_STRING, false, std::string("localhost"), ""},
        {"port", TODD_COMMS_CFG_INT, false, std::string("5672"), ""},
        {"tls", TODD_COMMS_CFG_BOOL, false, std::nullopt, ""},
        {"user", TODD_COMMS_CFG_STRING, true, std::nullopt, "who"}};
    Options o = validate_options(info, {{"user", "u"}, {"tls", "yes"}});
    Options expect = {
        {"host", "localhost"}, {"port", "5672"}, {"tls", "yes"}, {"user", "u"}};
    EXPECT_EQ(o, expect);
    auto refused = [&](const Options &given, const std::string &needle) {
        try {
            validate_options(info, given);
            ADD_FAILURE() << "accepted";
        } catch (const CommsError &e) {
            EXPECT_EQ(e.status(), TODD_COMMS_E_CONFIG);
            EXPECT_HAS(e.what(), needle);
        }
    };
    refused({{"user", "u"}, {"colour", "red"}},
            "unknown configuration key 'colour'");
    refused({{"user", "u"}, {"port", "12x"}},
            "'port' of plugin 'p' must be an integer, got '12x'");
    refused({{"user", "u"}, {"tls", "maybe"}},
            "'tls' of plugin 'p' must be a boolean");
    refused({}, "missing required configuration key 'user'");
}

} // namespace
