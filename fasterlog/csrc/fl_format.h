/* On-disk format constants of fasterlog. FORMAT.md (beside the csrc folder) is the document
 * these numbers come from; change one only together with FORMAT.md and the golden-byte tests.
 * This file is read twice: by the C compiler (through fl_internal.h) and by cffi's cdef, which
 * checks at build time that every value here equals the compiled one. It therefore holds only
 * plain integer #defines: no guards, no expressions, no includes. */

#define FL_FORMAT_VERSION 1

/* Addresses [0, 64) are never used, so that address 0 can mean "no address" to the layers
 * above (the KV index chains records through previous addresses). */
#define FL_FIRST_ADDRESS 64

/* Frames start at multiples of 8 and are padded with zeros to a multiple of 8. */
#define FL_FRAME_ALIGNMENT_BYTES 8
#define FL_FRAME_HEADER_SIZE_BYTES 12
#define FL_FRAME_LENGTH_BITS 28
#define FL_FRAME_LENGTH_MASK 268435455

/* Frame kinds, in the top 4 bits of the length_and_kind word. Kind 0 is never written, so a
 * zeroed header is never a frame. */
#define FL_KIND_DATA 1
#define FL_KIND_MARKER 2
#define FL_KIND_COMMIT 3
#define FL_KIND_PADDING 4

/* Commit record payload: commit_number u64, begin_address u64, previous_commit_address u64,
 * cookie_size u32, flags u32, then the cookie. Flag bit 0: the log was completed. */
#define FL_COMMIT_RECORD_FIXED_SIZE_BYTES 32
#define FL_COOKIE_SIZE_MAX_BYTES 65536
#define FL_COMMIT_FLAG_COMPLETED 1

/* The meta file: one 4096-byte block. */
#define FL_META_SIZE_BYTES 4096
#define FL_META_CHECKSUMMED_FROM 16

/* Writes are issued in whole sectors so they work with O_DIRECT on 4 KiB-sector devices. */
#define FL_SECTOR_SIZE_BYTES 4096
#define FL_PAGE_SIZE_MIN_BYTES 4096
#define FL_PAGE_SIZE_MAX_BYTES 268435456
