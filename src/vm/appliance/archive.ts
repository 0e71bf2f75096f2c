// Talking to the Debian archive (effects): fetch and verify InRelease (gpgv), Packages (SHA256) and .debs, all cached
// under the user's cache directory with write-to-temp-then-rename so concurrent builds never see a partial file.
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, existsSync } from "node:fs";
import { mkdir, open, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { VmdibError } from "../../errors.js";
import { redactUrl } from "../../mirror.js";
import { pipeErrors, spawnFilter } from "./deb.js";
import { type DebPackage, type PackageIndex, PackagesParser, parseReleaseSha256 } from "./packages.js";

/** Progress the library reports; the CLI decides how to print it. */
export type ApplianceEvent =
  | { type: "index"; source: "network" | "cache"; suite: string; date: string }
  | { type: "download-start"; name: string; bytes: number }
  | { type: "download-done"; name: string; bytes: number; ms: number }
  | { type: "downloads"; count: number; bytes: number; cached: number }
  | ({ type: "download-progress" } & DownloadProgress)
  | { type: "step"; message: string; ms?: number }
  | { type: "cache-hit"; key: string; dir: string }
  | { type: "warning"; message: string };

export type OnEvent = (e: ApplianceEvent) => void;

/**
 * How far one batch of downloads is (the package index, or the .debs missing from the cache). The total is known
 * up front from the signed index (Size fields), so a view can show "x of y MiB, rate, ETA".
 */
export interface DownloadProgress {
  /** "package index" or "packages". */
  readonly what: string;
  readonly done: number;
  readonly total: number;
  readonly files: number;
  readonly filesDone: number;
}

/** Progress events of a batch are at most this far apart (plus the first and the last), however fast bytes arrive. */
export const PROGRESS_INTERVAL_MS = 250;

/** Counts a batch's bytes and files, reporting through `onEvent` at most every PROGRESS_INTERVAL_MS. */
export function downloadMeter(
  what: string,
  totals: { bytes: number; files: number },
  onEvent: OnEvent | undefined,
  now: () => number = Date.now,
) {
  let done = 0;
  let filesDone = 0;
  let last = -Infinity;
  const emit = (force: boolean) => {
    const t = now();
    if (!onEvent || (!force && t - last < PROGRESS_INTERVAL_MS)) return;
    last = t;
    onEvent({ type: "download-progress", what, done, total: totals.bytes, files: totals.files, filesDone });
  };
  emit(true);
  return {
    data(bytes: number) {
      done += bytes;
      emit(false);
    },
    fileDone() {
      filesDone++;
      emit(filesDone === totals.files);
    },
  };
}

export const DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg";

export interface ArchiveOptions {
  mirror: string;
  suite: string;
  arch: string;
  /** cacheDir() of the user. */
  cacheRoot: string;
  offline: boolean;
  keyring: string;
  signal?: AbortSignal;
  onEvent?: OnEvent;
}

export interface LoadedIndex {
  index: PackageIndex;
  /** The verified InRelease's Date field. */
  date: string;
  /** SHA256 of the Packages file used (part of provenance in the manifest). */
  packagesSha256: string;
  /** The cached, verified, compressed Packages file (`xz` or `gz`, see its name). */
  path: string;
}

function indexDir(o: ArchiveOptions): string {
  // Without credentials: the same mirror's index is the same whoever logs in (and the password may change).
  const mirrorId = createHash("sha256").update(mirrorRequest(o.mirror).url).digest("hex").slice(0, 12);
  return join(o.cacheRoot, "index", mirrorId, o.suite);
}

/** A temp name next to `dest`, unique per process and call, so concurrent writers never share one. */
export function tempName(dest: string): string {
  return join(dirname(dest), `.${basename(dest)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
}

/** Write `data` to `dest` atomically. */
export async function writeAtomic(dest: string, data: string | Buffer): Promise<void> {
  await mkdir(dirname(dest), { recursive: true });
  const tmp = tempName(dest);
  await writeFile(tmp, data);
  await rename(tmp, dest);
}

/**
 * What fetch() is given for a mirror URL. WHATWG fetch (Node's included) refuses a URL with credentials
 * ("http://user:password@host/debian"), which apt, debootstrap and DIB accept for a private mirror: they move into
 * an `Authorization: Basic` header (RFC 7617), percent-escapes decoded as apt decodes them. On a redirect to
 * another origin fetch drops that header, so the credentials go only to the host they were written for.
 */
export function mirrorRequest(url: string): { url: string; headers: Record<string, string> } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return { url, headers: {} };
  }
  if (!u.username && !u.password) return { url, headers: {} };
  const userPass = `${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`;
  u.username = "";
  u.password = "";
  return { url: u.href, headers: { authorization: `Basic ${Buffer.from(userPass, "utf8").toString("base64")}` } };
}

async function httpGet(url: string, mirror: string, signal: AbortSignal | undefined): Promise<Response> {
  let res: Response;
  const request = mirrorRequest(url);
  try {
    res = await fetch(request.url, { headers: request.headers, signal: signal ?? null });
  } catch (err) {
    if (signal?.aborted) throw signal.reason ?? err;
    throw new VmdibError(`cannot reach the Debian mirror ${redactUrl(mirror)}`, {
      hint: "check the network, or set DIB_DISTRIBUTION_MIRROR to a reachable mirror; `--offline` works from the cache",
      cause: err,
      context: [
        `GET ${redactUrl(url)}: ${err instanceof Error ? ((err.cause as Error | undefined)?.message ?? err.message) : String(err)}`,
      ],
    });
  }
  if (res.status === 401 || res.status === 403) {
    await res.body?.cancel();
    const given = request.headers.authorization !== undefined;
    throw new VmdibError(
      `the Debian mirror ${redactUrl(mirror)} answered ${res.status} ${res.statusText} for ${redactUrl(url)}`,
      {
        hint: given
          ? "the mirror refused the credentials in its URL: check the user name and password in DIB_DISTRIBUTION_MIRROR (or the host's apt sources)"
          : "the mirror wants credentials: put them in the URL, http://USER:PASSWORD@host/path (percent-encode @ : / in them)",
      },
    );
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw new VmdibError(
      `the Debian mirror ${redactUrl(mirror)} answered ${res.status} ${res.statusText} for ${redactUrl(url)}`,
      {
        hint: "check DIB_DISTRIBUTION_MIRROR (or the host's apt sources): it must be the directory that holds dists/ and pool/",
      },
    );
  }
  return res;
}

/** Download `url` to `dest`, checking SHA256 (and size) while streaming; only a verified file gets the final name. */
export async function downloadVerified(
  url: string,
  dest: string,
  want: { sha256: string; size?: number },
  o: Pick<ArchiveOptions, "mirror" | "signal"> & { onData?: (bytes: number) => void },
): Promise<void> {
  const res = await httpGet(url, o.mirror, o.signal);
  await mkdir(dirname(dest), { recursive: true });
  const tmp = tempName(dest);
  const hash = createHash("sha256");
  let bytes = 0;
  try {
    const body = Readable.fromWeb(res.body as import("node:stream/web").ReadableStream<Uint8Array>);
    body.on("data", (d: Buffer) => {
      hash.update(d);
      bytes += d.length;
      o.onData?.(d.length);
    });
    await pipeline(body, createWriteStream(tmp), { signal: o.signal });
    const got = hash.digest("hex");
    if (got !== want.sha256 || (want.size !== undefined && bytes !== want.size)) {
      throw new VmdibError(`checksum mismatch for ${redactUrl(url)}`, {
        hint: "the mirror served a file that does not match the signed index; retry, or use another mirror",
        context: [
          `expected sha256 ${want.sha256} (${want.size ?? "?"} bytes)`,
          `got      sha256 ${got} (${bytes} bytes)`,
        ],
      });
    }
    await rename(tmp, dest);
  } finally {
    await rm(tmp, { force: true });
  }
}

/**
 * SHA256 of a file, read through one buffer: every cached .deb is hashed before each appliance build (~140 MB), and
 * the appliance snapshot (~530 MB) once when it is saved. A read stream's fresh chunk per read left tens of MB of dead
 * buffers for the garbage collector: hashing the snapshot in 4 MiB stream chunks raised the controller's RSS by
 * ~35 MB, through one 1 MiB buffer by 1 MB (and took 406 instead of 563 ms for 540 MB with a 64 KiB buffer).
 */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  const fh = await open(path, "r");
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (!bytesRead) break;
      hash.update(buf.subarray(0, bytesRead));
    }
  } finally {
    await fh.close();
  }
  return hash.digest("hex");
}

/** Verify a clearsigned file with gpgv against `keyring`; returns the signed text exactly as gpgv vouches for it. */
export async function verifyInRelease(path: string, keyring: string): Promise<string> {
  if (!existsSync(keyring)) {
    throw new VmdibError(`the Debian archive keyring ${keyring} does not exist`, {
      hint: "install debian-archive-keyring (Debian/Ubuntu: apt install debian-archive-keyring), or point VMDIB_KEYRING at a copy",
    });
  }
  return await new Promise((resolve, reject) => {
    // --output - prints only the signed part, so nothing outside the signature can sneak into the index we parse.
    execFile(
      "gpgv",
      ["--quiet", "--keyring", keyring, "--output", "-", path],
      { maxBuffer: 64 << 20, encoding: "utf8" },
      (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        const e = err as NodeJS.ErrnoException;
        if (e.code === "ENOENT") {
          return reject(
            new VmdibError("gpgv is not installed", { hint: "install gpgv (Debian/Ubuntu: apt install gpgv)" }),
          );
        }
        reject(
          new VmdibError(`the signature of ${path} does not verify against ${keyring}`, {
            hint: "the mirror's index is not signed by a Debian archive key: use another mirror, or update debian-archive-keyring",
            context: stderr.trim().split("\n").slice(-5),
          }),
        );
      },
    );
  });
}

/** How long a cached, verified InRelease is used without asking the mirror again (unless a refresh is asked for). */
export const INDEX_MAX_AGE_MS = 6 * 3600 * 1000;

export interface Release {
  /** The signed text of InRelease, exactly as gpgv vouched for it. */
  signedText: string;
  date: string;
  source: "network" | "cache";
  /** The cached InRelease file (a later download may replace it). */
  file: string;
}

/**
 * The suite's InRelease, signature-checked with gpgv. Offline, or when the cached copy is younger than
 * INDEX_MAX_AGE_MS and no refresh is asked for, the cached copy is used (and verified again).
 */
export async function loadRelease(o: ArchiveOptions & { refresh?: boolean }): Promise<Release> {
  const dir = indexDir(o);
  const inReleasePath = join(dir, "InRelease");
  let signedText: string;
  let source: Release["source"] = "cache";
  const cachedAge = existsSync(inReleasePath) ? Date.now() - (await stat(inReleasePath)).mtimeMs : Infinity;
  if (o.offline) {
    if (cachedAge === Infinity) {
      throw new VmdibError(`--offline: no cached index of ${o.suite} from ${redactUrl(o.mirror)}`, {
        hint: "run `vmdib appliance build` once with network access first",
      });
    }
    signedText = await verifyInRelease(inReleasePath, o.keyring);
  } else if (!o.refresh && cachedAge < INDEX_MAX_AGE_MS) {
    signedText = await verifyInRelease(inReleasePath, o.keyring);
  } else {
    const res = await httpGet(`${o.mirror}/dists/${o.suite}/InRelease`, o.mirror, o.signal);
    const body = Buffer.from(await res.arrayBuffer());
    await mkdir(dir, { recursive: true });
    const tmp = tempName(inReleasePath);
    try {
      await writeFile(tmp, body);
      signedText = await verifyInRelease(tmp, o.keyring);
      await rename(tmp, inReleasePath);
    } finally {
      await rm(tmp, { force: true });
    }
    source = "network";
  }
  const date = /^Date:\s*(.*)$/m.exec(signedText)?.[1] ?? "";
  o.onEvent?.({ type: "index", source, suite: o.suite, date });
  return { signedText, date, source, file: inReleasePath };
}

/** The Packages index for `arch` listed in a verified InRelease: cached by hash, downloaded and checked if missing. */
export async function loadPackages(o: ArchiveOptions, release: Release, component = "main"): Promise<LoadedIndex> {
  const dir = indexDir(o);
  const sums = parseReleaseSha256(release.signedText);
  const candidates = ["xz", "gz"].map((ext) => ({ ext, rel: `${component}/binary-${o.arch}/Packages.${ext}` }));
  const found = candidates.find((c) => sums.has(c.rel));
  if (!found) {
    throw new VmdibError(`InRelease of ${o.suite} lists no ${component}/binary-${o.arch}/Packages.xz or .gz`);
  }
  const want = sums.get(found.rel) as { sha256: string; size: number };
  const cached = join(dir, `Packages-${want.sha256.slice(0, 16)}.${found.ext}`);
  if (!existsSync(cached) || (await sha256File(cached)) !== want.sha256) {
    if (o.offline) {
      throw new VmdibError(
        `--offline: the cached Packages index of ${o.suite} is missing or does not match its InRelease`,
        {
          hint: "run `vmdib appliance build` once with network access first",
        },
      );
    }
    const meter = downloadMeter("package index", { bytes: want.size, files: 1 }, o.onEvent);
    await downloadVerified(`${o.mirror}/dists/${o.suite}/${found.rel}`, cached, want, { ...o, onData: meter.data });
    meter.fileDone();
  }
  const key = `${cached} ${o.arch}`;
  let index = parsedIndexes.get(key)?.deref();
  if (!index) {
    index = await parsePackagesFile(cached, o.arch);
    parsedIndexes.set(key, new WeakRef(index));
  }
  return {
    index,
    date: release.date,
    packagesSha256: want.sha256,
    path: cached,
  };
}

/**
 * Indexes parsed in this process, by file (named by its hash) and architecture, held weakly: a build parses the same
 * index for debootstrap's first stage and then for the appliance, and the first (~30 MB) is often still in the heap,
 * uncollected, when the second is parsed. Reusing it costs nothing; once collected it is parsed again.
 */
const parsedIndexes = new Map<string, WeakRef<PackageIndex>>();

/**
 * A compressed Packages file (`.xz` or `.gz`), decompressed and parsed as it streams: the ~50 MB of text are never
 * in memory at once, only the parsed index.
 */
export async function parsePackagesFile(path: string, arch: string): Promise<PackageIndex> {
  const parser = new PackagesParser(arch);
  for await (const chunk of readPackagesFile(path)) parser.push(chunk as Buffer);
  return parser.finish();
}

/** The decompressed bytes of a cached Packages file (`.xz` or `.gz`), as a stream. */
export function readPackagesFile(path: string): Readable {
  const file = createReadStream(path);
  return path.endsWith(".xz") ? spawnFilter("xz", ["-dc"], file) : pipeErrors(file, createGunzip());
}

export interface FetchedDeb {
  pkg: DebPackage;
  path: string;
}

/**
 * Every package's .deb in cacheRoot/debs (shared by all builds), downloading what is missing (4 at a time) and
 * checking each against the SHA256 from the signed index — also the cached ones, so a corrupted cache is noticed.
 */
export async function fetchDebs(pkgs: DebPackage[], o: ArchiveOptions): Promise<FetchedDeb[]> {
  const dir = join(o.cacheRoot, "debs");
  await mkdir(dir, { recursive: true });
  const out: FetchedDeb[] = pkgs.map((pkg) => ({ pkg, path: join(dir, basename(pkg.filename)) }));
  const todo: FetchedDeb[] = [];
  for (const d of out) {
    const ok =
      existsSync(d.path) && (await stat(d.path)).size === d.pkg.size && (await sha256File(d.path)) === d.pkg.sha256;
    if (!ok) todo.push(d);
  }
  const bytes = todo.reduce((n, d) => n + d.pkg.size, 0);
  o.onEvent?.({ type: "downloads", count: todo.length, bytes, cached: out.length - todo.length });
  if (todo.length && o.offline) {
    throw new VmdibError(`--offline: ${todo.length} package(s) are not in the cache`, {
      hint: "run `vmdib appliance build` once with network access first",
      context: todo.slice(0, 10).map((d) => `${d.pkg.name} ${d.pkg.version}`),
    });
  }
  if (!todo.length) return out;
  const meter = downloadMeter("packages", { bytes, files: todo.length }, o.onEvent);
  let next = 0;
  const worker = async () => {
    while (next < todo.length) {
      const d = todo[next++] as FetchedDeb;
      const t0 = Date.now();
      o.onEvent?.({ type: "download-start", name: d.pkg.name, bytes: d.pkg.size });
      await downloadVerified(
        `${o.mirror}/${d.pkg.filename}`,
        d.path,
        { sha256: d.pkg.sha256, size: d.pkg.size },
        { ...o, onData: meter.data },
      );
      meter.fileDone();
      o.onEvent?.({ type: "download-done", name: d.pkg.name, bytes: d.pkg.size, ms: Date.now() - t0 });
    }
  };
  await Promise.all(Array.from({ length: Math.min(4, todo.length) }, worker));
  return out;
}
