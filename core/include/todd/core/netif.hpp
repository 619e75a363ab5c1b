// SPDX-License-Identifier: Apache-2.0
// Interface addresses: what todd-agent advertises and todd-server puts in
// asset URLs ([LocalResources] DefaultInterface). Errors follow the
// convention in hash.hpp.
#pragma once

#include <optional>
#include <string>

namespace todd::core {

/**
 * The first IPv4 address (dotted quad) of the interface named ifname, as
 * getifaddrs lists them. std::nullopt when there is no such interface or
 * it has no IPv4 address. Throws std::system_error when getifaddrs fails.
 */
std::optional<std::string> interface_ipv4(const std::string &ifname);

/**
 * The interface of the IPv4 default route (destination and mask 0 in
 * /proc/net/route), std::nullopt when there is none. Throws
 * std::system_error when the route table cannot be read.
 */
std::optional<std::string> default_route_interface();

} // namespace todd::core
