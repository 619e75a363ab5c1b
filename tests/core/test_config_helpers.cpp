// SPDX-License-Identifier: Apache-2.0
// The helpers every program shares from core/config.hpp: the role fill-in
// (declares_key, fill_in_role) and IniFile::where for error messages.
#include <todd/core/config.hpp>

#include <gtest/gtest.h>

using namespace todd::core;

namespace {

PluginInfo with_keys(std::vector<std::string> names)
{
    PluginInfo info;
    info.name = "t";
    for (auto &n : names) {
        ConfigKeyInfo k;
        k.name = std::move(n);
        info.keys.push_back(std::move(k));
    }
    return info;
}

} // namespace

TEST(RoleFillIn, DeclaresKeyMatchesWholeNames)
{
    PluginInfo info = with_keys({"endpoint", "role"});
    EXPECT_TRUE(declares_key(info, "role"));
    EXPECT_TRUE(declares_key(info, "endpoint"));
    EXPECT_FALSE(declares_key(info, "rol"));
    EXPECT_FALSE(declares_key(with_keys({"roles"}), "role"));
    EXPECT_FALSE(declares_key(with_keys({}), "role"));
}

TEST(RoleFillIn, FillsOnlyAnUnsetDeclaredRole)
{
    PluginInfo info = with_keys({"role"});
    Options opts;
    EXPECT_TRUE(fill_in_role(info, opts, "agent"));
    EXPECT_EQ(opts, (Options{{"role", "agent"}}));

    Options user{{"role", "server"}};
    EXPECT_FALSE(fill_in_role(info, user, "agent")) << "the user's role wins";
    EXPECT_EQ(user, (Options{{"role", "server"}}));

    Options undeclared;
    EXPECT_FALSE(fill_in_role(with_keys({"endpoint"}), undeclared, "agent"));
    EXPECT_TRUE(undeclared.empty()) << "no key the plugin would refuse";

    Options no_role;
    EXPECT_FALSE(fill_in_role(info, no_role, ""));
    EXPECT_TRUE(no_role.empty());
}

TEST(IniWhere, NamesFileAndLine)
{
    IniFile ini =
        parse_ini("[Api]\n\nPort = 1\n; c\nHost = h\n[Empty]\n", "s.cfg");
    EXPECT_EQ(ini.where("api", "port"), "s.cfg:3");
    EXPECT_EQ(ini.where("api", "host"), "s.cfg:5");
    EXPECT_EQ(ini.where("api", "absent"), "s.cfg");
    EXPECT_EQ(ini.where("nosection", "port"), "s.cfg");
    // A section: its first key's line, whatever the keys' order by name.
    EXPECT_EQ(ini.where("api"), "s.cfg:3");
    EXPECT_EQ(ini.where("empty"), "s.cfg");
}
