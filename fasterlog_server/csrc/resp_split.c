/* The fast path of the server's RESP reader: see resp_split.h. */
#include "resp_split.h"

#include <string.h>

/* A canonical decimal ("0" or no leading zero, digits only) ending at a CR followed by LF,
 * starting at p (inside [p, end)); its value, at most `maximum`, and the position after the
 * LF. Returns 0 when the line is not that (including when it has not fully arrived). */
static int canonical_line(const char *p, const char *end, uint64_t maximum, uint64_t *value_out,
                          const char **next_out) {
    /* 20 digits would overflow the check below; the limits are 32-bit anyway. */
    const char *digits = p;
    uint64_t value = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        if (p - digits >= 10)
            return 0;
        value = value * 10 + (uint64_t)(*p - '0');
        p++;
    }
    if (p == digits || (p - digits > 1 && *digits == '0') || value > maximum)
        return 0;
    if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
        return 0;
    *value_out = value;
    *next_out = p + 2;
    return 1;
}

void rs_split(const char *buffer, size_t size, uint32_t bulk_size_max_bytes,
              uint32_t arguments_count_max, uint32_t commands_max, uint32_t arguments_max,
              uint32_t *counts, uint32_t *bounds, rs_split_result *result) {
    if (size > UINT32_MAX)
        size = UINT32_MAX;
    const char *const end = buffer + size;
    const char *command = buffer;
    uint32_t commands_count = 0, arguments_count = 0;
    while (commands_count < commands_max && command < end && *command == '*') {
        uint64_t count;
        const char *p;
        if (!canonical_line(command + 1, end, arguments_count_max, &count, &p) || count == 0)
            break;
        if (count > arguments_max - arguments_count)
            break;
        uint32_t taken = 0;
        uint32_t *argument = bounds + 2 * (size_t)arguments_count;
        while (taken < count) {
            uint64_t length;
            if (p >= end || *p != '$' ||
                !canonical_line(p + 1, end, bulk_size_max_bytes, &length, &p))
                break;
            if ((uint64_t)(end - p) < length + 2 || p[length] != '\r' || p[length + 1] != '\n')
                break;
            argument[0] = (uint32_t)(p - buffer);
            argument[1] = (uint32_t)(p - buffer + length);
            argument += 2;
            p += length + 2;
            taken++;
        }
        if (taken < count)
            break;  /* partial or not canonical: the reference reader decides */
        counts[commands_count++] = (uint32_t)count;
        arguments_count += (uint32_t)count;
        command = p;
    }
    result->consumed_bytes = (uint64_t)(command - buffer);
    result->commands_count = commands_count;
    result->arguments_count = arguments_count;
}
