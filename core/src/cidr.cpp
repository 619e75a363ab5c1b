// SPDX-License-Identifier: Apache-2.0
#include <todd/core/cidr.hpp>

#include <arpa/inet.h>

#include <cstring>
#include <stdexcept>

namespace todd::core {

namespace {

[[noreturn]] void refuse(std::string_view text, const std::string &why)
{
    throw std::invalid_argument("invalid CIDR \"" + std::string(text) +
                                "\": " + why);
}

} // namespace

Cidr Cidr::parse(std::string_view text)
{
    auto slash = text.find('/');
    if (slash == std::string_view::npos)
        refuse(text, "no /prefix-length (such as 10.0.0.0/8 or fd00::/8)");
    std::string ip(text.substr(0, slash));
    std::string_view bits = text.substr(slash + 1);
    if (bits.empty() || bits.size() > 3 ||
        bits.find_first_not_of("0123456789") != std::string_view::npos)
        refuse(text, "prefix length \"" + std::string(bits) +
                         "\" is not a number from 0 to 128");
    Cidr c;
    for (char d : bits)
        c.prefix = c.prefix * 10 + (d - '0');
    if (inet_pton(AF_INET, ip.c_str(), c.addr.data()) == 1) {
        if (c.prefix > 32)
            refuse(text, "prefix length " + std::to_string(c.prefix) +
                             " is over 32 for an IPv4 address");
    } else if (inet_pton(AF_INET6, ip.c_str(), c.addr.data()) == 1) {
        c.v6 = true;
        if (c.prefix > 128)
            refuse(text, "prefix length " + std::to_string(c.prefix) +
                             " is over 128 for an IPv6 address");
    } else {
        refuse(text, "\"" + ip + "\" is not an IPv4 or IPv6 address");
    }
    return c;
}

bool Cidr::contains(std::string_view address) const
{
    std::string a(address.substr(0, address.find('%')));
    std::array<unsigned char, 16> ip{};
    const unsigned char *bytes = nullptr;
    if (!v6) {
        if (inet_pton(AF_INET, a.c_str(), ip.data()) == 1) {
            bytes = ip.data();
        } else if (inet_pton(AF_INET6, a.c_str(), ip.data()) == 1) {
            static const unsigned char mapped[12] = {0, 0, 0, 0, 0,    0,
                                                     0, 0, 0, 0, 0xff, 0xff};
            if (std::memcmp(ip.data(), mapped, 12) != 0)
                return false;
            bytes = ip.data() + 12;
        } else {
            return false;
        }
    } else {
        if (inet_pton(AF_INET6, a.c_str(), ip.data()) != 1)
            return false;
        bytes = ip.data();
    }
    int full = prefix / 8, rest = prefix % 8;
    if (std::memcmp(bytes, addr.data(), static_cast<size_t>(full)) != 0)
        return false;
    if (rest) {
        auto mask = static_cast<unsigned char>(0xff << (8 - rest));
        if ((bytes[full] & mask) != (addr[static_cast<size_t>(full)] & mask))
            return false;
    }
    return true;
}

} // namespace todd::core
