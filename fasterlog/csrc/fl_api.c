/* The table of public calls for layers built in other C extensions (fasterlog.h, "for layers
 * in other modules"). Only public calls go in: a layer sees the log as Python does, plus the
 * two calls made for it (fl_read_in_memory, fl_prefetch). */
#include "fl_internal.h"

static const fl_core_api core_api = {
    .size_bytes = sizeof(fl_core_api),
    .get_state = fl_get_state,
    .get_settings = fl_get_settings,
    .append_batch = fl_append_batch,
    .append_batch_linked = fl_append_batch_linked,
    .read = fl_read,
    .read_in_memory = fl_read_in_memory,
    .prefetch = fl_prefetch,
    .scan = fl_scan,
};

const fl_core_api *fl_core_api_get(void) { return &core_api; }
