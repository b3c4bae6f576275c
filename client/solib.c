/*
 * client/solib.c - preparing a C function library for upload: reading it,
 * hashing it (the daemon stores libraries by SHA-256) and checking that the
 * symbol exists before anything is submitted.
 *
 * The symbol check parses the ELF file's .dynsym rather than dlopen()ing the
 * library: loading it would run the user's constructors in the submitting
 * process, and the library may be built for the workers rather than for us.
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "client_internal.h"

int
solib_read(const char *path, size_t max, char **data, size_t *len, struct stat *st_out,
           char *err, size_t errsize)
{
    char *buf = NULL;
    size_t n = 0;
    int rc;

    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errsize, "cannot read %s: %s", path, strerror(errno));
        return BURST_EINPUT;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        snprintf(err, errsize, "cannot read %s: %s", path, strerror(errno));
        rc = BURST_EINPUT;
        goto fail_close;
    }
    if (S_ISDIR(st.st_mode)) {
        snprintf(err, errsize, "cannot read %s: %s", path, strerror(EISDIR));
        rc = BURST_EINPUT;
        goto fail_close;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errsize, "cannot read %s: not a regular file", path);
        rc = BURST_EINPUT;
        goto fail_close;
    }
    if ((uint64_t)st.st_size > max) {
        snprintf(err, errsize, "%s is %lld bytes, more than the limit of %zu", path,
                 (long long)st.st_size, max);
        rc = BURST_ETOOBIG;
        goto fail_close;
    }
    /* One byte more than the size so that a file growing while we read it
     * is noticed instead of silently truncated. */
    size_t cap = (size_t)st.st_size + 1;
    buf = malloc(cap);
    if (buf == NULL) {
        snprintf(err, errsize, "%s: out of memory", path);
        rc = -ENOMEM;
        goto fail_close;
    }
    for (;;) {
        if (n == cap) {
            snprintf(err, errsize, "cannot read %s: it changed while being read", path);
            rc = BURST_EINPUT;
            goto fail_free;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errsize, "cannot read %s: %s", path, strerror(errno));
            rc = BURST_EINPUT;
            goto fail_free;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    *data = buf; /* ownership passes to the caller */
    *len = n;
    if (st_out != NULL)
        *st_out = st;
    return 0;

fail_free:
    free(buf);
fail_close:
    close(fd);
    return rc;
}

/* ---- libraries already read on this connection --------------------------- */

static bool
same_file(const struct solib_known *k, const struct stat *st)
{
    return k->dev == st->st_dev && k->ino == st->st_ino && k->size == st->st_size &&
           k->mtime.tv_sec == st->st_mtim.tv_sec &&
           k->mtime.tv_nsec == st->st_mtim.tv_nsec &&
           k->ctime.tv_sec == st->st_ctim.tv_sec &&
           k->ctime.tv_nsec == st->st_ctim.tv_nsec;
}

const char *
solib_known_hash(burst_client *c, const char *path, const char *symbol)
{
    struct stat st;
    if (c->nknown == 0 || stat(path, &st) != 0)
        return NULL;
    for (size_t i = 0; i < c->nknown; i++) {
        const struct solib_known *k = &c->known[i];
        if (strcmp(k->path, path) == 0 && strcmp(k->symbol, symbol) == 0 &&
            same_file(k, &st))
            return k->hash;
    }
    return NULL;
}

/* True when st's last change is at least settle_ms old by the clock that
 * stamped it (file times come from the realtime clock). */
static bool
settled(const struct stat *st, long settle_ms)
{
    struct timespec now;
    if (clock_gettime(CLOCK_REALTIME, &now) != 0)
        return false;
    int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    int64_t ctime_ms = (int64_t)st->st_ctim.tv_sec * 1000 + st->st_ctim.tv_nsec / 1000000;
    int64_t mtime_ms = (int64_t)st->st_mtim.tv_sec * 1000 + st->st_mtim.tv_nsec / 1000000;
    /* A time ahead of the clock (a clock set back, a file from another
     * machine) says nothing about when the file last changed. */
    return ctime_ms <= now_ms - settle_ms && mtime_ms <= now_ms;
}

void
solib_known_add(burst_client *c, const char *path, const char *symbol,
                const struct stat *st, const char *hash)
{
    if (!settled(st, c->solib_settle_ms))
        return;
    if (c->known == NULL) {
        c->known = calloc(SOLIB_KNOWN_MAX, sizeof(*c->known));
        if (c->known == NULL)
            return; /* forgetting costs only a read */
    }
    char *p = strdup(path), *sym = strdup(symbol);
    if (p == NULL || sym == NULL) {
        free(p);
        free(sym);
        return;
    }
    /* Past SOLIB_KNOWN_MAX libraries, the oldest entry makes room. */
    struct solib_known *k;
    if (c->nknown < SOLIB_KNOWN_MAX) {
        k = &c->known[c->nknown++];
    } else {
        k = &c->known[c->known_next];
        c->known_next = (c->known_next + 1) % SOLIB_KNOWN_MAX;
        free(k->path);
        free(k->symbol);
    }
    *k = (struct solib_known){.path = p,
                              .symbol = sym,
                              .dev = st->st_dev,
                              .ino = st->st_ino,
                              .size = st->st_size,
                              .mtime = st->st_mtim,
                              .ctime = st->st_ctim};
    memcpy(k->hash, hash, sizeof(k->hash));
}

void
solib_known_free(burst_client *c)
{
    for (size_t i = 0; i < c->nknown; i++) {
        free(c->known[i].path);
        free(c->known[i].symbol);
    }
    free(c->known);
    c->known = NULL;
    c->nknown = c->known_next = 0;
}

int
solib_sha256_hex(const void *data, size_t len, char hex[65])
{
    static const char digits[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return -ENOMEM; /* EVP fails only when it cannot allocate its context */
    for (unsigned i = 0; i < 32; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[64] = '\0';
    return 0;
}

bool
solib_symbol_valid(const char *s)
{
    size_t n = 0;

    if (s == NULL)
        return false;
    for (; s[n] != '\0'; n++) {
        char ch = s[n];
        bool alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
        bool digit = ch >= '0' && ch <= '9';
        if (!alpha && !(digit && n > 0))
            return false;
    }
    return n >= 1 && n <= 255;
}

/* ---- ELF ------------------------------------------------------------------ */

/* A view of the image that reads fields of either class and byte order. */
struct elf_view {
    const unsigned char *p;
    size_t len;
    bool is64;
    bool big; /* big-endian */
};

static uint64_t
elf_get(const struct elf_view *v, size_t off, size_t size)
{
    uint64_t x = 0;

    /* Callers check bounds first; this only assembles the bytes. */
    for (size_t i = 0; i < size; i++) {
        unsigned b = v->big ? v->p[off + i] : v->p[off + size - 1 - i];
        x = (x << 8) | b;
    }
    return x;
}

static bool
elf_in_bounds(const struct elf_view *v, uint64_t off, uint64_t size)
{
    return off <= v->len && size <= v->len - off;
}

/* Field offsets and sizes that differ between ELF32 and ELF64. */
struct elf_layout {
    size_t e_type, e_shoff, e_shentsize, e_shnum, e_shstrndx, ehsize;
    size_t sh_type, sh_link, sh_offset, sh_size, sh_entsize, shdr_size, addr;
    size_t st_name, st_info, st_shndx, sym_size;
};

static const struct elf_layout elf64_layout = {
    .e_type = 16,
    .e_shoff = 40,
    .e_shentsize = 58,
    .e_shnum = 60,
    .e_shstrndx = 62,
    .ehsize = sizeof(Elf64_Ehdr),
    .sh_type = 4,
    .sh_link = 40,
    .sh_offset = 24,
    .sh_size = 32,
    .sh_entsize = 56,
    .shdr_size = sizeof(Elf64_Shdr),
    .addr = 8,
    .st_name = 0,
    .st_info = 4,
    .st_shndx = 6,
    .sym_size = sizeof(Elf64_Sym),
};

static const struct elf_layout elf32_layout = {
    .e_type = 16,
    .e_shoff = 32,
    .e_shentsize = 46,
    .e_shnum = 48,
    .e_shstrndx = 50,
    .ehsize = sizeof(Elf32_Ehdr),
    .sh_type = 4,
    .sh_link = 24,
    .sh_offset = 16,
    .sh_size = 20,
    .sh_entsize = 36,
    .shdr_size = sizeof(Elf32_Shdr),
    .addr = 4,
    .st_name = 0,
    .st_info = 12,
    .st_shndx = 14,
    .sym_size = sizeof(Elf32_Sym),
};

int
solib_find_symbol(const void *data, size_t len, const char *symbol)
{
    struct elf_view v = {.p = data, .len = len};

    if (data == NULL || len < EI_NIDENT || memcmp(v.p, ELFMAG, SELFMAG) != 0)
        return -ENOEXEC;
    if (v.p[EI_CLASS] == ELFCLASS64)
        v.is64 = true;
    else if (v.p[EI_CLASS] != ELFCLASS32)
        return -ENOEXEC;
    if (v.p[EI_DATA] == ELFDATA2MSB)
        v.big = true;
    else if (v.p[EI_DATA] != ELFDATA2LSB)
        return -ENOEXEC;

    const struct elf_layout *L = v.is64 ? &elf64_layout : &elf32_layout;
    if (len < L->ehsize || elf_get(&v, L->e_type, 2) != ET_DYN)
        return -ENOEXEC;

    uint64_t shoff = elf_get(&v, L->e_shoff, L->addr);
    uint64_t shentsize = elf_get(&v, L->e_shentsize, 2);
    uint64_t shnum = elf_get(&v, L->e_shnum, 2);
    if (shoff == 0 || shnum == 0 || shentsize < L->shdr_size ||
        !elf_in_bounds(&v, shoff, shnum * shentsize))
        return -ENOEXEC; /* a library without section headers has no .dynsym */

    size_t symlen = strlen(symbol);
    for (uint64_t i = 0; i < shnum; i++) {
        size_t sh = (size_t)(shoff + i * shentsize);
        if (elf_get(&v, sh + L->sh_type, 4) != SHT_DYNSYM)
            continue;
        uint64_t off = elf_get(&v, sh + L->sh_offset, L->addr);
        uint64_t size = elf_get(&v, sh + L->sh_size, L->addr);
        uint64_t entsize = elf_get(&v, sh + L->sh_entsize, L->addr);
        uint64_t link = elf_get(&v, sh + L->sh_link, 4);
        if (entsize < L->sym_size || !elf_in_bounds(&v, off, size) || link >= shnum)
            return -ENOEXEC;

        /* The section sh_link names holds the symbols' names. */
        size_t strsh = (size_t)(shoff + link * shentsize);
        uint64_t stroff = elf_get(&v, strsh + L->sh_offset, L->addr);
        uint64_t strsize = elf_get(&v, strsh + L->sh_size, L->addr);
        if (elf_get(&v, strsh + L->sh_type, 4) != SHT_STRTAB ||
            !elf_in_bounds(&v, stroff, strsize))
            return -ENOEXEC;

        for (uint64_t s = 0; s + entsize <= size; s += entsize) {
            size_t sym = (size_t)(off + s);
            uint64_t name = elf_get(&v, sym + L->st_name, 4);
            unsigned info = v.p[sym + L->st_info];
            uint64_t shndx = elf_get(&v, sym + L->st_shndx, 2);
            unsigned type = ELF64_ST_TYPE(info), bind = ELF64_ST_BIND(info);

            /* The name must fit, NUL included, inside the string table. */
            if (name >= strsize || strsize - name <= symlen)
                continue;
            const char *nm = (const char *)v.p + stroff + name;
            if (memcmp(nm, symbol, symlen) != 0 || nm[symlen] != '\0')
                continue;
            if (shndx != SHN_UNDEF && (type == STT_FUNC || type == STT_GNU_IFUNC) &&
                (bind == STB_GLOBAL || bind == STB_WEAK))
                return 0;
        }
        return BURST_ENOSYM;
    }
    return -ENOEXEC;
}
