/* CRC32C (Castagnoli), the checksum of every frame and of the meta block.
 * Uses the SSE4.2 crc32 instruction when the CPU has it (checked once at run time), and a
 * slicing-by-8 table otherwise; both give identical results, which the tests check. */
#include "fl_internal.h"

#include <string.h>

static uint32_t crc_table[8][256];
static int crc_use_hardware = -1;

static void crc_init_table(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

static uint32_t crc_software(uint32_t crc, const uint8_t *p, size_t n) {
    while (n >= 8) {
        uint32_t lo = crc ^ fl_load32(p);
        uint32_t hi = fl_load32(p + 4);
        crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
              crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
              crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
              crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
    return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hardware(uint32_t crc, const uint8_t *p,
                                                               size_t n) {
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = __builtin_ia32_crc32di(c, word);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}
#endif

static void crc_setup(void) {
    crc_init_table();
#if defined(__x86_64__)
    __builtin_cpu_init();
    crc_use_hardware = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#else
    crc_use_hardware = 0;
#endif
}

static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

/* Raw update without the initial/final inversion; fl_crc32c adds them. */
static uint32_t crc_update(uint32_t crc, const uint8_t *p, size_t n) {
#if defined(__x86_64__)
    if (crc_use_hardware) return crc_hardware(crc, p, n);
#endif
    return crc_software(crc, p, n);
}

uint32_t fl_crc32c(uint32_t crc, const void *data, size_t size) {
    pthread_once(&crc_once, crc_setup);
    return ~crc_update(~crc, (const uint8_t *)data, size);
}

int fl_crc32c_hardware(void) {
    pthread_once(&crc_once, crc_setup);
    return crc_use_hardware;
}

uint32_t fl_crc32c_portable(uint32_t crc, const void *data, size_t size) {
    pthread_once(&crc_once, crc_setup);
    return ~crc_software(~crc, (const uint8_t *)data, size);
}

/* The frame checksum: CRC32C over le64(salt) || le64(address) || frame bytes [4, frame_size).
 * Seeding with the salt and the address makes a frame valid only at its own address in its own
 * log, so stale bytes in recycled or preallocated space never pass (FORMAT.md).
 * It runs once per append, so the hardware path is spelled out without the generic helpers:
 * frame_size is a multiple of 8, so the checked bytes are one 4-byte word then 8-byte words. */
#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t frame_crc_hardware(uint64_t salt,
                                                                     uint64_t address,
                                                                     const uint8_t *frame,
                                                                     uint64_t frame_size) {
    uint64_t c = __builtin_ia32_crc32di(0xFFFFFFFFu, salt);
    c = __builtin_ia32_crc32di(c, address);
    uint32_t word4;
    memcpy(&word4, frame + FL_FRAME_CHECKSUMMED_FROM, 4);
    c = __builtin_ia32_crc32si((uint32_t)c, word4);
    for (uint64_t offset = FL_FRAME_CHECKSUMMED_FROM + 4; offset < frame_size; offset += 8) {
        uint64_t word;
        memcpy(&word, frame + offset, 8);
        c = __builtin_ia32_crc32di(c, word);
    }
    return ~(uint32_t)c;
}
#endif

uint32_t fl_frame_crc(uint64_t salt, uint64_t address, const uint8_t *frame, uint64_t frame_size) {
#if defined(__x86_64__)
    /* crc_use_hardware is set before any log exists (fl_open calls fl_crc32c_hardware). */
    if (crc_use_hardware == 1) return frame_crc_hardware(salt, address, frame, frame_size);
#endif
    pthread_once(&crc_once, crc_setup);
    uint8_t seed[16];
    fl_store64(seed, salt);
    fl_store64(seed + 8, address);
    uint32_t crc = crc_update(0xFFFFFFFFu, seed, sizeof seed);
    crc = crc_update(crc, frame + FL_FRAME_CHECKSUMMED_FROM,
                     (size_t)(frame_size - FL_FRAME_CHECKSUMMED_FROM));
    return ~crc;
}
