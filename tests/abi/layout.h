/* SPDX-License-Identifier: Apache-2.0 */
#ifndef TODD_TEST_ABI_LAYOUT_H
#define TODD_TEST_ABI_LAYOUT_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif
/** One sizeof (offset == (size_t)-1) or offsetof measurement. */
struct todd_abi_layout {
    const char *type;
    size_t size;
    size_t offset;
    const char *field;
};
const struct todd_abi_layout *todd_abi_layout_c(size_t *count);
#ifdef __cplusplus
}
#endif
#endif
