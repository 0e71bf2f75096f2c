// Hook collection (pure over discovered element contents): per phase, every element's scripts merged by name in
// dib-run-parts order; environment.d files in the order dib-run-parts sources them; DIB's duplicate-hook rule.
import type { DirEntry, ElementContents } from "./discover.js";
import { PHASES } from "./phases.js";
import { ElementError } from "./resolve.js";

/** dib-run-parts' default RUN_PARTS_REGEX: which files in a phase dir are scripts. */
export const SCRIPT_NAME = /^[0-9A-Za-z_-]+$/;
/** dib-run-parts' source_environment filter (`grep -E "/[0-9A-Za-z_\.-]+$"` on the path): the whole file name. */
export const ENVIRONMENT_NAME = /^[0-9A-Za-z_.-]+$/;

export interface HookScript {
  readonly name: string;
  readonly element: string;
  /** Path of the file inside its element directory on the host. */
  readonly path: string;
}

/** A file in a phase directory that dib-run-parts would skip, and why (DIB says so only with -x). */
export interface IgnoredHook {
  readonly dir: string;
  readonly element: string;
  readonly name: string;
  readonly reason: "not a regular file" | "not executable" | "name does not match ^[0-9A-Za-z_-]+$";
}

export interface CollectedHooks {
  /** Every PHASES dir (e.g. `install.d`), in PHASES order, with its scripts in dib-run-parts order (maybe none). */
  readonly phases: Readonly<Record<string, readonly HookScript[]>>;
  /** environment.d files of all elements, in the order dib-run-parts sources them before every phase. */
  readonly environment: readonly HookScript[];
  readonly ignored: readonly IgnoredHook[];
}

/**
 * Merge the elements' hook directories the way DIB's generate_hooks builds TMP_HOOKS_PATH, then select what
 * dib-run-parts runs. Throws ElementError("duplicate-hook") where DIB's copy_hooks_not_overwrite fails: the same
 * entry name in the same subdirectory of two elements, unless both are directories (those `cp -a` merges).
 */
export function collectHooks(contents: readonly ElementContents[]): CollectedHooks {
  const merged = mergeDirs(contents);
  const ignored: IgnoredHook[] = [];
  const phases: Record<string, HookScript[]> = {};
  for (const phase of PHASES) {
    const scripts: HookScript[] = [];
    for (const { entry, element, path } of merged.get(phase.dir) ?? []) {
      const base = { dir: phase.dir, element, name: entry.name };
      // dib-run-parts: find -maxdepth 1 -xtype f -executable | grep -E "$RUN_PARTS_REGEX"
      if (entry.kind !== "file") ignored.push({ ...base, reason: "not a regular file" });
      else if (!entry.executable) ignored.push({ ...base, reason: "not executable" });
      else if (!SCRIPT_NAME.test(entry.name)) ignored.push({ ...base, reason: "name does not match ^[0-9A-Za-z_-]+$" });
      else scripts.push({ name: entry.name, element, path });
    }
    phases[phase.dir] = scripts.sort((a, b) => compareSortN(a.name, b.name));
  }
  const environment = (merged.get("environment.d") ?? [])
    .filter(({ entry }) => entry.kind === "file" && ENVIRONMENT_NAME.test(entry.name))
    .map(({ entry, element, path }) => ({ name: entry.name, element, path }))
    // source_environment sorts whole paths ($dir/../environment.d/NAME) with `sort -n`: a path has no leading
    // number, so every key is 0 and sort's last-resort byte comparison decides — "10-a" before "9-b".
    .sort((a, b) => compareSortN(`/environment.d/${a.name}`, `/environment.d/${b.name}`));
  return { phases, environment, ignored };
}

interface MergedEntry {
  readonly entry: DirEntry;
  readonly element: string;
  readonly path: string;
}

/** Subdirectory name → entries of all elements, checking DIB's no-overwrite rule. */
function mergeDirs(contents: readonly ElementContents[]): Map<string, MergedEntry[]> {
  const merged = new Map<string, Map<string, MergedEntry>>();
  for (const { element, dirs } of contents) {
    for (const [dir, entries] of Object.entries(dirs)) {
      const byName = merged.get(dir) ?? new Map<string, MergedEntry>();
      merged.set(dir, byName);
      for (const entry of entries) {
        const path = `${element.path}/${dir}/${entry.name}`;
        const earlier = byName.get(entry.name);
        if (earlier === undefined) {
          byName.set(entry.name, { entry, element: element.name, path });
        } else if (earlier.entry.kind !== "dir" || entry.kind !== "dir") {
          throw new ElementError(
            "duplicate-hook",
            `duplicate hook '${dir}/${entry.name}' in elements '${earlier.element}' and '${element.name}'`,
            {
              context: [earlier.path, path],
              hint: `DIB merges every element's ${dir} into one directory, so names must be unique across elements; rename one of them or drop one of the elements`,
            },
          );
        }
      }
    }
  }
  return new Map([...merged].map(([dir, byName]) => [dir, [...byName.values()]]));
}

interface SortNKey {
  readonly negative: boolean;
  /** Integer digits without leading zeros. */
  readonly int: string;
  /** Fraction digits without trailing zeros. */
  readonly frac: string;
}

/** The leading number of a line as GNU `sort -n` reads it in the C locale (blanks, `-`, digits, `.` fraction). */
function sortNKey(line: string): SortNKey {
  let i = 0;
  while (line[i] === " " || line[i] === "\t") i++;
  let negative = false;
  if (line[i] === "-") {
    negative = true;
    i++;
  }
  const intMatch = /^[0-9]*/.exec(line.slice(i))?.[0] ?? "";
  i += intMatch.length;
  let frac = "";
  if (line[i] === ".") frac = (/^[0-9]*/.exec(line.slice(i + 1))?.[0] ?? "").replace(/0+$/, "");
  const int = intMatch.replace(/^0+/, "");
  return { negative: negative && (int !== "" || frac !== ""), int, frac };
}

function compareMagnitude(a: SortNKey, b: SortNKey): number {
  if (a.int.length !== b.int.length) return a.int.length < b.int.length ? -1 : 1;
  if (a.int !== b.int) return a.int < b.int ? -1 : 1;
  if (a.frac !== b.frac) return a.frac < b.frac ? -1 : 1; // digit strings without trailing zeros: a prefix is smaller
  return 0;
}

/**
 * `LC_ALL=C sort -n` as a comparator: by leading numeric value, and on a tie GNU sort's last-resort comparison of
 * the whole lines byte by byte (so "007-a" < "7-a" < "7-b", and names without a number sort as 0).
 */
export function compareSortN(a: string, b: string): number {
  const ka = sortNKey(a);
  const kb = sortNKey(b);
  let diff: number;
  if (ka.negative !== kb.negative) diff = ka.negative ? -1 : 1;
  else diff = ka.negative ? -compareMagnitude(ka, kb) : compareMagnitude(ka, kb);
  return diff !== 0 ? diff : Buffer.compare(Buffer.from(a), Buffer.from(b));
}
