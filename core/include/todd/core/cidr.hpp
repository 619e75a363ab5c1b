// SPDX-License-Identifier: Apache-2.0
// IPv4 and IPv6 networks ("10.0.0.0/8", "fd00::/8"): a group's
// within_subnet, checked by the todd CLI and matched by the server.
// Errors follow the convention in hash.hpp: bad text throws
// std::invalid_argument naming it and why.
#pragma once

#include <array>
#include <string>
#include <string_view>

namespace todd::core {

/** An IPv4 or IPv6 network: an address and a prefix length. */
struct Cidr {
    /** An IPv6 network (addr holds 16 bytes); else IPv4 (the first 4). */
    bool v6 = false;
    /** The address as written, network byte order; host bits are kept, as
     *  Go's net.ParseCIDR accepts "10.1.2.3/8". */
    std::array<unsigned char, 16> addr{};
    /** Prefix length: 0-32 for IPv4, 0-128 for IPv6. */
    int prefix = 0;

    /**
     * Parse "ADDRESS/N" as Go's net.ParseCIDR does: an IPv4 dotted quad or
     * an IPv6 address, N decimal (at most 3 digits) within the family's
     * range. Throws std::invalid_argument, what() = `invalid CIDR "TEXT":
     * WHY`, for anything else.
     */
    static Cidr parse(std::string_view text);

    /**
     * True when the address text (IPv4, or IPv6 with an optional %zone) is
     * inside this network. An IPv4-mapped IPv6 address counts as its IPv4
     * address, as in Go. Text that is no address is inside no network.
     */
    bool contains(std::string_view address) const;
};

} // namespace todd::core
