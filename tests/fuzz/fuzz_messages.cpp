// SPDX-License-Identifier: Apache-2.0
// ToDD messages as they arrive from the transport: every input goes to the
// advert, task and response decoders (core/src/messages.cpp). A decoder may
// refuse with DecodeError; anything else escaping is a bug, and whatever it
// accepts must survive encode -> decode unchanged.
#include "fuzz_common.hpp"

#include <todd/core/messages.hpp>

namespace msg = todd::msg;
using todd::fuzz::check;

namespace {

template <class T, class Decode> void round_trip(const T &first, Decode decode)
{
    const std::string text = msg::encode(first);
    T again;
    try {
        again = decode(text);
    } catch (const msg::DecodeError &) {
        todd::fuzz::fail("an accepted message re-encodes to one refused");
    }
    check(again == first, "encode -> decode changed an accepted message");
    check(msg::encode(again) == text, "encoding is not stable");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const std::string_view in = todd::fuzz::as_text(data, size);
    try {
        round_trip(msg::decode_advert(in), msg::decode_advert);
    } catch (const msg::DecodeError &) {
    }
    try {
        const msg::Task t = msg::decode_task(in);
        check(!msg::type_name(t).empty(), "task without a type name");
        round_trip(t, msg::decode_task);
    } catch (const msg::DecodeError &) {
    }
    try {
        round_trip(msg::decode_response(in), msg::decode_response);
    } catch (const msg::DecodeError &) {
    }
    return 0;
}
