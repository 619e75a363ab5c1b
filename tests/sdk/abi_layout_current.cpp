// SPDX-License-Identifier: Apache-2.0
// The v1 layout table as seen through the current headers (see abi_fields.inc).
#include "abi_layout.hpp"

#include <todd/comms/plugin.h>

#include <cstddef>

namespace abi_layout {

std::vector<Row> current()
{
    std::vector<Row> t;
#define ABI_STRUCT(T) t.push_back({Row::Struct, #T, sizeof(T), alignof(T)});
#define ABI_FIELD(T, f)                                                        \
    t.push_back({Row::Field, #T "." #f, offsetof(T, f), sizeof(T::f)});
#define ABI_CONST(C)                                                           \
    t.push_back({Row::Constant, #C, static_cast<uint64_t>(C), 0});
#include "abi_fields.inc"
#undef ABI_STRUCT
#undef ABI_FIELD
#undef ABI_CONST
    return t;
}

int current_minor()
{
    return TODD_COMMS_ABI_MINOR;
}

} // namespace abi_layout
