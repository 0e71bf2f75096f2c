// Element discovery (fs reads only): the element directories on a search path, their element-deps/-provides, and
// the contents of resolved elements (hook dirs, top-level files) that the pure resolver and hook collector consume.
import { constants } from "node:fs";
import * as fsp from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { BUILTIN_ELEMENTS_DIR } from "../paths.js";
import { type CollectedHooks, collectHooks } from "./hooks.js";
import { byteOrder, ElementError, resolveElements } from "./resolve.js";

/** One element found on the search path, as DIB's element_dependencies.Element sees it. */
export interface ElementInfo {
  /** DIB takes the name from the *resolved* directory: basename(realpath(entry/dir)). */
  readonly name: string;
  /** realpath of the element directory (DIB exports this in IMAGE_ELEMENT_YAML). */
  readonly path: string;
  /** The search-path entry the element came from (absolute, as given). */
  readonly searchDir: string;
  /** `element-deps`, one name per line; sorted, duplicates removed. */
  readonly deps: readonly string[];
  /** `element-provides`, one name per line; sorted, duplicates removed. */
  readonly provides: readonly string[];
}

export interface Discovery {
  /** Every element on the search path by name; for a name found in several entries the earliest entry wins. */
  readonly elements: ReadonlyMap<string, ElementInfo>;
  /** The search path that was read (absolute, in precedence order). */
  readonly searchPath: readonly string[];
  /** "element X at A overrides B" for names found in more than one entry. Returned, never printed. */
  readonly warnings: readonly string[];
  /** Element name → the directories of the same name it shadows (later search-path entries), in order. */
  readonly shadowed: ReadonlyMap<string, readonly string[]>;
}

/** A directory entry after following symlinks, as `find -xtype` and `test -f` see it. */
export interface DirEntry {
  readonly name: string;
  /** `missing` is a dangling symlink; `other` a fifo, socket or device. */
  readonly kind: "file" | "dir" | "missing" | "other";
  /** Any execute bit set: what `find -executable` means for root, who runs the hooks. */
  readonly executable: boolean;
}

/** What hook collection and the planner need from a resolved element's directory. */
export interface ElementContents {
  readonly element: ElementInfo;
  /** Top-level regular files (element-deps, pkg-map, package-installs.yaml, block-device-default.yaml, ...). */
  readonly files: readonly string[];
  /**
   * Every subdirectory (phase dirs, environment.d, static, bin, ...) except `tests` and `__pycache__`, which DIB's
   * generate_hooks skips, with its non-hidden entries (DIB copies them with `ls`, which hides dotfiles), sorted.
   */
  readonly dirs: Readonly<Record<string, readonly DirEntry[]>>;
}

/** The file-system reads discovery needs, injectable for tests. All follow symlinks. */
export interface ElementFs {
  /** Entry names of a directory (unsorted, without . and ..). */
  readdir(path: string): Promise<string[]>;
  /** Kind and mode after following symlinks; undefined when nothing is there (or the link dangles). */
  stat(path: string): Promise<{ kind: "file" | "dir" | "other"; mode: number } | undefined>;
  /** File contents, or undefined when the file does not exist. */
  readFile(path: string): Promise<string | undefined>;
  realpath(path: string): Promise<string>;
}

function isNotFound(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === "ENOENT" || code === "ENOTDIR" || code === "ELOOP";
}

/** The same reads, with any unexpected failure (EACCES, EIO, ...) turned into a usage error naming the path. */
function guarded(fs: ElementFs): ElementFs {
  const wrap =
    <T>(op: (path: string) => Promise<T>) =>
    async (path: string): Promise<T> => {
      try {
        return await op(path);
      } catch (err) {
        if (err instanceof ElementError) throw err;
        const code = (err as NodeJS.ErrnoException | undefined)?.code ?? String(err);
        throw new ElementError("unreadable", `cannot read ${path} (${code})`, {
          hint: "element directories and everything in them must be readable by the user running vmdib",
          cause: err,
        });
      }
    };
  return {
    readdir: wrap((p) => fs.readdir(p)),
    stat: wrap((p) => fs.stat(p)),
    readFile: wrap((p) => fs.readFile(p)),
    realpath: wrap((p) => fs.realpath(p)),
  };
}

/** The real file system. */
export const NODE_FS: ElementFs = {
  readdir: (path) => fsp.readdir(path),
  async stat(path) {
    try {
      const st = await fsp.stat(path);
      return { kind: st.isDirectory() ? "dir" : st.isFile() ? "file" : "other", mode: st.mode };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  },
  async readFile(path) {
    try {
      return await fsp.readFile(path, "utf8");
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  },
  realpath: (path) => fsp.realpath(path),
};

/**
 * Parse an element-deps / element-provides file: one name per line, surrounding blanks stripped, blank lines
 * ignored (as DIB). Unlike DIB, `#` starts a comment (DIB would look for an element named "# ..."; none of its
 * own elements has one).
 */
export function parseElementList(text: string | undefined): string[] {
  if (text === undefined) return [];
  const names = new Set<string>();
  for (const line of text.split("\n")) {
    const name = line.replace(/#.*/, "").trim();
    if (name !== "") names.add(name);
  }
  return [...names].sort(byteOrder);
}

/**
 * Find every element on the search path, DIB's `_find_all_elements`: each directory inside an entry is an element;
 * an earlier entry overrides a later one, with a warning. Missing or non-directory entries are usage errors.
 * Entries must be absolute (the caller resolves them against its cwd).
 */
export async function discoverElements(searchPath: readonly string[], rawFs: ElementFs = NODE_FS): Promise<Discovery> {
  const fs = guarded(rawFs);
  const elements = new Map<string, ElementInfo>();
  const warnings: string[] = [];
  const shadowed = new Map<string, string[]>();
  for (const searchDir of searchPath) {
    const st = await fs.stat(searchDir);
    if (st?.kind !== "dir") {
      throw new ElementError(
        "invalid-path",
        `element search path entry '${searchDir}' ${st ? "is not a directory" : "does not exist"}`,
        {
          hint: "ELEMENTS_PATH is a colon-separated list of directories that each hold element directories; fix or remove that entry",
        },
      );
    }
    const found = await readSearchDir(searchDir, fs);
    for (const element of found) {
      const earlier = elements.get(element.name);
      if (earlier === undefined) {
        elements.set(element.name, element);
      } else if (earlier.path !== element.path) {
        // DIB: logger.warning("Element <%s> overrides <%s>"); the same directory reached twice is not an override.
        warnings.push(overrideWarning(element.name, earlier.path, element.path));
        shadowed.set(element.name, [...(shadowed.get(element.name) ?? []), element.path]);
      }
    }
  }
  return { elements, searchPath: [...searchPath], warnings, shadowed };
}

function overrideWarning(name: string, winner: string, loser: string): string {
  return `element '${name}' at ${winner} overrides ${loser}`;
}

/** The elements inside one search-path entry, in name order (the first of two dirs resolving to one name wins). */
async function readSearchDir(searchDir: string, fs: ElementFs): Promise<ElementInfo[]> {
  const names = (await fs.readdir(searchDir)).sort(byteOrder);
  const out = new Map<string, ElementInfo>();
  for (const entry of names) {
    const full = join(searchDir, entry);
    if ((await fs.stat(full))?.kind !== "dir") continue;
    const path = await fs.realpath(full);
    const name = basename(path);
    if (out.has(name)) continue;
    const [deps, provides] = await Promise.all([
      fs.readFile(join(path, "element-deps")),
      fs.readFile(join(path, "element-provides")),
    ]);
    out.set(name, { name, path, searchDir, deps: parseElementList(deps), provides: parseElementList(provides) });
  }
  return [...out.values()];
}

/** Subdirectories DIB's generate_hooks does not copy into the hook tree. */
const SKIPPED_DIRS: ReadonlySet<string> = new Set(["tests", "__pycache__"]);

/** Read what hook collection needs from each element directory (top-level files, every subdir's entries). */
export async function readElementContents(
  elements: readonly ElementInfo[],
  fs: ElementFs = NODE_FS,
): Promise<ElementContents[]> {
  const safe = guarded(fs);
  return Promise.all(elements.map((element) => readOne(element, safe)));
}

async function readOne(element: ElementInfo, fs: ElementFs): Promise<ElementContents> {
  const files: string[] = [];
  const dirs: Record<string, DirEntry[]> = {};
  for (const entry of (await fs.readdir(element.path)).sort(byteOrder)) {
    const st = await fs.stat(join(element.path, entry));
    if (st?.kind === "file") files.push(entry);
    else if (st?.kind === "dir" && !SKIPPED_DIRS.has(entry))
      dirs[entry] = await readEntries(join(element.path, entry), fs);
  }
  return { element, files, dirs };
}

async function readEntries(dir: string, fs: ElementFs): Promise<DirEntry[]> {
  const names = (await fs.readdir(dir)).filter((n) => !n.startsWith(".")).sort(byteOrder);
  return Promise.all(
    names.map(async (name): Promise<DirEntry> => {
      const st = await fs.stat(join(dir, name));
      return {
        name,
        kind: st?.kind ?? "missing",
        executable: st !== undefined && (st.mode & (constants.S_IXUSR | constants.S_IXGRP | constants.S_IXOTH)) !== 0,
      };
    }),
  );
}

/** What the build planner needs about one element of the resolved set. */
export interface ResolvedElement extends ElementInfo, Omit<ElementContents, "element"> {
  /** Files and directories other parts of vmdib act on. */
  readonly has: {
    readonly packageInstalls: boolean;
    readonly pkgMap: boolean;
    readonly static: boolean;
    readonly bin: boolean;
    readonly blockDeviceDefault: boolean;
  };
}

export interface ResolvedSet {
  /** The search path used: ELEMENTS_PATH entries (absolute) then vmdib's own elements directory. */
  readonly searchPath: readonly string[];
  /** Requested elements after disk-image-create's additions, in DIB's order. */
  readonly requested: readonly string[];
  /** The element set, sorted by name. */
  readonly elements: readonly ResolvedElement[];
  readonly hooks: CollectedHooks;
  /** Override warnings about the elements in the set (not the whole search path), for the CLI to print. */
  readonly warnings: readonly string[];
}

export interface LoadElementSetOptions {
  /** Element names as given on the command line. */
  readonly requested: readonly string[];
  /** ELEMENTS_PATH entries in order; relative ones are taken from `cwd`; empty ones are ignored. */
  readonly elementsPath: readonly string[];
  readonly skipBase?: boolean;
  readonly arch?: string;
  readonly cwd?: string;
  /** vmdib's own elements, searched last; skipped when the directory does not exist. */
  readonly builtinDir?: string;
  readonly fs?: ElementFs;
}

/** Everything a build needs about its elements: discover → resolve → read contents → collect hooks. */
export async function loadElementSet(options: LoadElementSetOptions): Promise<ResolvedSet> {
  const fs = options.fs ?? NODE_FS;
  const cwd = options.cwd ?? process.cwd();
  const builtinDir = options.builtinDir ?? BUILTIN_ELEMENTS_DIR;
  const searchPath = options.elementsPath.filter((p) => p !== "").map((p) => resolve(cwd, p));
  if ((await fs.stat(builtinDir))?.kind === "dir") searchPath.push(builtinDir);
  const discovery = await discoverElements(searchPath, fs);
  const resolution = resolveElements(options.requested, discovery, { skipBase: options.skipBase, arch: options.arch });
  const contents = await readElementContents(resolution.elements, fs);
  const hooks = collectHooks(contents);
  const elements = contents.map(({ element, files, dirs }): ResolvedElement => {
    const file = (name: string) => files.includes(name);
    const dir = (name: string) => Object.hasOwn(dirs, name);
    return {
      ...element,
      files,
      dirs,
      has: {
        packageInstalls: file("package-installs.yaml"),
        pkgMap: file("pkg-map"),
        static: dir("static"),
        bin: dir("bin"),
        blockDeviceDefault: file("block-device-default.yaml"),
      },
    };
  });
  const warnings = elements.flatMap((e) =>
    (discovery.shadowed.get(e.name) ?? []).map((loser) => overrideWarning(e.name, e.path, loser)),
  );
  return { searchPath, requested: resolution.requested, elements, hooks, warnings };
}
