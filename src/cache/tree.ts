// The phase-level cache: the build tree after post-root.d, kept in the user's cache under a key that hashes
// everything that fed it (element files, environment, host files named by DIB_* settings, the guest driver), so a
// rebuild whose inputs up to there are unchanged goes straight to the block device. Key and file layout are pure;
// lookup, commit and pruning touch the cache directory.
import { createHash } from "node:crypto";
import { readdir, readFile, readlink, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pidAlive } from "../lock.js";
import { sha256File } from "../vm/appliance/archive.js";
import { hostFileSettings } from "../workdir.js";

/** Where the cache directory is shared read-write in the guest. */
export const GUEST_TREES = "/vmdib/trees";

/**
 * Bumped when what a cached tree holds, or how it is made, changes. 2: the metadata records the tree's size as
 * stash-root measured it (builtKib); entries without it are never looked up.
 */
export const TREE_FORMAT = 2;

/** Hook directories that run after the tree is cached: editing them must not invalidate it. */
export const LATER_PHASE_DIRS: readonly string[] = ["block-device.d", "pre-finalise.d", "finalise.d", "cleanup.d"];

/**
 * Element files that never reach the tree: documentation, and the block-device layout (its effect on early phases,
 * DIB_ROOT_LABEL and friends, is part of the environment and so of the key).
 */
const IGNORED_FILE = /^(README(\..*)?|.*\.md|block-device-[a-z0-9_-]+\.yaml)$/;

/**
 * Variables that do not shape the tree: where outputs go, tracing, checksums, the docker tag. Leaving them out lets
 * `-o elsewhere`, `-x` or `--checksum` reuse a tree; every other variable is part of the key.
 */
export const ENV_NOT_IN_KEY: readonly string[] = ["IMAGE_NAME", "DIB_DEBUG_TRACE", "DIB_CHECKSUM", "DOCKER_TARGET"];

/** How many trees the cache keeps (most recently used first); each is a full uncompressed tree. */
export const TREES_KEPT = 3;

/** One file of an element as the key sees it: path inside the element, executable bit, content hash. */
export type FileDigest = readonly [path: string, mode: "x" | "-", sha256: string];

export interface TreeKeyInputs {
  readonly arch: string;
  readonly elements: readonly { readonly name: string; readonly files: readonly FileDigest[] }[];
  /** The build's common environment, as the guest sees it. */
  readonly env: Readonly<Record<string, string>>;
  /** Content hashes of the host files that DIB_* settings name (their paths alone say nothing). */
  readonly hostFiles: Readonly<Record<string, string>>;
  /** Hash of guest/dib, the driver that runs the phases. */
  readonly driver: string;
}

/** The cache key (pure): 24 hex digits of a SHA-256 over every input in a fixed order. */
export function treeCacheKey(inputs: TreeKeyInputs): string {
  const env = Object.entries(inputs.env)
    .filter(([k]) => !ENV_NOT_IN_KEY.includes(k))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const hostFiles = Object.entries(inputs.hostFiles).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const doc = {
    format: TREE_FORMAT,
    arch: inputs.arch,
    elements: inputs.elements,
    env,
    hostFiles,
    driver: inputs.driver,
  };
  return createHash("sha256").update(JSON.stringify(doc)).digest("hex").slice(0, 24);
}

/**
 * tar's record size for archives on a 9p share (the saved tree, tar outputs), in 512-byte blocks (128 KiB). The
 * shares are mounted `sync`, and tar reads and writes an archive one record per call, each a round trip to the host:
 * with tar's default 10 KiB records, reading a 1 GB tree took 80 s under TCG, with 128 KiB records 16 s (`cat` of the
 * file alone: 7 s); a save 51 s vs 36 s piped through cat. Any record size reads any saved tree (a shorter last
 * record is fine).
 */
export const RECORD_BLOCKS = 256;

/** Guest command that saves the build directory (the stashed tree and the state phases left) to `file`. */
export function saveTreeCommand(buildDir: string, file: string): string {
  // hooks/ is made again from the work dir (later phases may have changed); mnt/ is empty after stash-root.
  return `tar -C ${buildDir} -b ${RECORD_BLOCKS} -cf ${file} --numeric-owner --xattrs --xattrs-include='*' --exclude=./hooks --exclude=./mnt --exclude=./image .`;
}

/**
 * Guest command that puts a saved build directory back into `buildDir`, the tree (saved as ./built) into
 * `buildDir/treeDir`. A warm build passes the mounted image root (`mnt`), so the tree is written once, straight into
 * the image, and the rest of the build directory lands where it always did; `built` puts it back for copy-root.
 * Modes, owners and times are restored onto directories that already exist there (the image's root, mount points
 * such as /boot/efi), as `cp -a built/. mnt/` did.
 */
export function restoreTreeCommand(buildDir: string, file: string, treeDir = "built"): string {
  if (!/^[A-Za-z0-9._-]+$/.test(treeDir) || treeDir === "." || treeDir === "..")
    throw new Error(`internal: ${treeDir} is not a directory name`);
  // S: symlink targets keep their text (an absolute link into the image is not a path of the build directory).
  const into = treeDir === "built" ? "" : ` --transform='s,^\\./built\\(/\\|$\\),./${treeDir}\\1,S'`;
  return `tar -C ${buildDir} -b ${RECORD_BLOCKS} -xpf ${file} --numeric-owner --xattrs --xattrs-include='*'${into}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Effects: hashing element trees, lookup, commit, pruning.
// ---------------------------------------------------------------------------------------------------------------

const sha256 = (data: string | Buffer) => createHash("sha256").update(data).digest("hex");

/** Every file of an element that can shape the tree, sorted; symlinks are followed (elements link shared files). */
export async function digestElement(dir: string): Promise<FileDigest[]> {
  const out: FileDigest[] = [];
  const walk = async (abs: string, rel: string, depth: number): Promise<void> => {
    if (depth > 20) throw new Error(`${abs}: directories nested too deep (a symlink loop?)`);
    const entries = (await readdir(abs)).sort();
    for (const name of entries) {
      const path = join(abs, name);
      const relPath = rel ? `${rel}/${name}` : name;
      if (!rel && LATER_PHASE_DIRS.includes(name)) continue;
      if (IGNORED_FILE.test(name)) continue;
      const s = await stat(path).catch(() => undefined);
      if (!s) {
        out.push([relPath, "-", `dangling:${await readlink(path).catch(() => "")}`]);
      } else if (s.isDirectory()) {
        await walk(path, relPath, depth + 1);
      } else if (s.isFile()) {
        out.push([relPath, s.mode & 0o111 ? "x" : "-", sha256(await readFile(path))]);
      }
    }
  };
  await walk(dir, "", 0);
  return out;
}

/** The hash of a directory's files (for the guest driver). */
export async function digestDir(dir: string): Promise<string> {
  return sha256(JSON.stringify(await digestElement(dir)));
}

/** Content hashes of the regular files that DIB_* values name on the host. */
export async function digestHostFiles(env: Readonly<Record<string, string>>): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [name, path] of await hostFileSettings(env)) out[name] = sha256(await readFile(path));
  return out;
}

/** What the cache records next to each tree; written last, so a tree without it is incomplete. */
export interface TreeMeta {
  readonly key: string;
  readonly bytes: number;
  readonly sha256: string;
  readonly created: string;
  readonly elements: readonly string[];
  /** The tree's size as stash-root measured it (`du -s -x -k`): a warm image is made exactly as big as the cold. */
  readonly builtKib: number;
}

export type TreeLookup =
  | { readonly hit: true; readonly meta: TreeMeta }
  | { readonly hit: false; readonly reason: "absent" | "damaged" };

export const treeFile = (key: string) => `${key}.tar`;
const metaFile = (key: string) => `${key}.json`;

/**
 * A usable tree for `key`: its metadata present and its file of the recorded size and hash. A damaged entry
 * (truncated, edited) is removed and reported as a miss, so the build makes it again.
 */
export async function lookupTree(dir: string, key: string): Promise<TreeLookup> {
  const meta = await readFile(join(dir, metaFile(key)), "utf8").then(
    (t) => JSON.parse(t) as TreeMeta,
    () => undefined,
  );
  if (!meta) return { hit: false, reason: "absent" };
  if (!Number.isSafeInteger(meta.builtKib) || meta.builtKib <= 0) {
    await removeTree(dir, key);
    return { hit: false, reason: "damaged" };
  }
  const file = join(dir, treeFile(key));
  const size = await stat(file).then(
    (s) => s.size,
    () => -1,
  );
  if (size !== meta.bytes || (await sha256File(file)) !== meta.sha256) {
    await removeTree(dir, key);
    return { hit: false, reason: "damaged" };
  }
  const now = new Date();
  await utimes(join(dir, metaFile(key)), now, now);
  return { hit: true, meta };
}

/** Make a tree the guest wrote to `partial` the entry for `key`, then drop all but the most recently used trees. */
export async function commitTree(
  dir: string,
  key: string,
  partial: string,
  elements: readonly string[],
  builtKib: number,
) {
  const file = join(dir, treeFile(key));
  const bytes = (await stat(partial)).size;
  const digest = await sha256File(partial);
  const meta: TreeMeta = { key, bytes, sha256: digest, created: new Date().toISOString(), elements, builtKib };
  // Rename, then metadata: a concurrent build with the same key ends with one complete entry either way.
  await rename(partial, file);
  const tmpMeta = join(dir, `${metaFile(key)}.${process.pid}`);
  await writeFile(tmpMeta, `${JSON.stringify(meta, null, 2)}\n`);
  await rename(tmpMeta, join(dir, metaFile(key)));
  await pruneTrees(dir, TREES_KEPT);
  return meta;
}

async function removeTree(dir: string, key: string) {
  await rm(join(dir, metaFile(key)), { force: true });
  await rm(join(dir, treeFile(key)), { force: true });
}

/** Keep the `keep` most recently used trees (by their metadata's mtime); remove partial files of dead builds. */
export async function pruneTrees(dir: string, keep: number) {
  const names = await readdir(dir).catch(() => [] as string[]);
  const metas = await Promise.all(
    names
      .filter((n) => /^[0-9a-f]{24}\.json$/.test(n))
      .map(async (n) => ({ key: n.slice(0, -5), used: (await stat(join(dir, n))).mtimeMs })),
  );
  metas.sort((a, b) => b.used - a.used);
  for (const m of metas.slice(keep)) await removeTree(dir, m.key);
  for (const n of names) {
    const partial = /^([0-9a-f]{24})\.tar\.partial-(\d+)$/.exec(n);
    if (partial && !pidAlive(Number(partial[2]))) await rm(join(dir, n), { force: true });
  }
}
