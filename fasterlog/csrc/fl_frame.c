/* Frame validation (FORMAT.md "Pages and frames"), shared by recovery, reads, scans and verify:
 * the one place that decides whether bytes at an address are a frame. */
#include "fl_internal.h"

#include <string.h>

int fl_frame_check(const fl_log *log, uint64_t address, const uint8_t *bytes, uint64_t available,
                   fl_frame_view *view) {
    uint64_t remaining = log->page_size_bytes - address % log->page_size_bytes;
    memset(view, 0, sizeof *view);
    if (remaining < FL_FRAME_HEADER_SIZE_BYTES) {
        /* The gap at a page end too short for a padding frame: zeros by rule. */
        if (available < remaining) return FL_E_BUFFER;
        for (uint64_t i = 0; i < remaining; i++)
            if (bytes[i]) return FL_E_CORRUPT;
        view->frame_size = remaining;
        return 0;
    }
    if (available < FL_FRAME_HEADER_SIZE_BYTES) return FL_E_BUFFER;
    uint32_t length_and_kind = fl_frame_length_and_kind(bytes);
    uint32_t kind = length_and_kind >> FL_FRAME_LENGTH_BITS;
    uint32_t size = length_and_kind & FL_FRAME_LENGTH_MASK;
    uint64_t frame_size = fl_frame_size(size);
    if (kind < FL_KIND_DATA || kind > FL_KIND_PADDING) return FL_E_CORRUPT;
    if (frame_size > remaining) return FL_E_CORRUPT;
    if (kind == FL_KIND_PADDING && frame_size != remaining) return FL_E_CORRUPT;
    if (kind == FL_KIND_COMMIT && size < FL_COMMIT_RECORD_FIXED_SIZE_BYTES) return FL_E_CORRUPT;
    view->frame_size = frame_size;
    if (frame_size > available) return FL_E_BUFFER;
    if (fl_load32(bytes + FL_FRAME_CRC_OFFSET) != fl_frame_crc(log->salt, address, bytes, frame_size))
        return FL_E_CORRUPT;
    view->kind = kind;
    view->payload_size = size;
    view->epoch = fl_frame_epoch(bytes);
    return 0;
}
