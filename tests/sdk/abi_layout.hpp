// SPDX-License-Identifier: Apache-2.0
// Layout tables of the v1 ABI, computed in two translation units: one
// compiled against the frozen v1.0 headers, one against the current SDK.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace abi_layout {

/** One row: a struct (size), a field (offset, size) or a constant. */
struct Row {
    enum Kind { Struct, Field, Constant } kind;
    std::string name; // "todd_comms_message" or "todd_comms_message.flags"
    uint64_t a;       // sizeof, offsetof or value
    uint64_t b;       // alignof, sizeof field, or 0
};

/** Table as compiled against tests/abi/v1.0. */
std::vector<Row> frozen();
/** Table as compiled against plugin-sdk/include. */
std::vector<Row> current();
/** TODD_COMMS_ABI_MINOR of each side. */
int frozen_minor();
int current_minor();

} // namespace abi_layout
