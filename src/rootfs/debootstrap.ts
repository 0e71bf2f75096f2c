// debootstrap's first stage on the host, without root: the package set `debootstrap --variant=minbase` picks, the
// .debs fetched and verified, and a root-owned tar of what `debootstrap --foreign` leaves in its target, so the helper
// VM only runs the second stage (elements/debootstrap/root.d/08-debootstrap). Pure selection, effectful writer.
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { createReadStream, existsSync } from "node:fs";
import { type FileHandle, mkdir, open, readdir, readFile, rename, rm, stat, utimes } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Writable } from "node:stream";
import { VmdibError } from "../errors.js";
import { cacheDir } from "../paths.js";
import {
  type ArchiveOptions,
  DEFAULT_KEYRING,
  type FetchedDeb,
  fetchDebs,
  loadPackages,
  loadRelease,
  type OnEvent,
  readPackagesFile,
  tempName,
  writeAtomic,
} from "../vm/appliance/archive.js";
import { debTarEntries } from "../vm/appliance/deb.js";
import { limitYoungGeneration, releaseGarbage } from "../vm/appliance/memory.js";
import { type DebPackage, type PackageIndex, parseReleaseSha256, StanzaSelector } from "../vm/appliance/packages.js";
import { normalizePath } from "../vm/appliance/rootfs.js";
import { buildTarHead, type TarEntry, tarPadding } from "../vm/appliance/tar.js";

/** Bumped whenever the tarball's layout changes, so older cached tarballs are not reused. */
export const STAGE1_FORMAT = 4;

/** The top-level directories debootstrap's merge_usr moves into /usr (its list: every multilib name). */
export const MERGE_USR_DIRS = ["bin", "lib", "lib32", "lib64", "libo32", "libx32", "sbin"] as const;

/** Debian codenames whose debootstrap script (debian-common) this module reproduces: merged /usr, no usrmerge. */
const SUPPORTED_CODENAMES = ["bookworm", "trixie", "forky", "duke", "sid"];

// ---------------------------------------------------------------------------------------------------------------
// Package selection (pure), as debootstrap's work_out_debs + resolve_deps do it.

export interface SelectOptions {
  /** The Codename of the suite's Release file (debootstrap's CODENAME). */
  codename: string;
  /** `--include`: added to the base packages. */
  include?: readonly string[];
  /** `--exclude`: removed from the required and base lists (not from their dependencies). */
  exclude?: readonly string[];
  /** The mirror is https: debootstrap adds ca-certificates. */
  https?: boolean;
}

export interface DebootstrapSelection {
  /** Extracted by the first stage and installed first by the second (sorted, as debootstrap writes them). */
  required: string[];
  /** Installed after the required set (sorted; none left for bookworm minbase, where apt is required). */
  base: string[];
}

/**
 * The names debootstrap's GETDEPS reads from a package: Pre-Depends and Depends, only the first alternative of each
 * OR-group, version and architecture qualifier dropped. Virtual names are kept here and dropped later (not real).
 */
export function debootstrapDeps(pkg: Pick<DebPackage, "depends" | "preDepends">): string[] {
  const out: string[] = [];
  for (const field of [pkg.preDepends, pkg.depends]) {
    if (!field) continue;
    for (const group of field.split(/\s*,\s*/)) {
      const first = group
        .replace(/\s*[|].*$/, "")
        .replace(/\s*[(].*[)]\s*/, "")
        .replace(/:.*/, "");
      out.push(...first.split(/\s+/).filter(Boolean));
    }
  }
  return out;
}

function byteSort(names: Iterable<string>): string[] {
  return [...new Set(names)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** debootstrap's resolve_deps: the closure over first alternatives, keeping only names that are real packages. */
export function resolveDebootstrapDeps(
  indexes: readonly PackageIndex[],
  roots: readonly string[],
  excludeDependency: readonly string[] = [],
): string[] {
  const isReal = (n: string) => indexes.some((i) => i.packages.has(n));
  const all = new Set(roots);
  let cur = byteSort(roots);
  while (cur.length) {
    const found: string[] = [];
    for (const name of cur) {
      for (const index of indexes) {
        const pkg = index.packages.get(name);
        if (pkg) found.push(...debootstrapDeps(pkg));
      }
    }
    const next = byteSort([...cur, ...found.filter((n) => !excludeDependency.includes(n))]).filter(
      (n) => isReal(n) && !all.has(n),
    );
    for (const n of next) all.add(n);
    cur = next;
  }
  return byteSort(all);
}

/** What `debootstrap --variant=minbase [--include] [--exclude] SUITE` installs, split as it splits it. */
export function selectDebootstrapPackages(indexes: readonly PackageIndex[], o: SelectOptions): DebootstrapSelection {
  const exclude = new Set(o.exclude ?? []);
  let required: string[] = [];
  for (const index of indexes) {
    for (const pkg of index.packages.values()) if (pkg.priority === "required") required.push(pkg.name);
  }
  let base = ["apt"];
  if (o.https) base.push("ca-certificates");
  const excludeDependency: string[] = [];
  // debian-common: bookworm installs the empty usr-is-merged (debootstrap merges /usr itself); every suite from
  // bookworm on prunes the live-migration package usrmerge from dependencies.
  if (o.codename === "bookworm") required.push("usr-is-merged");
  excludeDependency.push("usrmerge");
  base = [...base, ...(o.include ?? [])].filter((n) => !exclude.has(n));
  required = required.filter((n) => !exclude.has(n));
  const missing = byteSort([...required, ...base]).filter((n) => !indexes.some((i) => i.packages.has(n)));
  if (missing.length) {
    throw new VmdibError(`debootstrap: package(s) not in the archive index: ${missing.join(", ")}`, {
      hint: "check --include in DIB_DEBOOTSTRAP_EXTRA_ARGS, DIB_RELEASE and DIB_DEBIAN_COMPONENTS",
    });
  }
  const req = resolveDebootstrapDeps(indexes, required, excludeDependency);
  const reqSet = new Set(req);
  const b = resolveDebootstrapDeps(indexes, base, excludeDependency).filter((n) => !reqSet.has(n));
  return { required: req, base: b };
}

// ---------------------------------------------------------------------------------------------------------------
// The guest-visible contract (pure).

/** DIB_DEBOOTSTRAP_EXTRA_ARGS this module can honour; anything else means the guest runs debootstrap itself. */
export function parseExtraArgs(extra: string): { include: string[]; exclude: string[] } | undefined {
  const include: string[] = [];
  const exclude: string[] = [];
  const words = extra.split(/\s+/).filter(Boolean);
  for (let i = 0; i < words.length; i++) {
    const w = words[i] as string;
    const list = (v: string | undefined) => (v ?? "").split(",").filter(Boolean);
    if (w.startsWith("--include=")) include.push(...list(w.slice(10)));
    else if (w.startsWith("--exclude=")) exclude.push(...list(w.slice(10)));
    else if (w === "--include" || w === "--exclude") (w === "--include" ? include : exclude).push(...list(words[++i]));
    else if (w === "--variant=minbase" || w === "--verbose" || w === "--merged-usr") continue;
    else return undefined;
  }
  return { include, exclude };
}

/**
 * The string 08-debootstrap rebuilds from its own environment and compares with VMDIB_DEBOOTSTRAP_STAGE1_INPUTS
 * before using the tarball: the same fields, in the same order, joined by "|".
 */
export function stage1InputsString(i: {
  mirror: string;
  release: string;
  arch: string;
  components: string;
  extraArgs: string;
}): string {
  return [i.mirror.replace(/\/$/, ""), i.release, i.arch, i.components, i.extraArgs].join("|");
}

/** debootstrap's apt_dest for an index file: the mirror without scheme, "/" → "_", under var/lib/apt/lists. */
export function aptListPath(mirror: string, path: string): string {
  return `var/lib/apt/lists/${`${mirror}_${path}`.replace(/^[^:]+:\/\//, "").replace(/\//g, "_")}`;
}

/**
 * apt's name for the file it keeps of an index URI under /var/lib/apt/lists (its URItoFileName): no scheme and no
 * credentials, the characters apt quotes as %xx, then "/" → "_". Not always debootstrap's name (aptListPath).
 */
export function aptListName(uri: string): string {
  const rest = uri.replace(/^[^:/]+:\/\//, "");
  const slash = rest.includes("/") ? rest.indexOf("/") : rest.length;
  const host = rest.slice(0, slash);
  const plain = host.slice(host.lastIndexOf("@") + 1) + rest.slice(slash);
  const quoted = [...Buffer.from(plain)].map((b) =>
    b <= 0x20 || b >= 0x7f || '\\|{}[]<>"^~_=!@#$%&*'.includes(String.fromCharCode(b))
      ? `%${b.toString(16).padStart(2, "0")}`
      : String.fromCharCode(b),
  );
  return quoted.join("").replace(/\//g, "_");
}

/** Where the stage-one tar carries the host's signed index for apt until the second stage is done (08-debootstrap). */
export const APT_LISTS_STAGING = "var/lib/vmdib-apt-lists";

/** debootstrap's apt_dest for a .deb (the first ":", an epoch, is escaped as %3a). */
export function debCachePath(pkg: Pick<DebPackage, "name" | "version" | "architecture">): string {
  return `var/cache/apt/archives/${pkg.name}_${pkg.version}_${pkg.architecture}.deb`.replace(":", "%3a");
}

/** Top-level merged-/usr move: "bin/ls" → "usr/bin/ls", "lib64" → "usr/lib64"; other paths unchanged. */
export function mergeUsrPath(p: string): string {
  const first = p.split("/", 1)[0] ?? "";
  return (MERGE_USR_DIRS as readonly string[]).includes(first) ? `usr/${p}` : p;
}

// ---------------------------------------------------------------------------------------------------------------
// Writing the tarball (effects).

type Kind = TarEntry["type"];

/**
 * A zstd-compressed tar written entry by entry (the host's zstd, which the appliance builder needs anyway); remembers
 * what it holds so debootstrap's tar -k conflicts are detected. Compressed because the guest reads it over 9p:
 * measured under TCG, extracting the bookworm tarball took 43 s plain (149 MB) and 16 s with zstd -3 (70 MB).
 */
class Stage1Tar {
  readonly kinds = new Map<string, Kind>();
  private constructor(
    private readonly fh: FileHandle,
    private readonly zstd: ChildProcess,
    private readonly stdin: Writable,
    private readonly exited: Promise<void>,
    private readonly mtime: number,
  ) {}

  static async create(path: string, mtime: number): Promise<Stage1Tar> {
    const fh = await open(path, "w");
    // -T0: all host cores; level 3 already gets the size down to what the guest's read rate favours.
    const zstd = spawn("zstd", ["-q", "-3", "-T0", "-c"], { stdio: ["pipe", fh.fd, "pipe"] });
    let stderr = "";
    const stdin = zstd.stdin as Writable; // stdio[0] is "pipe"
    zstd.stderr?.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    stdin.on("error", () => {}); // EPIPE when zstd dies: reported through `exited`
    const exited = new Promise<void>((resolve, reject) => {
      zstd.on("error", (err: NodeJS.ErrnoException) =>
        reject(
          err.code === "ENOENT"
            ? new VmdibError("'zstd' is not installed", { hint: "install zstd (Debian: apt install zstd)", cause: err })
            : err,
        ),
      );
      zstd.on("close", (code) =>
        code === 0 ? resolve() : reject(new Error(`zstd failed (exit ${code}): ${stderr.trim()}`)),
      );
    });
    exited.catch(() => {}); // observed by write/close; never an unhandled rejection
    return new Stage1Tar(fh, zstd, stdin, exited, mtime);
  }

  private async write(buf: Buffer): Promise<void> {
    if (!this.stdin.write(buf)) await Promise.race([once(this.stdin, "drain"), this.exited]);
  }

  /** An entry's parents, then its header for a body of `size` bytes; the caller writes the body and its padding. */
  private async head(e: Partial<TarEntry> & { path: string; type: Kind }, size: number): Promise<void> {
    const path = normalizePath(e.path);
    await this.ensureParents(path);
    this.kinds.set(path, e.type);
    const full: Partial<TarEntry> = { uid: 0, gid: 0, mtime: this.mtime, ...e, path: path === "" ? "./" : `./${path}` };
    if (e.type === "dir" && path !== "") full.path = `./${path}/`;
    await this.write(buildTarHead(full, size));
  }

  async add(e: Partial<TarEntry> & { path: string; type: Kind }): Promise<void> {
    // Head, body and padding written as they are: a body is never copied into one buffer with its header.
    const size = e.type === "file" ? (e.data?.length ?? 0) : 0;
    await this.head(e, size);
    if (size) {
      await this.write(e.data as Buffer);
      await this.write(tarPadding(size));
    }
  }

  /** A regular file whose contents are read from `src` as they are written (a .deb is not held in memory). */
  async fileFrom(path: string, src: string, mtime?: number): Promise<void> {
    const { size } = await stat(src);
    await this.fileStream({ path, mtime }, createReadStream(src), { size, what: src });
  }

  /**
   * A regular file of `want.size` bytes copied from `body` as it is read; with `want.sha256`, its hash is checked too.
   * `what` names the source in errors.
   */
  async fileStream(
    e: { path: string; mtime?: number | undefined },
    body: AsyncIterable<Buffer>,
    want: { size: number; sha256?: string; what: string },
  ): Promise<void> {
    await this.head({ ...e, mtime: e.mtime ?? this.mtime, type: "file", mode: 0o644 }, want.size);
    const hash = want.sha256 ? createHash("sha256") : undefined;
    let copied = 0;
    // A fresh chunk per read: the pipe to zstd may still hold the previous one.
    for await (const chunk of body) {
      copied += chunk.length;
      hash?.update(chunk);
      await this.write(chunk);
    }
    if (copied !== want.size) {
      throw new Error(`${want.what} changed size while it was copied (${want.size} -> ${copied} bytes)`);
    }
    if (hash && hash.digest("hex") !== want.sha256) throw new Error(`${want.what} does not match its signed SHA256`);
    await this.write(tarPadding(want.size));
  }

  async dir(path: string, mode = 0o755): Promise<void> {
    if (!this.kinds.has(normalizePath(path))) await this.add({ path, type: "dir", mode });
  }

  async file(path: string, data: Buffer | string, mode = 0o644): Promise<void> {
    await this.add({ path, type: "file", mode, data: Buffer.from(data) });
  }

  private async ensureParents(path: string): Promise<void> {
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      if (!this.kinds.has(dir)) await this.add({ path: dir, type: "dir", mode: 0o755 });
    }
  }

  async close(): Promise<void> {
    this.stdin.end(Buffer.alloc(1024));
    try {
      await this.exited;
    } finally {
      await this.fh.close();
    }
  }

  async abort(): Promise<void> {
    this.zstd.kill();
    await this.exited.catch(() => {});
    await this.fh.close().catch(() => {});
  }
}

/**
 * One package's data, as debootstrap's `dpkg-deb --fsys-tarfile | tar -k -xf -` followed by merge_usr leaves it:
 * the first package to ship a path keeps it (a second non-directory is an error, as tar -k makes it), the top-level
 * bin/lib*\/sbin trees live under usr/.
 */
async function extractInto(tar: Stage1Tar, deb: FetchedDeb, merged: Set<string>): Promise<void> {
  for await (const e of await debTarEntries(deb.path, "data")) {
    const orig = normalizePath(e.path);
    if (orig === "") continue;
    const top = orig.split("/", 1)[0] as string;
    if ((MERGE_USR_DIRS as readonly string[]).includes(top)) merged.add(top);
    const path = mergeUsrPath(orig);
    const prev = tar.kinds.get(path);
    if (prev !== undefined) {
      if (prev === "dir" && e.type === "dir") continue;
      throw new VmdibError(`debootstrap stage one: ${deb.pkg.name} ships /${orig}, which an earlier package has`, {
        hint: "debootstrap itself fails the same way; report the package set (DIB_DEBOOTSTRAP_EXTRA_ARGS)",
      });
    }
    const linkname = e.type === "hardlink" ? `./${mergeUsrPath(normalizePath(e.linkname))}` : e.linkname;
    await tar.add({ ...e, path, linkname, data: e.type === "file" ? e.data : Buffer.alloc(0) });
  }
}

/** The Packages stanzas of `names`, verbatim (what debootstrap's setup_available reads in the second stage). */
async function packagesStanzas(compressedPath: string, names: ReadonlySet<string>): Promise<string> {
  const selector = new StanzaSelector(names); // streamed: the index is ~50 MB of text
  for await (const chunk of readPackagesFile(compressedPath)) selector.push(chunk as Buffer);
  return selector.finish();
}

export interface Stage1Spec {
  mirror: string;
  suite: string;
  codename: string;
  arch: string;
  components: string[];
  selection: DebootstrapSelection;
  /** Every selected package, by name. */
  debs: Map<string, FetchedDeb>;
  /** Per component, in order: the names whose .deb came from it and its cached Packages file. */
  componentFiles: { component: string; packagesPath: string; names: string[] }[];
  /** The signed index for apt: the verified InRelease file and each component's Packages as that lists it. */
  aptIndex?: {
    inRelease: string;
    packages: { component: string; compressedPath: string; size: number; sha256: string }[];
  };
  /** Reproducible mtime for synthesized entries (the InRelease Date). */
  mtime: number;
  key: string;
}

/** Write the stage-one tarball for `spec` to `dest` (temp name, then rename). */
export async function writeStage1Tar(spec: Stage1Spec, dest: string): Promise<void> {
  await mkdir(dirname(dest), { recursive: true });
  const tmp = tempName(dest);
  const tar = await Stage1Tar.create(tmp, spec.mtime);
  try {
    // debootstrap's order: target dir, download dirs, its own state dir, then extraction.
    await tar.dir("", 0o755);
    await tar.dir("var/lib/apt/lists/partial");
    await tar.dir("var/cache/apt/archives/partial");
    await tar.dir("debootstrap");
    const debpaths = spec.componentFiles.flatMap((c) => c.names);
    const merged = new Set<string>();
    const required = new Set(spec.selection.required);
    for (const name of debpaths) {
      if (!required.has(name)) continue;
      await extractInto(tar, spec.debs.get(name) as FetchedDeb, merged);
    }
    for (const d of MERGE_USR_DIRS) {
      if (merged.has(d)) await tar.add({ path: d, type: "symlink", linkname: `usr/${d}`, mode: 0o777 });
    }
    await tar.file("var/lib/dpkg/status", "");
    await tar.file("var/lib/dpkg/available", "");
    if (!tar.kinds.has("etc/fstab")) await tar.file("etc/fstab", "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n");
    // setup_devices_simple (the appliance is no container: real nodes, no /proc symlink).
    const nodes: [string, number, number][] = [
      ["null", 1, 3],
      ["zero", 1, 5],
      ["full", 1, 7],
      ["random", 1, 8],
      ["urandom", 1, 9],
      ["tty", 5, 0],
      ["console", 5, 1],
      ["ptmx", 5, 2],
    ];
    for (const [name, devmajor, devminor] of nodes) {
      if (!tar.kinds.has(`dev/${name}`)) {
        await tar.add({ path: `dev/${name}`, type: "chardev", mode: 0o666, devmajor, devminor });
      }
    }
    await tar.dir("dev/pts");
    await tar.dir("dev/shm");
    for (const [name, target] of [
      ["fd", "/proc/self/fd"],
      ["stdin", "/proc/self/fd/0"],
      ["stdout", "/proc/self/fd/1"],
      ["stderr", "/proc/self/fd/2"],
    ] as const) {
      await tar.add({ path: `dev/${name}`, type: "symlink", linkname: target, mode: 0o777 });
    }
    // The .debs (debootstrap downloads all before extracting) and its state files.
    for (const name of debpaths) {
      const d = spec.debs.get(name) as FetchedDeb;
      await tar.fileFrom(debCachePath(d.pkg), d.path);
    }
    const lines = (f: (d: FetchedDeb) => string) => debpaths.map((n) => `${f(spec.debs.get(n) as FetchedDeb)}\n`);
    await tar.file("debootstrap/debpaths", lines((d) => `${d.pkg.name} /${debCachePath(d.pkg)}`).join(""));
    await tar.file(
      "debootstrap/deburis",
      lines((d) => `${d.pkg.name} ${d.pkg.version} ${spec.mirror}/${d.pkg.filename}`).join(""),
    );
    await tar.file("debootstrap/arch", `${spec.arch}\n`);
    await tar.file("debootstrap/suite", `${spec.suite}\n`);
    await tar.file("debootstrap/mirror", `${spec.mirror}\n`);
    await tar.file("debootstrap/variant", "minbase\n");
    // Byte for byte as debootstrap writes them (resolve_deps output after a blank line; `without` output).
    await tar.file("debootstrap/required", `\n${spec.selection.required.join("\n")}\n`);
    const base = spec.selection.base;
    await tar.file("debootstrap/base", base.length ? `${base.join(" ")} \n` : "\n");
    await tar.file(
      "debootstrap/debootstrap.log",
      `vmdib: first stage made on the build host (key ${spec.key}): ${debpaths.length} packages verified against ` +
        `the signed index of ${spec.suite}, ${required.size} extracted\n`,
    );
    // Only the stanzas the second stage reads (setup_available): the full index is 50 MB and apt fetches its own.
    for (const c of spec.componentFiles) {
      const path = aptListPath(spec.mirror, `dists/${spec.suite}/${c.component}/binary-${spec.arch}/Packages`);
      await tar.file(path, await packagesStanzas(c.packagesPath, new Set(c.names)));
    }
    // And the whole index for apt, which 08-debootstrap puts under apt's names once the second stage is done: apt's
    // first update then finds it current (or fetches only what changed since) instead of downloading ~9 MB of xz and
    // decompressing it under emulation (~6 s of the build).
    if (spec.aptIndex) {
      const uri = `${spec.mirror.replace(/\/*$/, "/")}dists/${spec.suite}/`;
      const { inRelease, packages } = spec.aptIndex;
      const staged = (name: string) => `${APT_LISTS_STAGING}/${aptListName(uri + name)}`;
      await tar.fileFrom(staged("InRelease"), inRelease, Math.floor((await stat(inRelease)).mtimeMs / 1000));
      for (const p of packages) {
        const name = `${p.component}/binary-${spec.arch}/Packages`;
        await tar.fileStream({ path: staged(name) }, readPackagesFile(p.compressedPath), { ...p, what: name });
      }
    }
    const used = spec.componentFiles.filter((c) => c.names.length).map((c) => c.component);
    await tar.file("etc/apt/sources.list", `deb ${spec.mirror} ${spec.suite} ${used.join(" ")}\n`);
    await tar.close();
    await rename(tmp, dest);
  } catch (err) {
    await tar.abort();
    throw err;
  } finally {
    await rm(tmp, { force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The host step the build command calls before booting the VM.

export interface Stage1Request {
  /** The resolved element set. */
  elements: readonly { name: string; path: string }[];
  /** The variables the build passes into the guest (DIB_*), as the element scripts will see them before environment.d. */
  env: Readonly<Record<string, string | undefined>>;
  arch: string;
  /** Host directory shared to the guest as DIB_IMAGE_CACHE. */
  imageCache: string;
  /** DIB_IMAGE_CACHE inside the guest. */
  guestImageCache: string;
  /** The user's cache directory (shared .deb and index cache); default cacheDir(). */
  cacheRoot?: string;
  offline?: boolean;
  /** Build the tarball again even if one with the same key exists. */
  noCache?: boolean;
  /** The Debian archive keyring InRelease is checked against; default $VMDIB_KEYRING, else the system's. */
  keyring?: string;
  signal?: AbortSignal;
  onEvent?: OnEvent;
}

export interface Stage1Result {
  /** The tarball inside the guest (under guestImageCache). */
  guestPath: string;
  hostPath: string;
  key: string;
  hit: boolean;
  /** Variables to add to the build environment: VMDIB_DEBOOTSTRAP_STAGE1 and VMDIB_DEBOOTSTRAP_STAGE1_INPUTS. */
  env: Record<string, string>;
  /**
   * On a miss: downloads the .debs and writes the tarball, which the guest needs only when root.d starts — the
   * build runs it while the helper VM boots. Until it is done, hostPath does not exist.
   */
  write?: () => Promise<void>;
}

/** The Debian release/mirror/options this module can handle for the request, or why not. */
export function stage1Plan(r: Pick<Stage1Request, "elements" | "env" | "arch">):
  | {
      ok: true;
      mirror: string;
      release: string;
      components: string[];
      include: string[];
      exclude: string[];
      inputs: string;
    }
  | { ok: false; reason: string } {
  const names = new Set(r.elements.map((e) => e.name));
  if (!names.has("debian-minimal")) return { ok: false, reason: "no debian-minimal element" };
  // vmdib's debootstrap element uses the stage itself; DIB's own runs `debootstrap` whole, which the guest's
  // debootstrap wrapper (guest/dib/bin/debootstrap) turns into the second stage when the inputs match.
  if (!r.elements.some((e) => e.name === "debootstrap")) return { ok: false, reason: "no debootstrap element" };
  const env = r.env;
  const mirror = (env.DIB_DEBIAN_DISTRIBUTION_MIRROR || env.DIB_DISTRIBUTION_MIRROR || "").replace(/\/$/, "");
  if (!/^https?:\/\/[^/]/.test(mirror)) return { ok: false, reason: "no http(s) mirror" };
  if (env.DIB_DEBIAN_DEBOOTSTRAP_SCRIPT) return { ok: false, reason: "DIB_DEBIAN_DEBOOTSTRAP_SCRIPT is set" };
  if (env.DIB_APT_KEYRING || env.DIB_DEBIAN_KEYRING) return { ok: false, reason: "a custom keyring is set" };
  if (env.DIB_DEBOOTSTRAP_TOOL && env.DIB_DEBOOTSTRAP_TOOL !== "debootstrap") {
    return { ok: false, reason: `DIB_DEBOOTSTRAP_TOOL=${env.DIB_DEBOOTSTRAP_TOOL}` };
  }
  const extraArgs = env.DIB_DEBOOTSTRAP_EXTRA_ARGS ?? "";
  const extra = parseExtraArgs(extraArgs);
  if (!extra) return { ok: false, reason: `unsupported DIB_DEBOOTSTRAP_EXTRA_ARGS '${extraArgs}'` };
  const release = env.DIB_RELEASE || "bookworm";
  const componentsRaw = env.DIB_DEBIAN_COMPONENTS || "main";
  const components = componentsRaw.split(",").filter(Boolean);
  const inputs = stage1InputsString({ mirror, release, arch: r.arch, components: componentsRaw, extraArgs });
  return { ok: true, mirror, release, components, ...extra, inputs };
}

function stage1Key(parts: unknown): string {
  return createHash("sha256").update(JSON.stringify(parts)).digest("hex").slice(0, 16);
}

/**
 * Find the stage-one tarball for this build in the image cache, or resolve what it will hold (its key) and return how
 * to write it (`write`). Undefined when the build does not use a debootstrap element on a Debian release this module
 * reproduces; the guest then runs debootstrap whole.
 */
export async function prepareDebootstrapStage1(req: Stage1Request): Promise<Stage1Result | undefined> {
  const plan = stage1Plan(req);
  if (!plan.ok) {
    req.onEvent?.({ type: "step", message: `debootstrap stage one runs in the guest: ${plan.reason}` });
    return undefined;
  }
  limitYoungGeneration(); // the index, the downloads and the tarball: see memory.ts
  const t0 = Date.now();
  const archive: ArchiveOptions = {
    mirror: plan.mirror,
    suite: plan.release,
    arch: req.arch,
    cacheRoot: req.cacheRoot ?? cacheDir(),
    offline: req.offline ?? false,
    // The same keyring the appliance uses (src/vm/appliance/index.ts): macOS has no system copy.
    keyring: req.keyring ?? (process.env.VMDIB_KEYRING || DEFAULT_KEYRING),
    ...(req.signal ? { signal: req.signal } : {}),
    ...(req.onEvent ? { onEvent: req.onEvent } : {}),
  };
  const release = await loadRelease(archive);
  const codename = /^Codename:\s*(\S+)/m.exec(release.signedText)?.[1] ?? "";
  if (!SUPPORTED_CODENAMES.includes(codename)) {
    req.onEvent?.({ type: "step", message: `debootstrap stage one runs in the guest: release '${codename}'` });
    return undefined;
  }
  const result = (key: string, hit: boolean): Stage1Result => {
    const name = `debootstrap-stage1-${plan.release}-${req.arch}-${key}.tar.zst`;
    const guestPath = `${req.guestImageCache}/${name}`;
    return {
      guestPath,
      hostPath: join(req.imageCache, name),
      key,
      hit,
      env: { VMDIB_DEBOOTSTRAP_STAGE1: guestPath, VMDIB_DEBOOTSTRAP_STAGE1_INPUTS: plan.inputs },
    };
  };
  // Warm path: the same signed index and inputs resolved before, to a tarball that is still there.
  const resolvedFile = join(
    req.imageCache,
    ".debootstrap-stage1",
    `${stage1Key([STAGE1_FORMAT, plan.inputs, release.signedText])}.json`,
  );
  if (!req.noCache && existsSync(resolvedFile)) {
    const { key } = JSON.parse(await readFile(resolvedFile, "utf8")) as { key: string };
    const hit = result(key, true);
    if (existsSync(hit.hostPath)) {
      await touch(hit.hostPath);
      req.onEvent?.({ type: "cache-hit", key, dir: hit.hostPath });
      return hit;
    }
  }

  const loaded = [];
  for (const component of plan.components) {
    loaded.push({ component, ...(await loadPackages(archive, release, component)) });
  }
  const selection = selectDebootstrapPackages(
    loaded.map((l) => l.index),
    { codename, include: plan.include, exclude: plan.exclude, https: plan.mirror.startsWith("https://") },
  );
  const all = new Set([...selection.required, ...selection.base]);
  // download_release: per component in order, the names first found there, sorted.
  const taken = new Set<string>();
  const componentFiles = loaded.map((l) => {
    const names = byteSort([...all].filter((n) => !taken.has(n) && l.index.packages.has(n)));
    for (const n of names) taken.add(n);
    return { component: l.component, packagesPath: l.path, names, index: l.index };
  });
  const pkgs = componentFiles.flatMap((c) => c.names.map((n) => c.index.packages.get(n) as DebPackage));
  const key = stage1Key({
    format: STAGE1_FORMAT,
    mirror: plan.mirror,
    suite: plan.release,
    codename,
    arch: req.arch,
    components: plan.components,
    variant: "minbase",
    include: plan.include,
    exclude: plan.exclude,
    required: selection.required,
    debs: pkgs.map((p) => `${p.name} ${p.version} ${p.sha256}`),
  });
  req.onEvent?.({
    type: "step",
    message: `debootstrap stage one: ${selection.required.length} required + ${selection.base.length} base packages, key ${key}`,
    ms: Date.now() - t0,
  });
  const out = result(key, false);
  if (!req.noCache && existsSync(out.hostPath)) {
    await writeAtomic(resolvedFile, `${JSON.stringify({ key })}\n`);
    await touch(out.hostPath);
    req.onEvent?.({ type: "cache-hit", key, dir: out.hostPath });
    return { ...out, hit: true };
  }
  // Only what writing needs is kept for it (not the parsed indexes): it runs while the helper VM boots.
  const date = Date.parse(release.date);
  const sums = parseReleaseSha256(release.signedText);
  const files = componentFiles.map(({ component, packagesPath, names }) => ({ component, packagesPath, names }));
  const aptPackages = files.flatMap((c) => {
    const sum = sums.get(`${c.component}/binary-${req.arch}/Packages`);
    return sum ? [{ component: c.component, compressedPath: c.packagesPath, ...sum }] : [];
  });
  const write = async () => {
    releaseGarbage(); // what the appliance's assembly left, so that writing reuses it rather than adding to it
    const t1 = Date.now();
    const fetched = await fetchDebs(pkgs, archive);
    await writeStage1Tar(
      {
        mirror: plan.mirror,
        suite: plan.release,
        codename,
        arch: req.arch,
        components: plan.components,
        selection,
        debs: new Map(fetched.map((d) => [d.pkg.name, d])),
        componentFiles: files,
        aptIndex: { inRelease: release.file, packages: aptPackages },
        mtime: Number.isFinite(date) ? Math.floor(date / 1000) : 0,
        key,
      },
      out.hostPath,
    );
    await writeAtomic(resolvedFile, `${JSON.stringify({ key })}\n`);
    await pruneStage1(req.imageCache, out.hostPath);
    req.onEvent?.({ type: "step", message: `debootstrap stage one written: ${out.hostPath}`, ms: Date.now() - t1 });
  };
  releaseGarbage(); // the parsed indexes, before the appliance's assembly that may come next
  return { ...out, write };
}

async function touch(path: string): Promise<void> {
  const now = new Date();
  await utimes(path, now, now).catch(() => {});
}

/** Stage-one tarballs unused for two days go (a concurrent build touched the one it uses when it started). */
async function pruneStage1(dir: string, keep: string): Promise<void> {
  const cutoff = Date.now() - 2 * 24 * 3600 * 1000;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const path = join(dir, name);
    if (!/^debootstrap-stage1-.*\.tar(\.zst)?$/.test(name) || path === keep) continue;
    const st = await stat(path).catch(() => undefined);
    if (st && st.mtimeMs < cutoff) await rm(path, { force: true });
  }
}
