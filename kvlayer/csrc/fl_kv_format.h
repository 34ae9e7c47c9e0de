/* On-disk format constants of kvlayer: KV records, checkpoint snapshots and the commit cookie.
 * kvlayer/FORMAT.md is the document these numbers come from; change one only together with it
 * and the tests that pin the bytes (tests/kvlayer/test_kvstore.py, tests/kvlayer/test_kv_checkpoint.py).
 * Like fasterlog's fl_format.h it is read twice, by the C compiler and by cffi's cdef (which
 * checks every value against the compiled one), so it holds only plain integer #defines.
 * kvlayer/_fast.py holds the Python twins and checks them against these at import. A magic is
 * the little-endian u64 its 8 bytes spell. */

/* A record: header (version u8, index_bits u8, ops_count u16, previous_address u64), then
 * operations (op u8, reserved u8, key_size u16, value_size u32, key_hash u64, key, value). */
#define FL_KV_RECORD_VERSION 2
#define FL_KV_RECORD_HEADER_SIZE_BYTES 12
#define FL_KV_RECORD_VERSION_OFFSET 0
#define FL_KV_RECORD_INDEX_BITS_OFFSET 1
#define FL_KV_RECORD_OPS_COUNT_OFFSET 2
#define FL_KV_RECORD_PREVIOUS_OFFSET 4
#define FL_KV_OP_HEADER_SIZE_BYTES 16
#define FL_KV_OP_KIND_OFFSET 0
#define FL_KV_OP_RESERVED_OFFSET 1
#define FL_KV_OP_KEY_SIZE_OFFSET 2
#define FL_KV_OP_VALUE_SIZE_OFFSET 4
#define FL_KV_OP_HASH_OFFSET 8
#define FL_KV_OP_PUT 1
#define FL_KV_OP_DELETE 2

/* fl_kv_write's value size for a delete (not on disk: a delete's value_size is 0). */
#define FL_KV_VALUE_DELETE 0xFFFFFFFF

/* The key hash: SipHash-1-3 keyed with (salt, salt ^ this), "kvlayer2" read big-endian. */
#define FL_KV_HASH_KEY1_TWEAK 0x6B766C6179657232

/* A checkpoint snapshot: a 48-byte header, then 16-byte entries (key_hash u64, word u64 with
 * the address in bits 0..47 and bit 63 set for a delete). */
#define FL_KV_SNAPSHOT_MAGIC 0x50414E53564B4C46
#define FL_KV_SNAPSHOT_VERSION 2
#define FL_KV_SNAPSHOT_HEADER_SIZE_BYTES 48
#define FL_KV_SNAPSHOT_ENTRY_SIZE_BYTES 16
#define FL_KV_ENTRY_ADDRESS_BITS 48
#define FL_KV_ENTRY_DELETED 0x8000000000000000

/* The commit cookie starts with these 8 bytes, "kvlayer1", then index_bits u8. */
#define FL_KV_COOKIE_MAGIC 0x31726579616C766B
