// Debian archive metadata (pure): control stanzas, the Packages index, InRelease checksums, dependency fields, versions.

/** One binary package from a Packages index, with the fields the appliance builder uses. */
export interface DebPackage {
  name: string;
  version: string;
  architecture: string;
  depends: string;
  preDepends: string;
  provides: string;
  filename: string;
  sha256: string;
  size: number;
  essential: boolean;
  priority: string;
}

/** A Packages index: real packages by name, and who provides each virtual name. */
export interface PackageIndex {
  packages: ReadonlyMap<string, DebPackage>;
  /** virtual name → providers, each with the provided version if the Provides entry had one. */
  providers: ReadonlyMap<string, { pkg: DebPackage; version: string | undefined }[]>;
}

/** Split deb822-style text into stanzas of lower-cased field → value (continuation lines joined with "\n"). */
export function parseStanzas(text: string): Map<string, string>[] {
  const out: Map<string, string>[] = [];
  let cur = new Map<string, string>();
  let last: string | undefined;
  for (const line of text.split("\n")) {
    if (line === "" || line === "\r") {
      if (cur.size) out.push(cur);
      cur = new Map();
      last = undefined;
      continue;
    }
    if ((line[0] === " " || line[0] === "\t") && last !== undefined) {
      cur.set(last, `${cur.get(last)}\n${line.trim()}`);
      continue;
    }
    const i = line.indexOf(":");
    if (i <= 0) continue;
    last = line.slice(0, i).toLowerCase();
    cur.set(last, line.slice(i + 1).trim());
  }
  if (cur.size) out.push(cur);
  return out;
}

/** Packages fields the builder keeps; everything else (descriptions, tags, …) is skipped without being copied. */
const PACKAGE_FIELDS: Record<string, keyof DebPackage | "essential-raw"> = {
  package: "name",
  version: "version",
  architecture: "architecture",
  depends: "depends",
  "pre-depends": "preDepends",
  provides: "provides",
  filename: "filename",
  sha256: "sha256",
  size: "size",
  essential: "essential-raw",
  priority: "priority",
};

/**
 * Parse a Packages file for one architecture (plus `all`). When a name appears twice, the higher version wins.
 * For a file on disk use PackagesParser on its decompressed chunks instead of building this string.
 */
export function parsePackages(text: string, arch = "amd64"): PackageIndex {
  const parser = new PackagesParser(arch);
  parser.push(Buffer.from(text, "utf8"));
  return parser.finish();
}

const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
const TAB = 0x09;
const COLON = 0x3a;

/** Separators of the packed records below: ASCII unit/record separators never occur in a control field. */
const US = "\x1f";
const RS = "\x1e";

/** DebPackage fields (but the name, which is the key) in the order a packed record holds them. */
const PACKED = [
  "version",
  "architecture",
  "depends",
  "preDepends",
  "provides",
  "filename",
  "sha256",
  "size",
  "essential",
  "priority",
] as const;

function unpack(name: string, record: string): DebPackage {
  const f = record.split(US);
  const at = (k: (typeof PACKED)[number]) => f[PACKED.indexOf(k)] ?? "";
  return {
    name,
    version: at("version"),
    architecture: at("architecture"),
    depends: at("depends"),
    preDepends: at("preDepends"),
    provides: at("provides"),
    filename: at("filename"),
    sha256: at("sha256"),
    size: Number(at("size")),
    essential: at("essential") === "1",
    priority: at("priority"),
  };
}

/**
 * Packages by name, each held as one packed string until asked for: a suite has ~63,000 packages, and as objects of
 * eleven strings they took ~55 MB of heap, packed ~25 MB. `get` returns the same object for a name every time;
 * iterating builds throwaway objects.
 */
class PackageTable implements ReadonlyMap<string, DebPackage> {
  private readonly made = new Map<string, DebPackage>();

  constructor(private readonly records: Map<string, string>) {}

  get size(): number {
    return this.records.size;
  }

  has(name: string): boolean {
    return this.records.has(name);
  }

  get(name: string): DebPackage | undefined {
    let pkg = this.made.get(name);
    if (pkg) return pkg;
    const record = this.records.get(name);
    if (record === undefined) return undefined;
    pkg = unpack(name, record);
    this.made.set(name, pkg);
    return pkg;
  }

  *entries(): MapIterator<[string, DebPackage]> {
    for (const [name, record] of this.records) yield [name, this.made.get(name) ?? unpack(name, record)];
  }

  *keys(): MapIterator<string> {
    yield* this.records.keys();
  }

  *values(): MapIterator<DebPackage> {
    for (const [, pkg] of this.entries()) yield pkg;
  }

  [Symbol.iterator](): MapIterator<[string, DebPackage]> {
    return this.entries();
  }

  forEach(fn: (value: DebPackage, key: string, map: ReadonlyMap<string, DebPackage>) => void): void {
    for (const [name, pkg] of this.entries()) fn(pkg, name, this);
  }
}

/** virtual name → providers, packed as "name<US>version" records joined by RS (version empty when unversioned). */
class ProviderTable implements ReadonlyMap<string, { pkg: DebPackage; version: string | undefined }[]> {
  constructor(
    private readonly packed: Map<string, string>,
    private readonly packages: PackageTable,
  ) {}

  get size(): number {
    return this.packed.size;
  }

  has(name: string): boolean {
    return this.packed.has(name);
  }

  get(name: string): { pkg: DebPackage; version: string | undefined }[] | undefined {
    const packed = this.packed.get(name);
    if (packed === undefined) return undefined;
    return packed.split(RS).map((r) => {
      const [pkgName = "", version = ""] = r.split(US);
      return { pkg: this.packages.get(pkgName) as DebPackage, version: version || undefined };
    });
  }

  *entries(): MapIterator<[string, { pkg: DebPackage; version: string | undefined }[]]> {
    for (const name of this.packed.keys()) yield [name, this.get(name) ?? []];
  }

  *keys(): MapIterator<string> {
    yield* this.packed.keys();
  }

  *values(): MapIterator<{ pkg: DebPackage; version: string | undefined }[]> {
    for (const [, list] of this.entries()) yield list;
  }

  [Symbol.iterator](): MapIterator<[string, { pkg: DebPackage; version: string | undefined }[]]> {
    return this.entries();
  }

  forEach(
    fn: (
      value: { pkg: DebPackage; version: string | undefined }[],
      key: string,
      map: ReadonlyMap<string, { pkg: DebPackage; version: string | undefined }[]>,
    ) => void,
  ): void {
    for (const [name, list] of this.entries()) fn(list, name, this);
  }
}

/** PACKAGE_FIELDS by name length, names as bytes: a line's field name is matched without making it a string. */
const FIELDS_BY_LENGTH = new Map<number, [Buffer, keyof DebPackage | "essential-raw"][]>();
for (const [name, field] of Object.entries(PACKAGE_FIELDS)) {
  const list = FIELDS_BY_LENGTH.get(name.length) ?? [];
  list.push([Buffer.from(name, "latin1"), field]);
  FIELDS_BY_LENGTH.set(name.length, list);
}

/** The kept field whose name is bytes [start, end) of `buf`, case-insensitively (names are letters, digits and "-"). */
function fieldAt(buf: Buffer, start: number, end: number): keyof DebPackage | "essential-raw" | undefined {
  const candidates = FIELDS_BY_LENGTH.get(end - start);
  if (!candidates) return undefined;
  for (const [name, field] of candidates) {
    let i = 0;
    // | 0x20 lower-cases an ASCII letter and leaves digits and "-" as they are.
    while (i < name.length && ((buf[start + i] as number) | 0x20) === name[i]) i++;
    if (i === name.length) return field;
  }
  return undefined;
}

/**
 * An incremental Packages parser over byte chunks (pure). The decompressed index of a Debian suite is ~50 MB and
 * only a few fields matter: lines are scanned in the chunk's bytes, and only the values kept become (small, flat)
 * strings, so neither the whole text nor one string per line is ever held — a ~50 MB index as one JS string took
 * ~150 MB of heap at the controller's peak.
 */
export class PackagesParser {
  /** name → packed record (see PackageTable). */
  private readonly records = new Map<string, string>();
  /** The kept fields of the stanza being read. */
  private cur: Record<string, string> = {};
  private last: string | undefined;
  /** The unfinished last line of the previous chunk. */
  private rest: Buffer | undefined;

  constructor(private readonly arch = "amd64") {}

  push(chunk: Buffer): void {
    let buf = chunk;
    if (this.rest) {
      buf = Buffer.concat([this.rest, chunk]);
      this.rest = undefined;
    }
    let pos = 0;
    for (;;) {
      const eol = buf.indexOf(LF, pos);
      if (eol < 0) break;
      this.line(buf, pos, eol);
      pos = eol + 1;
    }
    // Copied, so the chunk (64 KiB) is not kept alive by its last few bytes.
    if (pos < buf.length) this.rest = Buffer.from(buf.subarray(pos));
  }

  finish(): PackageIndex {
    if (this.rest) {
      this.line(this.rest, 0, this.rest.length);
      this.rest = undefined;
    }
    this.flush();
    const packages = new PackageTable(this.records);
    const providers = new Map<string, string>();
    const provides = PACKED.indexOf("provides");
    for (const [name, record] of this.records) {
      const field = record.split(US, provides + 1)[provides];
      if (!field) continue;
      for (const group of parseRelations(field)) {
        for (const rel of group) {
          const entry = `${name}${US}${rel.op === "=" ? (rel.version ?? "") : ""}`;
          const prev = providers.get(rel.name);
          providers.set(rel.name, prev === undefined ? entry : `${prev}${RS}${entry}`);
        }
      }
    }
    return { packages, providers: new ProviderTable(providers, packages) };
  }

  /** One line, bytes [start, end) of `buf` without its LF. */
  private line(buf: Buffer, start: number, end: number): void {
    if (end === start || (end === start + 1 && buf[start] === CR)) {
      this.flush();
      return;
    }
    const first = buf[start];
    if (first === SPACE || first === TAB) {
      if (this.last) this.cur[this.last] = `${this.cur[this.last]} ${buf.toString("utf8", start, end).trim()}`;
      return;
    }
    this.last = undefined;
    const colon = buf.indexOf(COLON, start);
    if (colon <= start || colon >= end) return;
    const field = fieldAt(buf, start, colon);
    if (!field) return;
    this.cur[field] = buf.toString("utf8", colon + 1, end).trim();
    this.last = field;
  }

  private flush(): void {
    const cur = this.cur;
    this.cur = {};
    this.last = undefined;
    const architecture = cur.architecture ?? "";
    if (!cur.name || !cur.filename || (architecture !== this.arch && architecture !== "all")) return;
    const version = cur.version ?? "";
    const prev = this.records.get(cur.name);
    if (prev !== undefined && compareVersions(version, prev.slice(0, prev.indexOf(US))) <= 0) return;
    const essential = (cur["essential-raw"] ?? "").toLowerCase() === "yes" ? "1" : "";
    // join() makes one flat string: the record keeps none of the field strings alive.
    this.records.set(
      cur.name,
      PACKED.map((k) => (k === "essential" ? essential : k === "version" ? version : (cur[k] ?? ""))).join(US),
    );
  }
}

/**
 * Picks the stanzas of some packages out of a Packages file streamed in byte chunks (pure), verbatim (trimmed, each
 * followed by a blank line), in file order: what debootstrap's second stage reads, without the whole index in memory.
 */
export class StanzaSelector {
  private readonly out: string[] = [];
  /** The unfinished last stanza of the chunks so far. */
  private rest: Buffer | undefined;

  constructor(private readonly names: ReadonlySet<string>) {}

  push(chunk: Buffer): void {
    const buf = this.rest ? Buffer.concat([this.rest, chunk]) : chunk;
    this.rest = undefined;
    let pos = 0;
    for (;;) {
      const end = buf.indexOf("\n\n", pos);
      if (end < 0) break;
      this.stanza(buf.toString("utf8", pos, end));
      pos = end + 2;
    }
    if (pos < buf.length) this.rest = Buffer.from(buf.subarray(pos));
  }

  finish(): string {
    if (this.rest) this.stanza(this.rest.toString("utf8"));
    this.rest = undefined;
    return this.out.join("");
  }

  private stanza(text: string): void {
    const name = /^Package:\s*(\S+)/m.exec(text)?.[1];
    if (name && this.names.has(name)) this.out.push(`${text.trim()}\n\n`);
  }
}

/** One `name (op version)` term of a dependency field; arch qualifiers and restriction lists are dropped. */
export interface Relation {
  name: string;
  op?: "<<" | "<=" | "=" | ">=" | ">>";
  version?: string;
  /** Architectures from `[...]`, when the term is restricted to some. */
  archs?: string[];
}

/** `a (>= 1) | b, c:any [amd64]` → [[a>=1, b], [c]]: AND of OR-groups. */
export function parseRelations(field: string): Relation[][] {
  const out: Relation[][] = [];
  for (const group of field.split(",")) {
    const alts: Relation[] = [];
    for (const term of group.split("|")) {
      const m =
        /^\s*([a-z0-9][a-z0-9+.-]*)(?::[a-z0-9-]+)?\s*(?:\(\s*(<<|<=|=|>=|>>|<|>)\s*([^)\s]+)\s*\))?\s*(?:\[([^\]]*)\])?/.exec(
          term,
        );
      if (!m?.[1]) continue;
      const rel: Relation = { name: m[1] };
      if (m[2] && m[3]) {
        // "<" and ">" are obsolete spellings of "<=" and ">=" (deb-control(5)).
        rel.op = (m[2] === "<" ? "<=" : m[2] === ">" ? ">=" : m[2]) as Relation["op"];
        rel.version = m[3];
      }
      if (m[4]) rel.archs = m[4].split(/\s+/).filter(Boolean);
      alts.push(rel);
    }
    if (alts.length) out.push(alts);
  }
  return out;
}

/** Does `version` satisfy `op wanted`? */
export function satisfies(version: string, op: Relation["op"], wanted: string | undefined): boolean {
  if (!op || wanted === undefined) return true;
  const c = compareVersions(version, wanted);
  switch (op) {
    case "<<":
      return c < 0;
    case "<=":
      return c <= 0;
    case "=":
      return c === 0;
    case ">=":
      return c >= 0;
    case ">>":
      return c > 0;
  }
}

/** dpkg's version order (deb-version(5)): epoch, then upstream and revision compared with `~` sorting first. */
export function compareVersions(a: string, b: string): number {
  const pa = splitVersion(a);
  const pb = splitVersion(b);
  if (pa.epoch !== pb.epoch) return pa.epoch < pb.epoch ? -1 : 1;
  return verrevcmp(pa.upstream, pb.upstream) || verrevcmp(pa.revision, pb.revision);
}

function splitVersion(v: string): { epoch: number; upstream: string; revision: string } {
  let rest = v.trim();
  let epoch = 0;
  const colon = rest.indexOf(":");
  if (colon >= 0) {
    epoch = Number(rest.slice(0, colon)) || 0;
    rest = rest.slice(colon + 1);
  }
  const dash = rest.lastIndexOf("-");
  return dash >= 0
    ? { epoch, upstream: rest.slice(0, dash), revision: rest.slice(dash + 1) }
    : { epoch, upstream: rest, revision: "" };
}

function charOrder(c: string | undefined): number {
  if (c === undefined) return 0;
  if (c === "~") return -1;
  if (/[0-9]/.test(c)) return 0;
  if (/[A-Za-z]/.test(c)) return c.charCodeAt(0);
  return c.charCodeAt(0) + 256;
}

function verrevcmp(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    let firstDiff = 0;
    while ((i < a.length && !/[0-9]/.test(a[i] ?? "")) || (j < b.length && !/[0-9]/.test(b[j] ?? ""))) {
      const ac = charOrder(i < a.length ? a[i] : undefined);
      const bc = charOrder(j < b.length ? b[j] : undefined);
      if (ac !== bc) return ac - bc;
      i++;
      j++;
    }
    while (a[i] === "0") i++;
    while (b[j] === "0") j++;
    while (/[0-9]/.test(a[i] ?? "") && /[0-9]/.test(b[j] ?? "")) {
      if (!firstDiff) firstDiff = (a.charCodeAt(i) ?? 0) - (b.charCodeAt(j) ?? 0);
      i++;
      j++;
    }
    if (/[0-9]/.test(a[i] ?? "")) return 1;
    if (/[0-9]/.test(b[j] ?? "")) return -1;
    if (firstDiff) return firstDiff;
  }
  return 0;
}

/** The SHA256 section of a Release/InRelease file: path → { sha256, size }. */
export function parseReleaseSha256(text: string): Map<string, { sha256: string; size: number }> {
  const out = new Map<string, { sha256: string; size: number }>();
  const stanza = parseStanzas(stripClearsign(text))[0];
  for (const line of (stanza?.get("sha256") ?? "").split("\n")) {
    const [hash, size, path] = line.trim().split(/\s+/);
    if (hash && size && path) out.set(path, { sha256: hash.toLowerCase(), size: Number(size) });
  }
  return out;
}

/** The signed text inside a clearsigned message (dash-escaping undone); unsigned text is returned as is. */
export function stripClearsign(text: string): string {
  if (!text.startsWith("-----BEGIN PGP SIGNED MESSAGE-----")) return text;
  const start = text.indexOf("\n\n");
  const end = text.indexOf("\n-----BEGIN PGP SIGNATURE-----");
  if (start < 0 || end < 0) return text;
  return text
    .slice(start + 2, end)
    .split("\n")
    .map((l) => (l.startsWith("- ") ? l.slice(2) : l))
    .join("\n");
}
