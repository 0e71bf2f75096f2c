// Tests src/vm/appliance/modules.ts: .modinfo from ELF, the module subset with hard and soft deps in load order, the
// modules.dep/softdep text, and the kmod binary index (written, then searched the way libkmod does).
import t from "tap";
import { VmdibError } from "../../src/errors.js";
import {
  buildKmodIndex,
  buildModuleFiles,
  type ModuleInfo,
  moduleInfo,
  moduleNameOf,
  normalizeAlias,
  parseBuiltin,
  searchKmodIndex,
  selectModules,
} from "../../src/vm/appliance/modules.js";

/** A minimal ELF64 LE relocatable with a .shstrtab and a .modinfo section. */
function fakeKo(modinfo: string[]): Buffer {
  const shstr = Buffer.from("\0.shstrtab\0.modinfo\0");
  const info = Buffer.from(`${modinfo.join("\0")}\0`);
  const shoff = 64 + shstr.length + info.length;
  const elf = Buffer.alloc(shoff + 3 * 64);
  elf.writeUInt32BE(0x7f454c46, 0);
  elf[4] = 2; // 64-bit
  elf[5] = 1; // little-endian
  elf.writeBigUInt64LE(BigInt(shoff), 0x28);
  elf.writeUInt16LE(64, 0x3a);
  elf.writeUInt16LE(3, 0x3c);
  elf.writeUInt16LE(1, 0x3e);
  shstr.copy(elf, 64);
  info.copy(elf, 64 + shstr.length);
  const sh = (i: number, name: number, off: number, size: number) => {
    const o = shoff + i * 64;
    elf.writeUInt32LE(name, o);
    elf.writeBigUInt64LE(BigInt(off), o + 0x18);
    elf.writeBigUInt64LE(BigInt(size), o + 0x20);
  };
  sh(1, 1, 64, shstr.length);
  sh(2, 11, 64 + shstr.length, info.length);
  return elf;
}

const mod = (path: string, depends: string[] = [], extra: Partial<ModuleInfo> = {}): ModuleInfo => ({
  name: moduleNameOf(path),
  path,
  depends,
  softPre: [],
  softPost: [],
  aliases: [],
  ...extra,
});

const ALL: ModuleInfo[] = [
  mod("kernel/fs/ext4/ext4.ko", ["jbd2", "mbcache", "crc16"], { softPre: ["crc32c"], aliases: ["fs-ext4", "ext3"] }),
  mod("kernel/fs/jbd2/jbd2.ko"),
  mod("kernel/fs/mbcache.ko"),
  mod("kernel/lib/crc16.ko"),
  mod("kernel/crypto/crc32c_generic.ko", [], { aliases: ["crc32c", "crypto-crc32c"] }),
  mod("kernel/arch/x86/crypto/crc32c-intel.ko", [], { aliases: ["crc32c", "crypto-crc32c"] }),
  mod("kernel/net/9p/9pnet_virtio.ko", ["9pnet", "virtio_ring", "virtio"]),
  mod("kernel/net/9p/9pnet.ko", ["netfs_dummy_builtin"]),
  mod("kernel/drivers/virtio/virtio.ko"),
  mod("kernel/drivers/virtio/virtio_ring.ko"),
  mod("kernel/fs/overlayfs/overlay.ko"),
];

t.test("moduleInfo reads depends, softdep and aliases from .modinfo", async (t) => {
  const ko = fakeKo([
    "license=GPL",
    "softdep=pre: crc32c",
    "alias=fs-ext4",
    "alias=ext3",
    "depends=jbd2,mbcache,crc16",
    "name=ext4",
  ]);
  const info = moduleInfo("kernel/fs/ext4/ext4.ko", ko);
  t.same(info, {
    name: "ext4",
    path: "kernel/fs/ext4/ext4.ko",
    depends: ["jbd2", "mbcache", "crc16"],
    softPre: ["crc32c"],
    softPost: [],
    aliases: ["fs-ext4", "ext3"],
  });
  const reads: number[] = [];
  const viaReads = moduleInfo("kernel/fs/ext4/ext4.ko", (offset, length) => {
    reads.push(length);
    return ko.subarray(offset, offset + length);
  });
  t.same(viaReads, info, "read piece by piece (a file on disk): the same info");
  t.ok(
    reads.every((n) => n < ko.length),
    "only header, section table and named sections are read",
  );
  t.equal(moduleNameOf("kernel/x/crc32c-intel.ko"), "crc32c_intel");
  t.same(moduleInfo("a/b.ko", fakeKo(["depends="])).depends, []);
  t.throws(() =>
    moduleInfo("x.ko", Buffer.from("not elf at all, definitely not elf, no no no no no no no no no no no")),
  );
});

t.test("selectModules: hard deps before, soft pre-deps via alias (generic preferred), built-ins skipped", async (t) => {
  const builtin = new Set(["netfs_dummy_builtin", "unix"]);
  const sel = selectModules(ALL, ["ext4", "9pnet_virtio", "unix"], builtin);
  const order = sel.order.map((m) => m.name);
  t.same(sel.builtin, ["unix"]);
  t.same(order, [
    "crc32c_generic",
    "jbd2",
    "mbcache",
    "crc16",
    "ext4",
    "9pnet",
    "virtio_ring",
    "virtio",
    "9pnet_virtio",
  ]);
  for (const m of sel.order) {
    for (const d of m.depends)
      if (!builtin.has(d)) t.ok(order.indexOf(d) < order.indexOf(m.name), `${d} before ${m.name}`);
  }
  t.same(
    selectModules(ALL, ["fs-ext4"], builtin)
      .order.map((m) => m.name)
      .slice(-1),
    ["ext4"],
    "a requested alias resolves",
  );
  t.throws(() => selectModules(ALL, ["nope"], builtin), VmdibError);
  t.throws(() => selectModules([mod("a.ko", ["missing"])], ["a"], new Set()), /depends on missing/);
});

t.test("buildModuleFiles: modules.dep lists transitive deps; softdep and alias text", async (t) => {
  const sel = selectModules(ALL, ["9pnet_virtio", "ext4"], new Set(["netfs_dummy_builtin"])).order;
  const files = buildModuleFiles(sel, "kernel/net/unix/unix.ko\nkernel/fs/netfs_dummy_builtin.ko\n");
  t.match(files.dep, /^kernel\/net\/9p\/9pnet_virtio.ko: (\S+ ?){3}$/m);
  t.match(files.dep, /^kernel\/fs\/jbd2\/jbd2.ko:$/m);
  t.match(files.softdep, /^softdep ext4 pre: crc32c$/m);
  t.match(files.alias, /^alias fs-ext4 ext4$/m);
  t.match(files.alias, /^alias crc32c crc32c_generic$/m);
  const depLine = searchKmodIndex(files.depBin, "ext4")[0] ?? "";
  t.match(depLine, /^kernel\/fs\/ext4\/ext4.ko: /);
  t.same(depLine.split(": ")[1]?.split(" ").sort(), [
    "kernel/fs/jbd2/jbd2.ko",
    "kernel/fs/mbcache.ko",
    "kernel/lib/crc16.ko",
  ]);
  t.same(searchKmodIndex(files.aliasBin, "crc32c"), ["crc32c_generic"]);
  t.same(searchKmodIndex(files.aliasBin, "fs_ext4"), ["ext4"], "alias keys are stored as kmod searches them");
  t.same(searchKmodIndex(files.aliasBin, "fs-ext4"), []);
  t.same(searchKmodIndex(files.builtinBin, "unix"), [""]);
  t.same(searchKmodIndex(files.builtinBin, "ext4"), []);
  t.same(parseBuiltin("kernel/a/b-c.ko\n\n"), new Set(["b_c"]));
});

t.test("kmod index: shared prefixes, keys that are prefixes of others, priorities", async (t) => {
  const keys = ["virtio", "virtio_blk", "virtio_net", "virtio_ring", "v", "9p", "9pnet", "9pnet_virtio", "ext4", "e"];
  const idx = buildKmodIndex([
    ...keys.map((k, i) => ({ key: k, value: `value-${k}`, priority: i })),
    { key: "ext4", value: "second", priority: 100 },
    { key: "ext4", value: "first", priority: -0 },
  ]);
  t.equal(idx.readUInt32BE(0), 0xb007f457);
  t.equal(idx.readUInt32BE(4), 0x00020001);
  for (const k of keys) t.equal(searchKmodIndex(idx, k)[0], k === "ext4" ? "first" : `value-${k}`, k);
  t.same(searchKmodIndex(idx, "ext4"), ["first", "value-ext4", "second"]);
  for (const k of ["vi", "virtio_", "9pn", "x", "", "ext44"])
    t.same(searchKmodIndex(idx, k), [], `no ${JSON.stringify(k)}`);
  t.same(searchKmodIndex(buildKmodIndex([]), "a"), []);
});

t.test("normalizeAlias: '-' → '_' outside character classes, malformed aliases refused (as kmod does)", async (t) => {
  t.equal(normalizeAlias("fs-ext4"), "fs_ext4");
  t.equal(normalizeAlias("crypto-crc32c-generic"), "crypto_crc32c_generic");
  t.equal(normalizeAlias("pci:v00001AF4d*sv*sd*bc*sc*i*"), "pci:v00001AF4d*sv*sd*bc*sc*i*");
  t.equal(normalizeAlias("acpi*:PNP0[A-C]0-1:*"), "acpi*:PNP0[A-C]0_1:*", "the class keeps its '-'");
  t.equal(normalizeAlias("a[b-c"), undefined);
  t.equal(normalizeAlias("a]b"), undefined);
});
