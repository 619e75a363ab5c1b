// SPDX-License-Identifier: Apache-2.0
// RFC 3339 times as Go's time package formats and parses them.
#include <todd/core/messages.hpp>

#include "messages_text.hpp"

#include <cstdio>
#include <limits>

namespace todd::msg {
namespace {

using detail::excerpt;

// --------------------------------------------------------------------------
// Time

constexpr int64_t ns_per_s = 1'000'000'000;
constexpr int64_t s_per_day = 86'400;

/** Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const auto yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

void civil_from_days(int64_t z, int64_t &y, unsigned &m, unsigned &d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const auto doe = static_cast<unsigned>(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    y = static_cast<int64_t>(yoe) + era * 400 + (m <= 2);
}

bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

unsigned days_in_month(int64_t y, unsigned m)
{
    static constexpr unsigned dm[] = {31, 28, 31, 30, 31, 30,
                                      31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : dm[m - 1];
}

} // namespace

std::string format_rfc3339(Time t)
{
    if (t == Time::min()) // stands for Go's zero time.Time
        return "0001-01-01T00:00:00Z";
    const int64_t ns = t.time_since_epoch().count();
    int64_t secs = ns / ns_per_s, frac = ns % ns_per_s;
    if (frac < 0) {
        frac += ns_per_s;
        --secs;
    }
    int64_t days = secs / s_per_day, sod = secs % s_per_day;
    if (sod < 0) {
        sod += s_per_day;
        --days;
    }
    int64_t y;
    unsigned m, d;
    civil_from_days(days, y, m, d);
    char buf[48];
    int n = std::snprintf(
        buf, sizeof buf, "%04lld-%02u-%02uT%02d:%02d:%02d",
        static_cast<long long>(y), m, d, static_cast<int>(sod / 3600),
        static_cast<int>(sod / 60 % 60), static_cast<int>(sod % 60));
    std::string out(buf, static_cast<size_t>(n));
    if (frac != 0) {
        char f[16];
        std::snprintf(f, sizeof f, ".%09lld", static_cast<long long>(frac));
        std::string fs(f);
        while (fs.back() == '0')
            fs.pop_back();
        out += fs;
    }
    out += 'Z';
    return out;
}

Time parse_rfc3339(std::string_view text)
{
    const auto bad = [&](const std::string &why) -> DecodeError {
        return DecodeError("time " + excerpt(text) +
                           " is not RFC 3339: " + why);
    };
    const auto digit = [&](size_t i) {
        return i < text.size() && text[i] >= '0' && text[i] <= '9';
    };
    const auto num = [&](size_t i, size_t n, const char *what) -> int64_t {
        int64_t v = 0;
        for (size_t k = 0; k < n; ++k) {
            if (!digit(i + k))
                throw bad(std::string("expected ") + std::to_string(n) +
                          "-digit " + what + " at byte " +
                          std::to_string(i + k));
            v = v * 10 + (text[i + k] - '0');
        }
        return v;
    };
    const auto expect = [&](size_t i, char c) {
        if (i >= text.size() || text[i] != c)
            throw bad(std::string("expected '") + c + "' at byte " +
                      std::to_string(i));
    };
    const int64_t year = num(0, 4, "year");
    expect(4, '-');
    const auto month = static_cast<unsigned>(num(5, 2, "month"));
    expect(7, '-');
    const auto day = static_cast<unsigned>(num(8, 2, "day"));
    expect(10, 'T');
    const int64_t hour = num(11, 2, "hour");
    expect(13, ':');
    const int64_t min = num(14, 2, "minute");
    expect(16, ':');
    const int64_t sec = num(17, 2, "second");
    if (month < 1 || month > 12)
        throw bad("month out of range");
    if (day < 1 || day > days_in_month(year, month))
        throw bad("day out of range");
    if (hour > 23)
        throw bad("hour out of range");
    if (min > 59)
        throw bad("minute out of range");
    if (sec > 59)
        throw bad("second out of range");
    size_t i = 19;
    int64_t frac = 0;
    if (i < text.size() && text[i] == '.' && digit(i + 1)) {
        ++i;
        int nd = 0;
        for (; digit(i); ++i, ++nd)
            if (nd < 9) // digits beyond nanoseconds are dropped
                frac = frac * 10 + (text[i] - '0');
        for (; nd < 9; ++nd)
            frac *= 10;
    }
    int64_t offset = 0;
    if (i < text.size() && text[i] == 'Z') {
        ++i;
    } else if (i < text.size() && (text[i] == '+' || text[i] == '-')) {
        const int sign = text[i] == '-' ? -1 : 1;
        const int64_t oh = num(i + 1, 2, "zone hour");
        expect(i + 3, ':');
        const int64_t om = num(i + 4, 2, "zone minute");
        if (oh > 23 || om > 59)
            throw bad("time zone offset out of range");
        offset = sign * (oh * 3600 + om * 60);
        i += 6;
    } else {
        throw bad("expected 'Z' or a zone offset like +01:00 at byte " +
                  std::to_string(i));
    }
    if (i != text.size())
        throw bad("extra text after the time at byte " + std::to_string(i));

    const int64_t secs = days_from_civil(year, month, day) * s_per_day +
                         hour * 3600 + min * 60 + sec - offset;
    // int64 nanoseconds span 1677..2262; outside that we saturate (the
    // minimum re-encodes as Go's zero time, 0001-01-01T00:00:00Z).
    constexpr int64_t lim = std::numeric_limits<int64_t>::max() / ns_per_s;
    if (secs < -lim)
        return Time::min();
    if (secs >= lim)
        return Time::max();
    return Time(std::chrono::nanoseconds(secs * ns_per_s + frac));
}

} // namespace todd::msg
