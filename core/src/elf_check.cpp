// SPDX-License-Identifier: Apache-2.0
#include "elf_check.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <elf.h>
#include <link.h>
#include <unistd.h>
#include <vector>

// The linker's symbol for this program's own ELF header: the host's class,
// byte order and machine, exactly as the toolchain built them.
extern "C" const ElfW(Ehdr) __ehdr_start __attribute__((visibility("hidden")));

namespace todd::core::detail {
namespace {

// Entries of the dynamic table read at most (a library has a few dozen).
constexpr uint64_t kMaxDynamicEntries = 4096;

using Ehdr = ElfW(Ehdr);
using Phdr = ElfW(Phdr);
using Shdr = ElfW(Shdr);

std::string hex(uint64_t v)
{
    char buf[24];
    std::snprintf(buf, sizeof buf, "0x%llx",
                  static_cast<unsigned long long>(v));
    return buf;
}

/** [off, off + len) lies within [0, size), without overflow. */
bool within(uint64_t off, uint64_t len, uint64_t size)
{
    return off <= size && len <= size - off;
}

/** "needs file bytes 0x..-0x.. but the file is N bytes" */
std::string past_end(uint64_t off, uint64_t len, uint64_t size)
{
    const uint64_t end = off + len < off ? UINT64_MAX : off + len;
    return "needs file bytes " + hex(off) + ".." + hex(end) +
           " but the file is " + std::to_string(size) + " bytes";
}

/** Read exactly len bytes at off; false with why set on error or EOF. */
bool read_at(int fd, void *buf, size_t len, uint64_t off, std::string &why)
{
    auto *p = static_cast<unsigned char *>(buf);
    while (len > 0) {
        const ssize_t n = ::pread(fd, p, len, static_cast<off_t>(off));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            why = std::string("read failed: ") + std::strerror(errno);
            return false;
        }
        if (n == 0) {
            why = "file shrank while being read";
            return false;
        }
        p += n;
        len -= static_cast<size_t>(n);
        off += static_cast<uint64_t>(n);
    }
    return true;
}

const char *class_name(unsigned c)
{
    return c == ELFCLASS32 ? "32-bit" : c == ELFCLASS64 ? "64-bit" : "invalid";
}

const char *data_name(unsigned d)
{
    return d == ELFDATA2LSB   ? "little-endian"
           : d == ELFDATA2MSB ? "big-endian"
                              : "invalid";
}

std::string machine_name(unsigned m)
{
    const char *n = nullptr;
    switch (m) {
    case EM_X86_64: n = "x86-64"; break;
    case EM_386: n = "i386"; break;
    case EM_AARCH64: n = "AArch64"; break;
    case EM_ARM: n = "ARM"; break;
    case EM_RISCV: n = "RISC-V"; break;
    case EM_PPC64: n = "PowerPC64"; break;
    case EM_S390: n = "S/390"; break;
    default: break;
    }
    return std::to_string(m) + (n ? std::string(" (") + n + ")" : "");
}

std::string type_name(unsigned t)
{
    switch (t) {
    case ET_NONE: return "ET_NONE";
    case ET_REL: return "ET_REL (relocatable object)";
    case ET_EXEC: return "ET_EXEC (executable)";
    case ET_DYN: return "ET_DYN";
    case ET_CORE: return "ET_CORE (core dump)";
    default: return std::to_string(t);
    }
}

std::string segment_name(size_t i, uint32_t type)
{
    const char *n = nullptr;
    switch (type) {
    case PT_LOAD: n = "PT_LOAD"; break;
    case PT_DYNAMIC: n = "PT_DYNAMIC"; break;
    case PT_INTERP: n = "PT_INTERP"; break;
    case PT_NOTE: n = "PT_NOTE"; break;
    case PT_PHDR: n = "PT_PHDR"; break;
    case PT_TLS: n = "PT_TLS"; break;
    case PT_GNU_EH_FRAME: n = "PT_GNU_EH_FRAME"; break;
    case PT_GNU_STACK: n = "PT_GNU_STACK"; break;
    case PT_GNU_RELRO: n = "PT_GNU_RELRO"; break;
    case PT_GNU_PROPERTY: n = "PT_GNU_PROPERTY"; break;
    default: break;
    }
    return "program header " + std::to_string(i) + " (" +
           (n ? std::string(n) : hex(type)) + ")";
}

/** Segments the dynamic loader or the unwinder read through the mapped
 *  image: they must lie in the file-backed part of a PT_LOAD. */
bool read_from_image(uint32_t type)
{
    return type == PT_DYNAMIC || type == PT_NOTE || type == PT_TLS ||
           type == PT_GNU_PROPERTY || type == PT_GNU_EH_FRAME;
}

std::optional<std::string> check_header(const Ehdr &h)
{
    const Ehdr &host = __ehdr_start;
    if (std::memcmp(h.e_ident, ELFMAG, SELFMAG) != 0)
        return "no ELF magic number (not an ELF file)";
    if (h.e_ident[EI_CLASS] != host.e_ident[EI_CLASS])
        return std::string("ELF class ") + class_name(h.e_ident[EI_CLASS]) +
               ", host is " + class_name(host.e_ident[EI_CLASS]);
    if (h.e_ident[EI_DATA] != host.e_ident[EI_DATA])
        return std::string("byte order ") + data_name(h.e_ident[EI_DATA]) +
               ", host is " + data_name(host.e_ident[EI_DATA]);
    if (h.e_ident[EI_VERSION] != EV_CURRENT || h.e_version != EV_CURRENT)
        return "ELF version " + std::to_string(h.e_version) + ", expected " +
               std::to_string(EV_CURRENT);
    const unsigned osabi = h.e_ident[EI_OSABI];
    if (osabi != ELFOSABI_SYSV && osabi != ELFOSABI_GNU &&
        osabi != host.e_ident[EI_OSABI])
        return "OS ABI " + std::to_string(osabi) + ", expected SYSV or GNU";
    if (h.e_type != ET_DYN)
        return "ELF type " + type_name(h.e_type) +
               ", expected ET_DYN (shared object)";
    if (h.e_machine != host.e_machine)
        return "machine " + machine_name(h.e_machine) + ", host is " +
               machine_name(host.e_machine);
    if (h.e_ehsize < sizeof(Ehdr))
        return "ELF header size " + std::to_string(h.e_ehsize) + ", expected " +
               std::to_string(sizeof(Ehdr));
    return std::nullopt;
}

std::optional<std::string> check_segments(int fd, const Ehdr &h, uint64_t size,
                                          std::vector<Phdr> &ph)
{
    if (h.e_phnum == 0)
        return std::string("no program headers");
    if (h.e_phnum == PN_XNUM)
        return std::string("extended program header numbering (65535 or "
                           "more segments) is not supported");
    if (h.e_phentsize != sizeof(Phdr))
        return "program header size " + std::to_string(h.e_phentsize) +
               ", expected " + std::to_string(sizeof(Phdr));
    const uint64_t table = uint64_t(h.e_phnum) * sizeof(Phdr);
    if (!within(h.e_phoff, table, size))
        return "program header table " + past_end(h.e_phoff, table, size);
    ph.resize(h.e_phnum);
    std::string why;
    if (!read_at(fd, ph.data(), table, h.e_phoff, why))
        return why;

    bool load = false, dynamic = false;
    for (size_t i = 0; i < ph.size(); ++i) {
        const Phdr &p = ph[i];
        if (p.p_filesz > 0 && !within(p.p_offset, p.p_filesz, size))
            return segment_name(i, p.p_type) + " " +
                   past_end(p.p_offset, p.p_filesz, size);
        if (p.p_type != PT_LOAD)
            continue;
        load = true;
        if (p.p_filesz > p.p_memsz)
            return segment_name(i, p.p_type) + ": file size " +
                   hex(p.p_filesz) + " exceeds memory size " + hex(p.p_memsz);
        if (p.p_align > 1 && ((p.p_align & (p.p_align - 1)) != 0 ||
                              (p.p_vaddr - p.p_offset) % p.p_align != 0))
            return segment_name(i, p.p_type) + ": address " + hex(p.p_vaddr) +
                   " and offset " + hex(p.p_offset) +
                   " disagree modulo alignment " + hex(p.p_align);
        if (p.p_vaddr + p.p_memsz < p.p_vaddr)
            return segment_name(i, p.p_type) + ": address range overflows";
    }
    if (!load)
        return std::string("no PT_LOAD segment");
    for (size_t i = 0; i < ph.size(); ++i) {
        const Phdr &p = ph[i];
        dynamic = dynamic || p.p_type == PT_DYNAMIC;
        if (!read_from_image(p.p_type) || p.p_filesz == 0)
            continue;
        bool inside = false;
        for (const Phdr &l : ph)
            inside = inside ||
                     (l.p_type == PT_LOAD && p.p_vaddr >= l.p_vaddr &&
                      within(p.p_vaddr - l.p_vaddr, p.p_filesz, l.p_filesz) &&
                      p.p_offset - l.p_offset == p.p_vaddr - l.p_vaddr);
        if (!inside)
            return segment_name(i, p.p_type) + " at address " + hex(p.p_vaddr) +
                   " (" + hex(p.p_filesz) +
                   " bytes) is not inside the file part of a PT_LOAD segment";
    }
    if (!dynamic)
        return std::string("no PT_DYNAMIC segment (not a shared object)");
    return std::nullopt;
}

/** [vaddr, vaddr + len) lies in the file part of one PT_LOAD. */
bool in_image(const std::vector<Phdr> &ph, uint64_t vaddr, uint64_t len)
{
    for (const Phdr &l : ph)
        if (l.p_type == PT_LOAD && vaddr >= l.p_vaddr &&
            within(vaddr - l.p_vaddr, len, l.p_filesz))
            return true;
    return false;
}

const char *dynamic_tag_name(int64_t tag)
{
    switch (tag) {
    case DT_STRTAB: return "DT_STRTAB";
    case DT_SYMTAB: return "DT_SYMTAB";
    case DT_HASH: return "DT_HASH";
    case DT_GNU_HASH: return "DT_GNU_HASH";
    case DT_RELA: return "DT_RELA";
    case DT_REL: return "DT_REL";
    case DT_RELR: return "DT_RELR";
    case DT_JMPREL: return "DT_JMPREL";
    case DT_INIT: return "DT_INIT";
    case DT_FINI: return "DT_FINI";
    case DT_INIT_ARRAY: return "DT_INIT_ARRAY";
    case DT_FINI_ARRAY: return "DT_FINI_ARRAY";
    case DT_PREINIT_ARRAY: return "DT_PREINIT_ARRAY";
    case DT_VERSYM: return "DT_VERSYM";
    case DT_VERNEED: return "DT_VERNEED";
    case DT_VERDEF: return "DT_VERDEF";
    case DT_NEEDED: return "DT_NEEDED";
    case DT_SONAME: return "DT_SONAME";
    case DT_RPATH: return "DT_RPATH";
    case DT_RUNPATH: return "DT_RUNPATH";
    default: return nullptr;
    }
}

/**
 * The dynamic table's pointers: the tables the dynamic loader reads while
 * loading lie in the file part of the image, and names lie in the string
 * table. Relocation and symbol contents are not checked: LOAD-2 already
 * makes the file the work of root or the user, so this is about damaged
 * files, not crafted ones.
 */
std::optional<std::string> check_dynamic(int fd, const std::vector<Phdr> &ph)
{
    using Dyn = ElfW(Dyn);
    const Phdr *dp = nullptr;
    for (const Phdr &p : ph)
        if (p.p_type == PT_DYNAMIC)
            dp = &p;
    // Real tables hold a few dozen entries; read no more than the bound.
    const uint64_t entries = dp->p_filesz / sizeof(Dyn);
    std::vector<Dyn> dyn(std::min<uint64_t>(entries, kMaxDynamicEntries));
    std::string why;
    if (!read_at(fd, dyn.data(), dyn.size() * sizeof(Dyn), dp->p_offset, why))
        return why;
    if (std::none_of(dyn.begin(), dyn.end(),
                     [](const Dyn &d) { return d.d_tag == DT_NULL; }) &&
        entries > kMaxDynamicEntries)
        return "dynamic table has no DT_NULL in its first " +
               std::to_string(kMaxDynamicEntries) + " entries";
    // Tables with a size entry: [address tag, size tag].
    const int64_t sized[][2] = {{DT_STRTAB, DT_STRSZ},
                                {DT_RELA, DT_RELASZ},
                                {DT_REL, DT_RELSZ},
                                {DT_RELR, DT_RELRSZ},
                                {DT_JMPREL, DT_PLTRELSZ},
                                {DT_INIT_ARRAY, DT_INIT_ARRAYSZ},
                                {DT_FINI_ARRAY, DT_FINI_ARRAYSZ},
                                {DT_PREINIT_ARRAY, DT_PREINIT_ARRAYSZ}};
    // Tables and code without one: at least one word must be there.
    const int64_t unsized[] = {DT_SYMTAB,  DT_HASH,   DT_GNU_HASH, DT_VERSYM,
                               DT_VERNEED, DT_VERDEF, DT_INIT,     DT_FINI};
    auto value = [&](int64_t tag) -> std::optional<uint64_t> {
        for (const Dyn &d : dyn) {
            if (d.d_tag == DT_NULL)
                break;
            if (d.d_tag == tag)
                return d.d_un.d_val;
        }
        return std::nullopt;
    };
    auto outside = [&](int64_t tag, uint64_t addr, uint64_t len) {
        return std::string("dynamic entry ") + dynamic_tag_name(tag) + " (" +
               hex(addr) + ", " + hex(len) +
               " bytes) is not inside the file part of a PT_LOAD segment";
    };
    if (!value(DT_STRTAB))
        return std::string("dynamic section has no DT_STRTAB");
    for (const auto &[at, sz] : sized) {
        const auto a = value(at);
        if (!a)
            continue;
        const uint64_t len = value(sz).value_or(0);
        if (!in_image(ph, *a, len == 0 ? 1 : len))
            return outside(at, *a, len);
    }
    for (int64_t tag : unsized)
        if (const auto a = value(tag);
            a && !in_image(ph, *a, sizeof(ElfW(Addr))))
            return outside(tag, *a, sizeof(ElfW(Addr)));
    const uint64_t strsz = value(DT_STRSZ).value_or(0);
    for (const Dyn &d : dyn) {
        if (d.d_tag == DT_NULL)
            break;
        if ((d.d_tag == DT_NEEDED || d.d_tag == DT_SONAME ||
             d.d_tag == DT_RPATH || d.d_tag == DT_RUNPATH) &&
            d.d_un.d_val >= strsz)
            return std::string("dynamic entry ") + dynamic_tag_name(d.d_tag) +
                   " names string " + hex(d.d_un.d_val) +
                   ", past the string table (" + hex(strsz) + " bytes)";
    }
    return std::nullopt;
}

std::optional<std::string> check_sections(int fd, const Ehdr &h, uint64_t size)
{
    if (h.e_shoff == 0)
        return std::nullopt; // no section table (stripped of it): allowed
    if (h.e_shentsize != sizeof(Shdr))
        return "section header size " + std::to_string(h.e_shentsize) +
               ", expected " + std::to_string(sizeof(Shdr));
    if (h.e_shnum == 0 || h.e_shstrndx == SHN_XINDEX)
        return std::string("extended section numbering (65280 or more "
                           "sections) is not supported");
    const uint64_t table = uint64_t(h.e_shnum) * sizeof(Shdr);
    if (!within(h.e_shoff, table, size))
        return "section header table " + past_end(h.e_shoff, table, size);
    if (h.e_shstrndx != SHN_UNDEF && h.e_shstrndx >= h.e_shnum)
        return "section name table index " + std::to_string(h.e_shstrndx) +
               " is not below the section count " + std::to_string(h.e_shnum);
    std::vector<Shdr> sh(h.e_shnum);
    std::string why;
    if (!read_at(fd, sh.data(), table, h.e_shoff, why))
        return why;
    for (size_t i = 1; i < sh.size(); ++i)
        if (sh[i].sh_type != SHT_NOBITS && sh[i].sh_type != SHT_NULL &&
            !within(sh[i].sh_offset, sh[i].sh_size, size))
            return "section " + std::to_string(i) + " " +
                   past_end(sh[i].sh_offset, sh[i].sh_size, size);
    return std::nullopt;
}

} // namespace

std::optional<std::string> elf_shared_object_problem(int fd, uint64_t size)
{
    Ehdr h{};
    if (size < sizeof h)
        return "file is " + std::to_string(size) +
               " bytes, shorter than an ELF header (" +
               std::to_string(sizeof h) + " bytes)";
    std::string why;
    if (!read_at(fd, &h, sizeof h, 0, why))
        return why;
    if (auto p = check_header(h))
        return p;
    std::vector<Phdr> ph;
    if (auto p = check_segments(fd, h, size, ph))
        return p;
    if (auto p = check_dynamic(fd, ph))
        return p;
    return check_sections(fd, h, size);
}

} // namespace todd::core::detail
