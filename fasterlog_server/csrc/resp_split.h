/* resp_split: the server's fast path for the common RESP frame, in C.
 *
 * A client's command is almost always an array of bulk strings that has fully arrived:
 * "*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n". rs_split takes such commands from the start of a buffer
 * and reports where each argument is; fasterlog_server/resp.py turns them into bytes. It takes only
 * input it can check completely: a canonical "*N" (1 <= N <= arguments_count_max, no sign, no
 * leading zero), then N canonical "$L" headers (L <= bulk_size_max_bytes), each followed by
 * exactly L bytes and CRLF. The first byte that does not fit that shape (an inline command,
 * "*0", a partial command, any malformed or over-limit header) ends the split there, without
 * an error: the reference reader in Python takes over at that byte and gives the exact result
 * or error message. So rs_split never decides what is an error, and its results are by
 * construction a prefix of the reference reader's (tests compare the two on fuzzed input).
 */
#ifndef RESP_SPLIT_H
#define RESP_SPLIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct rs_split_result {
    uint64_t consumed_bytes;   /* bytes of the whole commands taken */
    uint32_t commands_count;
    uint32_t arguments_count;  /* entries written to bounds (two per argument) / 2 */
} rs_split_result;

/* Whole commands at the start of buffer[0, size): for command i, counts[i] arguments; for each
 * argument in order, its start and end offsets (relative to buffer) in bounds[2k], bounds[2k+1].
 * Stops after commands_max commands, or before a command whose arguments would not fit in
 * arguments_max. Offsets are 32-bit: at most UINT32_MAX bytes are looked at. */
void rs_split(const char *buffer, size_t size, uint32_t bulk_size_max_bytes,
              uint32_t arguments_count_max, uint32_t commands_max, uint32_t arguments_max,
              uint32_t *counts, uint32_t *bounds, rs_split_result *result);

#endif
