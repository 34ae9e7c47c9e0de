/* fasterlog.meta: the log's identity (salt, page and segment sizes), its epoch, and hints that
 * make recovery short and strict (where to start scanning, what is known to be committed).
 * It is never the source of truth for data: the commit records in the log are. It is replaced
 * atomically: written to fasterlog.meta.tmp, synced, renamed over, then the directory synced. */
#include "fl_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void fl_meta_encode(const fl_meta *meta, uint8_t *block) {
    memset(block, 0, FL_META_SIZE_BYTES);
    fl_store64(block + FL_META_MAGIC_OFFSET, FL_META_MAGIC);
    fl_store32(block + FL_META_VERSION_OFFSET, FL_FORMAT_VERSION);
    fl_store64(block + FL_META_SALT_OFFSET, meta->salt);
    fl_store64(block + FL_META_PAGE_SIZE_OFFSET, meta->page_size_bytes);
    fl_store64(block + FL_META_SEGMENT_SIZE_OFFSET, meta->segment_size_bytes);
    fl_store32(block + FL_META_EPOCH_OFFSET, meta->epoch);
    fl_store32(block + FL_META_FLAGS_OFFSET, meta->flags);
    fl_store64(block + FL_META_BEGIN_ADDRESS_OFFSET, meta->begin_address);
    fl_store64(block + FL_META_RECOVERY_START_OFFSET, meta->recovery_start_address);
    fl_store64(block + FL_META_COMMITTED_UNTIL_OFFSET, meta->committed_until_address);
    fl_store64(block + FL_META_COMMIT_NUMBER_OFFSET, meta->commit_number);
    uint32_t crc = fl_crc32c(0, block + FL_META_CHECKSUMMED_FROM,
                             FL_META_SIZE_BYTES - FL_META_CHECKSUMMED_FROM);
    fl_store32(block + FL_META_CRC_OFFSET, crc);
}

int fl_meta_decode(const uint8_t *block, fl_meta *meta) {
    if (fl_load64(block + FL_META_MAGIC_OFFSET) != FL_META_MAGIC) return FL_E_FORMAT;
    if (fl_load32(block + FL_META_VERSION_OFFSET) != FL_FORMAT_VERSION) return FL_E_FORMAT;
    uint32_t crc = fl_crc32c(0, block + FL_META_CHECKSUMMED_FROM,
                             FL_META_SIZE_BYTES - FL_META_CHECKSUMMED_FROM);
    if (crc != fl_load32(block + FL_META_CRC_OFFSET)) return FL_E_CORRUPT;
    meta->salt = fl_load64(block + FL_META_SALT_OFFSET);
    meta->page_size_bytes = fl_load64(block + FL_META_PAGE_SIZE_OFFSET);
    meta->segment_size_bytes = fl_load64(block + FL_META_SEGMENT_SIZE_OFFSET);
    meta->epoch = fl_load32(block + FL_META_EPOCH_OFFSET);
    meta->flags = fl_load32(block + FL_META_FLAGS_OFFSET);
    meta->begin_address = fl_load64(block + FL_META_BEGIN_ADDRESS_OFFSET);
    meta->recovery_start_address = fl_load64(block + FL_META_RECOVERY_START_OFFSET);
    meta->committed_until_address = fl_load64(block + FL_META_COMMITTED_UNTIL_OFFSET);
    meta->commit_number = fl_load64(block + FL_META_COMMIT_NUMBER_OFFSET);
    return 0;
}

int fl_meta_read(int directory_fd, fl_meta *meta) {
    int fd = openat(directory_fd, "fasterlog.meta", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    uint8_t block[FL_META_SIZE_BYTES];
    int64_t got = fl_pread_full(fd, block, sizeof block, 0);
    close(fd);
    if (got < 0) return (int)got;
    if (got != (int64_t)sizeof block) return FL_E_CORRUPT;
    return fl_meta_decode(block, meta);
}

int fl_meta_write(int directory_fd, const fl_meta *meta) {
    uint8_t block[FL_META_SIZE_BYTES];
    fl_meta_encode(meta, block);
    int fd = fl_io_openat(directory_fd, "fasterlog.meta.tmp",
                          O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return fd;
    int rc = 0;
    ssize_t written = fl_io_pwrite(fd, block, sizeof block, 0, 0);
    if (written < 0) rc = (int)written;
    else if (written != (ssize_t)sizeof block) rc = FL_E_SHORT_WRITE;
    if (rc == 0) rc = fl_io_fdatasync(fd);
    close(fd);
    if (rc == 0) rc = fl_io_renameat(directory_fd, "fasterlog.meta.tmp", "fasterlog.meta");
    if (rc == 0) fl_crash_point("meta-after-rename");
    if (rc == 0) rc = fl_io_fsync(directory_fd);
    return rc;
}
