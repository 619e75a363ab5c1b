// SPDX-License-Identifier: Apache-2.0
// Agent identity (a persistent 64-hex UUID) and its default address.
#pragma once

#include <string>

namespace todd::agent {

/** 32 random bytes as 64 lower-case hex digits; never 12 leading digits
 *  (the Go agent's rule). */
std::string generate_uuid();

/** True for 64 lower-case hex digits. */
bool valid_uuid(const std::string &s);

/**
 * The UUID kept in <state_dir>/agent-uuid, created (atomically, mode 0644)
 * on first use so that a restart keeps the identity. Throws
 * std::runtime_error naming the file when it cannot be read or written.
 */
std::string load_or_create_uuid(const std::string &state_dir);

/**
 * DefaultAddr: ip_override verbatim when set; else the first IPv4 of
 * default_interface; else that of the default-route interface (both from
 * core/netif.hpp); else 127.0.0.1. Each fallback is logged as a warning.
 */
std::string derive_default_addr(const std::string &ip_override,
                                const std::string &default_interface);

} // namespace todd::agent
