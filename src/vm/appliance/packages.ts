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
  packages: Map<string, DebPackage>;
  /** virtual name → providers, each with the provided version if the Provides entry had one. */
  providers: Map<string, { pkg: DebPackage; version: string | undefined }[]>;
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
 * A line scanner rather than parseStanzas: the index is ~50 MB and only a few fields matter.
 */
export function parsePackages(text: string, arch = "amd64"): PackageIndex {
  const packages = new Map<string, DebPackage>();
  let cur: Record<string, string> = {};
  let last: string | undefined;
  const flush = () => {
    const architecture = cur.architecture ?? "";
    if (cur.name && cur.filename && (architecture === arch || architecture === "all")) {
      const pkg: DebPackage = {
        name: cur.name,
        version: cur.version ?? "",
        architecture,
        depends: cur.depends ?? "",
        preDepends: cur.preDepends ?? "",
        provides: cur.provides ?? "",
        filename: cur.filename,
        sha256: cur.sha256 ?? "",
        size: Number(cur.size ?? "0"),
        essential: (cur["essential-raw"] ?? "").toLowerCase() === "yes",
        priority: cur.priority ?? "",
      };
      const prev = packages.get(pkg.name);
      if (!prev || compareVersions(pkg.version, prev.version) > 0) packages.set(pkg.name, pkg);
    }
    cur = {};
    last = undefined;
  };
  let pos = 0;
  while (pos <= text.length) {
    let eol = text.indexOf("\n", pos);
    if (eol < 0) eol = text.length;
    if (eol === pos || (eol === pos + 1 && text[pos] === "\r")) {
      flush();
    } else if (text[pos] === " " || text[pos] === "\t") {
      if (last) cur[last] = `${cur[last]} ${text.slice(pos, eol).trim()}`;
    } else {
      const colon = text.indexOf(":", pos);
      last = undefined;
      if (colon > pos && colon < eol) {
        const field = PACKAGE_FIELDS[text.slice(pos, colon).toLowerCase()];
        if (field) {
          cur[field] = text.slice(colon + 1, eol).trim();
          last = field;
        }
      }
    }
    pos = eol + 1;
  }
  flush();
  const providers: PackageIndex["providers"] = new Map();
  for (const pkg of packages.values()) {
    if (!pkg.provides) continue;
    for (const group of parseRelations(pkg.provides)) {
      for (const rel of group) {
        const list = providers.get(rel.name) ?? [];
        list.push({ pkg, version: rel.op === "=" ? rel.version : undefined });
        providers.set(rel.name, list);
      }
    }
  }
  return { packages, providers };
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
