/* SPDX-License-Identifier: Apache-2.0 */
/* The ABI structs' layout as the C compiler sees it, for test_layout.cpp to
 * compare with C++ and with the frozen x86_64 numbers. */
#include <todd/comms/plugin.h>

#include "layout.h"

#define S(T)                                                                   \
    {                                                                          \
#T, sizeof(T), (size_t)-1, ""                                          \
    }
#define O(T, F)                                                                \
    {                                                                          \
#T, sizeof(T), offsetof(T, F), #F                                      \
    }

static const struct todd_abi_layout rows[] = {
#include "layout_rows.h"
};

const struct todd_abi_layout *todd_abi_layout_c(size_t *count)
{
    *count = sizeof rows / sizeof rows[0];
    return rows;
}
