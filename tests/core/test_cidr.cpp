// SPDX-License-Identifier: Apache-2.0
// core/cidr.hpp: parsing as Go's net.ParseCIDR accepts, membership for
// IPv4 and IPv6 at the edges (/0, /32, /128, a prefix inside a byte), and
// bad text refused with a message naming it and why.
#include <todd/core/cidr.hpp>

#include <gtest/gtest.h>

#include <stdexcept>

using todd::core::Cidr;

namespace {

/** The what() of parsing text, or "<accepted>". */
std::string refusal(const std::string &text)
{
    try {
        Cidr::parse(text);
    } catch (const std::invalid_argument &e) {
        return e.what();
    }
    return "<accepted>";
}

} // namespace

TEST(Cidr, ParsesBothFamilies)
{
    Cidr v4 = Cidr::parse("10.1.2.3/8");
    EXPECT_FALSE(v4.v6);
    EXPECT_EQ(v4.prefix, 8);
    EXPECT_EQ((std::vector<int>(v4.addr.begin(), v4.addr.begin() + 4)),
              (std::vector<int>{10, 1, 2, 3}))
        << "host bits are kept, as Go's net.ParseCIDR keeps them";
    Cidr v6 = Cidr::parse("fd00::1/128");
    EXPECT_TRUE(v6.v6);
    EXPECT_EQ(v6.prefix, 128);
    EXPECT_EQ(v6.addr[0], 0xfd);
    EXPECT_EQ(v6.addr[15], 1);
}

TEST(Cidr, Membership)
{
    struct Case {
        const char *network, *address;
        bool inside;
    };
    for (const Case &c : std::vector<Case>{
             {"10.0.0.0/8", "10.0.0.0", true},
             {"10.0.0.0/8", "10.255.1.2", true},
             {"10.0.0.0/8", "11.0.0.0", false},
             {"10.0.0.0/8", "9.255.255.255", false},
             {"10.1.2.3/8", "10.9.9.9", true}, // host bits ignored
             // A prefix inside a byte.
             {"10.16.0.0/12", "10.31.255.255", true},
             {"10.16.0.0/12", "10.32.0.0", false},
             {"10.16.0.0/12", "10.15.255.255", false},
             // IPv4 /0 and /32.
             {"0.0.0.0/0", "0.0.0.0", true},
             {"0.0.0.0/0", "255.255.255.255", true},
             {"0.0.0.0/0", "::1", false}, // IPv6 is no IPv4
             {"192.168.1.7/32", "192.168.1.7", true},
             {"192.168.1.7/32", "192.168.1.6", false},
             {"192.168.1.7/32", "192.168.1.8", false},
             // IPv4-mapped IPv6 counts as IPv4, as in Go.
             {"10.0.0.0/8", "::ffff:10.1.2.3", true},
             {"10.0.0.0/8", "::ffff:11.1.2.3", false},
             {"10.0.0.0/8", "::a01:203", false}, // not mapped
             // IPv6.
             {"fd00::/8", "fd12:3456::1", true},
             {"fd00::/8", "fd00::1%eth0", true}, // the zone is ignored
             {"fd00::/8", "fe80::1", false},
             {"fd00::/8", "253.0.0.1", false}, // IPv4 is no IPv6
             {"2001:db8:8000::/33", "2001:db8:ffff::1", true},
             {"2001:db8:8000::/33", "2001:db8:7fff::1", false},
             // IPv6 /0 and /128.
             {"::/0", "::", true},
             {"::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true},
             {"::/0", "1.2.3.4", false},
             {"::1/128", "::1", true},
             {"::1/128", "0:0:0:0:0:0:0:1", true},
             {"::1/128", "::2", false},
             {"::1/128", "::", false},
             // Text that is no address is inside nothing.
             {"0.0.0.0/0", "", false},
             {"0.0.0.0/0", "banana", false},
             {"0.0.0.0/0", "10.0.0", false},
         })
        EXPECT_EQ(Cidr::parse(c.network).contains(c.address), c.inside)
            << c.network << " contains " << c.address;
}

TEST(Cidr, BadTextIsRefusedNamingItAndWhy)
{
    struct Case {
        std::string text, why;
    };
    for (const Case &c : std::vector<Case>{
             {"", "no /prefix-length"},
             {"127.0.0.1", "no /prefix-length"},
             {"127.0.0.0/", "prefix length \"\" is not a number"},
             {"127.0.0.0/x", "prefix length \"x\" is not a number"},
             {"127.0.0.0/-1", "prefix length \"-1\" is not a number"},
             {"127.0.0.0/ 8", "prefix length \" 8\" is not a number"},
             {"127.0.0.0/0008", "prefix length \"0008\" is not a number"},
             {"10.0.0.0/33", "prefix length 33 is over 32 for an IPv4"},
             {"::1/129", "prefix length 129 is over 128 for an IPv6"},
             {"10.0.0/8", "\"10.0.0\" is not an IPv4 or IPv6 address"},
             {"/8", "\"\" is not an IPv4 or IPv6 address"},
             {"banana/8", "\"banana\" is not an IPv4 or IPv6 address"},
             {"10.0.0.0/8/8", "prefix length \"8/8\" is not a number"},
         }) {
        std::string what = refusal(c.text);
        EXPECT_EQ(what.rfind("invalid CIDR \"" + c.text + "\": ", 0), 0u)
            << c.text << " -> " << what;
        EXPECT_NE(what.find(c.why), std::string::npos)
            << c.text << " -> " << what;
    }
}
