// SPDX-License-Identifier: Apache-2.0
// RapidJSON, included in one place. Its 1.1.0 headers trip warnings of
// newer compilers (-Wclass-memaccess and friends), which -Werror would turn
// into errors in code that is not ours.
#pragma once

#if defined(__GNUC__)
#pragma GCC system_header
#endif

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
