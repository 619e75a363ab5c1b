// SPDX-License-Identifier: Apache-2.0
// core/netif.hpp against this machine's real interfaces and routes.
#include <todd/core/netif.hpp>

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <net/if.h>

using namespace todd::core;

TEST(Netif, LoopbackHasItsAddress)
{
    if (::if_nametoindex("lo") == 0)
        GTEST_SKIP() << "no interface lo here";
    EXPECT_EQ(interface_ipv4("lo"), std::optional<std::string>("127.0.0.1"));
}

TEST(Netif, UnknownInterfaceHasNone)
{
    ASSERT_EQ(::if_nametoindex("toddnosuch0"), 0u);
    EXPECT_EQ(interface_ipv4("toddnosuch0"), std::nullopt);
    EXPECT_EQ(interface_ipv4(""), std::nullopt);
}

TEST(Netif, EveryInterfaceGivesNoneOrADottedQuad)
{
    struct if_nameindex *list = ::if_nameindex();
    ASSERT_NE(list, nullptr);
    for (auto *i = list; i->if_index != 0; ++i) {
        auto a = interface_ipv4(i->if_name);
        if (!a)
            continue;
        in_addr parsed{};
        EXPECT_EQ(::inet_pton(AF_INET, a->c_str(), &parsed), 1)
            << i->if_name << " -> " << *a;
    }
    ::if_freenameindex(list);
}

TEST(Netif, DefaultRouteInterfaceExists)
{
    auto iface = default_route_interface();
    if (!iface)
        GTEST_SKIP() << "no IPv4 default route here";
    EXPECT_NE(::if_nametoindex(iface->c_str()), 0u) << *iface;
}
