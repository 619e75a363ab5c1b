// SPDX-License-Identifier: Apache-2.0
// Run once per built plugin (TODD_TEST_PLUGIN=path): it loads with RTLD_NOW,
// passes every LOAD rule, and its dynamic symbol table defines only entry
// symbols (todd_comms_plugin_entry_vN).
#include <todd/core/plugin_registry.hpp>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <dlfcn.h>
#include <sstream>

namespace {

std::string plugin_path()
{
    const char *p = std::getenv("TODD_TEST_PLUGIN");
    return p ? p : "";
}

/** todd_comms_plugin_entry_v<digits> */
bool is_entry(const std::string &name)
{
    const std::string prefix = "todd_comms_plugin_entry_v";
    return name.size() > prefix.size() &&
           name.compare(0, prefix.size(), prefix) == 0 &&
           name.find_first_not_of("0123456789", prefix.size()) ==
               std::string::npos;
}

TEST(PluginExports, LoadsWithRtldNow)
{
    const std::string path = plugin_path();
    ASSERT_FALSE(path.empty()) << "TODD_TEST_PLUGIN not set";
    void *h = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    ASSERT_NE(h, nullptr) << ::dlerror();
    EXPECT_NE(::dlsym(h, "todd_comms_plugin_entry_v1"), nullptr);
    // Never dlclose a plugin (the host does not either).
}

TEST(PluginExports, PassesEveryLoadRule)
{
    auto p = todd::core::PluginRegistry({}).load(plugin_path());
    EXPECT_EQ(p->info().name, std::getenv("TODD_TEST_PLUGIN_NAME"));
}

TEST(PluginExports, DynamicSymbolTableHasOnlyEntrySymbols)
{
    const std::string cmd =
        std::string(NM_PATH) + " -D --defined-only '" + plugin_path() + "'";
    FILE *f = ::popen(cmd.c_str(), "r");
    ASSERT_NE(f, nullptr);
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0)
        out.append(buf, n);
    ASSERT_EQ(::pclose(f), 0) << cmd << "\n" << out;
    std::istringstream lines(out);
    std::string line;
    int entries = 0;
    while (std::getline(lines, line)) {
        std::istringstream fields(line);
        std::string addr, type, name;
        fields >> addr >> type >> name;
        if (name.empty())
            continue;
        EXPECT_TRUE(is_entry(name)) << "exported: " << line;
        ++entries;
    }
    EXPECT_GE(entries, 1) << out;
}

} // namespace
