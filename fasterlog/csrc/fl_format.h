/* On-disk format constants of fasterlog. FORMAT.md (beside the csrc folder) is the document
 * these numbers come from; change one only together with FORMAT.md and the golden-byte tests.
 * This file is read twice: by the C compiler (through fl_internal.h) and by cffi's cdef, which
 * checks at build time that every value here equals the compiled one. It therefore holds only
 * plain integer #defines: no guards, no expressions, no includes. fl_internal.h ties the
 * related ones together with _Static_assert, and fasterlog/_format.py holds their Python
 * twins, checked against these at import. */

#define FL_FORMAT_VERSION 1

/* Addresses [0, 64) are never used, so that address 0 can mean "no address" to the layers
 * above (the KV index chains records through previous addresses). */
#define FL_FIRST_ADDRESS 64

/* Frames start at multiples of 8 and are padded with zeros to a multiple of 8. The header is
 * crc32c u32, length_and_kind u32 (length in the low 28 bits), epoch u32. */
#define FL_FRAME_ALIGNMENT_BYTES 8
#define FL_FRAME_HEADER_SIZE_BYTES 12
#define FL_FRAME_CRC_OFFSET 0
#define FL_FRAME_LENGTH_AND_KIND_OFFSET 4
#define FL_FRAME_EPOCH_OFFSET 8
#define FL_FRAME_CHECKSUMMED_FROM 4
#define FL_FRAME_LENGTH_BITS 28
#define FL_FRAME_LENGTH_MASK 268435455

/* Frame kinds, in the top 4 bits of the length_and_kind word. Kind 0 is never written, so a
 * zeroed header is never a frame. */
#define FL_KIND_DATA 1
#define FL_KIND_MARKER 2
#define FL_KIND_COMMIT 3
#define FL_KIND_PADDING 4

/* Commit record payload: commit_number u64, begin_address u64, previous_commit_address u64,
 * cookie_size u32 (FL_NO_COOKIE when there is none), flags u32, then the cookie. Flag bit 0:
 * the log was completed. */
#define FL_COMMIT_RECORD_FIXED_SIZE_BYTES 32
#define FL_COMMIT_NUMBER_OFFSET 0
#define FL_COMMIT_BEGIN_ADDRESS_OFFSET 8
#define FL_COMMIT_PREVIOUS_ADDRESS_OFFSET 16
#define FL_COMMIT_COOKIE_SIZE_OFFSET 24
#define FL_COMMIT_FLAGS_OFFSET 28
#define FL_COOKIE_SIZE_MAX_BYTES 65536
#define FL_NO_COOKIE 0xFFFFFFFF
#define FL_COMMIT_FLAG_COMPLETED 1

/* The meta file: one 4096-byte block. The magic is the 8 bytes "FLOGMETA", here as the
 * little-endian u64 they spell. The CRC32C at offset 12 covers [FL_META_CHECKSUMMED_FROM,
 * FL_META_SIZE_BYTES). */
#define FL_META_SIZE_BYTES 4096
#define FL_META_MAGIC 0x4154454D474F4C46
#define FL_META_MAGIC_OFFSET 0
#define FL_META_VERSION_OFFSET 8
#define FL_META_CRC_OFFSET 12
#define FL_META_CHECKSUMMED_FROM 16
#define FL_META_SALT_OFFSET 16
#define FL_META_PAGE_SIZE_OFFSET 24
#define FL_META_SEGMENT_SIZE_OFFSET 32
#define FL_META_EPOCH_OFFSET 40
#define FL_META_FLAGS_OFFSET 44
#define FL_META_BEGIN_ADDRESS_OFFSET 48
#define FL_META_RECOVERY_START_OFFSET 56
#define FL_META_COMMITTED_UNTIL_OFFSET 64
#define FL_META_COMMIT_NUMBER_OFFSET 72
#define FL_META_FIELDS_END 80
#define FL_META_FLAG_CLEAN 1

/* The shared page fasterlog.shm (never synced, never the source of truth). The magic is the
 * 8 bytes "FLOGSHM\0" as a little-endian u64. */
#define FL_SHARED_SIZE_BYTES 4096
#define FL_SHARED_MAGIC 0x004D4853474F4C46
#define FL_SHARED_VERSION_OFFSET 8
#define FL_SHARED_SEQUENCE_OFFSET 12
#define FL_SHARED_COMMITTED_UNTIL_OFFSET 16
#define FL_SHARED_BEGIN_ADDRESS_OFFSET 24
#define FL_SHARED_COMMIT_NUMBER_OFFSET 32
#define FL_SHARED_WRITER_PID_OFFSET 40
#define FL_SHARED_FLAGS_OFFSET 48
#define FL_SHARED_FLAG_COMPLETED 1

/* Writes are issued in whole sectors so they work with O_DIRECT on 4 KiB-sector devices. */
#define FL_SECTOR_SIZE_BYTES 4096
#define FL_PAGE_SIZE_MIN_BYTES 4096
#define FL_PAGE_SIZE_MAX_BYTES 268435456
