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

/** The key=value strings of an ELF64 little-endian module's `.modinfo` section. */
export function readModinfo(elf: Buffer): Map<string, string[]> {
  const out = new Map<string, string[]>();
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46) throw new Error("not an ELF file");
  if (elf[4] !== 2 || elf[5] !== 1) throw new Error("not a 64-bit little-endian ELF file");
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);
  const shstrndx = elf.readUInt16LE(0x3e);
  const section = (i: number) => {
    const o = shoff + i * shentsize;
    return {
      name: elf.readUInt32LE(o),
      offset: Number(elf.readBigUInt64LE(o + 0x18)),
      size: Number(elf.readBigUInt64LE(o + 0x20)),
    };
  };
  const strtab = section(shstrndx);
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    const nameStart = strtab.offset + s.name;
    const name = elf.subarray(nameStart, elf.indexOf(0, nameStart)).toString("latin1");
    if (name !== ".modinfo") continue;
    for (const kv of elf
      .subarray(s.offset, s.offset + s.size)
      .toString("utf8")
      .split("\0")) {
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
export function moduleInfo(path: string, elf: Buffer): ModuleInfo {
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

/** modules.dep, modules.softdep and modules.alias for exactly the selected modules (text formats read by kmod). */
export function buildModuleFiles(selected: ModuleInfo[]): { dep: string; softdep: string; alias: string } {
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
  return { dep, softdep, alias };
}
