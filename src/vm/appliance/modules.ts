// Kernel modules (pure): .modinfo from .ko ELF files, the subset closure over hard and soft deps, load order, and the
// modules.dep / modules.softdep / modules.alias text files that make `modprobe NAME` work for the subset.
import { VmdibError } from "../../errors.js";

export interface ModuleInfo {
  /** Canonical name: file name without .ko, "-" → "_". */
  name: string;
  /** Path relative to /lib/modules/<version>/, e.g. "kernel/fs/ext4/ext4.ko". */
  path: string;
  depends: string[];
  softPre: string[];
  softPost: string[];
  aliases: string[];
}

export function moduleNameOf(path: string): string {
  const base = path.slice(path.lastIndexOf("/") + 1);
  return base.replace(/\.ko(\.(xz|zst|gz))?$/, "").replace(/-/g, "_");
}

/** Bytes [offset, offset + length) of an ELF file: a slice of it in memory, or a read from it on disk. */
export type ElfBytes = Buffer | ((offset: number, length: number) => Buffer);

/** The key=value strings of an ELF64 little-endian module's `.modinfo` section (only the bytes it needs are read). */
export function readModinfo(elf: ElfBytes): Map<string, string[]> {
  const read =
    typeof elf === "function" ? elf : (offset: number, length: number) => elf.subarray(offset, offset + length);
  const out = new Map<string, string[]>();
  const head = read(0, 64);
  if (head.length < 64 || head.readUInt32BE(0) !== 0x7f454c46) throw new Error("not an ELF file");
  if (head[4] !== 2 || head[5] !== 1) throw new Error("not a 64-bit little-endian ELF file");
  const shoff = Number(head.readBigUInt64LE(0x28));
  const shentsize = head.readUInt16LE(0x3a);
  const shnum = head.readUInt16LE(0x3c);
  const shstrndx = head.readUInt16LE(0x3e);
  const table = read(shoff, shnum * shentsize);
  const section = (i: number) => {
    const o = i * shentsize;
    return {
      name: table.readUInt32LE(o),
      offset: Number(table.readBigUInt64LE(o + 0x18)),
      size: Number(table.readBigUInt64LE(o + 0x20)),
    };
  };
  const strtab = section(shstrndx);
  const names = read(strtab.offset, strtab.size);
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    const name = names.subarray(s.name, names.indexOf(0, s.name)).toString("latin1");
    if (name !== ".modinfo") continue;
    for (const kv of read(s.offset, s.size).toString("utf8").split("\0")) {
      const eq = kv.indexOf("=");
      if (eq <= 0) continue;
      const key = kv.slice(0, eq);
      const list = out.get(key) ?? [];
      list.push(kv.slice(eq + 1));
      out.set(key, list);
    }
    break;
  }
  return out;
}

/** ModuleInfo of one .ko file. */
export function moduleInfo(path: string, elf: ElfBytes): ModuleInfo {
  const info = readModinfo(elf);
  const depends = (info.get("depends") ?? []).flatMap((d) => d.split(",")).filter(Boolean);
  const softPre: string[] = [];
  const softPost: string[] = [];
  for (const sd of info.get("softdep") ?? []) {
    let target: string[] | undefined;
    for (const tok of sd.split(/\s+/).filter(Boolean)) {
      if (tok === "pre:") target = softPre;
      else if (tok === "post:") target = softPost;
      else target?.push(tok);
    }
  }
  return {
    name: moduleNameOf(path),
    path,
    depends: depends.map((d) => d.replace(/-/g, "_")),
    softPre,
    softPost,
    aliases: info.get("alias") ?? [],
  };
}

export interface ModuleSelection {
  /** Modules to ship, in a valid load order (dependencies first). */
  order: ModuleInfo[];
  /** Requested names that are built into the kernel (nothing to load). */
  builtin: string[];
}

/**
 * The requested modules plus their hard dependencies (modinfo `depends`) and soft dependencies (`softdep pre:/post:`,
 * which modules.dep does not carry — ext4 needs crc32c this way), in load order. Soft dependencies name modules or
 * aliases; one that matches nothing, or only built-ins, is skipped like modprobe does.
 */
export function selectModules(all: ModuleInfo[], wanted: string[], builtinNames: Set<string>): ModuleSelection {
  const byName = new Map(all.map((m) => [m.name, m]));
  const byAlias = new Map<string, ModuleInfo[]>();
  for (const m of all) {
    for (const a of m.aliases) {
      const list = byAlias.get(a) ?? [];
      list.push(m);
      byAlias.set(a, list);
    }
  }
  const lookup = (name: string): ModuleInfo | undefined => {
    const n = name.replace(/-/g, "_");
    const direct = byName.get(n);
    if (direct) return direct;
    const viaAlias = byAlias.get(name) ?? byAlias.get(n) ?? [];
    // For an algorithm alias like "crc32c" prefer the portable implementation ("crc32c_generic").
    return (
      viaAlias.find((m) => m.name === `${n}_generic`) ?? [...viaAlias].sort((a, b) => a.name.localeCompare(b.name))[0]
    );
  };

  const order: ModuleInfo[] = [];
  const done = new Set<string>();
  const visiting = new Set<string>();
  const builtin: string[] = [];
  const visit = (m: ModuleInfo) => {
    if (done.has(m.name) || visiting.has(m.name)) return;
    visiting.add(m.name);
    for (const s of m.softPre) {
      const d = lookup(s);
      if (d) visit(d);
    }
    for (const dep of m.depends) {
      const d = byName.get(dep);
      if (!d) {
        if (builtinNames.has(dep)) continue;
        throw new VmdibError(`kernel module ${m.name} depends on ${dep}, which the kernel package does not contain`);
      }
      visit(d);
    }
    visiting.delete(m.name);
    done.add(m.name);
    order.push(m);
    for (const s of m.softPost) {
      const d = lookup(s);
      if (d) visit(d);
    }
  };
  for (const w of wanted) {
    const n = w.replace(/-/g, "_");
    if (builtinNames.has(n)) {
      builtin.push(n);
      continue;
    }
    const m = lookup(w);
    if (!m) {
      throw new VmdibError(`kernel module '${w}' is neither a module nor built into the kernel`, {
        hint: "check the modules list in guest/appliance.yaml",
      });
    }
    visit(m);
  }
  return { order, builtin };
}

/** Names of built-in modules from modules.builtin ("kernel/fs/ext4/ext4.ko" lines). */
export function parseBuiltin(text: string): Set<string> {
  return new Set(
    text
      .split("\n")
      .filter(Boolean)
      .map((l) => moduleNameOf(l.trim())),
  );
}

/** Transitive hard dependencies of `m` within `set`, nearest-last like depmod writes them. */
function transitiveDeps(m: ModuleInfo, byName: Map<string, ModuleInfo>): ModuleInfo[] {
  const out: ModuleInfo[] = [];
  const seen = new Set<string>();
  const walk = (x: ModuleInfo) => {
    for (const dep of x.depends) {
      const d = byName.get(dep);
      if (!d || seen.has(d.name)) continue;
      seen.add(d.name);
      walk(d);
      out.push(d);
    }
  };
  walk(m);
  // depmod lists the module that must load last first; modprobe loads the list from the end.
  return out.reverse();
}

/**
 * modules.dep, modules.softdep, modules.alias for exactly the selected modules, plus the binary indexes modprobe
 * actually reads (modules.dep.bin, modules.alias.bin, modules.builtin.bin) — what depmod would write for the subset.
 */
export function buildModuleFiles(
  selected: ModuleInfo[],
  builtinText = "",
): { dep: string; softdep: string; alias: string; depBin: Buffer; aliasBin: Buffer; builtinBin: Buffer } {
  const byName = new Map(selected.map((m) => [m.name, m]));
  const sorted = [...selected].sort((a, b) => a.path.localeCompare(b.path));
  const dep = sorted
    .map(
      (m) =>
        `${m.path}:${transitiveDeps(m, byName)
          .map((d) => ` ${d.path}`)
          .join("")}\n`,
    )
    .join("");
  const softdep = [
    "# Soft dependencies extracted from modules' modinfo\n",
    ...sorted
      .filter((m) => m.softPre.length || m.softPost.length)
      .map(
        (m) =>
          `softdep ${m.name}${m.softPre.length ? ` pre: ${m.softPre.join(" ")}` : ""}${m.softPost.length ? ` post: ${m.softPost.join(" ")}` : ""}\n`,
      ),
  ].join("");
  const alias = [
    "# Aliases extracted from modules themselves.\n",
    ...sorted.flatMap((m) => m.aliases.map((a) => `alias ${a} ${m.name}\n`)),
  ].join("");
  const priority = new Map(sorted.map((m, i) => [m.name, i]));
  const depBin = buildKmodIndex(
    sorted.map((m) => ({
      key: m.name,
      value: `${m.path}:${transitiveDeps(m, byName)
        .map((d) => ` ${d.path}`)
        .join("")}`,
      priority: priority.get(m.name) ?? 0,
    })),
  );
  // Keys normalized as libkmod looks them up ("fs-ext4" is searched as "fs_ext4"): with raw keys no alias resolves,
  // and the kernel's on-demand loading (request_module("fs-ext4") on the first mount) finds nothing.
  const aliasBin = buildKmodIndex(
    sorted.flatMap((m) =>
      m.aliases.flatMap((a) => {
        const key = normalizeAlias(a);
        return key === undefined ? [] : [{ key, value: m.name, priority: priority.get(m.name) ?? 0 }];
      }),
    ),
  );
  const builtinBin = buildKmodIndex(
    [...parseBuiltin(builtinText)].sort().map((name, i) => ({ key: name, value: "", priority: i })),
  );
  return { dep, softdep, alias, depBin, aliasBin, builtinBin };
}

/**
 * An alias as kmod stores and searches it: "-" becomes "_" except inside a [...] character class (which stays a
 * pattern); undefined for a malformed one (unbalanced brackets), which depmod skips too.
 */
export function normalizeAlias(alias: string): string | undefined {
  let out = "";
  for (let i = 0; i < alias.length; i++) {
    const c = alias[i] as string;
    if (c === "]") return undefined;
    if (c === "[") {
      const end = alias.indexOf("]", i);
      if (end < 0) return undefined;
      out += alias.slice(i, end + 1);
      i = end;
      continue;
    }
    out += c === "-" ? "_" : c;
  }
  return out;
}

/** One key → value of a kmod index; lower priority values come first. */
export interface IndexEntry {
  key: string;
  value: string;
  priority: number;
}

const INDEX_MAGIC = 0xb007f457;
const INDEX_VERSION = 0x00020001;
const NODE_PREFIX = 0x80000000;
const NODE_VALUES = 0x40000000;
const NODE_CHILDS = 0x20000000;

/**
 * kmod's binary trie index (modules.dep.bin, modules.alias.bin, modules.builtin.bin), which modprobe requires: it
 * does not fall back to the text files. Layout as libkmod reads it (big-endian words): header {magic, version, root},
 * then nodes written children-first; a node is [prefix NUL] [first last child-offsets…] [count {priority value NUL}…],
 * and its offset word carries flags saying which parts are present. An edge to a child consumes one key character.
 */
export function buildKmodIndex(entries: IndexEntry[]): Buffer {
  const chunks: Buffer[] = [Buffer.alloc(12)];
  let pos = 12;
  const emit = (b: Buffer) => {
    chunks.push(b);
    pos += b.length;
  };
  type Item = { rest: string; value: string; priority: number };
  const writeNode = (items: Item[]): number => {
    // Longest common prefix of all remaining keys.
    let prefix = items[0]?.rest ?? "";
    for (const it of items) {
      let i = 0;
      while (i < prefix.length && i < it.rest.length && prefix[i] === it.rest[i]) i++;
      prefix = prefix.slice(0, i);
    }
    const here = items.filter((it) => it.rest.length === prefix.length).sort((a, b) => a.priority - b.priority);
    const byChar = new Map<number, Item[]>();
    for (const it of items) {
      if (it.rest.length === prefix.length) continue;
      const c = it.rest.charCodeAt(prefix.length);
      if (c >= 128) throw new Error(`kmod index keys must be ASCII: ${it.rest}`);
      const list = byChar.get(c) ?? [];
      list.push({ ...it, rest: it.rest.slice(prefix.length + 1) });
      byChar.set(c, list);
    }
    const childOffsets = new Map<number, number>();
    for (const [c, list] of [...byChar].sort((a, b) => a[0] - b[0])) childOffsets.set(c, writeNode(list));
    const start = pos;
    let flags = 0;
    if (prefix) {
      emit(Buffer.from(`${prefix}\0`, "latin1"));
      flags |= NODE_PREFIX;
    }
    if (childOffsets.size) {
      const chars = [...childOffsets.keys()];
      const first = Math.min(...chars);
      const last = Math.max(...chars);
      const b = Buffer.alloc(2 + 4 * (last - first + 1));
      b[0] = first;
      b[1] = last;
      for (const [c, off] of childOffsets) b.writeUInt32BE(off >>> 0, 2 + 4 * (c - first));
      emit(b);
      flags |= NODE_CHILDS;
    }
    if (here.length) {
      const count = Buffer.alloc(4);
      count.writeUInt32BE(here.length);
      emit(count);
      for (const v of here) {
        const p = Buffer.alloc(4);
        p.writeUInt32BE(v.priority);
        emit(p);
        emit(Buffer.from(`${v.value}\0`, "utf8"));
      }
      flags |= NODE_VALUES;
    }
    return (start | flags) >>> 0;
  };
  const root = writeNode(entries.map((e) => ({ rest: e.key, value: e.value, priority: e.priority })));
  const header = chunks[0] as Buffer;
  header.writeUInt32BE(INDEX_MAGIC, 0);
  header.writeUInt32BE(INDEX_VERSION, 4);
  header.writeUInt32BE(root, 8);
  return Buffer.concat(chunks);
}

/** Look a key up in a kmod index (the reader side, for tests): the values in priority order. */
export function searchKmodIndex(buf: Buffer, key: string): string[] {
  if (buf.readUInt32BE(0) !== INDEX_MAGIC) throw new Error("not a kmod index");
  let off = buf.readUInt32BE(8);
  let i = 0;
  for (;;) {
    let p = off & 0x0fffffff;
    if (!p) return [];
    if (off & NODE_PREFIX) {
      const end = buf.indexOf(0, p);
      const prefix = buf.subarray(p, end).toString("latin1");
      if (key.slice(i, i + prefix.length) !== prefix) return [];
      i += prefix.length;
      p = end + 1;
    }
    let first = 128;
    let last = 0;
    let children = 0;
    if (off & NODE_CHILDS) {
      first = buf[p] ?? 0;
      last = buf[p + 1] ?? 0;
      children = p + 2;
      p = children + 4 * (last - first + 1);
    }
    if (i === key.length) {
      if (!(off & NODE_VALUES)) return [];
      const n = buf.readUInt32BE(p);
      const out: string[] = [];
      p += 4;
      for (let k = 0; k < n; k++) {
        const end = buf.indexOf(0, p + 4);
        out.push(buf.subarray(p + 4, end).toString("utf8"));
        p = end + 1;
      }
      return out;
    }
    const c = key.charCodeAt(i);
    if (!(off & NODE_CHILDS) || c < first || c > last) return [];
    off = buf.readUInt32BE(children + 4 * (c - first));
    i++;
  }
}
