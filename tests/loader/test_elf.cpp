// SPDX-License-Identifier: Apache-2.0
// Truncated and corrupt copies of a real built plugin, made here at test
// time, are refused with LOAD-3 before anything maps them (the dynamic
// loader would die of SIGBUS or SIGSEGV on them): in this process, and by the
// real todd-comms, todd-agent and todd-server, which end normally and still
// list the good plugin next to them.
#include "loader_test_util.hpp"

#include <todd/core/plugin_registry.hpp>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <elf.h>
#include <link.h>

using namespace todd::core;
using namespace loader_test;

namespace {

using Ehdr = ElfW(Ehdr);
using Phdr = ElfW(Phdr);

const char *const kPrefix =
    "refused (LOAD-3): not a complete ELF shared object for this host: ";

struct Variant {
    std::string name;   // <name> of libtodd-comms-<name>.so
    std::string bytes;  // the file
    std::string detail; // expected in the refusal; "" for kPrefix only
};

template <class T> T get(const std::string &b, size_t off)
{
    T v;
    std::memcpy(&v, b.data() + off, sizeof v);
    return v;
}
template <class T> void put(std::string &b, size_t off, const T &v)
{
    std::memcpy(b.data() + off, &v, sizeof v);
}

/** The program headers' offsets in the file, and the index of the last
 *  PT_LOAD and of PT_DYNAMIC. */
struct Layout {
    Ehdr h;
    std::vector<size_t> ph;
    size_t last_load = 0, dynamic = 0;
};
Layout layout(const std::string &b)
{
    Layout l{get<Ehdr>(b, 0), {}, 0, 0};
    for (size_t i = 0; i < l.h.e_phnum; ++i) {
        l.ph.push_back(l.h.e_phoff + i * sizeof(Phdr));
        const auto p = get<Phdr>(b, l.ph.back());
        if (p.p_type == PT_LOAD)
            l.last_load = l.ph.back();
        if (p.p_type == PT_DYNAMIC)
            l.dynamic = l.ph.back();
    }
    return l;
}

std::vector<Variant> make_variants(const std::string &good)
{
    const Layout l = layout(good);
    const uint64_t size = good.size();
    std::vector<Variant> v;
    auto truncated = [&](uint64_t n) {
        v.push_back({"trunc-" + std::to_string(n), good.substr(0, n),
                     n < sizeof(Ehdr)
                         ? "file is " + std::to_string(n) +
                               " bytes, shorter than an ELF header"
                         : "but the file is " + std::to_string(n) + " bytes"});
    };
    const auto last = get<Phdr>(good, l.last_load);
    for (uint64_t n : {uint64_t(0), uint64_t(10), uint64_t(63), uint64_t(64),
                       uint64_t(1000), uint64_t(4096),
                       last.p_offset + last.p_filesz - 1, size / 2, size - 1})
        truncated(n);

    auto patched = [&](const std::string &name, const std::string &detail,
                       auto &&edit) {
        std::string b = good;
        edit(b);
        v.push_back({name, std::move(b), detail});
    };
    patched("phoff-past", "program header table needs file bytes",
            [&](std::string &b) {
                put<ElfW(Off)>(b, offsetof(Ehdr, e_phoff), size + 4096);
            });
    patched("shoff-past", "section header table needs file bytes",
            [&](std::string &b) {
                put<ElfW(Off)>(b, offsetof(Ehdr, e_shoff), size + 4096);
            });
    patched("phnum-max", "extended program header numbering",
            [&](std::string &b) {
                put<ElfW(Half)>(b, offsetof(Ehdr, e_phnum), PN_XNUM);
            });
    patched("load-filesz", "(PT_LOAD) needs file bytes", [&](std::string &b) {
        auto p = get<Phdr>(b, l.last_load);
        p.p_filesz = p.p_memsz = size * 4;
        put(b, l.last_load, p);
    });
    patched("load-offset", "(PT_LOAD) needs file bytes", [&](std::string &b) {
        auto p = get<Phdr>(b, l.last_load);
        p.p_offset += (size + 0xffff) & ~uint64_t(0xffff); // still aligned
        put(b, l.last_load, p);
    });
    patched("dynamic-offset", "(PT_DYNAMIC) needs file bytes",
            [&](std::string &b) {
                auto p = get<Phdr>(b, l.dynamic);
                p.p_offset = size * 3;
                put(b, l.dynamic, p);
            });
    patched("dynamic-vaddr", "is not inside the file part of a PT_LOAD",
            [&](std::string &b) {
                auto p = get<Phdr>(b, l.dynamic);
                p.p_vaddr += 1ull << 40;
                put(b, l.dynamic, p);
            });
    patched("no-dynamic", "no PT_DYNAMIC segment", [&](std::string &b) {
        auto p = get<Phdr>(b, l.dynamic);
        p.p_type = PT_NULL;
        put(b, l.dynamic, p);
    });
    patched("ph-flip", "", [&](std::string &b) {
        for (size_t k = l.h.e_phoff;
             k < l.h.e_phoff + l.ph.size() * sizeof(Phdr); k += 7)
            b[k] = static_cast<char>(b[k] ^ 0xff);
    });
    patched("sh-flip", "", [&](std::string &b) {
        for (size_t k = l.h.e_shoff;
             k < std::min<size_t>(b.size(), l.h.e_shoff + l.h.e_shnum * 64);
             k += 5)
            b[k] = static_cast<char>(b[k] ^ 0xff);
    });
    patched("class32", "ELF class 32-bit",
            [&](std::string &b) { b[EI_CLASS] = ELFCLASS32; });
    patched("big-endian", "byte order big-endian",
            [&](std::string &b) { b[EI_DATA] = ELFDATA2MSB; });
    patched("machine", "machine ", [&](std::string &b) {
        const ElfW(Half) other =
            l.h.e_machine == EM_AARCH64 ? EM_X86_64 : EM_AARCH64;
        put(b, offsetof(Ehdr, e_machine), other);
    });
    patched("exec", "ELF type ET_EXEC (executable), expected ET_DYN",
            [&](std::string &b) {
                put<ElfW(Half)>(b, offsetof(Ehdr, e_type), ET_EXEC);
            });
    patched("version", "ELF version 2", [&](std::string &b) {
        put<ElfW(Word)>(b, offsetof(Ehdr, e_version), 2);
    });
    // Damaged dynamic table entries (ld.so dies of SIGSEGV on each).
    const auto dynamic = get<Phdr>(good, l.dynamic);
    for (const auto &[tag, name] :
         {std::pair<int64_t, const char *>{DT_STRTAB, "DT_STRTAB"},
          {DT_SYMTAB, "DT_SYMTAB"},
          {DT_GNU_HASH, "DT_GNU_HASH"},
          {DT_RELA, "DT_RELA"},
          {DT_NEEDED, "DT_NEEDED"}}) {
        for (size_t off = dynamic.p_offset;
             off + sizeof(ElfW(Dyn)) <= dynamic.p_offset + dynamic.p_filesz;
             off += sizeof(ElfW(Dyn))) {
            auto d = get<ElfW(Dyn)>(good, off);
            if (d.d_tag != tag)
                continue;
            std::string b = good;
            d.d_un.d_val += 1ull << 32;
            put(b, off, d);
            std::string n = std::string("dyn-") + (name + 3);
            for (auto &ch : n)
                ch = static_cast<char>(std::tolower(ch));
            v.push_back(
                {n, std::move(b), std::string("dynamic entry ") + name});
            break;
        }
    }
    v.push_back({"text", std::string(4096, '#') + "\nnot a shared object\n",
                 "no ELF magic number (not an ELF file)"});
    return v;
}

/** A directory holding every variant next to an intact copy of the plugin. */
struct Corpus {
    TempDir dir;
    std::vector<Variant> variants;
    std::string good_path;
    Corpus()
    {
        const std::string good = read_file(TODD_TEST_PLUGIN);
        variants = make_variants(good);
        good_path = file("loopback");
        write_file(good_path, good, fs::perms(0755));
        for (const auto &v : variants)
            write_file(file(v.name), v.bytes);
    }
    std::string file(const std::string &name) const
    {
        return (dir.path() / ("libtodd-comms-" + name + ".so")).string();
    }
};

void expect_refusal(const std::string &text, const std::string &path,
                    const Variant &v)
{
    EXPECT_HAS(text, path + ": " + kPrefix);
    if (!v.detail.empty()) {
        EXPECT_HAS(text, v.detail);
    }
}

TEST(LoaderElf, EachBrokenCopyIsRefusedInProcessBeforeItIsMapped)
{
    Corpus c;
    ASSERT_EQ(std::count_if(c.variants.begin(), c.variants.end(),
                            [](const Variant &v) {
                                return v.name.rfind("dyn-", 0) == 0;
                            }),
              5)
        << "the plugin lacks a dynamic entry the test damages";
    for (const auto &v : c.variants) {
        SCOPED_TRACE(v.name);
        try {
            PluginRegistry({}).load(c.file(v.name));
            ADD_FAILURE() << "accepted";
        } catch (const PluginError &e) {
            EXPECT_EQ(std::string(e.what()).rfind(c.file(v.name) + ": ", 0),
                      0u);
            expect_refusal(e.what(), c.file(v.name), v);
        }
    }
    // The intact copy still loads, and a scan lists it beside the refusals.
    ScanResult r = PluginRegistry({c.dir.path().string()}).scan();
    ASSERT_EQ(r.plugins.size(), 1u);
    EXPECT_EQ(r.plugins[0].path, c.good_path);
    EXPECT_EQ(r.refused.size(), c.variants.size());
    for (const auto &f : r.refused)
        EXPECT_EQ(f.rule, "LOAD-3") << f.message;
}

TEST(LoaderElf, ExecutableThatIsNotALibraryIsRefusedByTheDynamicLoader)
{
    // A position-independent executable is ET_DYN and complete: the header
    // check passes it and dlopen refuses it, without a crash.
    TempDir d;
    const fs::path f = d.path() / "libtodd-comms-pie.so";
    write_file(f, read_file("/proc/self/exe"));
    try {
        PluginRegistry({}).load(f.string());
        ADD_FAILURE() << "accepted";
    } catch (const PluginError &e) {
        EXPECT_HAS(e.what(), f.string() + ": refused (LOAD-3): cannot load: ");
    }
}

TEST(LoaderElf, ToddCommsPluginsListsTheGoodOneAndRefusesEachBrokenCopy)
{
    Corpus c;
    const Ran r =
        run({TODD_COMMS_EXE, "plugins", "--plugin-dir", c.dir.path().string()});
    ASSERT_TRUE(r.exited) << r.how() << "\n" << r.output;
    EXPECT_EQ(r.code, 0) << r.output;
    EXPECT_HAS(r.output, "loopback");
    EXPECT_HAS(r.output, c.good_path);
    for (const auto &v : c.variants) {
        SCOPED_TRACE(v.name);
        expect_refusal(r.output, c.file(v.name), v);
    }
}

TEST(LoaderElf, ToddCommsInfoRefusesEachBrokenCopy)
{
    Corpus c;
    for (const auto &v : c.variants) {
        SCOPED_TRACE(v.name);
        const Ran r = run({TODD_COMMS_EXE, "info", c.file(v.name)});
        ASSERT_TRUE(r.exited) << r.how() << "\n" << r.output;
        EXPECT_EQ(r.code, 1) << r.output;
        expect_refusal(r.output, c.file(v.name), v);
    }
    const Ran ok = run({TODD_COMMS_EXE, "info", c.good_path});
    EXPECT_TRUE(ok.exited && ok.code == 0) << ok.how() << "\n" << ok.output;
}

TEST(LoaderElf, AgentAndServerRefuseATruncatedPluginAndExit)
{
    Corpus c;
    TempDir db;
    const std::string dir = c.dir.path().string();
    for (const char *name : {"trunc-1000", "load-filesz"}) {
        SCOPED_TRACE(name);
        const Variant &v =
            *std::find_if(c.variants.begin(), c.variants.end(),
                          [&](const Variant &x) { return x.name == name; });
        const Ran a =
            run({TODD_AGENT_EXE, "--comms", name, "--plugin-dir", dir});
        ASSERT_TRUE(a.exited) << a.how() << "\n" << a.output;
        EXPECT_NE(a.code, 0);
        expect_refusal(a.output, c.file(name), v);
        const Ran s = run({TODD_SERVER_EXE, "--comms", name, "--plugin-dir",
                           dir, "--db", (db.path() / "server.db").string()});
        ASSERT_TRUE(s.exited) << s.how() << "\n" << s.output;
        EXPECT_NE(s.code, 0);
        expect_refusal(s.output, c.file(name), v);
    }
}

} // namespace
